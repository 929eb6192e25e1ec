"""Test protocols of SYSU-MM01, RegDB and LLCM as pyarrow Tables (``path, pid, camid, modality``).

The lists and random draws reproduce the field's reference ``process_query_sysu`` /
``process_gallery_sysu`` / ``process_test_regdb`` / ``process_query_llcm`` /
``process_gallery_llcm`` exactly: identities from the test-id file, zero-padded to 4 digits and
visited in sorted (string) order, cameras in the listed order, a missing folder skipped, every
entry of a folder listed (as the reference's ``os.listdir``) in sorted order. Single-shot
galleries draw one ``random.choice`` per existing (identity, camera) folder from one stream seeded
with the trial (a private ``random.Random(trial)``: the same Mersenne Twister stream as the
reference's ``random.seed(trial)`` + module-level ``random.choice``, without touching global state).
An existing but empty folder is a ``UserError`` (the reference fails with a bare ``IndexError``).

Multi-shot SYSU galleries: the reference draws ``np.random.choice(files, 10, replace=False)`` from
the *unseeded* global NumPy stream (so its galleries are not reproducible) and fails on folders
with fewer than 10 images. Here the stream is ``np.random.RandomState(trial)`` (identical to calling
``np.random.seed(trial)`` right before the reference) and a folder with fewer than 10 images gives
all of them (in the order drawn). The original MATLAB protocol uses ``exp/rand_perm_cam.mat``
instead; it is not reproduced.

Arrays in, arrays out: no torch, no Ray.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pyarrow as pa

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.errors import UserError

SYSU_MODES = ("all", "indoor")
SYSU_TRIALS = tuple(range(10))
SYSU_QUERY_CAMERAS = (3, 6)
SYSU_GALLERY_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
SYSU_MULTI_SHOTS = 10
SYSU_IDS = os.path.join("exp", "test_id.txt")

DIRECTIONS = ("v2t", "t2v")  # visible query -> thermal/infrared gallery, and the reverse
REGDB_CAMERA = {VISIBLE: 1, INFRARED: 2}  # RegDB has one camera per modality (as the reference's eval)

LLCM_TRIALS = tuple(range(10))
LLCM_IDS = os.path.join("idx", "test_id.txt")
LLCM_CAMERAS = {VISIBLE: ("test_vis", (1, 2, 3, 4, 5, 6, 7, 8, 9)), INFRARED: ("test_nir", (1, 2, 4, 5, 6, 7, 8, 9))}

SCHEMA = pa.schema([("path", pa.string()), ("pid", pa.int64()), ("camid", pa.int32()), ("modality", pa.int8())])


def sysu_query(root: str, mode: str = "all") -> pa.Table:
    """SYSU-MM01 query: every infrared image of cameras 3 and 6 for the test identities (both modes)."""
    _check_choice("mode", mode, SYSU_MODES)
    folders = [(f"cam{cam}", cam, INFRARED) for cam in SYSU_QUERY_CAMERAS]
    return _walk(root, SYSU_IDS, folders, _all_files)


def sysu_gallery(root: str, mode: str = "all", trial: int = 0, shots: int = 1) -> pa.Table:
    """SYSU-MM01 gallery: visible cameras 1,2,4,5 (``all``) or 1,2 (``indoor``), ``shots`` 1 or 10 per folder."""
    _check_choice("mode", mode, SYSU_MODES)
    _check_choice("shots", shots, (1, SYSU_MULTI_SHOTS))
    folders = [(f"cam{cam}", cam, VISIBLE) for cam in SYSU_GALLERY_CAMERAS[mode]]
    if shots == 1:
        pick = _single_shot(trial)
    else:
        stream = np.random.RandomState(trial)

        def pick(names: list[str]) -> list[str]:
            return [str(n) for n in stream.choice(names, min(shots, len(names)), replace=False)]

    return _walk(root, SYSU_IDS, folders, pick)


def regdb_sets(root: str, trial: int, direction: str) -> tuple[pa.Table, pa.Table]:
    """RegDB ``(query, gallery)`` of ``trial`` (1-10) from ``idx/test_{visible,thermal}_{trial}.txt``."""
    _check_choice("direction", direction, DIRECTIONS)
    visible = _regdb_list(root, "visible", trial, VISIBLE)
    thermal = _regdb_list(root, "thermal", trial, INFRARED)
    return (visible, thermal) if direction == "v2t" else (thermal, visible)


def llcm_sets(root: str, direction: str, trial: int = 0) -> tuple[pa.Table, pa.Table]:
    """LLCM ``(query, gallery)``: all query-modality test images; one random image per (id, camera) in the gallery.

    ``v2t``: visible query (``test_vis``), infrared gallery (``test_nir``); ``t2v`` the reverse.
    Trials 0-9 seed the gallery draw.
    """
    return llcm_query(root, direction), llcm_gallery(root, direction, trial)


def llcm_query(root: str, direction: str) -> pa.Table:
    """LLCM query of ``direction`` (independent of the trial)."""
    _check_choice("direction", direction, DIRECTIONS)
    return _walk(root, LLCM_IDS, _llcm_folders(VISIBLE if direction == "v2t" else INFRARED), _all_files)


def llcm_gallery(root: str, direction: str, trial: int = 0) -> pa.Table:
    """LLCM single-shot gallery of ``direction`` for ``trial``."""
    _check_choice("direction", direction, DIRECTIONS)
    return _walk(root, LLCM_IDS, _llcm_folders(INFRARED if direction == "v2t" else VISIBLE), _single_shot(trial))


def _llcm_folders(modality: int) -> list[tuple[str, int, int]]:
    base, cams = LLCM_CAMERAS[modality]
    return [(os.path.join(base, f"cam{cam}"), cam, modality) for cam in cams]


def _single_shot(trial: int):
    """One ``choice`` per folder from a stream seeded with ``trial``."""
    stream = random.Random(trial)
    return lambda names: [stream.choice(names)]


def _all_files(names: list[str]) -> list[str]:
    return names


def read_test_ids(path: str) -> list[str]:
    """Test identities of an ``exp/test_id.txt``-style file (first line, comma separated) as sorted 4-digit names."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: test identity file not found")
    with open(path) as handle:
        lines = handle.read().splitlines()
    try:
        ids = [int(value) for value in lines[0].split(",")]
    except (IndexError, ValueError):
        raise UserError(f"{path}: expected comma-separated integer identities on the first line") from None
    return sorted("%04d" % value for value in ids)


