"""Data specs → cached manifests, and the training / test / validation views of a manifest.

The manifest of ``ROOT`` is cached as Parquet in ``ROOT/.raytrain_vireid/`` (or, when ``ROOT`` is not
writable, in ``<cache>/manifests/<hash of ROOT>/``). The cache is reused while its key holds: the size
and modification time of every split/index file and of every camera/identity folder the reader walks
(a cheap proxy for "same files": adding or removing images changes a folder's mtime). Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import UserError
from .datasets import check_on_bad_image
from .images import verify_images
from .sources import read_llcm, read_regdb, read_sysu
from .synthetic import default_cache_dir, ensure_synthetic

KINDS = ("synthetic", "sysu", "regdb", "llcm")
TRAIN_SPLITS = ("train", "val")


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value."""

    kind: str
    root: Path | None = None
    trial: int | None = None


def parse_data_spec(spec: str) -> DataSpec:
    """``synthetic``, ``sysu:PATH``, ``regdb:PATH[:TRIAL]`` or ``llcm:PATH``."""
    kind, _, rest = str(spec).partition(":")
    if kind not in KINDS:
        raise UserError(f"--data {spec!r}: unknown dataset kind {kind!r}; expected synthetic, sysu:PATH, "
                        "regdb:PATH[:TRIAL] or llcm:PATH")
    if kind == "synthetic":
        if rest:
            raise UserError(f"--data {spec!r}: synthetic takes no path (see data.synthetic_* settings)")
        return DataSpec("synthetic")
    if not rest:
        raise UserError(f"--data {spec!r}: {kind} needs a path, e.g. {kind}:/data/{kind.upper()}")
    trial = None
    if kind == "regdb":
        head, sep, tail = rest.rpartition(":")
        if sep and tail.isdigit():
            rest, trial = head, int(tail)
        trial = trial or 1
        if not 1 <= trial <= 10:
            raise UserError(f"--data {spec!r}: RegDB trial must be between 1 and 10")
    return DataSpec(kind, Path(rest).expanduser(), trial)


def _cache_key(root: Path, kind: str) -> str:
    """Sizes and mtimes of the split files and of the folders the reader walks (see module doc)."""
    entries = []
    for pattern in ("exp/*", "idx/*", "cam*", "cam*/*"):
        for path in sorted(root.glob(pattern)):
            stat = path.stat()
            entries.append((str(path.relative_to(root)), stat.st_size if path.is_file() else 0, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps([kind, entries]).encode()).hexdigest()


def _cache_path(root: Path, name: str, cache_dir: str | Path | None) -> Path:
    local = root / ".raytrain_vireid"
    if os.access(root, os.W_OK) and (not local.exists() or os.access(local, os.W_OK)):
        return local / name
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return base / "manifests" / hashlib.sha256(str(root).encode()).hexdigest()[:16] / name


def _read_source(spec: DataSpec) -> pa.Table:
    if spec.kind == "sysu":
        return read_sysu(spec.root)
    if spec.kind == "regdb":
        return read_regdb(spec.root, spec.trial)
    return read_llcm(spec.root)


def load_manifest(spec: str, *, cache_dir: str | Path | None = None, verify: bool = False,
                  on_bad_image: str = "error") -> pa.Table:
    """The manifest of a ``--data`` spec, from the Parquet cache when still valid.

    ``verify`` decodes every image; a bad one raises (``on_bad_image="error"``) or is dropped with a
    warning (``"skip"``).
    """
    check_on_bad_image(on_bad_image)
    parsed = parse_data_spec(spec)
    if parsed.kind == "synthetic":
        parsed = DataSpec("sysu", ensure_synthetic(cache_dir))
    root = parsed.root.resolve() if parsed.root.exists() else parsed.root
    if not root.is_dir():
        raise UserError(f"{parsed.root}: dataset root does not exist or is not a folder")
    name = f"manifest-{parsed.kind}{f'-trial{parsed.trial}' if parsed.trial else ''}.parquet"
    path = _cache_path(root, name, cache_dir)
    key = _cache_key(root, parsed.kind)
    table = None
    if path.is_file():
        cached = pq.read_table(path)
        if (cached.schema.metadata or {}).get(b"key") == key.encode():
            table = cached.replace_schema_metadata(None)
    if table is None:
        table = _read_source(DataSpec(parsed.kind, root, parsed.trial))
        _write_atomic(table.replace_schema_metadata({"key": key}), path)
    if verify:
        table = verify_images(table, on_bad_image)
    return table


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def renumber(table: pa.Table) -> pa.Table:
    """``index`` = row position again."""
    column = table.schema.get_field_index("index")
    return table.set_column(column, "index", pa.array(np.arange(table.num_rows), pa.int64()))


def train_table(manifest: pa.Table) -> pa.Table:
    """Training rows (splits ``train`` and ``val``: SYSU trains on both), renumbered."""
    return renumber(manifest.filter(pc.is_in(manifest["split"], pa.array(TRAIN_SPLITS))))


def test_table(manifest: pa.Table) -> pa.Table:
    """Test rows, renumbered."""
    return renumber(manifest.filter(pc.equal(manifest["split"], "test")))


test_table.__test__ = False  # not a pytest test, although its name says so


def carve_validation(train: pa.Table, fraction: float = 0.2, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Split training IDENTITIES into (train, val) for model selection; never touches test data.

    Every identity lies wholly on one side; both tables are renumbered.
    """
    pids = np.unique(train["pid"].to_numpy())
    n_val = int(round(len(pids) * fraction))
    if not 1 <= n_val < len(pids):
        raise UserError(f"eval.val_fraction: {fraction} of {len(pids)} training identities leaves an empty side")
    val_ids = np.random.default_rng(seed).choice(pids, size=n_val, replace=False)
    is_val = pc.is_in(train["pid"], pa.array(val_ids))
    return renumber(train.filter(pc.invert(is_val))), renumber(train.filter(is_val))
