"""Readers of the official dataset layouts, each returning one manifest (pyarrow Table).

Columns: ``path`` (absolute), ``pid``, ``camid``, ``modality`` (0 visible, 1 infrared), ``split``
(``train``, ``val``, ``test``), ``index`` (row number). Bad input raises :class:`UserError` with one line
naming the path and what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from .. import INFRARED, VISIBLE
from ..errors import UserError

SYSU_VISIBLE_CAMS = (1, 2, 4, 5)
SYSU_INFRARED_CAMS = (3, 6)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SCHEMA = pa.schema([("path", pa.string()), ("pid", pa.int64()), ("camid", pa.int32()), ("modality", pa.int8()),
                    ("split", pa.string()), ("index", pa.int64())])


def make_table(rows: list[tuple[str, int, int, int, str]]) -> pa.Table:
    """Manifest from ``(path, pid, camid, modality, split)`` rows, numbered in order."""
    columns = list(zip(*rows)) if rows else [[]] * 5
    return pa.Table.from_arrays(
        [pa.array(columns[0], pa.string()), pa.array(columns[1], pa.int64()), pa.array(columns[2], pa.int32()),
         pa.array(columns[3], pa.int8()), pa.array(columns[4], pa.string()), pa.array(range(len(rows)), pa.int64())],
        schema=SCHEMA)


def _require_root(root: Path) -> Path:
    if not root.is_dir():
        raise UserError(f"{root}: dataset root does not exist or is not a folder")
    return root.resolve()


def read_id_list(path: Path) -> list[int]:
    """A SYSU ``exp/*_id.txt``: comma-separated identity numbers (empty allowed)."""
    if not path.is_file():
        raise UserError(f"{path}: split file is missing")
    text = path.read_text().strip()
    try:
        return [int(token) for token in text.replace("\n", ",").split(",") if token.strip()]
    except ValueError:
        raise UserError(f"{path}: expected comma-separated identity numbers") from None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_sysu(root: str | Path) -> pa.Table:
    """SYSU-MM01 (``camX/NNNN/*.jpg`` + ``exp/{train,val,test}_id.txt``); every id's images in every camera."""
    root = _require_root(Path(root))
    splits = {name: read_id_list(root / "exp" / f"{name}_id.txt") for name in ("train", "val", "test")}
    rows = []
    for split, ids in splits.items():
        for pid in ids:
            found = False
            for cam in SYSU_VISIBLE_CAMS + SYSU_INFRARED_CAMS:
                folder = root / f"cam{cam}" / f"{pid:04d}"
                if not folder.is_dir():
                    continue
                images = _images(folder)
                if not images:
                    raise UserError(f"{folder}: identity folder holds no images")
                found = True
                modality = INFRARED if cam in SYSU_INFRARED_CAMS else VISIBLE
                rows.extend((str(p), pid, cam, modality, split) for p in images)
            if not found:
                raise UserError(f"{root}: identity {pid} of exp/{split}_id.txt has no folder in any camera")
    table = make_table(rows)
    check_modalities(table, root)
    return table


def _read_list(path: Path, root: Path) -> list[tuple[str, int]]:
    """Lines ``relative/path label`` of a RegDB/LLCM index file."""
    if not path.is_file():
        raise UserError(f"{path}: split file is missing")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
            raise UserError(f"{path}:{number}: malformed line {line.strip()!r}; expected 'relative/path label'")
        entries.append((str((root / parts[0]).resolve()), int(parts[1])))
    return entries


def read_regdb(root: str | Path, trial: int = 1) -> pa.Table:
    """RegDB trial ``trial`` (1–10): ``idx/{train,test}_{visible,thermal}_{trial}.txt``.

    RegDB has one camera per modality: ``camid`` is 1 for visible and 2 for thermal.
    """
    root = _require_root(Path(root))
    if not 1 <= trial <= 10:
        raise UserError(f"regdb trial {trial}: must be between 1 and 10")
    rows = []
    for split in ("train", "test"):
        for name, modality, cam in (("visible", VISIBLE, 1), ("thermal", INFRARED, 2)):
            for path, label in _read_list(root / "idx" / f"{split}_{name}_{trial}.txt", root):
                rows.append((path, label, cam, modality, split))
    table = make_table(rows)
    check_modalities(table, root)
    return table


LLCM_CAMERA = re.compile(r"_c(\d+)_")


def read_llcm(root: str | Path) -> pa.Table:
    """LLCM: ``idx/{train,test}_{vis,nir}.txt`` lists; the camera comes from the file name (``..._c01_...``)."""
    root = _require_root(Path(root))
    rows = []
    for split in ("train", "test"):
        for name, modality in (("vis", VISIBLE), ("nir", INFRARED)):
            list_path = root / "idx" / f"{split}_{name}.txt"
            for path, label in _read_list(list_path, root):
                match = LLCM_CAMERA.search(Path(path).name)
                if match is None:
                    raise UserError(f"{list_path}: cannot read the camera from file name {Path(path).name!r}")
                rows.append((path, label, int(match.group(1)), modality, split))
    table = make_table(rows)
    check_modalities(table, root)
    return table


def check_modalities(table: pa.Table, root: Path) -> None:
    """Every split present must hold images of both modalities."""
    modality, split = table["modality"].to_pylist(), table["split"].to_pylist()
    training = {m for m, s in zip(modality, split) if s in ("train", "val")}
    for m, name in ((VISIBLE, "visible"), (INFRARED, "infrared")):
        if m not in training:
            raise UserError(f"{root}: the training split has zero {name} images")
