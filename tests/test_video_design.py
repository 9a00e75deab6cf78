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
