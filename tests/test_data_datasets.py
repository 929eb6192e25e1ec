"""ImageDataset: rows in, (tensor, row) out; bad images raise or are skipped with one warning per file."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from raytrain_vireid.data import ImageDataset
from raytrain_vireid.errors import UserError


def _images(tmp_path):
    paths = []
    for k, value in enumerate((10, 20, 30)):
        path = tmp_path / f"{k}.png"
        Image.fromarray(np.full((4, 2), value, np.uint8), mode="L").save(path)  # single channel, like some IR files
        paths.append(str(path))
    return paths


def _to_tensor(img):
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def test_rows_come_back_as_three_channel_tensors(tmp_path):
    dataset = ImageDataset(_images(tmp_path), _to_tensor)
    image, row = dataset[2]
    assert row == 2 and image.shape == (3, 4, 2) and bool((image == 30).all())
    assert len(pickle.loads(pickle.dumps(dataset))) == 3  # DataLoader workers get a pickled copy


def test_bad_image_raises_or_is_replaced_by_the_next_readable_row(tmp_path):
    paths = _images(tmp_path)
    with open(paths[1], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(UserError, match=r"1.png: unreadable image"):
        ImageDataset(paths, _to_tensor)[1]
    dataset = ImageDataset(paths, _to_tensor, on_bad_image="skip")
    with pytest.warns(UserWarning, match="1.png: unreadable image, skipped"):
        image, row = dataset[1]
    assert row == 1 and bool((image == 30).all())  # the next good row's pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second read of the same file stays silent
        dataset[1]
    with pytest.raises(UserError, match="on_bad_image 'ignore'"):
        ImageDataset(paths, _to_tensor, on_bad_image="ignore")
