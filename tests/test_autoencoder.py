import math

import pytest
import torch

from minilineage.data import load_dataset
from minilineage.models.autoencoder import (
    AEConfig,
    Autoencoder,
    ae_loss,
    denoising_ae_loss,
    reconstruction_mse,
)


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

    from minilineage.models.autoencoder import kl_to_standard_normal, reparameterize

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
    from minilineage.models.autoencoder import reparameterize

    mu = torch.full((100_000, 1), 3.0, requires_grad=True)
    logvar = torch.full((100_000, 1), math.log(0.25), requires_grad=True)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(3.0, abs=0.01) and z.std().item() == pytest.approx(0.5, abs=0.01)
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None


def test_vae_loss_is_reconstruction_plus_beta_kl():
    from minilineage.models.autoencoder import (
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


def test_vae_loss_at_the_default_decoder_variance_is_the_plain_sum_of_squares_bitwise():
    """decoder_var = 1/2 divides by exactly 1.0: the shipped checkpoints' loss is unchanged, to the bit."""
    from minilineage.models.autoencoder import (
        VAE,
        VAEConfig,
        kl_to_standard_normal,
        reparameterize,
        vae_loss,
    )

    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=4, beta=0.7))
    assert model.config.decoder_var == 0.5
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(2))
    before = ((model.decode(z) - x).pow(2).flatten(1).sum(dim=1) + 0.7 * kl_to_standard_normal(mu, logvar)).mean()
    assert torch.equal(vae_loss(model, {"x": x}, torch.Generator().manual_seed(2)), before)


def test_only_two_sigma_squared_beta_matters():
    """(beta, sigma^2) and (beta', sigma'^2) with the same product give losses in the ratio sigma'^2 / sigma^2."""
    from minilineage.models.autoencoder import VAE, VAEConfig, vae_loss

    torch.manual_seed(0)
    a = VAE(VAEConfig(latent_dim=3, beta=1.0, decoder_var=0.05))
    with torch.no_grad():
        a.encoder[-1].bias[:3] = 2.0  # mu near 2: a KL of several nats, so beta visibly matters
    b = VAE(VAEConfig(latent_dim=3, beta=0.1, decoder_var=0.5))
    b.load_state_dict(a.state_dict())
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    loss_a = vae_loss(a, {"x": x}, torch.Generator().manual_seed(3)).item()
    loss_b = vae_loss(b, {"x": x}, torch.Generator().manual_seed(3)).item()
    assert loss_a == pytest.approx(10 * loss_b, rel=1e-6)
    c = VAE(VAEConfig(latent_dim=3, beta=1.0, decoder_var=0.5))
    c.load_state_dict(a.state_dict())
    assert vae_loss(c, {"x": x}, torch.Generator().manual_seed(3)).item() > loss_b + 1  # product 1, not 0.1


def test_gaussian_log_likelihood_matches_torch_distributions():
    from torch.distributions import Normal

    from minilineage.models.autoencoder import gaussian_log_likelihood

    x, x_hat = torch.rand(2, 3, 1, 6, 6, generator=torch.Generator().manual_seed(0)).unbind(0)
    for var in (0.5, 0.05, 2.0):
        expected = Normal(x_hat, math.sqrt(var)).log_prob(x).flatten(1).sum(1)
        assert torch.allclose(gaussian_log_likelihood(x, x_hat, var), expected, rtol=1e-5)
    # identical images: only the normalising constant is left, -(D / 2) log(2 pi var)
    assert gaussian_log_likelihood(x, x, 0.5)[0].item() == pytest.approx(-18 * math.log(math.pi), rel=1e-6)


def test_negative_elbo_is_the_loss_plus_its_constant_at_beta_one():
    from minilineage.models.autoencoder import VAE, VAEConfig, negative_elbo, vae_loss

    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for var in (0.5, 0.05):
        model = VAE(VAEConfig(latent_dim=4, beta=1.0, decoder_var=var))
        constant = 784 / 2 * math.log(2 * math.pi * var)
        full = negative_elbo(model, x, torch.Generator().manual_seed(4)).mean().item()
        assert full == pytest.approx(vae_loss(model, {"x": x}, torch.Generator().manual_seed(4)).item() + constant, rel=1e-6)
    rescored = negative_elbo(model, x, torch.Generator().manual_seed(4), var=0.5).mean().item()  # trained at 0.05
    assert rescored < full  # random decodings are far from x: the wide variance scores them as less unlikely


def test_shipped_vaes_load_with_the_default_decoder_variance():
    """Checkpoints written before decoder_var existed load with 1/2, the variance they were trained with."""
    from minilineage.checkpoint import load_model

    assert load_model("vae-mnist").config.decoder_var == 0.5
    assert "decoder_var" not in load_model("vae-mnist").checkpoint_info["model_config"]
    assert load_model("vae-mnist-var0.05").config.decoder_var == 0.05