def _walk(root: str, ids_file: str, folders, pick) -> pa.Table:
    """Visit ``root/<folder>/<id>`` for each sorted test id and folder; ``pick`` selects from the sorted names."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise UserError(f"{root}: dataset root is not a directory")
    paths, pids, cams, mods = [], [], [], []
    for pid in read_test_ids(os.path.join(root, ids_file)):
        for folder, cam, modality in folders:
            image_dir = os.path.join(root, folder, pid)
            if not os.path.isdir(image_dir):
                continue
            names = sorted(os.listdir(image_dir))
            if not names:  # the reference's random.choice would fail here with a bare IndexError
                raise UserError(f"{image_dir}: empty image folder")
            chosen = pick(names)
            paths += [os.path.join(image_dir, name) for name in chosen]
            pids += [int(pid)] * len(chosen)
            cams += [cam] * len(chosen)
            mods += [modality] * len(chosen)
    return pa.table([paths, pids, cams, mods], schema=SCHEMA)


def _regdb_list(root: str, modal: str, trial: int, modality: int) -> pa.Table:
    root = os.path.abspath(root)
    path = os.path.join(root, "idx", f"test_{modal}_{trial}.txt")
    if not os.path.isfile(path):
        raise UserError(f"{path}: RegDB test list not found")
    paths, pids = [], []
    with open(path) as handle:
        for number, line in enumerate(handle.read().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split(" ")
            try:
                pids.append(int(fields[1]))
            except (IndexError, ValueError):
                raise UserError(f"{path}:{number}: expected '<relative image path> <label>'") from None
            paths.append(os.path.join(root, fields[0]))
    n = len(paths)
    return pa.table([paths, pids, [REGDB_CAMERA[modality]] * n, [modality] * n], schema=SCHEMA)


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise UserError(f"{name}: {value!r} is not one of {', '.join(map(str, allowed))}")
