"""ImageDataset: rows in, (tensor, row) out; bad images raise or are skipped with one warning per file."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from raytrain_vireid.data import ImageDataset
from raytrain_vireid.data.images import read_resized
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


def test_read_resized_gives_rgb_floats_and_names_an_unreadable_file(tmp_path):
    paths = _images(tmp_path)
    images = read_resized(paths, 8, 4)
    assert images.shape == (3, 8, 4, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[2], 30 / 255, rtol=1e-6)  # grey files come back with three equal channels
    with open(paths[0], "wb") as f:
        f.write(b"not an image")
    with pytest.raises(UserError, match=r"0.png: unreadable image"):
        read_resized(paths, 8, 4)
