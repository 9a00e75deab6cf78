"""The causal spatio-temporal VAE: shapes, the frame rule, causality, images as 1-frame videos, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minilineage import data
from minilineage.models import MODELS, build
from minilineage.models.autoencoder import kl_to_standard_normal
from minilineage.models.vae3d import CausalConv3d, VAE3d, VAE3dConfig, vae3d_loss


def small(**changes) -> VAE3d:
    torch.manual_seed(0)
    return VAE3d(VAE3dConfig(width=4, latent_channels=2, **changes)).eval()


@pytest.mark.parametrize("s, frames, latent_frames", [(4, 1, 1), (4, 5, 2), (4, 13, 4), (2, 7, 4), (1, 3, 3)])
@pytest.mark.parametrize("height, width", [(8, 8), (12, 20)])
def test_shapes_follow_one_plus_k_s_frames_and_four_times_smaller_frames(s, frames, latent_frames, height, width):
    vae = small(temporal_downsample=s)
    x = torch.randn(2, frames, 1, height, width)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, latent_frames, 2, height // 4, width // 4)
    assert vae.latent_size(frames, height, width) == (latent_frames, 2, height // 4, width // 4)
    assert vae.decode(mu).shape == x.shape and vae(x).shape == x.shape


def test_sizes_that_do_not_fit_are_refused_with_the_sizes():
    vae = small()
    with pytest.raises(ValueError, match=r"takes 1 \+ k\*4 frames \(1, 5, 9, \.\.\.\), got 16; use 13 or 17 frames"):
        vae.encode(torch.zeros(1, 16, 1, 8, 8))
    with pytest.raises(ValueError, match="frame size 8x10 must be divisible by 4"):
        vae.encode(torch.zeros(1, 5, 1, 8, 10))
    with pytest.raises(ValueError, match=r"expected videos \(B, F, 1, H, W\), got \(1, 1, 8, 8\)"):
        vae.encode(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"expected latents \(B, f, 2, h, w\), got \(1, 2, 3, 2, 2\)"):
        vae.decode(torch.zeros(1, 2, 3, 2, 2))
    with pytest.raises(ValueError, match="temporal_downsample must be 1, 2 or 4, got 3"):
        VAE3dConfig(temporal_downsample=3)


@torch.no_grad()
def test_encoder_is_causal_a_latent_frame_never_sees_a_later_frame():
    vae = small()
    x = torch.randn(1, 13, 1, 8, 8)
    mu = vae.encode(x)[0]  # (1, 4, 2, 2, 2): latent j covers frames 4j-3 .. 4j
    for k in range(13):
        changed = x.clone()
        changed[:, k] += 1.0
        diff = (vae.encode(changed)[0] - mu).flatten(2).abs().amax(-1)[0]  # (4,) per latent frame
        first = (k + 3) // 4  # the first latent frame whose group reaches frame k
        assert (diff[:first] == 0).all(), (k, diff)  # exactly unchanged, not merely close
        assert diff[first] > 1e-4


@torch.no_grad()
def test_decoder_is_causal_a_frame_never_sees_a_later_latent():
    vae = small()
    z = torch.randn(1, 4, 2, 2, 2)
    x = vae.decode(z)  # (1, 13, 1, 8, 8)
    for j in range(4):
        changed = z.clone()
        changed[:, j] += 1.0
        diff = (vae.decode(changed) - x).flatten(2).abs().amax(-1)[0]  # (13,) per frame
        first = max(0, 4 * j - 3)
        assert (diff[:first] == 0).all() and diff[first] > 1e-6, (j, diff)


def conv2d_path(layers: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Run a stack of CausalConv3d / SiLU on images as 2-D convolutions: with one frame, the padding
    repeats it, so each kernel acts as the sum of its time slices."""
    for layer in layers.children() if isinstance(layers, nn.Sequential) else [layers]:
        if isinstance(layer, CausalConv3d):
            conv = layer.conv
            h = F.conv2d(h, conv.weight.sum(dim=2), conv.bias, stride=conv.stride[1:], padding=conv.padding[1:])
        else:
            h = layer(h)
    return h


@torch.no_grad()
def test_an_image_is_a_one_frame_video_and_the_first_frame_is_encoded_alone():
    vae = small()
    images = torch.randn(3, 1, 8, 12)
    mu = vae.encode(images[:, None])[0][:, 0]  # (3, 2, 2, 3)
    mu_2d = conv2d_path(vae.encoder, images).chunk(2, dim=1)[0]  # a plain 2-D network, built independently
    torch.testing.assert_close(mu, mu_2d, atol=1e-5, rtol=1e-5)
    up = lambda h: F.interpolate(h, scale_factor=2, mode="nearest")
    h = conv2d_path(vae.decoder_in, mu_2d)
    for layer in vae.decoder_time:  # TimeUpsample keeps frame 0 alone: the first half of its channels
        h = F.silu(h) if isinstance(layer, nn.SiLU) else conv2d_path(layer.conv, h)[:, : h.shape[1]]
    x_2d = conv2d_path(vae.decoder_out, up(conv2d_path(vae.decoder_up, up(h))))
    torch.testing.assert_close(vae.decode(mu[:, None])[:, 0], x_2d, atol=1e-5, rtol=1e-5)
    clip = torch.cat([images[:, None], torch.randn(3, 8, 1, 8, 12)], dim=1)  # the image, then 8 more frames
    torch.testing.assert_close(vae.encode(clip)[0][:, 0], mu, atol=1e-5, rtol=1e-5)


def test_loss_is_squared_error_plus_beta_kl():
    vae = small(beta=0.5)
    x = torch.randn(2, 5, 1, 8, 8)
    loss = vae3d_loss(vae, {"x": x}, torch.Generator().manual_seed(1))
    mu, logvar = vae.encode(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1))
    x_hat = vae.decode(mu + (0.5 * logvar).exp() * eps)
    expected = (x_hat - x).pow(2).flatten(1).sum(1) + 0.5 * kl_to_standard_normal(mu.flatten(1), logvar.flatten(1))
    torch.testing.assert_close(loss, expected.mean())


def test_one_batch_of_moving_digits_overfits():
    x = data.load_dataset("moving-mnist", "test", frames=5, size=16, n=2).float_images()  # (2, 5, 1, 16, 16)
    torch.manual_seed(0)
    vae = VAE3d(VAE3dConfig(width=8))
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for step in range(100):
        loss = vae3d_loss(vae, {"x": x}, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses[::10]


def test_registered_and_rebuilt_from_its_config():
    vae = build("VAE3d", {"width": 4, "latent_channels": 2})
    assert MODELS["VAE3d"] is VAE3d and isinstance(vae, VAE3d)
    assert VAE3d(VAE3dConfig()).latent_shape == (5, 4, 8, 8)  # 17 frames of 32 x 32
    samples = vae.sample(2, torch.Generator().manual_seed(0))
    assert samples.shape == (2, 17, 1, 32, 32) and samples.abs().max() <= 1
