"""Augmentations of the USL-VI-ReID field as torchvision-compatible callables, and per-view pipelines.

Tensor transforms act on a normalised (3, H, W) image, after ``ToTensor`` + ``Normalize``, as in the
CAJ/ADCA/SDCL pipelines; only :class:`LinearTransform` acts on the [0, 1] image before ``Normalize``, as
in MULT/SALCR. Randomness comes from Python's ``random``, as in those reference implementations
(PyTorch's DataLoader seeds it in every worker).
"""

from __future__ import annotations

import math
import random
from typing import Callable

import torch
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ..errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
FIELD_HEIGHT, FIELD_PADDING = 288, 10  # the CAJ/ADCA pipelines: Resize 288×144 → Pad 10 → RandomCrop


def _gray(img: torch.Tensor) -> torch.Tensor:  # (..., 3, H, W) -> (..., H, W)
    return sum(w * img.select(-3, c) for c, w in enumerate(_GRAY_WEIGHTS))


def _as_three_channels(channel: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return channel.unsqueeze(-3).expand_as(like).clone()


class Luminance:
    """The image's luminance (weights 0.2989 / 0.5870 / 0.1140) in all three channels, with probability
    ``p`` (no random draw at ``p`` = 1, so a deterministic pipeline leaves Python's random stream alone): the
    one gray conversion of the project (the channel ops below, the tone curve and ``pseudo.visible_gray``)."""

    def __init__(self, p: float = 1.0) -> None:
        self.p = p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return _as_three_channels(_gray(img), img) if self.p >= 1.0 or random.random() < self.p else img


class ChannelExchange:
    """Replace all three channels by one random channel: draw ``i`` in ``[0, gray]``; 0/1/2 pick R/G/B,
    anything above 2 gives the luminance. With the field's ``gray=2`` no image is ever made gray."""

    def __init__(self, gray: int = 2) -> None:
        self.gray = gray

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        idx = random.randint(0, self.gray)
        return _as_three_channels(img[idx] if idx < 3 else _gray(img), img)


class ChannelAdapGray:
    """Infrared view: with probability 3/4 one random channel replicated; otherwise the luminance with
    probability ``p`` (else unchanged)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        idx = random.randint(0, 3)
        if idx < 3:
            return _as_three_channels(img[idx], img)
        if random.random() <= self.p:
            return _as_three_channels(_gray(img), img)
        return img


def _random_box(height: int, width: int, area_range=(0.02, 0.4), min_aspect: float = 0.3) -> tuple[int, int, int, int] | None:
    """The classic RandomErasing box: area fraction in ``area_range``, aspect in [r, 1/r]; 100 tries."""
    for _ in range(100):
        area = random.uniform(*area_range) * height * width
        aspect = random.uniform(min_aspect, 1 / min_aspect)
        h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < h < height and 0 < w < width:
            top, left = random.randint(0, height - h), random.randint(0, width - w)
            return top, left, h, w
    return None


class ChannelRandomErasing:
    """With probability ``p``, a random rectangle filled with the per-channel ImageNet mean (on the
    normalised image, as the field's ``ChannelRandomErasing``)."""

    def __init__(self, p: float = 0.5, mean: tuple[float, ...] = IMAGENET_MEAN) -> None:
        self.p, self.mean = p, mean

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        box = _random_box(img.shape[1], img.shape[2])
        if box is None:
            return img
        top, left, h, w = box
        img = img.clone()
        for c, value in enumerate(self.mean):
            img[c, top : top + h, left : left + w] = value
        return img


class LinearTransform:
    """With probability ``p``, MULT/SALCR's local linear re-lighting of a [0, 1] image (after ``ToTensor``,
    before ``Normalize``, as in their pipelines).

    Rectangles (the RandomErasing box rule) are drawn one after another; in each, every channel whose
    patch maximum is positive is multiplied by α = Beta(0.5, 0.5) / max(patch), i.e. rescaled so that
    its maximum becomes the Beta draw. The running product of the multipliers is kept per pixel and
    channel, and the loop stops once it falls to ``tmin`` somewhere (the reference code's rule; it usually
    takes a few dozen rectangles). The reference loops without bound; ``max_boxes`` only guards against
    an all-black image, where nothing is ever rescaled. Beta draws use Python's ``random`` like the
    other transforms (the reference uses NumPy's global generator).
    """

    def __init__(self, p: float = 0.5, tmin: float = 1e-6, max_boxes: int = 10_000) -> None:
        self.p, self.tmin, self.max_boxes = p, tmin, max_boxes

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        img = img.clone()
        product = torch.ones_like(img)
        for _ in range(self.max_boxes):
            box = _random_box(img.shape[1], img.shape[2])
            if box is None:
                continue
            top, left, h, w = box
            patch = img[:, top : top + h, left : left + w]
            peak = patch.amax(dim=(1, 2))
            draws = torch.tensor([random.betavariate(0.5, 0.5) for _ in range(img.shape[0])], dtype=img.dtype)
            alpha = torch.where(peak > 0, draws / peak.clamp_min(torch.finfo(img.dtype).tiny), torch.ones_like(peak))
            patch *= alpha[:, None, None]
            product[:, top : top + h, left : left + w] *= alpha[:, None, None]
            if float(product.min()) <= self.tmin:
                break
        return img


class RandomToneCurve:
    """With probability ``p``, the luminance of a [0, 1] image through a random intensity curve, on all three
    channels: piecewise linear over ``knots`` equal segments with a uniform random level at every knot.

    Not from the field's code: a modality bridge of our own for networks without pretrained weights (the
    synthetic CPU profile's warm-up). Infrared brightness follows material and heat, not hue; a random,
    non-monotonic curve gives a visible image the same property, so only shape and pattern still match.
    """

    def __init__(self, p: float = 1.0, knots: int = 6) -> None:
        self.p, self.knots = p, knots

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        levels = torch.tensor([random.random() for _ in range(self.knots + 1)], dtype=img.dtype)
        scaled = _gray(img).clamp(0, 1) * self.knots
        segment = scaled.floor().clamp(max=self.knots - 1)
        frac = scaled - segment
        low, high = levels[segment.long()], levels[segment.long() + 1]
        return _as_three_channels(low + frac * (high - low), img)


# name -> (stage, factory(p)); "pil" items run before ToTensor, "raw" items on the [0, 1] tensor before
# Normalize, "tensor" items after Normalize (the order of the CAJ/ADCA/SDCL/MULT pipelines).
POLICY_ITEMS: dict[str, tuple[str, Callable[[float], Callable]]] = {
    "color_jitter": ("pil", lambda p: T.RandomApply([T.ColorJitter(0.5, 0.5, 0.5, 0.5)], p=p)),
    "linear": ("raw", LinearTransform),
    "tone": ("raw", RandomToneCurve),
    "gray": ("raw", Luminance),
    "erasing": ("tensor", ChannelRandomErasing),
    "channel_exchange": ("tensor", lambda p: T.RandomApply([ChannelExchange(gray=2)], p=p)),
    "adaptive_gray": ("tensor", ChannelAdapGray),
}
_DEFAULT_P = {"color_jitter": 1.0, "linear": 0.5, "tone": 1.0, "gray": 1.0, "erasing": 0.5, "channel_exchange": 1.0, "adaptive_gray": 0.5}
VIEWS = ("visible", "visible_aug", "infrared")


def _parse_item(item: str) -> tuple[str, float]:
    """``name`` or ``name:p`` (e.g. ``erasing:0.9``)."""
    name, _, prob = str(item).partition(":")
    if name not in POLICY_ITEMS:
        raise UserError(f"augmentation {item!r}: unknown; valid names: {', '.join(POLICY_ITEMS)} (optionally name:p)")
    try:
        p = float(prob) if prob else _DEFAULT_P[name]
    except ValueError:
        raise UserError(f"augmentation {item!r}: probability {prob!r} is not a number") from None
    if not 0.0 <= p <= 1.0:
        raise UserError(f"augmentation {item!r}: probability must be in [0, 1]")
    return name, p


def crop_padding(height: int) -> int:
    """Padding before the random crop: 10 pixels at the field's 288-pixel height, proportional otherwise."""
    return max(1, round(FIELD_PADDING * height / FIELD_HEIGHT))


def build_transform(view: str, policy: list[str] | None, height: int, width: int) -> Callable:
    """The training pipeline for one view: Resize → Pad → RandomCrop → HFlip → [PIL items] → ToTensor →
    [raw items] → Normalize → [tensor items] (extraction's is :class:`EvalTransform`).

    The padding is the field's 10 pixels at its 288-pixel height, scaled with ``height`` (2 at 64):
    a fixed 10 would shift a 64×32 crop by up to a third of its width.

    ``policy`` items are ``name`` or ``name:p``; items keep their given order within a stage."""
    if view not in VIEWS:
        raise UserError(f"view {view!r}: unknown; valid views: {', '.join(VIEWS)}")
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    items = [_parse_item(item) for item in policy or []]
    stage = {key: [POLICY_ITEMS[name][1](p) for name, p in items if POLICY_ITEMS[name][0] == key]
             for key in ("pil", "raw", "tensor")}
    base = [T.Resize((height, width)), T.Pad(crop_padding(height)), T.RandomCrop((height, width)),
            T.RandomHorizontalFlip()]
    return T.Compose([*base, *stage["pil"], T.ToTensor(), *stage["raw"], normalize, *stage["tensor"]])


class EvalTransform:
    """The test pipeline, Resize → ToTensor → [luminance] → Normalize, in two halves, so that extraction moves and
    keeps images as 8-bit pixels: ``decode`` resizes one PIL image to uint8 (3, H, W) in the loader; :meth:`finish`
    makes a uint8 (N, 3, H, W) batch the network's input wherever the batch is (on a GPU, after a copy a quarter the
    size of float32's). ``finish`` divides by 255 in float32 as ``ToTensor`` does, then applies the same elementwise
    operations to every pixel, so its output equals the one-image pipeline's to the bit.

    ``gray``: the visible images as their luminance (``pseudo.visible_gray``)."""

    def __init__(self, height: int, width: int, gray: bool = False) -> None:
        self.decode = T.Compose([T.Resize((height, width)), T.PILToTensor()])
        self.gray = gray

    def finish(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) → normalised float32 (N, 3, H, W), on ``pixels``' device."""
        images = pixels.to(torch.float32).div(255)
        if self.gray:
            images = Luminance()(images)
        return TF.normalize(images, IMAGENET_MEAN, IMAGENET_STD)
