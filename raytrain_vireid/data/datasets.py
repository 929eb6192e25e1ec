"""Image datasets over a manifest table (torch ``Dataset``; no Ray)."""

from __future__ import annotations

import warnings
from typing import Callable

import pyarrow as pa
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError


def open_image(path: str) -> Image.Image:
    """Decode ``path`` fully as RGB (infrared images too: 3 channels, as in the field)."""
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


class ImageDataset(Dataset):
    """``(transform(image), row)`` for every row of ``table`` (row = position in the table).

    A bad image raises :class:`UserError` (``on_bad_image="error"``) or, with ``"skip"``, warns once per
    file and yields the next readable row's image instead, so batch shapes stay fixed. Run
    ``python -m raytrain_vireid.data SPEC --verify`` to find them before training.
    """

    def __init__(self, table: pa.Table, transform: Callable, on_bad_image: str = "error") -> None:
        self.paths = table["path"].to_pylist()
        self.transform = transform
        self.on_bad_image = on_bad_image
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
