"""Chapter 2 (VAE): exercises and their reference answers."""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal

from minilineage.checkpoint import load_model
from minilineage.data import load_dataset
from minilineage.exercises.core import close_to, register
from minilineage.models.autoencoder import kl_to_standard_normal, negative_elbo

register("ch2.kl_by_hand", close_to(0.5), "put mu = 1 and sigma^2 = 1 into 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)",
         solution=0.5 * (1 + 1 - 1 - math.log(1)))


def _reparameterises(my_z) -> bool:
    """z = mu + exp(logvar / 2) * eps on fresh inputs."""
    g = torch.Generator().manual_seed(3)
    mu, logvar, eps = torch.randn(3, 5, generator=g).unbind(0)
    return close_to(mu + (0.5 * logvar).exp() * eps)(my_z(mu, logvar, eps))


def reparameterised_sample(mu, logvar, eps):
    return mu + torch.exp(0.5 * logvar) * eps


register("ch2.reparameterise", _reparameterises, "the standard deviation is exp(logvar / 2)",
         solution=reparameterised_sample)


def _kl(my_kl) -> bool:
    """The student's closed-form KL equals the package's on random (B, d) inputs, and is 0 for q = p."""
    mu, logvar = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(4)).unbind(0)
    return (close_to(kl_to_standard_normal(mu, logvar))(my_kl(mu, logvar))
            and close_to(torch.zeros(3))(my_kl(torch.zeros(3, 2), torch.zeros(3, 2))))


def kl_closed_form(mu, logvar):
    return 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)


register("ch2.kl", _kl, "sum 1/2 (mu^2 + sigma^2 - 1 - log sigma^2) over the code dimensions (dim=1), "
         "with sigma^2 = exp(logvar)", solution=kl_closed_form)


def _log_likelihood(my_log_likelihood) -> bool:
    """Equals torch.distributions' Normal log-density summed over pixels, at two variances."""
    x, x_hat = torch.rand(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(5)).unbind(0)
    return all(close_to(Normal(x_hat, math.sqrt(var)).log_prob(x).flatten(1).sum(1))(my_log_likelihood(x, x_hat, var))
               for var in (0.5, 0.05))


def gaussian_log_likelihood(x, x_hat, var):
    D = x[0].numel()
    return -((x - x_hat) ** 2).flatten(1).sum(1) / (2 * var) - D / 2 * math.log(2 * math.pi * var)


register("ch2.log_likelihood", _log_likelihood, "-||x - x_hat||^2 / (2 var) per image, minus (D / 2) log(2 pi var) "
         "with D the number of pixels of one image", solution=gaussian_log_likelihood)


def _negative_elbo(my_negative_elbo) -> bool:
    """Equals the package's one-sample negative ELBO on 20 test digits, with the same eps, at two variances."""
    model = load_model("vae-mnist-z2")
    x = load_dataset("mnist-5k", "test").float_images()[::25]
    with torch.no_grad():
        eps = torch.randn(len(x), 2, generator=torch.Generator().manual_seed(6))  # what reparameterize draws
        return all(close_to(negative_elbo(model, x, torch.Generator().manual_seed(6), var), rtol=1e-4, atol=1e-3)(
            my_negative_elbo(model, x, eps, var)) for var in (0.5, 0.05))


def negative_elbo_by_hand(model, x, eps, var):
    with torch.no_grad():
        mu, logvar = model.encode(x)
        x_hat = model.decode(mu + torch.exp(0.5 * logvar) * eps)
    D = x[0].numel()
    log_likelihood = -((x - x_hat) ** 2).flatten(1).sum(1) / (2 * var) - D / 2 * math.log(2 * math.pi * var)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    return -log_likelihood + kl


register("ch2.negative_elbo", _negative_elbo, "encode, reparameterise with the given eps, decode; then minus the "
         "Gaussian log-likelihood (with its constant) plus the closed-form KL", solution=negative_elbo_by_hand)


def _best_variance(my_best_variance) -> bool:
    """The closed form, and it maximises the summed log-likelihood (nudging it either way lowers the sum)."""
    x, x_hat = torch.rand(2, 4, 1, 5, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64).unbind(0)
    var = float(my_best_variance(x, x_hat))
    total = lambda v: Normal(x_hat, math.sqrt(v)).log_prob(x).sum().item()  # noqa: E731
    return math.isclose(var, (x - x_hat).pow(2).mean().item(), rel_tol=1e-4) and total(var) > max(total(var * 1.05), total(var / 1.05))


def best_variance(x, x_hat):
    return ((x - x_hat) ** 2).mean().item()


register("ch2.best_variance", _best_variance, "set the derivative of -R / (2 var) - (D / 2) log var to zero: "
         "the mean squared residual per pixel", solution=best_variance)
register("ch2.same_knob", close_to(2.5), "only the product 2 sigma^2 beta matters: keep it fixed while beta goes from 5 to 1",
         solution=0.5 * 5)


CENTRE_DIGIT = 8  # what lenet-mnist reads in vae-mnist's decoding of z = 0 (with probability 0.99)


def _centre_digit(digit) -> bool:
    vae, classifier = load_model("vae-mnist"), load_model("lenet-mnist")
    with torch.no_grad():
        return int(digit) == classifier(vae.decode(torch.zeros(1, vae.config.latent_dim))).argmax().item()


register("ch2.centre_digit", _centre_digit, "decode z = 0 with the VAE and take the classifier's most likely class",
         solution=CENTRE_DIGIT)
