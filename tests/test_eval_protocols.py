"""Protocol lists and random draws on generated dataset trees (empty files; protocols only list names)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.errors import UserError
from raytrain_vireid.eval import protocols


def touch(root, rel_dir, names):
    folder = root / rel_dir
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


@pytest.fixture()
def sysu(tmp_path):
    """Test ids 12 and 3 (unsorted in the file); id 3 has no cam5 folder; id 12 has no cam2 folder."""
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "test_id.txt").write_text("12,3\n")
    touch(tmp_path, "cam1/0003", ["0003.jpg", "0001.jpg", "0002.jpg"])
    touch(tmp_path, "cam2/0003", ["0005.jpg", "0004.jpg"])
    touch(tmp_path, "cam4/0003", ["0001.jpg", "0002.jpg", "0003.jpg", "0004.jpg"])
    touch(tmp_path, "cam1/0012", ["0010.jpg", "0011.jpg"])
    touch(tmp_path, "cam4/0012", ["0007.jpg"])
    touch(tmp_path, "cam5/0012", ["0001.jpg", "0002.jpg", "0003.jpg"])
    touch(tmp_path, "cam3/0003", ["0002.jpg", "0001.jpg"])
    touch(tmp_path, "cam6/0012", ["0001.jpg"])
    touch(tmp_path, "cam3/0099", ["0001.jpg"])  # not a test id
    return tmp_path


def rel(table, root):
    return [os.path.relpath(p, root) for p in table["path"].to_pylist()]


def test_sysu_query_lists_all_infrared_test_images(sysu):
    table = protocols.sysu_query(str(sysu), "all")
    assert rel(table, sysu) == ["cam3/0003/0001.jpg", "cam3/0003/0002.jpg", "cam6/0012/0001.jpg"]
    assert table["pid"].to_pylist() == [3, 3, 12]
    assert table["camid"].to_pylist() == [3, 3, 6]
    assert set(table["modality"].to_pylist()) == {INFRARED}
    assert rel(protocols.sysu_query(str(sysu), "indoor"), sysu) == rel(table, sysu)


def test_sysu_single_shot_matches_global_random_sequence(sysu):
    # Worked from the rule: ids in sorted order (0003, 0012), cameras 1,2,4,5, existing folders only,
    # one random.choice each over the sorted names, one stream seeded with the trial.
    for trial in (0, 3):
        random.seed(trial)
        expected = [
            "cam1/0003/" + random.choice(["0001.jpg", "0002.jpg", "0003.jpg"]),
            "cam2/0003/" + random.choice(["0004.jpg", "0005.jpg"]),
            "cam4/0003/" + random.choice(["0001.jpg", "0002.jpg", "0003.jpg", "0004.jpg"]),
            # (no cam5/0003: draws nothing)
            "cam1/0012/" + random.choice(["0010.jpg", "0011.jpg"]),
            # (no cam2/0012)
            "cam4/0012/" + random.choice(["0007.jpg"]),
            "cam5/0012/" + random.choice(["0001.jpg", "0002.jpg", "0003.jpg"]),
        ]
        table = protocols.sysu_gallery(str(sysu), "all", trial)
        assert rel(table, sysu) == expected
        assert table["pid"].to_pylist() == [3, 3, 3, 12, 12, 12]
        assert table["camid"].to_pylist() == [1, 2, 4, 1, 4, 5]
        assert set(table["modality"].to_pylist()) == {VISIBLE}


def test_sysu_indoor_uses_cameras_1_and_2(sysu):
    random.seed(0)
    expected = ["cam1/0003/" + random.choice(["0001.jpg", "0002.jpg", "0003.jpg"]),
                "cam2/0003/" + random.choice(["0004.jpg", "0005.jpg"]),
                "cam1/0012/" + random.choice(["0010.jpg", "0011.jpg"])]
    assert rel(protocols.sysu_gallery(str(sysu), "indoor", 0), sysu) == expected


def test_private_stream_equals_module_stream():
    names = [f"{i:04d}.jpg" for i in range(17)]
    random.seed(5)
    module = [random.choice(names[: 1 + i % 17]) for i in range(200)]
    local = random.Random(5)
    assert [local.choice(names[: 1 + i % 17]) for i in range(200)] == module


def test_sysu_multi_shot_draws_ten_or_all(sysu):
    (sysu / "cam1" / "0003").joinpath("x").write_bytes(b"")
    for i in range(12):
        (sysu / "cam4" / "0012" / f"{i + 20:04d}.jpg").write_bytes(b"")
    table = protocols.sysu_gallery(str(sysu), "all", 1, shots=10)
    paths = rel(table, sysu)
    stream = np.random.RandomState(1)
    expected = []
    for folder in ["cam1/0003", "cam2/0003", "cam4/0003", "cam1/0012", "cam4/0012", "cam5/0012"]:
        names = sorted(os.listdir(sysu / folder))
        expected += [f"{folder}/{n}" for n in stream.choice(names, min(10, len(names)), replace=False)]
    assert paths == expected
    assert sum(p.startswith("cam4/0012/") for p in paths) == 10
    assert sum(p.startswith("cam1/0003/") for p in paths) == 4


def test_sysu_missing_files_and_bad_arguments(sysu):
    empty = sysu / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="exp/test_id.txt: test identity file not found"):
        protocols.sysu_query(str(empty), "all")
    with pytest.raises(UserError, match="nowhere: dataset root is not a directory"):
        protocols.sysu_gallery(str(sysu / "nowhere"), "all", 0)
    with pytest.raises(UserError, match="mode: 'outdoor'"):
        protocols.sysu_gallery(str(sysu), "outdoor", 0)
    with pytest.raises(UserError, match="shots: 3"):
        protocols.sysu_gallery(str(sysu), "all", 0, shots=3)
    (sysu / "cam2" / "0012").mkdir()
    with pytest.raises(UserError, match="cam2/0012: empty image folder"):
        protocols.sysu_gallery(str(sysu), "all", 0)
    (sysu / "exp" / "test_id.txt").write_text("a,b\n")
    with pytest.raises(UserError, match="comma-separated"):
        protocols.sysu_query(str(sysu), "all")


def test_regdb_sets_directions(tmp_path):
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "test_visible_2.txt").write_text("Visible/1/a.bmp 0\nVisible/2/b.bmp 1\n")
    (tmp_path / "idx" / "test_thermal_2.txt").write_text("Thermal/1/c.bmp 0\n")
    query, gallery = protocols.regdb_sets(str(tmp_path), 2, "v2t")
    assert rel(query, tmp_path) == ["Visible/1/a.bmp", "Visible/2/b.bmp"]
    assert query["pid"].to_pylist() == [0, 1] and set(query["modality"].to_pylist()) == {VISIBLE}
    assert rel(gallery, tmp_path) == ["Thermal/1/c.bmp"] and gallery["modality"].to_pylist() == [INFRARED]
    query, gallery = protocols.regdb_sets(str(tmp_path), 2, "t2v")
    assert rel(query, tmp_path) == ["Thermal/1/c.bmp"]
    with pytest.raises(UserError, match="test_visible_3.txt: RegDB test list not found"):
        protocols.regdb_sets(str(tmp_path), 3, "v2t")
    with pytest.raises(UserError, match="direction: 'x2y'"):
        protocols.regdb_sets(str(tmp_path), 2, "x2y")


def test_llcm_sets(tmp_path):
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "test_id.txt").write_text("7\n")
    touch(tmp_path, "test_vis/cam1/0007", ["0007_c01_s1_a.jpg", "0007_c01_s1_b.jpg"])
    touch(tmp_path, "test_vis/cam3/0007", ["0007_c03_s1_a.jpg"])
    touch(tmp_path, "test_nir/cam3/0007", ["ignored.jpg"])  # nir has no camera 3 in the protocol
    touch(tmp_path, "test_nir/cam2/0007", ["0007_c02_x.jpg", "0007_c02_y.jpg", "0007_c02_z.jpg"])
    touch(tmp_path, "test_nir/cam9/0007", ["0007_c09_x.jpg"])
    query, gallery = protocols.llcm_sets(str(tmp_path), "v2t", 4)
    assert rel(query, tmp_path) == ["test_vis/cam1/0007/0007_c01_s1_a.jpg", "test_vis/cam1/0007/0007_c01_s1_b.jpg",
                                    "test_vis/cam3/0007/0007_c03_s1_a.jpg"]
    assert query["camid"].to_pylist() == [1, 1, 3]
    random.seed(4)
    expected = ["test_nir/cam2/0007/" + random.choice(["0007_c02_x.jpg", "0007_c02_y.jpg", "0007_c02_z.jpg"]),
                "test_nir/cam9/0007/" + random.choice(["0007_c09_x.jpg"])]
    assert rel(gallery, tmp_path) == expected
    assert gallery["camid"].to_pylist() == [2, 9] and set(gallery["modality"].to_pylist()) == {INFRARED}
    query, gallery = protocols.llcm_sets(str(tmp_path), "t2v", 0)
    assert len(query) == 4 and len(gallery) == 2
