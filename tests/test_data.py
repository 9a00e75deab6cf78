import pickle

import numpy as np
import pytest
import torch

from minilineage import data


def test_mnist_5k_is_real_balanced_and_split():
    train, test = data.load_dataset("mnist-5k", "train"), data.load_dataset("mnist-5k", "test")
    assert train.images.shape == (4500, 1, 28, 28) and test.images.shape == (500, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert torch.bincount(train.labels).tolist() == [450] * 10
    assert torch.bincount(test.labels).tolist() == [50] * 10
    # real digits: dark background, bright strokes, no duplicated items between the splits
    assert train.images.float().mean() < 50 and train.images.max() == 255
    train_rows = {bytes(r) for r in train.images.flatten(1).numpy()}
    assert not any(bytes(r) in train_rows for r in test.images.flatten(1).numpy())


def test_float_images_span_minus_one_to_one():
    x = data.load_dataset("mnist-5k", "test").float_images()
    assert x.min() == -1.0 and x.max() == 1.0


def test_captions_come_from_labels():
    d = data.load_dataset("mnist-5k", "test")
    assert d.caption(7) == "a handwritten seven"
    assert d.caption(7, template=1) == "the digit 7"
    captions = d.captions(torch.tensor([3, 3, 3, 3, 3, 3]), generator=torch.Generator().manual_seed(0))
    assert all("three" in c or "3" in c for c in captions) and len(set(captions)) > 1


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="mnist-5k.*mnist.*fashion-mnist.*cifar10"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="train, test"):
        data.load_dataset("mnist-5k", "validation")


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_format_files_load_through_torchvision(tmp_path, name, folder, write_mnist_files):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28))
    labels = np.array([0, 1, 2, 3, 4, 9])
    write_mnist_files(tmp_path, folder, images, labels)
    d = data.load_dataset(name, "train", root=tmp_path)
    assert d.images.shape == (6, 1, 28, 28)
    assert torch.equal(d.images[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert d.labels.tolist() == labels.tolist()
    assert d.caption(9) in ("a handwritten nine", "a photo of an ankle boot")


def test_cifar10_python_batches_load_through_torchvision(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    # our files cannot match the official md5 sums, so check existence only
    monkeypatch.setattr(CIFAR10, "train_list", [[f, None] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, None] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": None})
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 3 * 32 * 32)).astype(np.uint8)  # rows: R plane, G plane, B plane
    for f, _ in CIFAR10.train_list + CIFAR10.test_list:
        with open(folder / f, "wb") as fh:
            pickle.dump({"data": pixels, "labels": [0, 3, 5, 9]}, fh)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names}, fh)
    d = data.load_dataset("cifar10", "test", root=tmp_path)
    assert d.images.shape == (4, 3, 32, 32)
    assert torch.equal(d.images[1, 2].flatten(), torch.from_numpy(pixels[1, 2048:]))  # blue plane
    assert d.labels.tolist() == [0, 3, 5, 9]
    assert d.caption(0) == "a photo of an airplane"


def test_offline_download_says_what_to_fetch(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", offline)
    with pytest.raises(data.DatasetUnavailable, match=r"(?s)MNIST/raw.*mnist-5k"):
        data.load_dataset("mnist", root=tmp_path)
    assert not any(tmp_path.rglob("*.gz"))
