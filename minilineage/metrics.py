"""How good a model is: FID-LeNet and class accuracy of samples, and each recipe's evaluation.

FID-LeNet is the Fréchet distance of Heusel et al. (2017) measured in the 64-number penultimate
layer of the course's own MNIST classifier (`lenet-mnist`, see minilineage.classifier), not in
Inception features: its numbers are not comparable with published FIDs, only with each other.

The protocol (`evaluate_samples`, `minilineage eval SAMPLES.npz`):
  reference   the 500 digits of the mnist-5k test split: never seen by the generative models nor
              by the classifier, so a model cannot score well by copying its training digits.
  fid_lenet   FID-LeNet(samples, reference).
  real_floor  the real-data reference level (the key keeps its first name): FID-LeNet(N real
              training digits, reference), the mean over 5 random draws of the N digits, with
              real_floor_std, the std over those draws; floor_n is N. It is what real digits score
              with as many digits as there are samples, and it is not a floor a model cannot go below:
              - estimated from N samples, FID is biased upwards, by more at small N (real digits
                score about 125 at N = 100, 40 at N = 1,000, 33 at N = 4,500; Chapter 4 measures the
                curve): compare scores at equal N only, and never against 0;
              - at small N the spread is wide (about +-27 at N = 100): differences within about two
                std are chance;
              - the bias depends on the scored set itself: the sample mean alone adds Tr(Sigma)/N to
                the squared mean distance (Sigma the set's feature covariance), and the covariance
                term adds more. Random draws of real digits hold a random number of each digit, so
                the large between-class part of Sigma enters; samples requested ten per class match
                the reference's exactly balanced classes and leave it out. Real digits drawn ten per
                class score about 85 +- 12 at N = 100, against about 122 +- 29 at random (and 36
                against 40 at N = 1,000), so class-balanced samples can score below this level at
                small N although they are further from the real digits. `real_floor(..., labels=)`
                draws with the samples' class counts: compare such samples with that level;
              - the classifier was trained on these digits, which sets them a little apart from the
                unseen reference: 250 held-out digits against the other 250 score about 10 % lower
                than 250 training digits against the same 250.
  accuracy    with labels: the fraction of samples the classifier assigns to the requested class,
              next to `real_accuracy`, the classifier's own accuracy on the reference digits.
The shipped classifier is the cpu preset, trained on the mnist-5k training split only; one trained
with the gpu preset (all of MNIST) may have seen the reference digits, which are MNIST digits too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minilineage.checkpoint import load_model
from minilineage.data import cache_dir, load_dataset, to_uint8
from minilineage.models.autoencoder import VAE, kl_to_standard_normal, reconstruction_mse
from minilineage.models.classifier import LeNet, accuracy
from minilineage.models.clip import MiniCLIP, zero_shot_accuracy
from minilineage.models.latent import LatentVAE, latent_scale_factor

CLASSIFIER = "lenet-mnist"  # the shipped checkpoint, assets/checkpoints/lenet-mnist.pt
SHAPE = (1, 28, 28)


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean mu (D,) and unbiased covariance Sigma (D, D) of features (N, D), in float64."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need features (N, D) with N >= 2, got {tuple(features.shape)}")
    f = features.double()
    mu = f.mean(0)  # (D,)
    centred = f - mu  # (N, D)
    return mu, centred.T @ centred / (len(f) - 1)  # (D, D)


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix via its eigenvalues (negatives from round-off -> 0)."""
    lam, v = torch.linalg.eigh(a)
    return v @ torch.diag(lam.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    Dowson & Landau 1982; used for FID by Heusel et al. 2017:
        d^2 = ||mu1 - mu2||^2 + Tr(cov1) + Tr(cov2) - 2 Tr((cov1 cov2)^{1/2})
    cov1 cov2 is not symmetric, but it has the eigenvalues of M = cov1^{1/2} cov2 cov1^{1/2} (AB and BA
    share eigenvalues), which is symmetric PSD: Tr((cov1 cov2)^{1/2}) = sum_i sqrt(lambda_i(M)). Symmetric
    eigensolvers are stable even for singular covariances, where a general sqrtm returns complex noise.
    """
    mu1, cov1, mu2, cov2 = (torch.as_tensor(a, dtype=torch.float64) for a in (mu1, cov1, mu2, cov2))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        shapes = ", ".join(str(tuple(a.shape)) for a in (mu1, cov1, mu2, cov2))
        raise ValueError(f"need mu (D,) and cov (D, D) for both Gaussians, got shapes {shapes}")
    s1 = _sqrtm_psd(cov1)
    m = s1 @ cov2 @ s1
    m = (m + m.T) / 2  # symmetric in exact arithmetic; remove round-off before eigvalsh
    tr_sqrt = torch.linalg.eigvalsh(m).clamp(min=0).sqrt().sum()
    d2 = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * tr_sqrt
    return max(d2.item(), 0.0)


@torch.no_grad()
def sharpness(images: torch.Tensor) -> tuple[float, float]:
    """How blurred digits are, on the [0, 1] scale: (share of grey pixels, in (0.2, 0.8), among the
    inked ones (> 0.2), mean edge strength |p(i+1) - p(i)| down and across). Sharp digits are mostly
    black or white with strong edges; an average of many plausible digits is grey with soft edges.
    Chapters 2 and 3 use it next to FID-LeNet, which does not measure blur."""
    p = (images + 1) / 2
    inked = p > 0.2
    grey = (inked & (p < 0.8)).sum() / inked.sum()
    edges = (p[..., 1:, :] - p[..., :-1, :]).abs().mean() + (p[..., :, 1:] - p[..., :, :-1]).abs().mean()
    return grey.item(), edges.item()


def lenet_features(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate activations (N, D) of images in [-1, 1], (N, 1, 28, 28)."""
    device = next(classifier.parameters()).device
    parts = [classifier.features(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(parts)


def fid_lenet(images_a: torch.Tensor, images_b: torch.Tensor, classifier: nn.Module) -> float:
    """FID-LeNet between two sets of images in [-1, 1], each (N, 1, 28, 28): Fréchet distance of LeNet features."""
    stats_a = feature_stats(lenet_features(classifier, images_a))
    stats_b = feature_stats(lenet_features(classifier, images_b))
    return frechet_distance(*stats_a, *stats_b)


def load_classifier(path: str | Path = CLASSIFIER, device: str | torch.device = "cpu") -> nn.Module:
    """The LeNet behind FID-LeNet: the shipped `lenet-mnist` checkpoint, or another one of the same class."""
    return load_model(path, expect=LeNet, device=device)


def check_samples(images, labels=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate uint8 images (N, 1, 28, 28) and optional labels (N,) in 0..9; return them as tensors."""
    images = torch.as_tensor(np.asarray(images))
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 in 0..255 (as `minilineage sample` writes them), got {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != SHAPE or len(images) < 2:
        raise ValueError(f"images must have shape (N, 1, 28, 28) with N >= 2 (FID-LeNet reads MNIST-sized "
                         f"digits), got {tuple(images.shape)}")
    if labels is None:
        return images, None
    labels = torch.as_tensor(np.asarray(labels))
    if labels.shape != (len(images),) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers of shape ({len(images)},), got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"labels must be digits 0..9, got values in {labels.min().item()}..{labels.max().item()}")
    return images, labels.long()


def real_floor(classifier: nn.Module, n: int, ref_stats: tuple, draws: int = 5, seed: int = 0,
               features: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> dict:
    """The real-data reference level: FID-LeNet of n real training digits vs the reference, mean and
    std over `draws` random draws of the n digits (see the module docstring for how to read it).

    The std shows how much FID-LeNet moves by chance alone at this n. mnist-5k has 4,500 training
    digits, so for n > 4,500 the level is the one for 4,500. `features`: the training digits'
    LeNet features (4500, D), if already computed. `labels` (n,): draw as many digits of each class
    as these labels hold (the level for samples requested with these labels) instead of at random.
    """
    train = load_dataset("mnist-5k", "train")
    if features is None:
        features = lenet_features(classifier, train.float_images())  # (4500, D)
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        n = min(n, len(features))
        picks = [torch.randperm(len(features), generator=g)[:n] for _ in range(draws)]
    else:
        n, counts = len(labels), torch.bincount(labels.long(), minlength=10).tolist()
        pools = [torch.nonzero(train.labels == digit)[:, 0] for digit in range(len(counts))]
        picks = [torch.cat([pool[torch.randperm(len(pool), generator=g)[:count]] for pool, count in zip(pools, counts)])
                 for _ in range(draws)]
    d = torch.tensor([frechet_distance(*feature_stats(features[pick]), *ref_stats) for pick in picks])
    return {"real_floor": round(d.mean().item(), 3), "real_floor_std": round(d.std().item(), 3), "floor_n": n}


def evaluate_samples(images, labels=None, classifier: nn.Module | None = None, seed: int = 0) -> dict:
    """FID-LeNet of uint8 samples (N, 1, 28, 28) vs the mnist-5k test digits, the real-data reference
    level at the same N and, given the requested labels (N,), the fraction of samples classified as
    asked (see the module docstring)."""
    images, labels = check_samples(images, labels)
    classifier = load_classifier() if classifier is None else classifier
    reference = load_dataset("mnist-5k", "test")
    x = images.float() / 127.5 - 1.0  # the [-1, 1] range of ImageData.float_images
    ref_stats = feature_stats(lenet_features(classifier, reference.float_images()))
    result = {
        "n": len(images),
        "fid_lenet": round(frechet_distance(*feature_stats(lenet_features(classifier, x)), *ref_stats), 3),
        **real_floor(classifier, len(images), ref_stats, seed=seed),
        "reference": f"mnist-5k test split ({len(reference)} digits)",
    }
    if labels is not None:
        device = next(classifier.parameters()).device
        result["accuracy"] = round(accuracy(classifier, x.to(device), labels.to(device)), 4)
        x_ref, y_ref = reference.float_images().to(device), reference.labels.to(device)
        result["real_accuracy"] = round(accuracy(classifier, x_ref, y_ref), 4)
    return result


def load_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """`images` (and `labels`, if present) from a .npz written by `minilineage sample`; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no samples file {str(path)!r}; make one with `minilineage sample CHECKPOINT --n 1000 --out FILE.npz`")
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as error:  # zip, pickle and format errors all mean "not our .npz"
        raise ValueError(f"{path} is not a readable .npz file ({type(error).__name__}: {error})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array; expected a .npz with `images` (and optionally `labels`)")
    with arrays:
        if "images" not in arrays.files:
            raise ValueError(f"{path} has no `images` array (it has: {', '.join(arrays.files) or 'nothing'})")
        return arrays["images"], arrays["labels"] if "labels" in arrays.files else None


def format_table(result: dict, source: str) -> str:
    """The numbers of `evaluate_samples`, each with how to read it."""
    n = result["floor_n"]
    rows = [
        ("fid_lenet", f"{result['fid_lenet']:.3f}", f"samples vs the {result['reference']}; lower is better"),
        ("real_floor", f"{result['real_floor']:.3f}", f"+- {result['real_floor_std']:.3f} (std over 5 draws): {n} real "
         "training digits vs the same reference, the level real data reaches at this N"),
    ]
    if "accuracy" in result:
        rows.append(("accuracy", f"{result['accuracy']:.4f}", "fraction of samples classified as the requested label"))
        rows.append(("real_accuracy", f"{result['real_accuracy']:.4f}", "the classifier on the real reference digits (the ceiling)"))
    lines = [f"{result['n']} samples from {source}; FID-LeNet uses the features of minilineage's own MNIST LeNet",
             "(not Inception features: not comparable with published FIDs)", ""]
    lines += [f"  {name:14s}{value:>10s}   {reading}" for name, value, reading in rows]
    lines += ["", "real_floor is a reference level, not a floor. FID-LeNet is biased upwards at small N, so compare",
              "models at equal N only; a gap within about 2 std is chance; and the bias depends on the scored set:",
              "random real digits vary in how many of each class they hold, samples asked for in equal numbers per",
              "class do not, so at small N such samples can score below real digits although they are further from them."]
    return "\n".join(lines)


# What `minilineage train` measures at the end of each recipe (recorded in the checkpoint's "metrics").
# Each takes the trained model and its device and returns a dict of numbers.


def eval_reconstruction(model: nn.Module, device: torch.device) -> dict:
    """Per-pixel MSE ([0, 1] scale) of reconstructing the 500 held-out digits."""
    x = load_dataset("mnist-5k", "test").float_images().to(device)
    return {"test_mse": round(reconstruction_mse(model, x), 5)}


@torch.no_grad()
def eval_vae(model: VAE, device: torch.device) -> dict:
    """Reconstruction MSE and the mean KL(q(z|x) || N(0, I)) in nats on the held-out digits."""
    x = load_dataset("mnist-5k", "test").float_images().to(device)
    mu, logvar = model.encode(x)
    return {"test_mse": round(reconstruction_mse(model, x), 5),
            "test_kl": round(kl_to_standard_normal(mu, logvar).mean().item(), 3)}


@torch.no_grad()
def eval_latent_vae(model: LatentVAE, device: torch.device) -> dict:
    """Reconstruction MSE, KL, and the latent scale factor latent diffusion will use."""
    x = load_dataset("mnist-5k", "test").float_images().to(device)
    mu, logvar = model.encode(x)
    x_train = load_dataset("mnist-5k", "train").float_images().to(device)
    return {"test_mse": round(reconstruction_mse(model, x), 5),
            "test_kl": round(kl_to_standard_normal(mu.flatten(1), logvar.flatten(1)).mean().item(), 2),
            "latent_scale": round(latent_scale_factor(model, x_train), 4)}


def eval_classifier(model: LeNet, device: torch.device) -> dict:
    """Accuracy on the 500 held-out digits."""
    test = load_dataset("mnist-5k", "test")
    return {"test_accuracy": round(accuracy(model, test.float_images().to(device), test.labels.to(device)), 4)}


@torch.no_grad()
def eval_clip(model: MiniCLIP, device: torch.device) -> dict:
    """Zero-shot accuracy on the held-out digits, per caption template (template 0: "a handwritten seven")."""
    test = load_dataset("mnist-5k", "test")
    per_template = [round(zero_shot_accuracy(model, test, k), 4) for k in range(len(test.templates))]
    return {"zero_shot_accuracy": per_template[0], "zero_shot_accuracy_per_template": per_template}


@torch.no_grad()
def eval_digit_samples(model: nn.Module, device: torch.device, n: int = 1000, guidance: float | None = None) -> dict:
    """n samples asking for the digits 0-9 in turn (by label or by prompt "a handwritten seven"), with the
    model's default steps and guidance (or `guidance`), scored by lenet-mnist: FID-LeNet and how many show
    the digit asked for."""
    guidance = model.config.guidance if guidance is None else guidance
    generator = torch.Generator(device=device).manual_seed(0)
    started = time.perf_counter()
    images = torch.cat([model.sample(min(500, n - i), generator, guidance=guidance) for i in range(0, n, 500)])
    seconds = time.perf_counter() - started
    scores = evaluate_samples(to_uint8(images), torch.arange(n) % 10)
    return {**scores, "samples": n, "sample_seconds": round(seconds, 1), "guidance": guidance,
            "steps": model.config.sample_steps}


@torch.no_grad()
def eval_vit(model: nn.Module, device: torch.device) -> dict:
    """Accuracy on the 500 held-out digits, and on the same digits with their 4 x 4 (or p x p) patches
    shuffled into one fixed random order: what the model reads from where a patch sits."""
    from minilineage.layers import patchify, unpatchify  # kept with its one user

    test = load_dataset("mnist-5k", "test")
    x, y = test.float_images().to(device), test.labels.to(device)
    tokens, grid = patchify(x, model.config.patch)  # (500, N, p*p*C)
    order = torch.randperm(tokens.shape[1], generator=torch.Generator().manual_seed(0)).to(device)
    shuffled = unpatchify(tokens[:, order], grid, model.config.patch)  # (500, C, H, W), patches moved
    return {"test_accuracy": round(accuracy(model, x, y), 4),
            "test_accuracy_patches_shuffled": round(accuracy(model, shuffled, y), 4)}


# ---- Standard FID (Inception-v3), for CIFAR-10 and UCF-101 frames -----------------------------------

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


def inception_weights(path: str | Path | None = None) -> Path:
    """The FID Inception-v3 weights: `path`, else $MINILINEAGE_INCEPTION_WEIGHTS, else the data cache.

    They cannot be downloaded where the course runs offline, so a missing file is an error that says
    where to get it (about 92 MB) and where to put it.
    """
    places = [Path(p) for p in (path, os.environ.get("MINILINEAGE_INCEPTION_WEIGHTS")) if p] or [cache_dir() / INCEPTION_FILE]
    for place in places:
        if place.is_file():
            return place
    raise FileNotFoundError(
        f"standard FID needs the Inception-v3 weights FID is defined with (Heusel et al. 2017; torch-fidelity's port), "
        f"not found at {places[0]}. On a machine with internet, download {INCEPTION_URL} and put it at "
        f"{cache_dir() / INCEPTION_FILE}, or pass --inception-weights PATH (or set MINILINEAGE_INCEPTION_WEIGHTS). "
        f"Offline, FID-LeNet (the default metric) needs no download.")


def standard_fid(samples: torch.Tensor, reference: torch.Tensor, weights: str | Path | None = None,
                 feature: nn.Module | None = None, batch_size: int = 100, device: str | torch.device = "cpu") -> float:
    """FID (Heusel et al. 2017, Eq. (6)) on the usual Inception-v3 pool features, through torchmetrics.

    `samples` and `reference` are uint8 images (N, C, H, W) or videos (N, F, C, H, W) (every frame is
    scored as an image); grey images are repeated to RGB. `feature` replaces the Inception network
    (any module from uint8 images to (B, D) features; the tests use a small stand-in).
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as error:  # an optional extra: name it
        raise ModuleNotFoundError("standard FID needs the `fid` extra (torchmetrics, torch-fidelity): "
                                  "pip install 'minilineage[fid]'") from error
    if feature is None:
        metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(inception_weights(weights)))
    else:
        metric = FrechetInceptionDistance(feature=feature)
    metric = metric.to(device)
    for real, images in ((True, reference), (False, samples)):
        if images.dtype != torch.uint8 or images.ndim not in (4, 5):
            raise ValueError(f"expected uint8 images (N, C, H, W) or videos (N, F, C, H, W), got {images.dtype} {tuple(images.shape)}")
        frames = images.flatten(0, 1) if images.ndim == 5 else images  # (N F, C, H, W)
        for chunk in frames.split(batch_size):
            metric.update(chunk.expand(-1, 3, -1, -1).to(device), real=real)  # grey -> RGB (C = 1 broadcasts)
    return float(metric.compute())


@torch.no_grad()
def eval_cifar_samples(model: nn.Module, device: torch.device, n: int = 10_000) -> dict:
    """n class-conditional samples (classes 0-9 in turn) with the model's default steps and guidance,
    scored by standard FID against the 50,000 CIFAR-10 training images ("FID-10k") when the Inception
    weights are present; otherwise the record says how to get them and `minilineage eval --metric fid`
    scores the samples later."""
    generator = torch.Generator(device=device).manual_seed(0)
    started = time.perf_counter()
    labels = torch.arange(n, device=device) % 10
    images = torch.cat([model.sample(len(y), generator, labels=y) for y in labels.split(500)])
    record = {"samples": n, "sample_seconds": round(time.perf_counter() - started, 1),
              "guidance": model.config.guidance, "steps": model.config.sample_steps}
    try:
        weights = inception_weights()
    except FileNotFoundError as missing:
        return {**record, "fid": None, "fid_unavailable": str(missing)}
    reference = load_dataset("cifar10", "train").images
    return {**record, "fid": round(standard_fid(to_uint8(images).cpu(), reference, weights, device=device), 2)}
