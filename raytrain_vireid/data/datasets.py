"""Image datasets over a manifest table (torch ``Dataset``; no Ray)."""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import pyarrow as pa
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError


ON_BAD_IMAGE = ("error", "skip")


def check_on_bad_image(value: str) -> str:
    """``value`` if it is a valid ``on_bad_image`` choice, else :class:`UserError`."""
    if value not in ON_BAD_IMAGE:
        raise UserError(f"on_bad_image {value!r}: expected one of {', '.join(ON_BAD_IMAGE)}")
    return value


def open_image(path: str) -> Image.Image:
    """Decode ``path`` fully as RGB (infrared images too: 3 channels, as in the field)."""
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


class ImageDataset(Dataset):
    """``(transform(image), row)`` for every row of ``table`` (a manifest, or a plain sequence of image
    paths; row = position in it).

    A bad image raises :class:`UserError` (``on_bad_image="error"``) or, with ``"skip"``, warns once per
    file and yields the next readable row's image instead, so batch shapes stay fixed. Run
    ``python -m raytrain_vireid.data SPEC --verify`` to find them before training.
    """

    def __init__(self, table: pa.Table | Sequence[str], transform: Callable, on_bad_image: str = "error") -> None:
        self.on_bad_image = check_on_bad_image(on_bad_image)
        self.paths = table["path"].to_pylist() if isinstance(table, pa.Table) else [str(p) for p in table]
        self.transform = transform
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int):
        for offset in range(len(self.paths)):
            path = self.paths[(row + offset) % len(self.paths)]
            try:
                image = open_image(path)
            except (OSError, SyntaxError, ValueError) as exc:
                if self.on_bad_image != "skip":
                    raise UserError(f"{path}: unreadable image ({exc})") from None
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"{path}: unreadable image, skipped ({exc})", stacklevel=2)
                continue
            return self.transform(image), row
        raise UserError("no readable image in the dataset")
