"""Chapter 4: the latent VAE, the CLIP adapter, latent diffusion with text, its CLI and widgets."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from minilineage import checkpoint, cli
from minilineage.checkpoint import load_model
from minilineage.data import digit_prompts, load_dataset, prompt_digit, to_uint8
from minilineage.diffusion import DiffusionPipeline, PipelineConfig, diffusion_loss, drop_captions
from minilineage.layers import CrossAttention
from minilineage.models.clip import MiniCLIP, MiniCLIPConfig, caption_tokenizer, zero_shot_accuracy
from minilineage.models.latent import (
    LatentVAE,
    LatentVAEConfig,
    encode_latents,
    latent_scale_factor,
    latent_vae_loss,
)
from minilineage.recipes import train_recipe
from minilineage.widgets import similarity_explorer, text_to_image

TINY_CLIP = dict(text_width=32, text_layers=1, text_heads=2, image_width=8, embed_dim=16)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset("mnist-5k", "test").float_images()[:64]  # (64, 1, 28, 28)


def tiny_ldm(x: torch.Tensor, p_uncond: float = 0.1, live: bool = True, T: int = 1000) -> DiffusionPipeline:
    """A small text-to-image latent diffusion pipeline from fresh parts; live=True gives the U-Net a
    non-zero output layer."""
    torch.manual_seed(0)
    vae, clip = LatentVAE(LatentVAEConfig(width=8)), MiniCLIP(MiniCLIPConfig(**TINY_CLIP))
    unet = {"cls": "UNet", "config": {"width": 16, "channel_mults": (1,), "attention_levels": (0,), "heads": 2}}
    config = PipelineConfig(denoiser=unet, p_uncond=p_uncond, T=T, guidance=3.0)
    model = DiffusionPipeline.from_parts(config, autoencoder=vae, clip=clip, x_train=x)
    if live:  # the zero-initialised output conv would make every prediction 0 and every prompt alike
        torch.nn.init.normal_(model.net.out_conv.weight, std=0.05)
        for layer in model.net.modules():
            if isinstance(layer, CrossAttention):
                torch.nn.init.normal_(layer.to_out.weight, std=0.2)
    return model.eval()


def test_latent_vae_maps_28x28_digits_to_4x7x7_and_back(digits):
    vae = LatentVAE(LatentVAEConfig(width=8))
    mu, logvar = vae.encode(digits[:5])
    assert mu.shape == logvar.shape == (5, 4, 7, 7) and vae.latent_shape == (4, 7, 7)
    assert vae.decode(mu).shape == vae(digits[:5]).shape == (5, 1, 28, 28)
    assert vae.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="28, 28"):
        vae.encode(torch.zeros(2, 1, 32, 32))


def test_latent_vae_loss_is_squared_error_plus_beta_kl(digits):
    vae = LatentVAE(LatentVAEConfig(width=8, beta=0.3))
    x = digits[:6]
    loss = latent_vae_loss(vae, {"x": x}, torch.Generator().manual_seed(3))
    mu, logvar = vae.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
    kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)  # torch's own KL
    expected = ((vae.decode(z) - x) ** 2).flatten(1).sum(1) + 0.3 * kl
    torch.testing.assert_close(loss, expected.mean())


def test_scale_factor_gives_unit_std_latents(digits):
    torch.manual_seed(1)
    vae = LatentVAE(LatentVAEConfig(width=8))
    with torch.no_grad():
        vae.encoder[-1].weight[:4].mul_(100.0)  # means (channels 0-3) spread far wider than 1
        vae.encoder[-1].bias[4:].fill_(-8.0)  # log-variances (channels 4-7): sigma = e^-4
    scale = latent_scale_factor(vae, digits)
    z = encode_latents(vae, digits, torch.Generator().manual_seed(0))
    assert abs(z.std().item() - 1.0) > 0.5
    assert (scale * z).std().item() == pytest.approx(1.0, abs=1e-5)


def test_ldm_builds_from_parts_with_their_weights_and_scale(digits):
    model = tiny_ldm(digits, live=False)
    unet = model.config.denoiser["config"]
    assert unet["in_channels"] == 4 and unet["context_dim"] == 32 and model.config.shape == (4, 7, 7)
    assert model.config.latent_scale == pytest.approx(latent_scale_factor(model.autoencoder, digits))
    z0 = model.config.latent_scale * encode_latents(model.autoencoder, digits, torch.Generator().manual_seed(0))
    assert model.config.clip_x0 == pytest.approx(z0.abs().max().item())  # sampling clips x0_hat to the data's range
    assert all(not p.requires_grad for p in [*model.autoencoder.parameters(), *model.condition.parameters()])
    assert model.sample_options == ("prompt", "guidance", "steps")
    with pytest.raises(ValueError, match="context_dim"):
        DiffusionPipeline(PipelineConfig(denoiser={"cls": "UNet", "config": {"in_channels": 4, "context_dim": 8}},
                                         text=TINY_CLIP))


def test_caption_dropout_replaces_captions_by_the_empty_prompt():
    captions = [f"caption {i}" for i in range(200)]
    dropped = drop_captions(captions, 0.1, torch.Generator().manual_seed(0))
    kept = [a == b for a, b in zip(dropped, captions)]
    assert set(d for d, k in zip(dropped, kept) if not k) == {""}
    assert 8 <= kept.count(False) <= 35  # about 10 % of 200
    assert drop_captions(captions, 1.0, torch.Generator()) == [""] * 200
    assert drop_captions(captions, 0.0, torch.Generator()) == captions


def test_ldm_loss_with_full_dropout_feeds_the_empty_prompt_encoding(digits):
    model = tiny_ldm(digits, p_uncond=1.0)
    seen = []
    model.net.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs), with_kwargs=True)
    diffusion_loss(model, {"x": digits[:4], "captions": ["a handwritten seven"] * 4}, torch.Generator().manual_seed(0))
    null = model.null_condition()
    torch.testing.assert_close(seen[0]["context"], null["context"].expand(4, -1, -1))
    torch.testing.assert_close(seen[0]["context_mask"], null["context_mask"].expand(4, -1))


def test_one_batch_overfit_lowers_the_ldm_loss(digits):
    model = tiny_ldm(digits, live=False).train()
    batch = {"x": digits[:16], "captions": digit_prompts(16)}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(40):
        loss = diffusion_loss(model, batch, torch.Generator().manual_seed(0))  # the same t and noise every step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.5 and losses[-1] < 0.5 * losses[0]
    assert model.condition.encoder.token_embedding.weight.grad is None  # the text encoder stays frozen


def test_sample_returns_pixel_images_for_prompts(digits):
    model = tiny_ldm(digits)
    images = model.sample(3, torch.Generator().manual_seed(0), prompt="a handwritten seven", steps=3)
    assert images.shape == (3, 1, 28, 28) and images.abs().max() <= 1
    again = model.sample(3, torch.Generator().manual_seed(0), prompt="a handwritten seven", steps=3)
    torch.testing.assert_close(images, again)
    other = model.sample(3, torch.Generator().manual_seed(0), prompt="the digit 2", steps=3)
    assert not torch.allclose(images, other)
    prompts = digit_prompts(12)
    assert prompts[:2] == ["a handwritten zero", "a handwritten one"] and prompts[11] == "a handwritten one"
    with pytest.raises(ValueError, match="3 samples but 2 prompts"):
        model.sample(3, torch.Generator(), prompt=["a", "b"], steps=2)


def test_guidance_makes_one_batched_forward_per_step_and_mixes_predictions(digits):
    model = tiny_ldm(digits)
    batches = []
    model.net.register_forward_pre_hook(lambda m, args, kwargs: batches.append(args[0].shape[0]), with_kwargs=True)
    model.sample(5, torch.Generator().manual_seed(0), prompt="a handwritten one", steps=4, guidance=3.0)
    assert batches == [10, 10, 10, 10]  # [cond; null] in one call per step
    z, t = torch.randn(2, 4, 7, 7), torch.tensor([500, 20])
    text = model.conditioning(2, prompt="a handwritten one")
    null = model.null_condition()
    cond = model(z, t, **text)
    uncond = model(z, t, context=null["context"].expand(2, -1, -1), context_mask=null["context_mask"].expand(2, -1))
    mixed = model.denoiser(3.0)(z, t, **text)
    torch.testing.assert_close(mixed, uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)


def test_cross_attention_maps_split_each_position_over_the_prompt_tokens(digits):
    model = tiny_ldm(digits)
    prompts = ["a handwritten seven", "the digit 7"]
    maps = model.cross_attention_maps(torch.randn(2, 4, 7, 7), torch.tensor(300), prompts)
    assert maps.shape == (2, 16, 7, 7)  # one 7x7 map per token of the context
    torch.testing.assert_close(maps.sum(dim=1), torch.ones(2, 7, 7))  # each position's attention sums to 1
    assert maps[0, 5:].abs().max() == 0 and maps[0, :5].min() > 0  # <bos> a handwritten seven <eos>, then padding
    layers = [m for m in model.net.modules() if isinstance(m, CrossAttention)]
    assert layers and all(not m.keep_weights and m.last_weights is None for m in layers)  # switched off again


def test_cli_samples_a_saved_ldm_from_a_prompt(digits, tmp_path, capsys):
    model = tiny_ldm(digits)
    record = {"format": checkpoint.FORMAT, "model_class": "DiffusionPipeline", "recipe": "ldm-mnist",
              "model_config": asdict(model.config), "model": model.state_dict()}
    path = checkpoint.save_atomic(record, tmp_path / "ldm.pt")
    loaded = load_model(path, expect=DiffusionPipeline)
    assert loaded.condition.tokenizer.vocab == model.condition.tokenizer.vocab
    out = tmp_path / "x.npz"
    cli.main(["sample", str(path), "--prompt", "a handwritten seven", "--n", "3", "--steps", "2", "--guidance", "2",
              "--out", str(out), "--device", "cpu"])
    images, labels = np.load(out)["images"], np.load(out)["labels"]
    assert images.shape == (3, 1, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [7, 7, 7]  # the digit the prompt names, so `eval` reports adherence
    expected = model.sample(3, torch.Generator().manual_seed(0), prompt="a handwritten seven", steps=2, guidance=2.0)
    np.testing.assert_array_equal(images, to_uint8(expected).numpy())
    with pytest.raises(SystemExit):
        cli.main(["sample", str(path), "--labels", "0-9", "--n", "2", "--out", str(out)])
    assert "does not take --labels; it accepts: --prompt, --guidance, --steps" in capsys.readouterr().err


def test_prompt_digit_finds_the_one_digit_a_prompt_names():
    assert prompt_digit("a handwritten seven") == 7
    assert prompt_digit("The digit 7, a SEVEN") == 7
    assert prompt_digit("the number 0") == 0
    assert prompt_digit("a purple elephant") is None
    assert prompt_digit("a three or a five") is None
    assert prompt_digit("") is None


def test_clip_adapter_round_trips_through_a_checkpoint_with_its_tokenizer(tmp_path):
    result = train_recipe("clip-mnist", steps=2, out=tmp_path, progress=False)
    assert "zero_shot_accuracy" in result.record["metrics"]
    loaded = load_model(tmp_path / "clip-mnist.pt", expect=MiniCLIP)
    assert loaded.tokenizer.vocab == caption_tokenizer(load_dataset("mnist-5k")).vocab
    assert loaded.tokenizer.context_length == 16
    texts = ["a handwritten seven", "the digit 3", "a purple elephant"]
    torch.testing.assert_close(loaded.encode_text(texts), result.model.eval().encode_text(texts))
    test = load_dataset("mnist-5k", "test")
    assert zero_shot_accuracy(loaded, test) == pytest.approx(zero_shot_accuracy(result.model, test))


def test_similarity_explorer_shows_one_matrix_per_batch():
    torch.manual_seed(0)
    clip = MiniCLIP(MiniCLIPConfig(**TINY_CLIP)).eval()
    player = similarity_explorer(clip, load_dataset("mnist-5k", "test"), batch_size=4, n_batches=3)
    assert len(player) == 3 and [tuple(m.shape) for m in player.logits] == [(4, 4)] * 3
    first = player.current_png()
    player.slider.value = 2
    assert player.current_png() != first and player.stack.selected_index == 2
    assert "pick their own caption" in player.captions[2].value


def test_text_to_image_guidance_slider_steps_and_prompt_box_change_the_view(digits):
    model = tiny_ldm(digits, T=20)  # a short schedule: an untrained model's x0_hat stays in a visible range
    widget = text_to_image(model, "a handwritten seven", guidances=(1.0, 3.0), n=2, steps=4, every=2)
    assert widget.page.tokens == ["<bos>", "a", "handwritten", "seven", "<eos>"]
    assert widget.page.maps.shape == (2, 5, 7, 7)
    final = widget.current_png()
    widget.step.value = 0
    assert widget.current_png() != final
    widget.step.value = 1
    widget.guidance.index = 0
    assert widget.stack.selected_index == 0 and widget.current_png() != final
    widget.prompt.value = "the digit 2"
    assert widget.page.tokens == ["<bos>", "the", "digit", "2", "<eos>"]
