"""Checking that every image of a manifest decodes; images as arrays for hand-crafted descriptors."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pyarrow as pa
from PIL import Image

from ..errors import UserError
from .datasets import check_on_bad_image, open_image


def verify_images(table: pa.Table, on_bad_image: str = "error") -> pa.Table:
    """Decode every image fully; a bad one raises :class:`UserError` (``"error"``) or is dropped with a
    warning (``"skip"``). Returns the table of good rows (renumbered when rows were dropped)."""
    check_on_bad_image(on_bad_image)
    keep = []
    for row, path in enumerate(table["path"].to_pylist()):
        try:
            open_image(path)
        except (OSError, SyntaxError, ValueError) as exc:
            if on_bad_image == "error":
                raise UserError(f"{path}: unreadable or truncated image ({exc})") from None
            warnings.warn(f"{path}: unreadable or truncated image, skipped", stacklevel=2)
            continue
        keep.append(row)
    if len(keep) == table.num_rows:
        return table
    from .manifest import renumber

    return renumber(table.take(pa.array(keep)))


def read_resized(paths: Sequence[str], height: int, width: int) -> np.ndarray:
    """``(len(paths), height, width, 3)`` float32 RGB in [0, 1], each image resized bilinearly (as the training
    transform's ``Resize`` does)."""
    out = np.empty((len(paths), height, width, 3), dtype=np.float32)
    for i, path in enumerate(paths):
        try:
            image = open_image(path)
        except (OSError, SyntaxError, ValueError) as exc:
            raise UserError(f"{path}: unreadable image ({exc})") from None
        out[i] = np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
    return out
