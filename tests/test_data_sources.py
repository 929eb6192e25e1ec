"""Readers of the official layouts on generated trees, the manifest cache, and every bad input."""

import os
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image

from raytrain_vireid.data import (carve_validation, load_manifest, parse_data_spec, read_llcm, read_regdb, read_sysu,
                                  test_table, train_table)
from raytrain_vireid.data.images import verify_images
from raytrain_vireid.errors import UserError


def _jpg(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 8, 3), value, np.uint8)).save(path)


def make_sysu(root, train=(1, 2), val=(3,), test=(4,), per_cam=2):
    for pid in (*train, *val, *test):
        for cam in range(1, 7):
            for k in range(per_cam):
                _jpg(root / f"cam{cam}" / f"{pid:04d}" / f"{k + 1:04d}.jpg")
    (root / "exp").mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", train), ("val", val), ("test", test)):
        (root / "exp" / f"{name}_id.txt").write_text(",".join(map(str, ids)))
    return root


def make_regdb(root, trial=1):
    for split, ids in (("train", (0, 1)), ("test", (2,))):
        for name, folder in (("visible", "Visible"), ("thermal", "Thermal")):
            lines = []
            for pid in ids:
                rel = f"{folder}/{pid}/img_{pid}.bmp"
                _jpg(root / rel)
                lines.append(f"{rel} {pid}")
            (root / "idx").mkdir(parents=True, exist_ok=True)
            (root / "idx" / f"{split}_{name}_{trial}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_llcm(root):
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for split, ids in (("train", (1, 2)), ("test", (3,))):
        for name in ("vis", "nir"):
            lines = []
            for pid in ids:
                rel = f"{name}/{pid:04d}/{pid:04d}_c0{2 if name == 'vis' else 5}_s1_f1_{name}.jpg"
                _jpg(root / rel)
                lines.append(f"{rel} {pid}")
            (root / "idx" / f"{split}_{name}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_sysu_reader_columns_cameras_and_splits(tmp_path):
    table = read_sysu(make_sysu(tmp_path / "SYSU"))
    assert table.column_names == ["path", "pid", "camid", "modality", "split", "index"]
    assert table.num_rows == 4 * 6 * 2
    rows = table.to_pylist()
    assert all(r["modality"] == (1 if r["camid"] in (3, 6) else 0) for r in rows)
    assert {r["split"] for r in rows if r["pid"] == 3} == {"val"}
    assert table["index"].to_pylist() == list(range(table.num_rows))
    train = train_table(table)
    assert set(train["pid"].to_pylist()) == {1, 2, 3} and train["index"].to_pylist() == list(range(train.num_rows))
    assert set(test_table(table)["pid"].to_pylist()) == {4}


def test_regdb_and_llcm_readers(tmp_path):
    regdb = read_regdb(make_regdb(tmp_path / "RegDB", trial=3), trial=3)
    assert regdb.num_rows == 6 and set(regdb["camid"].to_pylist()) == {1, 2}
    assert set(regdb.filter(pc.equal(regdb["split"], "test"))["pid"].to_pylist()) == {2}
    llcm = read_llcm(make_llcm(tmp_path / "LLCM"))
    assert llcm.num_rows == 6
    assert {(r["modality"], r["camid"]) for r in llcm.to_pylist()} == {(0, 2), (1, 5)}


@pytest.mark.parametrize(
    "break_tree, message",
    [
        (lambda root: (root / "exp" / "val_id.txt").unlink(), "val_id.txt: split file is missing"),
        (lambda root: (root / "exp" / "train_id.txt").write_text("1,x"), "expected comma-separated identity numbers"),
        (lambda root: [p.unlink() for p in (root / "cam1" / "0001").iterdir()], "cam1/0001: identity folder holds no images"),
        (lambda root: [p.unlink() for c in (3, 6) for pid in (1, 2, 3) for p in (root / f"cam{c}" / f"{pid:04d}").iterdir()]
         and [(root / f"cam{c}" / f"{pid:04d}").rmdir() for c in (3, 6) for pid in (1, 2, 3)],
         "training split has zero infrared images"),
    ],
)
def test_sysu_bad_inputs_name_the_path(tmp_path, break_tree, message):
    root = make_sysu(tmp_path / "SYSU")
    break_tree(root)
    with pytest.raises(UserError, match=message):
        read_sysu(root)


def test_malformed_index_line_names_file_and_line(tmp_path):
    root = make_regdb(tmp_path / "RegDB")
    (root / "idx" / "train_thermal_1.txt").write_text("Thermal/0/img_0.bmp 0\nbroken-line\n")
    with pytest.raises(UserError, match=r"train_thermal_1.txt:2: malformed line"):
        read_regdb(root, 1)


def test_data_specs():
    assert parse_data_spec("regdb:/d/RegDB:4").trial == 4
    assert parse_data_spec("regdb:/d/RegDB").trial == 1
    assert parse_data_spec("sysu:/d/SYSU").root.name == "SYSU"
    for bad, message in (("imagenet:/x", "unknown dataset kind"), ("sysu", "needs a path"), ("regdb:/x:11", "between 1 and 10")):
        with pytest.raises(UserError, match=message):
            parse_data_spec(bad)


def test_manifest_cache_is_reused_and_invalidated(tmp_path):
    root = make_sysu(tmp_path / "SYSU")
    first = load_manifest(f"sysu:{root}")
    cache = root / ".raytrain_vireid" / "manifest-sysu.parquet"
    stamp = cache.stat().st_mtime_ns
    assert load_manifest(f"sysu:{root}").equals(first) and cache.stat().st_mtime_ns == stamp
    _jpg(root / "cam1" / "0001" / "0009.jpg")  # a new image changes the folder's mtime
    os.utime(root / "cam1" / "0001", ns=(stamp + 10**9, stamp + 10**9))
    assert load_manifest(f"sysu:{root}").num_rows == first.num_rows + 1


def test_truncated_image_is_found_by_verify(tmp_path):
    root = make_sysu(tmp_path / "SYSU")
    bad = root / "cam2" / "0001" / "0001.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    table = load_manifest(f"sysu:{root}")
    with pytest.raises(UserError, match="0001.jpg: unreadable or truncated image"):
        verify_images(table, "error")
    with pytest.warns(UserWarning, match="skipped"):
        kept = verify_images(table, "skip")
    assert kept.num_rows == table.num_rows - 1 and str(bad) not in kept["path"].to_pylist()


def test_carve_validation_splits_identities(tmp_path):
    train = train_table(read_sysu(make_sysu(tmp_path / "SYSU", train=tuple(range(1, 10)), val=(10,), test=(11,))))
    kept, val = carve_validation(train, 0.3, seed=1)
    assert not set(kept["pid"].to_pylist()) & set(val["pid"].to_pylist())
    assert len(set(val["pid"].to_pylist())) == 3 and kept.num_rows + val.num_rows == train.num_rows
    assert val["index"].to_pylist() == list(range(val.num_rows))


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "raytrain_vireid.data", f"sysu:{tmp_path / 'missing'}"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: dataset root does not exist or is not a folder"]
    root = make_sysu(tmp_path / "SYSU")
    ok = subprocess.run([sys.executable, "-m", "raytrain_vireid.data", f"sysu:{root}", "--verify"], capture_output=True, text=True)
    assert ok.returncode == 0 and "48 images" in ok.stdout
