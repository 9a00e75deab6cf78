"""FID-LeNet and the classifier behind it: the distance against closed forms, the LeNet, and `minilineage eval`."""

import json
import math

import numpy as np
import pytest
import torch

from minilineage import cli
from minilineage.checkpoint import CHECKPOINT_DIR
from minilineage.data import load_dataset
from minilineage.metrics import (
    evaluate_samples,
    feature_stats,
    fid_lenet,
    frechet_distance,
    lenet_features,
    load_classifier,
    load_samples,
    real_floor,
)
from minilineage.models.classifier import (
    LeNet,
    LeNetConfig,
    accuracy,
    classifier_loss,
    random_shift,
)
from minilineage.recipes import train_recipe

SHIPPED = CHECKPOINT_DIR / "lenet-mnist.pt"
needs_shipped = pytest.mark.skipif(not SHIPPED.exists(), reason=f"no shipped classifier at {SHIPPED}; make it with "
                                   "`minilineage train lenet-mnist --out assets/checkpoints`")


def random_cov(d: int, generator: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_of_identical_statistics_is_zero():
    g = torch.Generator().manual_seed(0)
    mu, cov = torch.randn(6, generator=g, dtype=torch.float64), random_cov(6, g)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    g = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(2, 8, generator=g, dtype=torch.float64)
    s1, s2 = torch.rand(2, 8, generator=g, dtype=torch.float64) * 3
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum()
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected.item(), rel=1e-10)


def test_frechet_distance_matches_a_1d_hand_computation():
    # N(1, 4) vs N(3, 9): (1 - 3)^2 + 4 + 9 - 2 * sqrt(4 * 9) = 4 + 13 - 12 = 5
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(5.0, abs=1e-12)


def test_frechet_distance_is_symmetric_and_matches_eigenvalues_of_the_product():
    g = torch.Generator().manual_seed(2)
    mu1, mu2 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    cov1, cov2 = random_cov(5, g), random_cov(5, g)
    d12, d21 = frechet_distance(mu1, cov1, mu2, cov2), frechet_distance(mu2, cov2, mu1, cov1)
    assert d12 == pytest.approx(d21, rel=1e-10)
    # independent route: Tr((cov1 cov2)^{1/2}) from the (real, positive) eigenvalues of the product itself
    tr_sqrt = np.sqrt(np.linalg.eigvals(cov1.numpy() @ cov2.numpy()).real).sum()
    expected = ((mu1 - mu2) ** 2).sum().item() + cov1.trace().item() + cov2.trace().item() - 2 * tr_sqrt
    assert d12 == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_stays_finite_for_singular_covariances():
    g = torch.Generator().manual_seed(3)
    f1, f2 = torch.randn(2, 4, 10, generator=g)  # 4 points in 10-D: rank-3 covariances
    d = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    assert math.isfinite(d) and d > 0
    assert frechet_distance(*feature_stats(f1), *feature_stats(f1)) == pytest.approx(0.0, abs=1e-6)


def test_feature_stats_match_numpy():
    f = torch.randn(50, 4, generator=torch.Generator().manual_seed(4))
    mu, cov = feature_stats(f)
    np.testing.assert_allclose(mu.numpy(), f.numpy().mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cov.numpy(), np.cov(f.numpy(), rowvar=False), rtol=1e-5, atol=1e-7)


def test_lenet_shapes_and_size():
    model = LeNet(LeNetConfig())
    x = torch.randn(3, 1, 28, 28)
    assert model.features(x).shape == (3, 64)
    assert model(x).shape == (3, 10)
    assert sum(p.numel() for p in model.parameters()) == 77_484


def test_random_shift_moves_each_image_by_at_most_max_shift():
    x = -torch.ones(64, 1, 28, 28)
    x[:, :, 14, 14] = 1.0  # one bright pixel in the middle
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    rows, cols = (shifted[:, 0] == 1).nonzero()[:, 1:].T
    assert len(rows) == 64  # every image keeps exactly its one bright pixel
    assert (rows - 14).abs().max() == 2 and (cols - 14).abs().max() == 2
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # images are shifted independently
    assert torch.equal(random_shift(x, 0, torch.Generator().manual_seed(0)), x)


