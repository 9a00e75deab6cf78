"""Chapter 7's image-rung design study: one video DiT, four ways of reading the prompt, judged on images."""

from __future__ import annotations

import pytest
import torch

from minilineage.recipes import get_recipe, train_recipe
from minilineage.recipes.video import one_digit_frames
from minilineage.recipes.video_design import GUIDANCE, VARIANTS, eval_image_rung
from minilineage.recipes.video_ladder import HELD_OUT_PAIRS


def test_the_variants_differ_only_in_how_they_read_the_prompt():
    built = {name: get_recipe(f"videodit-image-{name}").build("cpu") for name in VARIANTS}
    assert type(built["label"].condition).__name__ == "LabelCondition"
    for name in ("clip-mnist", "clip-moving-mnist", "own-text"):
        pipe = built[name]
        assert pipe.net.config.pooled_context and pipe.condition.option == "prompt"
        assert pipe.config.train_text == (name == "own-text")
        assert any(p.requires_grad for p in pipe.condition.encoder.parameters()) == (name == "own-text")
    vocab = {name: set(built[name].condition.tokenizer.vocab) for name in ("clip-mnist", "clip-moving-mnist", "own-text")}
    assert "left" not in vocab["clip-mnist"] and "left" in vocab["own-text"] and vocab["clip-moving-mnist"] == vocab["own-text"]
    widths = {(p.net.config.width, p.net.config.depth, p.net.config.patch) for p in built.values()}
    assert len(widths) == 1  # the same DiT every time
    trains = {repr(get_recipe(f"videodit-image-{name}").presets["cpu"].train) for name in VARIANTS}
    assert len(trains) == 1


def test_the_study_trains_on_single_one_digit_frames_without_the_held_out_pairs():
    frames = one_digit_frames(n=300)
    assert frames.images.shape[1:] == (1, 1, 32, 32) and (frames.info["digits"][:, 1:] < 0).all()
    pairs = set(zip(frames.info["digits"][:, 0].tolist(), frames.info["directions"][:, 0].tolist(), strict=True))
    assert not pairs & set(HELD_OUT_PAIRS)


@pytest.mark.parametrize("name", ["label", "own-text"])
def test_a_variant_trains_and_is_scored_at_every_guidance_scale(name):
    result = train_recipe(f"videodit-image-{name}", steps=2, out=None, device="cpu", progress=False, evaluate=False)
    figures = eval_image_rung(result.model, torch.device("cpu"), n=2)
    assert set(figures) == {f"g{g:g}" for g in GUIDANCE} and all(0 <= v <= 1 for v in figures.values())


def test_an_own_text_encoder_is_trained_by_the_denoising_loss():
    result = train_recipe("videodit-image-own-text", steps=2, out=None, device="cpu", progress=False, evaluate=False)
    pipe = result.model
    assert pipe.config.train_text and pipe.condition.trainable and pipe.net.config.context_dim == 64
    words = pipe.condition.tokenizer.encode(["an 8 moves down-left and bounces"])[0]
    assert (words != pipe.condition.tokenizer.encode(["a 8 moves up-right and bounces"])[0]).sum() == 3  # every word known
    fresh = get_recipe("videodit-image-own-text").build("cpu")  # a fresh text encoder, before any step
    moved = [not torch.equal(a, b) for a, b in zip(pipe.condition.encoder.state_dict().values(),
                                                   fresh.condition.encoder.state_dict().values(), strict=True)]
    assert any(moved)  # the denoising loss trained the text encoder


def test_the_vae_rung_scores_a_perfect_autoencoder_as_the_real_clips_and_a_blank_one_as_nothing():
    from minilineage.models.vae3d import VAE3d, VAE3dConfig
    from minilineage.recipes.video_design import eval_vae_rung
    from minilineage.recipes.video_ladder import digit_figures, motion_figures, real_clips

    class Perfect(VAE3d):
        def forward(self, x):
            return x

    class Blank(VAE3d):
        def forward(self, x):
            return -torch.ones_like(x)

    config = VAE3dConfig(width=4, latent_channels=2)
    real, digits, directions = real_clips(100)
    perfect = eval_vae_rung(Perfect(config), torch.device("cpu"))
    assert perfect["mse"] == 0 and perfect["accuracy"] == round(digit_figures(real, digits)["accuracy"], 4)
    assert perfect["motion"] == round(motion_figures(real, directions)["motion"], 4) >= 0.8
    blank = eval_vae_rung(Blank(config), torch.device("cpu"))
    assert blank["motion"] == 0 and blank["mse"] > 0.05


def test_each_vae_variant_differs_from_the_shipped_vae_in_one_setting_only():
    from minilineage.recipes.video_design import VAE_VARIANTS

    shipped = get_recipe("vae3d-moving-mnist")
    for name, (_, change) in VAE_VARIANTS.items():
        variant = get_recipe(f"vae3d-moving-mnist-{name}")
        assert variant.model_config == {**shipped.model_config, **change} != shipped.model_config
        assert variant.presets["cpu"] == shipped.presets["cpu"] and variant.batches is shipped.batches
    assert get_recipe("vae3d-moving-mnist-wide").build("cpu").latent_shape == (5, 4, 8, 8)
    assert get_recipe("vae3d-moving-mnist-t2").build("cpu").latent_shape == (9, 4, 8, 8)


def test_the_video_rung_study_is_the_true_caption_run_on_the_t2_vae():
    from minilineage.recipes.recaption import eval_caption_study

    study, base = get_recipe("videodit-clips-t2"), get_recipe("videodit-captions-true")
    assert study.model_config == base.model_config and study.presets == base.presets
    assert study.parts == {**base.parts, "autoencoder": "vae3d-moving-mnist-t2"} and study.evaluate is eval_caption_study
    result = train_recipe("videodit-clips-t2", steps=1, out=None, device="cpu", progress=False, evaluate=False)
    assert result.model.autoencoder.config.temporal_downsample == 2 and result.model.config.shape == (9, 4, 8, 8)
