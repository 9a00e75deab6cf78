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
