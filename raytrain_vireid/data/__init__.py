"""Datasets: readers of the official layouts → one manifest, the synthetic persons, transforms, samplers."""

from .datasets import ImageDataset
from .manifest import (DataSpec, carve_validation, load_manifest, parse_data_spec, renumber, test_table,
                       train_table)
from .sources import read_llcm, read_regdb, read_sysu
from .synthetic import DEFAULT_SYNTHETIC, ensure_synthetic, generate
from .transforms import build_transform

__all__ = [
    "DEFAULT_SYNTHETIC", "DataSpec", "ImageDataset", "build_transform", "carve_validation", "ensure_synthetic",
    "generate", "load_manifest", "parse_data_spec", "read_llcm", "read_regdb", "read_sysu", "renumber",
    "test_table", "train_table",
]
