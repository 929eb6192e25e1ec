"""The hand-written parts of ``benchmarks/feature_shortcuts.py``: region colours and the pair sets."""

import numpy as np
from PIL import Image


def test_region_colours_separate_the_border_columns_from_the_torso(tmp_path, benchmark_script):
    shortcuts = benchmark_script("feature_shortcuts")
    image = np.zeros((64, 32, 3), dtype=np.uint8)  # already at the script's 32×64
    image[:, :4] = (255, 0, 0)  # the 4 outermost columns, left
    image[:, -4:] = (0, 0, 255)  # and right
    image[16:48, 10:22] = (0, 255, 0)  # the torso box: rows 16–47, columns 10–21
    path = tmp_path / "person.png"
    Image.fromarray(image).save(path)
    border, centre = shortcuts.region_colours([str(path)])
    np.testing.assert_allclose(border[0], [0.5, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(centre[0], [0.0, 1.0, 0.0], atol=1e-6)


def test_same_identity_pairs_are_every_ordered_pair_within_an_identity_and_nothing_else(benchmark_script):
    shortcuts = benchmark_script("feature_shortcuts")
    pids = np.array([7, 3, 7, 7, 3, 9])
    left, right = shortcuts.same_identity_pairs(pids)
    pairs = set(zip(left.tolist(), right.tolist()))
    expected = {(i, j) for i in range(6) for j in range(6) if i != j and pids[i] == pids[j]}
    assert pairs == expected and len(left) == len(expected) == 8


def test_mean_distance_averages_the_euclidean_distance_of_the_given_pairs(benchmark_script):
    shortcuts = benchmark_script("feature_shortcuts")
    values = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    assert shortcuts.mean_distance(values, np.array([0, 0]), np.array([1, 2])) == 3.0
