"""How good a model is: FID-LeNet and class accuracy of samples, and each recipe's evaluation.

FID-LeNet is the Fréchet distance of Heusel et al. (2017) measured in the 64-number penultimate
layer of the course's own MNIST classifier (`lenet-mnist`, see minilineage.classifier), not in
Inception features: its numbers are not comparable with published FIDs, only with each other.

The protocol (`evaluate_samples`, `minilineage eval SAMPLES.npz`):
  reference   the 500 digits of the mnist-5k test split: never seen by the generative models nor
              by the classifier, so a model cannot score well by copying its training digits.
  fid_lenet   FID-LeNet(samples, reference).
  real_floor  FID-LeNet(N real training digits, reference), averaged over 5 random draws of the N
              digits, with its spread: what a perfect model would get with the same number of samples.
              FID estimated from finite sets is biased upwards (more so for small N), so read
              fid_lenet against this floor, never against 0. (The classifier was trained on these
              digits, which puts them a little further from the unseen reference: held-out digits
              would give a floor roughly 10 % lower.)
  accuracy    with labels: the fraction of samples the classifier assigns to the requested class,
              next to `real_accuracy`, the classifier's own accuracy on the reference digits.
The shipped classifier is the cpu preset, trained on the mnist-5k training split only; one trained
with the gpu preset (all of MNIST) may have seen the reference digits, which are MNIST digits too.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minilineage.checkpoint import load_model
from minilineage.data import load_dataset, to_uint8
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


def real_floor(classifier: nn.Module, n: int, ref_stats: tuple, draws: int = 5, seed: int = 0) -> dict:
    """Mean and spread of FID-LeNet(n real training digits, reference) over `draws` random draws of the n digits.

    The spread shows how much FID-LeNet moves by chance alone: smaller differences between models mean nothing.
    mnist-5k has 4,500 training digits, so for n > 4,500 the floor is the one for 4,500.
    """
    phi = lenet_features(classifier, load_dataset("mnist-5k", "train").float_images())  # (4500, D), once for all draws
    n = min(n, len(phi))
    g = torch.Generator().manual_seed(seed)
    picks = [torch.randperm(len(phi), generator=g)[:n] for _ in range(draws)]
    d = torch.tensor([frechet_distance(*feature_stats(phi[pick]), *ref_stats) for pick in picks])
    return {"real_floor": round(d.mean().item(), 3), "real_floor_std": round(d.std().item(), 3), "floor_n": n}


def evaluate_samples(images, labels=None, classifier: nn.Module | None = None, seed: int = 0) -> dict:
    """FID-LeNet of uint8 samples (N, 1, 28, 28) vs the mnist-5k test digits, its real-data floor and,
    given the requested labels (N,), the fraction of samples classified as asked (see the module docstring)."""
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
    rows = [
        ("fid_lenet", f"{result['fid_lenet']:.3f}", f"samples vs the {result['reference']}; lower is better"),
        ("real_floor", f"{result['real_floor']:.3f}", f"{result['floor_n']} real training digits vs the same reference: "
         f"a perfect model's score (+- {result['real_floor_std']:.3f} from draw to draw)"),
    ]
    if "accuracy" in result:
        rows.append(("accuracy", f"{result['accuracy']:.4f}", "fraction of samples classified as the requested label"))
        rows.append(("real_accuracy", f"{result['real_accuracy']:.4f}", "the classifier on the real reference digits (the ceiling)"))
    lines = [f"{result['n']} samples from {source}; FID-LeNet uses the features of minilineage's own MNIST LeNet",
             "(not Inception features: not comparable with published FIDs)", ""]
    lines += [f"  {name:14s}{value:>10s}   {reading}" for name, value, reading in rows]
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
def eval_digit_samples(model: nn.Module, device: torch.device, n: int = 1000) -> dict:
    """n samples asking for the digits 0-9 in turn (by label or by prompt "a handwritten seven"), with the
    model's default steps and guidance, scored by lenet-mnist: FID-LeNet and how many show the digit asked for."""
    generator = torch.Generator(device=device).manual_seed(0)
    started = time.perf_counter()
    images = torch.cat([model.sample(min(500, n - i), generator) for i in range(0, n, 500)])
    seconds = time.perf_counter() - started
    scores = evaluate_samples(to_uint8(images), torch.arange(n) % 10)
    return {**scores, "samples": n, "sample_seconds": round(seconds, 1), "guidance": model.config.guidance,
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
