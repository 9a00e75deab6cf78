import torch

from minilineage.autoencoder import AEConfig, Autoencoder, ae_loss, denoising_ae_loss, reconstruction_mse
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
