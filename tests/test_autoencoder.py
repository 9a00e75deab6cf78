import math

import pytest
import torch

from minilineage.autoencoder import (
    AEConfig,
    Autoencoder,
    ae_loss,
    denoising_ae_loss,
    reconstruction_mse,
)
from minilineage.data import load_dataset


def test_shapes_round_trip():
    model = Autoencoder(AEConfig(latent_dim=3))
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    assert model.encode(x).shape == (5, 3)
    assert model(x).shape == x.shape
    assert model.sample(4, torch.Generator().manual_seed(0)).shape == (4, 1, 28, 28)


def test_one_batch_overfits():
    x = load_dataset("mnist-5k", "test").float_images()[:16]
    model = Autoencoder(AEConfig(latent_dim=8, width=16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = ae_loss(model, {"x": x}, g).item()
    for _ in range(150):
        loss = ae_loss(model, {"x": x}, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first


def test_denoising_loss_sees_noisy_inputs():
    x = torch.zeros(4, 1, 28, 28)

    class Identity(torch.nn.Module):
        def forward(self, inp):
            return inp

    # an identity "autoencoder" is perfect on clean data but pays for the noise it passes through
    assert ae_loss(Identity(), {"x": x}, None).item() == 0
    assert denoising_ae_loss(Identity(), {"x": x}, torch.Generator().manual_seed(0)).item() > 0.05


def test_reconstruction_mse_is_on_the_unit_pixel_scale():
    x = torch.full((2, 1, 28, 28), -1.0)

    class Grey(torch.nn.Module):
        def forward(self, inp):
            return torch.zeros_like(inp)  # 0.5 on the [0, 1] scale

    assert reconstruction_mse(Grey(), x) == 0.25


def test_kl_closed_form_matches_monte_carlo():
    from torch.distributions import Normal

    from minilineage.autoencoder import kl_to_standard_normal, reparameterize

    mu = torch.tensor([[0.5, -1.0, 2.0]])
    logvar = torch.tensor([[0.0, -1.5, 0.7]])
    g = torch.Generator().manual_seed(0)
    z = reparameterize(mu.expand(200_000, 3), logvar.expand(200_000, 3), g)
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(1).mean()
    closed = kl_to_standard_normal(mu, logvar)
    assert closed.item() == pytest.approx(monte_carlo.item(), abs=0.02)
    assert closed.item() == pytest.approx(0.5 * sum(m**2 + v.exp() - 1 - v for m, v in zip(mu[0], logvar[0])).item())
    assert kl_to_standard_normal(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0


def test_reparameterisation_samples_the_right_gaussian_and_passes_gradients():
    from minilineage.autoencoder import reparameterize

    mu = torch.full((100_000, 1), 3.0, requires_grad=True)
    logvar = torch.full((100_000, 1), math.log(0.25), requires_grad=True)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(3.0, abs=0.01) and z.std().item() == pytest.approx(0.5, abs=0.01)
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None


def test_vae_loss_is_reconstruction_plus_beta_kl():
    from minilineage.autoencoder import (
        VAE,
        VAEConfig,
        kl_to_standard_normal,
        reparameterize,
        vae_loss,
    )

    x = torch.rand(6, 1, 28, 28) * 2 - 1
    for beta in (0.0, 1.0, 4.0):
        model = VAE(VAEConfig(latent_dim=4, beta=beta))
        mu, logvar = model.encode(x)
        z = reparameterize(mu, logvar, torch.Generator().manual_seed(3))
        expected = ((model.decode(z) - x) ** 2).flatten(1).sum(1) + beta * kl_to_standard_normal(mu, logvar)
        assert vae_loss(model, {"x": x}, torch.Generator().manual_seed(3)).item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert model.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)