def test_classifier_overfits_one_batch():
    data = load_dataset("mnist-5k", "train")
    x, y = data.float_images()[:32], data.labels[:32]
    model = LeNet(LeNetConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss = classifier_loss(model, {"x": x, "y": y}, g, max_shift=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert accuracy(model, x, y) == 1.0


def _real_train_digits(n: int = 500):
    data = load_dataset("mnist-5k", "train")
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:n]
    return data.images[pick].numpy(), data.labels[pick].numpy()


@needs_shipped
def test_class_matched_real_level_draws_the_requested_counts_and_sits_below_random_draws_at_small_n(monkeypatch):
    classifier = load_classifier()
    train = load_dataset("mnist-5k", "train")
    features = lenet_features(classifier, train.float_images())
    reference = feature_stats(lenet_features(classifier, load_dataset("mnist-5k", "test").float_images()))
    drawn = []
    monkeypatch.setattr("minilineage.metrics.feature_stats", lambda phi: drawn.append(phi) or feature_stats(phi))
    labels = torch.arange(100) % 10
    matched = real_floor(classifier, 100, reference, draws=10, features=features, labels=labels)
    counts = torch.stack([torch.bincount(train.labels[(features[:, None] == phi[None]).all(-1).nonzero()[:, 0]],
                                         minlength=10) for phi in drawn])  # which training digits each draw holds
    assert matched["floor_n"] == 100 and (counts == 10).all()
    monkeypatch.undo()
    random = real_floor(classifier, 100, reference, draws=10, features=features)
    # balanced classes, like the reference's 50 per class, leave the between-class spread out of the bias
    assert matched["real_floor"] < 0.85 * random["real_floor"] and matched["real_floor_std"] < random["real_floor_std"]


@needs_shipped
def test_shipped_classifier_scores_real_digits_well_and_noise_badly():
    classifier = load_classifier()
    images, labels = _real_train_digits()
    real = evaluate_samples(images, labels, classifier)
    assert real["accuracy"] > 0.97 and real["real_accuracy"] >= 0.97
    assert abs(real["fid_lenet"] - real["real_floor"]) < 3 * real["real_floor_std"]  # real digits score the floor
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    fake = evaluate_samples(noise, labels, classifier)
    assert fake["accuracy"] < 0.3
    assert fake["real_floor"] == real["real_floor"]  # the floor depends on N only
    assert fake["fid_lenet"] > 20 * real["real_floor"]


@needs_shipped
def test_the_reference_digits_score_zero_and_the_recorded_test_accuracy():
    classifier = load_classifier()
    test = load_dataset("mnist-5k", "test")
    result = evaluate_samples(test.images, test.labels, classifier)
    assert result["fid_lenet"] == pytest.approx(0.0, abs=1e-3)
    assert result["accuracy"] == result["real_accuracy"] == classifier.checkpoint_info["metrics"]["test_accuracy"]


@needs_shipped
def test_fid_lenet_of_a_set_with_itself_is_zero_and_grows_with_corruption():
    classifier = load_classifier()
    x = load_dataset("mnist-5k", "test").float_images()
    noisy = (x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert fid_lenet(x, x, classifier) == pytest.approx(0.0, abs=1e-6)
    assert fid_lenet(x, noisy, classifier) > fid_lenet(x, x.roll(1, dims=-1), classifier) > 0


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A barely trained LeNet, so the CLI tests do not depend on the shipped checkpoint."""
    out = tmp_path_factory.mktemp("lenet")
    train_recipe("lenet-mnist", steps=5, out=out, device="cpu", progress=False)
    return out / "lenet-mnist.pt"


def test_eval_cli_prints_the_numbers_and_writes_json(tiny_classifier, tmp_path, capsys):
    images, labels = _real_train_digits(200)
    np.savez(tmp_path / "s.npz", images=images, labels=labels)
    cli.main(["eval", str(tmp_path / "s.npz"), "--classifier", str(tiny_classifier), "--json", str(tmp_path / "r.json")])
    printed = capsys.readouterr().out
    expected = evaluate_samples(images, labels, load_classifier(tiny_classifier))
    record = json.loads((tmp_path / "r.json").read_text())
    for key in ("fid_lenet", "real_floor", "real_floor_std", "accuracy", "real_accuracy"):
        assert key in record and record[key] == expected[key]
    assert f"{expected['fid_lenet']:.3f}" in printed and f"+- {expected['real_floor_std']:.3f}" in printed
    assert all(name in printed for name in ("fid_lenet", "real_floor", "accuracy", "real_accuracy"))
    assert "200 samples" in printed and "200 real training digits" in printed
    assert "published FIDs" in printed  # the table says what FID-LeNet is not


def test_eval_cli_without_labels_reports_no_accuracy(tiny_classifier, tmp_path, capsys):
    np.savez(tmp_path / "s.npz", images=_real_train_digits(50)[0])
    cli.main(["eval", str(tmp_path / "s.npz"), "--classifier", str(tiny_classifier)])
    printed = capsys.readouterr().out
    assert "fid_lenet" in printed and "accuracy" not in printed


def test_bad_sample_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="minilineage sample"):
        load_samples(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_samples(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", pictures=np.zeros((2, 1, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="no `images` array.*pictures"):
        load_samples(tmp_path / "other.npz")
    classifier = LeNet(LeNetConfig())
    with pytest.raises(ValueError, match="uint8"):
        evaluate_samples(np.zeros((4, 1, 28, 28), np.float32), classifier=classifier)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\).*\(4, 3, 32, 32\)"):
        evaluate_samples(np.zeros((4, 3, 32, 32), np.uint8), classifier=classifier)
    with pytest.raises(ValueError, match="digits 0..9"):
        evaluate_samples(np.zeros((4, 1, 28, 28), np.uint8), np.array([0, 1, 2, 10]), classifier=classifier)


def test_eval_cli_reports_bad_input_and_exits_2(tmp_path, capsys):
    np.savez(tmp_path / "s.npz", images=np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", str(tmp_path / "s.npz"), "--classifier", "unused-because-input-is-checked-first"])
    assert exit_info.value.code == 2
    assert "minilineage eval: error: images must have shape (N, 1, 28, 28)" in capsys.readouterr().err
