"""Feature extraction for relabelling and evaluation: eval mode, flip-averaged, L2-normalised per head."""

from __future__ import annotations

from typing import Callable, Hashable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.data.datasets import ImageDataset
from raytrain_vireid.data.transforms import EvalTransform
from raytrain_vireid.models.features import concat_heads, embed
from raytrain_vireid.train.distributed import all_gather_rows

Progress = Callable[[Iterable, str, int], Iterable]


class ImageCache:
    """Decoded, resized images kept in memory between extractions, as 8-bit pixels, within ``budget_mb`` megabytes.

    Every epoch embeds the same training shard, and every evaluation the same test images, through the same
    deterministic test transform; decoding and resizing them again was about a tenth of an extraction on the
    synthetic default (benchmarks/extract_cache.py). An entry is a prefix of one table's images of one modality: all
    of them when they fit in what is left of the budget, else as many whole batches as fit; the rest is decoded every
    time, as without a cache. The pixels are uint8 (:class:`~raytrain_vireid.data.transforms.EvalTransform`), a
    quarter of float32's bytes, and cached batches are slices of the stored stack with the loader's batch
    boundaries, so features are bit-identical either way.
    """

    def __init__(self, budget_mb: float) -> None:
        self.budget = int(budget_mb * 2**20)
        self.entries: dict[Hashable, torch.Tensor] = {}

    @property
    def used(self) -> int:
        """Bytes held by the stored entries."""
        return sum(stack.numel() * stack.element_size() for stack in self.entries.values())

    def batches(self, key: Hashable, count: int, batch_size: int,
                load: Callable[[int], Iterable[torch.Tensor]]) -> Iterator[torch.Tensor]:
        """The ``count`` images' batches in order: the stored prefix of entry ``key``, then ``load(start)``, the
        decoded batches of the images from ``start`` on (a first pass stores the prefix that fits)."""
        stored = self.entries.get(key)
        if stored is not None:
            yield from torch.split(stored, batch_size)
            if len(stored) < count:
                yield from load(len(stored))
            return
        stack, position = None, 0
        for images in load(0):
            if position == 0:
                fits = (self.budget - self.used) // (images[0].numel() * images.element_size())
                keep = count if fits >= count else fits // batch_size * batch_size
                if keep > 0:
                    stack = torch.empty((keep, *images.shape[1:]), dtype=images.dtype)
            if stack is not None and position < len(stack):
                stack[position : position + len(images)] = images
            position += len(images)
            yield images
        if stack is not None:  # reached only when the consumer took every batch
            self.entries[key] = stack


def extract_features(model: nn.Module, table: pa.Table, device: torch.device, *, height: int, width: int,
                     batch_size: int = 128, loader_workers: int = 0, on_bad_image: str = "error",
                     progress: Progress | None = None, dtype: np.dtype = np.float32,
                     visible_gray: bool = False, flip: bool = True, amp_dtype: torch.dtype | None = None,
                     image_cache: ImageCache | None = None) -> dict[str, np.ndarray]:
    """``{key: (table.num_rows, D)}`` features of every row of ``table`` (in table order), for every key of
    ``model.feature_dims`` (the heads, plus any extracted part features).

    Each modality is embedded with its own stem (``models.features.embed``), test transform only
    (:class:`~raytrain_vireid.data.transforms.EvalTransform`, finished on ``device``);
    ``visible_gray``: visible images as their luminance (``pseudo.visible_gray``); ``flip``: features averaged with
    the horizontally flipped image's (``models.features.embed``; ``pseudo.flip`` for relabelling);
    ``amp_dtype``: the network's autocast dtype (``models.precision``; None: float32); ``image_cache``: where the
    decoded images are kept for the next call on the same rows (:class:`ImageCache`).
    """
    out = {key: np.zeros((table.num_rows, dim), dtype=dtype) for key, dim in model.feature_dims.items()}
    modality = table["modality"].to_numpy()
    for m in (VISIBLE, INFRARED):
        rows = np.flatnonzero(modality == m)
        if len(rows) == 0:
            continue
        gray = visible_gray and m == VISIBLE
        transform = EvalTransform(height, width, gray=gray)
        dataset = ImageDataset(table.take(pa.array(rows)), transform.decode, on_bad_image=on_bad_image)

        def load(start: int, dataset: ImageDataset = dataset) -> Iterator[torch.Tensor]:
            part = dataset if start == 0 else Subset(dataset, range(start, len(dataset)))
            # A private generator: a DataLoader iterator otherwise draws its base seed from torch's global
            # generator, which the training crops and flips also use, so evaluating would change training.
            loader = DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=loader_workers,
                                generator=torch.Generator().manual_seed(0))
            return (pixels for pixels, _ in loader)

        batches = (load(0) if image_cache is None else
                   image_cache.batches((m, height, width, tuple(dataset.paths)), len(dataset), batch_size, load))
        label = f"extract {'visible' if m == VISIBLE else 'infrared'}"
        position = 0
        for pixels in progress(batches, label, -(-len(dataset) // batch_size)) if progress else batches:
            images = transform.finish(pixels.to(device, non_blocking=True))
            feats = embed(model, images, m, flip=flip, amp_dtype=amp_dtype)
            stop = position + images.shape[0]
            for key, values in out.items():
                values[rows[position:stop]] = feats[key].float().cpu().numpy()
            position = stop
    return out


def test_embedding(model: nn.Module, device: torch.device, rank: int = 0, world_size: int = 1,
                   **kwargs) -> Callable[[pa.Table], np.ndarray]:
    """``embed(table) -> (n, D)`` for ``eval.evaluate``: all heads concatenated and re-normalised.

    With ``world_size`` > 1 every rank must call it on the same table: each embeds its contiguous share
    and the shares are all-gathered (rank order = table order), so every rank gets all features.
    """

    def embed_table(table: pa.Table) -> np.ndarray:
        rows = shard_rows(table.num_rows, rank, world_size)
        feats = extract_features(model, table.take(pa.array(rows)), device, **kwargs)
        heads = tuple(model.heads)
        joined = concat_heads({h: torch.from_numpy(v) for h, v in feats.items()}, heads)
        return all_gather_rows(joined.to(device)).cpu().numpy()

    return embed_table


def shard_rows(num_rows: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous share of ``range(num_rows)`` (shares differ by at most one row)."""
    return np.array_split(np.arange(num_rows), world_size)[rank]

