"""Datasets: one registry of names, one loader per dataset, captions from labels, stateless batches.

`load_dataset(name, split, **options)` returns an `ArrayData`: uint8 images (N, C, H, W) or videos
(N, F, C, H, W) with labels, converted to floats in [-1, 1] one batch at a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from minilineage.data.arrays import ArrayData, to_float, to_uint8
from minilineage.data.batches import (
    bucket_batches,
    caption_batches,
    encoded_batches,
    image_batches,
    shard,
    staged_batches,
)
from minilineage.data.captions import (
    DIGIT_TEMPLATES,
    DIGIT_WORDS,
    PHOTO_TEMPLATES,
    all_captions,
    digit_prompts,
    prompt_digit,
    split_words,
)
from minilineage.data.images import (
    DatasetUnavailable,
    cache_dir,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    load_mnist_5k,
)
from minilineage.data.video import POOR_CAPTION, load_moving_mnist, load_ucf101

DATASETS: dict[str, Callable[..., ArrayData]] = {
    "mnist-5k": load_mnist_5k,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "moving-mnist": load_moving_mnist,
    "ucf101": load_ucf101,
}
SPLITS = ("train", "test", "all")


def load_dataset(name: str, split: str = "train", **options) -> ArrayData:
    """Load a dataset by its registry name; unknown names, splits and options list the valid ones.

    `options` go to the dataset's loader (e.g. `root=` for a download folder; frame count and size
    for generated videos)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if split == "all" and name != "mnist-5k":
        raise ValueError(f"split 'all' exists only for 'mnist-5k'; use 'train' or 'test' for {name!r}")
    loader = DATASETS[name]
    known = [p for p in inspect.signature(loader).parameters if p != "split"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"dataset {name!r} takes no option {', '.join(unknown)}; its options: {', '.join(known)}")
    return loader(split=split, **options)


__all__ = [
    "ArrayData", "DATASETS", "DIGIT_TEMPLATES", "DIGIT_WORDS", "DatasetUnavailable", "PHOTO_TEMPLATES", "POOR_CAPTION", "SPLITS",
    "all_captions", "bucket_batches", "cache_dir", "caption_batches", "digit_prompts", "encoded_batches", "image_batches", "staged_batches",
    "load_cifar10", "load_dataset", "load_fashion_mnist", "load_mnist", "load_mnist_5k", "load_moving_mnist",
    "load_ucf101", "prompt_digit",
    "shard", "split_words", "to_float", "to_uint8",
]
