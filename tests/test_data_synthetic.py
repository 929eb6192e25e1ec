"""The synthetic persons: deterministic, SYSU layout, colour that does not carry across modalities."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from raytrain_vireid.data import ensure_synthetic, generate, read_sysu
from raytrain_vireid.data.synthetic import GENERATOR_VERSION, _identity, split_ids
from raytrain_vireid.errors import UserError


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("a") / "synth", ids=6, seed=3, images_per_cam=2, height=32, width=16,
                    processes=1)


def test_tree_loads_with_the_sysu_reader(tree):
    table = read_sysu(tree)
    assert table.num_rows == 6 * 6 * 2
    splits = split_ids(6, 3)
    assert sorted(sum(splits.values(), [])) == list(range(1, 7))
    assert set(table.filter(table["split"].to_numpy() == "test")["pid"].to_pylist()) == set(splits["test"])
    with Image.open(tree / "cam3" / "0001" / "0001.jpg") as ir, Image.open(tree / "cam1" / "0001" / "0001.jpg") as vis:
        assert ir.size == vis.size == (16, 32)
        ir_arr = np.asarray(ir.convert("RGB")).astype(int)
        assert np.abs(ir_arr[..., 0] - ir_arr[..., 1]).max() <= 8  # single channel (JPEG chroma noise aside)
        vis_arr = np.asarray(vis.convert("RGB")).astype(int)
        assert np.abs(vis_arr[..., 0] - vis_arr[..., 1]).max() > 30  # colour


def test_same_seed_same_bytes_other_seed_differs(tree, tmp_path):
    again = generate(tmp_path / "b", ids=6, seed=3, images_per_cam=2, height=32, width=16, processes=2)
    other = generate(tmp_path / "c", ids=6, seed=4, images_per_cam=2, height=32, width=16, processes=1)
    name = "cam4/0002/0002.jpg"
    assert (again / name).read_bytes() == (tree / name).read_bytes()
    assert (other / name).read_bytes() != (tree / name).read_bytes()


def test_split_fractions_and_bad_test_fraction(tmp_path):
    splits = split_ids(30, 0, test_fraction=0.5)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [13, 2, 15]
    assert sorted(sum(splits.values(), [])) == list(range(1, 31))
    assert len(split_ids(3, 0, test_fraction=0.9)["train"]) == 1  # never an empty training side
    with pytest.raises(UserError, match="--test-fraction: must be strictly between 0 and 1"):
        generate(tmp_path / "x", ids=3, test_fraction=1.0)


def test_infrared_emissivity_is_drawn_independently_of_hue():
    upper = np.array([_identity(0, pid)["upper"] for pid in range(1, 400)])
    heat = np.array([_identity(0, pid)["heat"]["upper"] for pid in range(1, 400)])
    brightness = upper.mean(axis=1)
    assert abs(np.corrcoef(brightness, heat)[0, 1]) < 0.15


def test_ensure_synthetic_reuses_a_complete_tree_and_refuses_bad_parameters(tmp_path):
    older = tmp_path / "synthetic" / "ids3-img1-32x16-seed0"  # a tree of an earlier generator is not reused
    (older / "cam1").mkdir(parents=True)
    (older / ".complete").write_text("")
    stale = tmp_path / "synthetic" / f"v{GENERATOR_VERSION}-ids3-img1-32x16-seed0"
    (stale / "cam1").mkdir(parents=True)  # an incomplete tree (no marker) is regenerated
    first = ensure_synthetic(tmp_path, ids=3, images_per_cam=1, height=32, width=16)
    assert first == stale and read_sysu(first).num_rows == 18
    stamp = (first / ".complete").stat().st_mtime_ns
    assert ensure_synthetic(tmp_path, ids=3, images_per_cam=1, height=32, width=16) == first
    assert (first / ".complete").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="unknown parameter colour"):
        ensure_synthetic(tmp_path, colour=1)
    with pytest.raises(UserError, match="exists and is not empty"):
        generate(first, ids=3)


def test_cli_writes_a_tree_and_refuses_a_non_empty_folder(tmp_path):
    command = [sys.executable, "-m", "raytrain_vireid.data.synthetic", "--out", str(tmp_path / "t"), "--ids", "3",
               "--images-per-cam", "1", "--height", "32", "--width", "16"]
    ok = subprocess.run(command, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stderr == "" and "3 identities (train 1, val 1, test 1)" in ok.stdout
    assert read_sysu(tmp_path / "t").num_rows == 18
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip() == f"error: {tmp_path / 't'}: exists and is not empty; choose an empty or new folder"
    bad_flag = subprocess.run([*command[:3], "--ids", "many"], capture_output=True, text=True)
    assert bad_flag.returncode == 2 and len(bad_flag.stderr.strip().splitlines()) == 1
    assert "--ids" in bad_flag.stderr and "Traceback" not in bad_flag.stderr
