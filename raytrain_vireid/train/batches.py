"""Training images of one epoch: the sampler's row indices → per-view augmented image tensors."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.config import Config
from raytrain_vireid.data.datasets import ImageDataset
from raytrain_vireid.data.transforms import VIEWS, build_transform


class TwoViews:
    """Apply two transforms to the same decoded image: the visible original view and its augmented view."""

    def __init__(self, first: Callable, second: Callable) -> None:
        self.first, self.second = first, second

    def __call__(self, image):
        return self.first(image), self.second(image)


class EpochImages:
    """Per-view datasets over the training table (row position = manifest ``index``), augmented with the
    policies of training stage ``stage`` (``AugmentConfig.policy``)."""

    def __init__(self, table: pa.Table, config: Config, stage: int = 1) -> None:
        h, w, aug = config.data.height, config.data.width, config.augment
        self.transforms = {view: build_transform(view, aug.policy(view, stage), h, w) for view in VIEWS}
        views = TwoViews(self.transforms["visible"], self.transforms["visible_aug"])
        self.visible = ImageDataset(table, views, on_bad_image=config.data.on_bad_image)
        self.infrared = ImageDataset(table, self.transforms["infrared"], on_bad_image=config.data.on_bad_image)
        self.workers = config.data.loader_workers

    def iterate(self, batches: Sequence[dict[int, np.ndarray]]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x_v, x_a, x_r, rows_v, rows_r)`` for each planned batch, decoded by DataLoader workers."""
        visible = DataLoader(self.visible, batch_sampler=[b[VISIBLE].tolist() for b in batches], num_workers=self.workers)
        infrared = DataLoader(self.infrared, batch_sampler=[b[INFRARED].tolist() for b in batches], num_workers=self.workers)
        for ((x_v, x_a), rows_v), (x_r, rows_r) in zip(visible, infrared):
            yield x_v, x_a, x_r, rows_v, rows_r
