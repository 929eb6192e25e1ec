"""The hand-crafted prior: gradient-orientation histograms, and blending them into the relabelled features."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.errors import UserError
from raytrain_vireid.pseudo.descriptors import HOG_BINS, _sobel, cross_modality_neighbours, gradient_histograms, hog
from raytrain_vireid.pseudo.engine import RelabelPlan, relabel, with_prior


def step_image(axis: int, height: int = 16, width: int = 8, channel: int = 0) -> np.ndarray:
    """One (H, W, 3) image, dark then bright along ``axis`` (0: rows, 1: columns), in one colour channel."""
    img = np.zeros((height, width, 3), dtype=np.float32)
    if axis == 0:
        img[height // 2 :, :, channel] = 1.0
    else:
        img[:, width // 2 :, channel] = 1.0
    return img


def test_sobel_matches_scipy_per_image_and_channel():
    images = np.random.default_rng(0).random((3, 9, 7, 3), dtype=np.float32)
    gx, gy = _sobel(images)
    for i in range(3):
        for c in range(3):
            np.testing.assert_allclose(gx[i, ..., c], ndimage.sobel(images[i, ..., c], axis=1, mode="reflect"), atol=1e-5)
            np.testing.assert_allclose(gy[i, ..., c], ndimage.sobel(images[i, ..., c], axis=0, mode="reflect"), atol=1e-5)


def test_orientation_bins_ignore_polarity_and_colour():
    vertical_edge, horizontal_edge = step_image(axis=1), step_image(axis=0)
    out = gradient_histograms(np.stack([vertical_edge, horizontal_edge]), cell=4).reshape(2, 4, 2, HOG_BINS)
    # a vertical edge has a horizontal gradient (orientation 0), a horizontal edge a vertical one (pi/2 -> bin 4)
    assert out[0].sum(axis=(0, 1)).argmax() == 0 and np.count_nonzero(out[0].sum(axis=(0, 1))) == 1
    assert out[1].sum(axis=(0, 1)).argmax() == HOG_BINS // 2 and np.count_nonzero(out[1].sum(axis=(0, 1))) == 1
    # reversed contrast (bright then dark) and another colour channel give the same descriptor
    same = gradient_histograms(np.stack([vertical_edge, 1.0 - vertical_edge, step_image(axis=1, channel=2)]), cell=4)
    np.testing.assert_allclose(same[1], same[0], atol=1e-6)
    np.testing.assert_allclose(same[2], same[0], atol=1e-6)
    # the edge lies in the cells that hold it, nowhere else
    assert out[0][:, 0].sum() > 0 and out[0][:, 1].sum() > 0
    assert out[1][[0, 3]].sum() == 0 and out[1][[1, 2]].sum() > 0


def test_shape_normalisation_and_cell_rule():
    images = np.random.default_rng(1).random((5, 64, 32, 3), dtype=np.float32)
    out = hog(images)
    assert out.shape == (5, 16 * 8 * HOG_BINS) and out.dtype == np.float32  # 4-pixel cells at 64 pixels
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert hog(np.random.default_rng(2).random((2, 128, 64, 3), dtype=np.float32)).shape == (2, 16 * 8 * HOG_BINS)
    # pixels beyond whole cells are dropped
    assert gradient_histograms(images[:, :30, :30], cell=4).shape == (5, 7 * 7 * HOG_BINS)
    with pytest.raises(ValueError, match="must be"):
        gradient_histograms(images[0], cell=4)
    with pytest.raises(ValueError, match="does not fit"):
        gradient_histograms(images[:, :3], cell=4)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_with_prior_blends_squared_distances():
    rng = np.random.default_rng(3)
    net, prior = unit(rng.standard_normal((20, 6))), unit(rng.standard_normal((20, 4)))
    assert with_prior(net, None, 0.0) is net
    blended = with_prior(net, 3.0 * prior, 0.3)  # the prior is re-normalised
    assert blended.dtype == np.float32  # not widened to float64 by the weights
    np.testing.assert_allclose(np.linalg.norm(blended, axis=1), 1.0, rtol=1e-5)

    def sq(x):
        return ((x[:, None] - x[None]) ** 2).sum(-1)

    np.testing.assert_allclose(sq(blended), 0.7 * sq(net) + 0.3 * sq(prior), atol=1e-5)
    with pytest.raises(UserError, match="pseudo.prior: needs a prior descriptor of all 20 rows, got none"):
        with_prior(net, None, 0.5)
    with pytest.raises(UserError, match="got 19 rows"):
        with_prior(net, prior[:19], 0.5)


def test_relabel_follows_the_prior_by_its_weight():
    """Network features that are noise and a prior that holds the identities: w = 1 clusters by the prior, w = 0
    by the noise; the prior also carries the association."""
    rng = np.random.default_rng(4)
    ids, per = 6, 10
    pids = np.tile(np.repeat(np.arange(ids), per), 2)
    modality = np.repeat(np.array([VISIBLE, INFRARED], dtype=np.int8), ids * per)
    noise = {"global": unit(rng.standard_normal((len(pids), 32)))}
    prior = unit(rng.standard_normal((ids, 16))[pids] * 3 + 0.3 * rng.standard_normal((len(pids), 16)))
    plan = dict(k1=8, k2=3, eps=0.6, min_samples=4, backend="cpu", association="hungarian")
    by_prior = relabel(noise, modality, RelabelPlan(prior_weight=1.0, **plan), true_pids=pids, prior=prior)
    assert by_prior.metrics["ari_visible"] > 0.95 and by_prior.metrics["ari_infrared"] > 0.95
    assert by_prior.metrics["assoc_acc_v2r"] == 1.0
    assert by_prior.metrics["knn_precision_cross"] == 1.0
    by_network = relabel(noise, modality, RelabelPlan(prior_weight=0.0, **plan), true_pids=pids, prior=prior)
    assert by_network.metrics["ari_visible"] < 0.2
    with pytest.raises(UserError, match="prior_weight: must be in"):
        relabel(noise, modality, RelabelPlan(prior_weight=1.5, **plan), prior=prior)


def test_cross_modality_neighbours_are_other_modality_positions():
    # rows 0, 2, 3 visible; 1, 4 infrared; the prior puts row 0 next to 4, rows 2 and 3 next to 1
    modality = np.array([VISIBLE, INFRARED, VISIBLE, VISIBLE, INFRARED], dtype=np.int8)
    prior = unit(np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0.05], [0.3, 1, 0], [1, 0.1, 0]], dtype=np.float32))
    out = cross_modality_neighbours(prior, modality, k=1)
    # positions among the other modality's rows: infrared rows (1, 4) are positions (0, 1), visible (0, 2, 3) (0, 1, 2)
    np.testing.assert_array_equal(out[:, 0], [1, 1, 0, 0, 0])
    both = cross_modality_neighbours(prior, modality, k=2)
    assert both.shape == (5, 2) and (both[[1, 4]] < 3).all() and (both[[0, 2, 3]] < 2).all()
    assert sorted(both[0]) == [0, 1]
