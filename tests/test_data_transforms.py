import random

import numpy as np
import pytest
import torch

from raytrain_vireid.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, ChannelAdapGray, ChannelExchange,
                                             ChannelRandomErasing, EvalTransform, LinearTransform, Luminance,
                                             RandomToneCurve, build_transform, crop_padding)
from raytrain_vireid.errors import UserError


def _img():
    return torch.stack([torch.full((8, 4), 1.0), torch.full((8, 4), 2.0), torch.full((8, 4), 3.0)])


def test_channel_exchange_replicates_one_channel_and_never_grays_with_gray_2():
    seen = set()
    for seed in range(30):
        random.seed(seed)
        out = ChannelExchange(gray=2)(_img())
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
        seen.add(float(out[0, 0, 0]))
    assert seen == {1.0, 2.0, 3.0}


def test_adaptive_gray_branches():
    values = set()
    for seed in range(60):
        random.seed(seed)
        out = ChannelAdapGray(p=1.0)(_img())
        values.add(round(float(out[0, 0, 0]), 4))
    gray = round(0.2989 * 1 + 0.5870 * 2 + 0.1140 * 3, 4)
    assert values == {1.0, 2.0, 3.0, gray}
    random.seed(0)
    unchanged = [torch.equal(ChannelAdapGray(p=0.0)(_img()), _img()) for _ in range(200)]
    assert 0.15 < sum(unchanged) / 200 < 0.35  # the 1/4 gray branch with p = 0 leaves the image as it is


def test_erasing_fills_a_box_with_the_mean():
    img = torch.zeros(3, 64, 32)
    random.seed(1)
    out = ChannelRandomErasing(p=1.0)(img)
    changed = out[0] != 0
    assert changed.any() and torch.allclose(out[0][changed], torch.tensor(IMAGENET_MEAN[0]))
    assert torch.equal(out[1][changed], torch.full_like(out[1][changed], IMAGENET_MEAN[1]))
    assert torch.equal(img, torch.zeros(3, 64, 32))  # the input is left alone


def test_linear_transform_rescales_each_channel_of_a_box_to_a_beta_draw():
    random.seed(2)
    # tmin = 1 stops after the first box (on an all-ones image every multiplier is a Beta draw <= 1).
    out = LinearTransform(p=1.0, tmin=1.0)(torch.ones(3, 64, 32))
    inside = out[0] != 1
    assert inside.any() and torch.equal(inside, out[1] != 1) and torch.equal(inside, out[2] != 1)
    for c in range(3):  # the box holds one value per channel: the draw, in (0, 1)
        values = out[c][inside]
        assert torch.equal(values, values[:1].expand_as(values)) and 0 < float(values[0]) < 1
    rows, cols = inside.nonzero(as_tuple=True)
    assert int(inside.sum()) == (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)  # a rectangle


def test_linear_transform_stops_when_a_multiplier_product_reaches_tmin():
    random.seed(3)
    # On an all-ones image the pixel values are the products of the multipliers.
    out = LinearTransform(p=1.0)(torch.ones(3, 32, 16))
    assert float(out.min()) <= 1e-6 and float(out.max()) <= 1.0
    assert torch.equal(LinearTransform(p=1.0, max_boxes=5)(torch.zeros(3, 8, 4)), torch.zeros(3, 8, 4))
    assert torch.equal(LinearTransform(p=0.0)(torch.ones(3, 8, 4)), torch.ones(3, 8, 4))


def test_pipelines_and_policy_errors():
    from PIL import Image

    image = Image.new("RGB", (30, 70), (200, 10, 10))
    out = build_transform("visible_aug", ["channel_exchange", "erasing:0.9"], 64, 32)(image)
    assert out.shape == (3, 64, 32)
    with pytest.raises(UserError, match="augmentation 'blur': unknown; valid names"):
        build_transform("visible", ["blur"], 64, 32)
    stages = [type(t).__name__ for t in build_transform("visible", ["erasing", "linear"], 64, 32).transforms]
    assert stages.index("ToTensor") < stages.index("LinearTransform") < stages.index("Normalize")
    assert stages.index("Normalize") < stages.index("ChannelRandomErasing")
    with pytest.raises(UserError, match="probability must be in"):
        build_transform("visible", ["erasing:2"], 64, 32)


def test_eval_transform_in_two_halves_equals_the_one_image_pipeline_to_the_bit():
    """Extraction decodes to uint8 in the loader and finishes whole batches: the same floats as Resize → ToTensor →
    [luminance] → Normalize applied to each image."""
    from PIL import Image
    from torchvision import transforms as T

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (70 + i, 30 + 2 * i, 3), dtype=np.uint8)) for i in range(4)]
    for gray in (False, True):
        reference = T.Compose([T.Resize((64, 32)), T.ToTensor(), *([Luminance()] if gray else []),
                               T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        halves = EvalTransform(64, 32, gray=gray)
        pixels = torch.stack([halves.decode(image) for image in images])
        assert pixels.dtype == torch.uint8 and pixels.shape == (4, 3, 64, 32)
        assert torch.equal(halves.finish(pixels), torch.stack([reference(image) for image in images]))


def test_tone_curve_maps_luminance_through_random_knots():
    image = torch.zeros(3, 4, 4)
    image[:, :2] = 1.0  # top half white (luminance 0.9999), bottom half black
    image[0, 3, 3] = 0.5  # one reddish pixel: luminance 0.5 * 0.2989
    curve = RandomToneCurve(p=1.0, knots=4)
    random.seed(0)
    random.random()  # the p draw
    levels = [random.random() for _ in range(5)]
    random.seed(0)
    out = curve(image)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # one channel, replicated
    assert torch.allclose(out[0, 0, 0], torch.tensor(levels[4]), atol=1e-3) and torch.allclose(out[0, 2, 0], torch.tensor(levels[0]))
    x = 0.5 * 0.2989 * 4  # between knots 0 and 1: linear interpolation
    assert torch.allclose(out[0, 3, 3], torch.tensor(levels[0] + x * (levels[1] - levels[0])), atol=1e-6)
    assert torch.equal(RandomToneCurve(p=0.0)(image), image)


def test_crop_padding_scales_with_the_image_height():
    assert crop_padding(288) == 10 and crop_padding(64) == 2 and crop_padding(16) == 1
    pads = [t for t in build_transform("visible", None, 64, 32).transforms if type(t).__name__ == "Pad"]
    assert pads[0].padding == 2
