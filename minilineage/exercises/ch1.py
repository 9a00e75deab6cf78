"""Chapter 1 (autoencoder): exercises and their reference answers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minilineage.checkpoint import load_model
from minilineage.data import load_dataset
from minilineage.exercises.core import close_to, register
from minilineage.models.autoencoder import AEConfig, Autoencoder, reconstruction_mse

register("ch1.compression", close_to(49), "divide the number of pixels by the code size", solution=28 * 28 / 16)


def _mse_yourself(my_mse) -> bool:
    """The student's reconstruction error on the [0, 1] scale equals the package's on 100 test digits."""
    model, x = load_model("ae-mnist-z8"), load_dataset("mnist-5k", "test").float_images()[:100]
    with torch.no_grad():
        return close_to(reconstruction_mse(model, x), rtol=1e-3)(my_mse(model, x))


def mse_on_unit_scale(model, x):
    with torch.no_grad():
        x_hat = model(x).clamp(-1, 1)
    return (((x_hat + 1) / 2 - (x + 1) / 2) ** 2).mean()


register("ch1.mse", _mse_yourself, "map both x and the reconstruction from [-1, 1] to [0, 1] with (x + 1) / 2, "
         "then average the squared differences", solution=mse_on_unit_scale)


def _reads_as_one(code) -> bool:
    """ae-mnist decodes the code to an image lenet-mnist reads as a 1 with probability above 0.9."""
    ae, classifier = load_model("ae-mnist"), load_model("lenet-mnist")
    z = torch.as_tensor(code, dtype=torch.float32).reshape(1, 2)
    with torch.no_grad():
        return F.softmax(classifier(ae.decode(z)), dim=1)[0, 1].item() > 0.9


register("ch1.find_a_one", _reads_as_one, "look where the dots of label 1 sit in the scatter plot, and decode there",
         solution=torch.tensor([[2.4, 0.4]]), wrong=torch.tensor([[-3.0, -3.0]]))


def _counts_parameters(my_count) -> bool:
    """The student's formula matches the package's Autoencoder at several widths and code sizes."""
    sizes = [(16, 2), (16, 32), (8, 5), (4, 1), (32, 100)]
    expected = [sum(p.numel() for p in Autoencoder(AEConfig(width=w, latent_dim=d)).parameters()) for w, d in sizes]
    return [int(my_count(w, d)) for w, d in sizes] == expected


def autoencoder_parameters(width, latent_dim):
    flat = 2 * width * 7 * 7  # the 7x7 feature map with 2 * width channels, flattened
    encoder = (1 * 9 * width + width) + (width * 9 * 2 * width + 2 * width) + (flat * latent_dim + latent_dim)
    decoder = (latent_dim * flat + flat) + (2 * width * 9 * width + width) + (width * 9 * width + width) + (width * 16 + 1)
    return encoder + decoder


register("ch1.parameters", _counts_parameters, "read print(ae): weights (in * out * kernel area) plus one bias per "
         "output channel for each Conv2d, ConvTranspose2d and Linear; the two Linear layers connect "
         "2 * width * 7 * 7 numbers with the code", solution=autoencoder_parameters)


def _denoising_loss(my_loss) -> bool:
    """The student's loss equals the mean squared error of dae-mnist's output on x + sigma * eps against the clean x."""
    model, x = load_model("dae-mnist"), load_dataset("mnist-5k", "test").float_images()[::50]
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return all(close_to(F.mse_loss(model(x + sigma * eps), x).item(), rtol=1e-4)(my_loss(model, x, sigma, eps))
                   for sigma in (0.3, 1.0))


def denoising_loss(model, x, sigma, eps):
    with torch.no_grad():
        return ((model(x + sigma * eps) - x) ** 2).mean()


register("ch1.dae_loss", _denoising_loss, "corrupt the input, not the target: model(x + sigma * eps) is compared "
         "with the clean x, averaged over every pixel", solution=denoising_loss)
