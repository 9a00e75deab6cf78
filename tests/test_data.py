
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
    threes = (d.labels == 3).nonzero().flatten()[:6]  # items, not labels: a video may carry its own text
    captions = d.captions(threes, generator=torch.Generator().manual_seed(0))
    assert all("three" in c or "3" in c for c in captions) and len(set(captions)) > 1
    assert d.captions(threes) == ["a handwritten three"] * 6


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


def test_cifar10_python_batches_load_through_torchvision(tmp_path, write_cifar_files):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 3 * 32 * 32)).astype(np.uint8)  # rows: R plane, G plane, B plane
    write_cifar_files(tmp_path, pixels, [0, 3, 5, 9])
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


def test_datasets_hold_uint8_images_or_videos_and_convert_per_batch():
    videos = torch.randint(0, 256, (6, 4, 1, 8, 8), dtype=torch.uint8)  # (N, F, C, H, W)
    clips = data.ArrayData("toy", videos, torch.arange(6) % 2, ("even", "odd"), texts=[f"clip {i}" for i in range(6)])
    assert clips.is_video and clips.shape == (4, 1, 8, 8)
    batch = data.caption_batches(clips, 3)(0, torch.Generator().manual_seed(0))
    assert batch["x"].shape == (3, 4, 1, 8, 8) and batch["x"].dtype == torch.float32
    index = [int(c.split()[1]) for c in batch["captions"]]  # each clip keeps its own text
    assert torch.equal(batch["x"], data.to_float(videos[index])) and torch.equal(batch["y"], torch.tensor(index) % 2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or videos \(N, F, C, H, W\)"):
        data.ArrayData("bad", torch.zeros(2, 8, 8, dtype=torch.uint8), torch.zeros(2), ("a",))
    with pytest.raises(ValueError, match="6 items but 2 texts"):
        data.ArrayData("bad", videos, torch.zeros(6), ("a",), texts=["x", "y"])


def test_to_uint8_and_to_float_are_inverse_for_images_and_videos():
    pixels = torch.randint(0, 256, (2, 3, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(data.to_uint8(data.to_float(pixels)), pixels)
    assert data.to_uint8(torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])).tolist() == [0, 0, 128, 255, 255]
    assert data.to_uint8(np.zeros((1, 1, 2, 2), dtype=np.float32)).dtype == torch.uint8
    with pytest.raises(ValueError, match="uint8"):
        data.to_float(torch.zeros(2))


def test_batches_are_a_pure_function_of_step_and_generator():
    d = data.load_dataset("mnist-5k", "test")
    next_batch = data.image_batches(d, 16)
    a, b = next_batch(5, torch.Generator().manual_seed(1)), next_batch(9, torch.Generator().manual_seed(1))
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])  # no hidden state between calls


def test_bucket_batches_draw_one_shape_per_batch_in_proportion_to_bucket_size():
    small = data.ArrayData("a", torch.zeros(30, 1, 4, 4, dtype=torch.uint8), torch.zeros(30), ("x",))
    large = data.ArrayData("b", torch.full((90, 2, 1, 8, 8), 255, dtype=torch.uint8), torch.ones(90), ("x", "y"))
    next_batch = data.bucket_batches([small, large], 5)
    shapes = [tuple(next_batch(step, torch.Generator().manual_seed(step))["x"].shape) for step in range(400)]
    assert set(shapes) == {(5, 1, 4, 4), (5, 2, 1, 8, 8)}
    assert shapes.count((5, 2, 1, 8, 8)) / len(shapes) == pytest.approx(0.75, abs=0.07)
    again = next_batch(7, torch.Generator().manual_seed(7))["x"]
    assert torch.equal(again, next_batch(7, torch.Generator().manual_seed(7))["x"])


def test_staged_batches_follow_the_curriculum_by_step_alone():
    images = data.ArrayData("a", torch.zeros(30, 1, 1, 4, 4, dtype=torch.uint8), torch.zeros(30), ("x",))
    clips = data.ArrayData("b", torch.full((20, 5, 1, 4, 4), 255, dtype=torch.uint8), torch.ones(20), ("x",))
    next_batch = data.staged_batches([(3, data.image_batches(images, 8)), (2, data.image_batches(images, 4))],
                                     last=data.image_batches(clips, 2))
    shapes = [tuple(next_batch(step, torch.Generator().manual_seed(step))["x"].shape) for step in range(7)]
    assert shapes == [(8, 1, 1, 4, 4)] * 3 + [(4, 1, 1, 4, 4)] * 2 + [(2, 5, 1, 4, 4)] * 2
    resumed = next_batch(6, torch.Generator().manual_seed(6))["x"]  # a resumed run draws the same batch at step 6
    assert torch.equal(resumed, next_batch(6, torch.Generator().manual_seed(6))["x"])
    with pytest.raises(ValueError, match="at least one step"):
        data.staged_batches([(0, data.image_batches(images, 8))], last=data.image_batches(clips, 2))


def test_shard_gives_each_process_its_contiguous_slice_of_the_global_batch():
    batch = {"x": torch.arange(8).view(8, 1), "captions": [str(i) for i in range(8)]}
    parts = [data.shard(batch, rank, 4) for rank in range(4)]
    assert [p["captions"] for p in parts] == [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"]]
    assert torch.equal(torch.cat([p["x"] for p in parts]), batch["x"])
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        data.shard(batch, 0, 3)


def test_load_dataset_names_the_options_a_loader_takes():
    with pytest.raises(ValueError, match="takes no option frames; its options: root"):
        data.load_dataset("mnist-5k", "train", frames=8)
