import os
import struct
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
if os.environ.get("MINILINEAGE_THREADS"):  # the same knob the chapters honour (minilineage.chapter_setup)
    torch.set_num_threads(int(os.environ["MINILINEAGE_THREADS"]))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: magic (0, 0, dtype 0x08, ndim), big-endian sizes, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def write_mnist_files():
    """write(root, folder, images (N, 28, 28), labels (N,)): MNIST-format train and test files under root/folder/raw."""

    def write(root: Path, folder: str, images: np.ndarray, labels: np.ndarray) -> None:
        raw = root / folder / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for split in ("train", "t10k"):
            _write_idx(raw / f"{split}-images-idx3-ubyte", images)
            _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)

    return write


@pytest.fixture
def write_cifar_files(monkeypatch):
    """write(root, pixels (N, 3 * 32 * 32) uint8, labels (N,)): CIFAR-10's python batches under
    root/cifar-10-batches-py, every train and test batch holding these items. Our files cannot match the
    official md5 sums, so torchvision is told to check that they exist only."""
    import pickle

    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[f, None] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, None] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": None})

    def write(root: Path, pixels: np.ndarray, labels: list[int]) -> None:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for f, _ in CIFAR10.train_list + CIFAR10.test_list:
            with open(folder / f, "wb") as fh:
                pickle.dump({"data": pixels, "labels": list(labels)}, fh)
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        with open(folder / "batches.meta", "wb") as fh:
            pickle.dump({"label_names": names}, fh)

    return write


@pytest.fixture
def one_thread():
    """For files of tiny tensors (`pytestmark = pytest.mark.usefixtures("one_thread")`): a second thread
    only adds synchronisation, worse on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
