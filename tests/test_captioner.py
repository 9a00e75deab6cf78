"""The CoCa-style video captioner: shapes, causality, both losses, and that it learns to caption clips."""

from __future__ import annotations

import pytest
import torch

from minilineage.data import ArrayData, to_uint8
from minilineage.models.captioner import CaptionerConfig, VideoCaptioner
from minilineage.models.text import SPECIALS
from minilineage.models.vae3d import VAE3d, VAE3dConfig
from minilineage.recipes import RECIPES, train_recipe
from minilineage.recipes.recaption import (
    CAPTION_WORDS,
    caption_figures,
    digits_named,
    motions_named,
    recaption,
)

CAPTIONS = ["a 3 moves left", "an 8 moves up and bounces", "a 1 moves down right, a 7 moves up", "a 0 moves right"]


def tiny_captioner(clips: torch.Tensor, seed: int = 0) -> VideoCaptioner:
    """Through `from_parts`, as the recipe builds it: a (random) tiny VAE, the latent scale measured on `clips`."""
    torch.manual_seed(seed)
    vae = VAE3d(VAE3dConfig(width=4, latent_channels=2, frames=9, size=16))
    config = CaptionerConfig(vocab=[*SPECIALS, *CAPTION_WORDS], width=32, heads=2, video_layers=1, text_layers=1,
                             multimodal_layers=1, embed_dim=16)
    return VideoCaptioner.from_parts(config, autoencoder=vae, x_train=clips)


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return torch.rand(4, 9, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_video_tokens_and_embeddings_have_the_documented_shapes(clips):
    model = tiny_captioner(clips)
    tokens, embedding = model.encode_video(clips)
    assert tokens.shape == (4, 3 * 2 * 2, 32) and embedding.shape == (4, 16)  # 3 latent frames of 4x4, patch 2


def test_the_next_word_at_a_position_never_depends_on_later_words(clips):
    model = tiny_captioner(clips).eval()
    video, _ = model.encode_video(clips[:1])
    a = model.tokenizer.encode(["a 3 moves left"])[0]
    b = model.tokenizer.encode(["a 3 moves right and bounces"])[0]  # the same first 4 tokens (<bos> a 3 moves)
    logits = [model._next_words(model._unimodal(t, with_cls=False), t, video) for t in (a, b)]
    assert torch.allclose(logits[0][:, :4], logits[1][:, :4], atol=1e-5)
    assert not torch.allclose(logits[0][:, 4:6], logits[1][:, 4:6], atol=1e-3)


def test_the_word_loss_starts_near_chance_and_the_model_learns_to_write_each_clips_caption(clips):
    model = tiny_captioner(clips)
    first = model.losses(clips, CAPTIONS)
    assert first["captioning"].item() == pytest.approx(torch.log(torch.tensor(len(model.tokenizer))).item(), rel=0.3)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(120):
        optimizer.zero_grad()
        sum(model.losses(clips, CAPTIONS).values()).backward()
        optimizer.step()
    last = model.losses(clips, CAPTIONS)
    assert last["captioning"] < 0.1 and last["contrastive"] < 0.1  # each clip finds its caption, and the reverse
    written = [" ".join(w for w in c.replace(",", "").split()) for c in CAPTIONS]
    assert model.eval().caption(clips) == written
    poorly_captioned = ArrayData("clips", to_uint8(clips), torch.zeros(4, dtype=torch.long), ("clip",),
                                 templates=("a video of digits",))
    assert recaption(model, poorly_captioned, batch_size=3) == written  # in order, across batches


def test_caption_figures_compare_words_and_the_digits_named():
    assert digits_named("a 3 moves up, an 8 moves left") == ["3", "8"]
    figures = caption_figures(["a 3 moves up", "an 8 moves left a 3 moves up", "a 5 moves up"],
                              ["a 3 moves up", "a 3 moves up, an 8 moves left", "a 6 moves up"])
    assert figures == {"exact": 1 / 3, "digits": 2 / 3, "motion": 1}
    assert motions_named("a 3 moves up and bounces, an 8 moves down-left") == ["moves up and bounces", "moves down left"]
    wrong = caption_figures(["a 3 moves up", "a 3 moves up, an 8 moves left", "a 2 moves up-left"],
                            ["a 3 moves up and bounces", "a 3 moves left, an 8 moves up", "a 2 moves up"])
    assert wrong == {"exact": 0, "digits": 1, "motion": 1 / 3}  # a missing bounce, or a half direction, is wrong


def test_the_recipe_trains_on_the_shipped_vae_and_writes_captions_from_its_vocabulary():
    assert RECIPES["captioner-moving-mnist"].parts == {"autoencoder": "vae3d-moving-mnist"}
    result = train_recipe("captioner-moving-mnist", steps=2, out=None, device="cpu", progress=False, evaluate=False)
    model = result.model
    assert model.config.latent_scale != 1.0 and model.autoencoder.config.size == 32
    written = model.eval().caption(torch.zeros(2, 17, 1, 32, 32))
    assert all(set(c.split()) <= set(CAPTION_WORDS) for c in written)


def test_the_recaptioning_study_trains_one_network_on_the_same_clips_with_three_kinds_of_captions():
    from minilineage.data.video import POOR_CAPTION
    from minilineage.recipes.recaption import CAPTION_SOURCES, study_clips

    names = [f"videodit-captions-{s}" for s in CAPTION_SOURCES]
    shipped = RECIPES["videodit-moving-mnist"]
    for name in names:  # one network for the three caption sets: the shipped design, its text encoder included
        assert RECIPES[name].model_config == shipped.model_config and RECIPES[name].parts == shipped.parts
    assert len({repr(RECIPES[n].presets["cpu"].train) for n in names}) == 1  # only the captions differ
    clips = {s: study_clips(s, n=6) for s in CAPTION_SOURCES}
    assert all(torch.equal(clips[s].images, clips["true"].images) for s in CAPTION_SOURCES)
    assert set(clips["poor"].texts) == {POOR_CAPTION}
    assert all(digits_named(t) for t in clips["true"].texts)
    written = clips["recaptioned"].texts
    assert POOR_CAPTION not in written and all(set(t.split()) <= set(CAPTION_WORDS) and digits_named(t) for t in written)
    with pytest.raises(ValueError, match="choose one of: true, poor, recaptioned"):
        study_clips("perfect", n=2)


def test_the_study_is_judged_on_seen_pairs_for_digit_and_motion():
    from minilineage.recipes.recaption import eval_caption_study

    result = train_recipe("videodit-captions-poor", steps=1, out=None, device="cpu", progress=False, evaluate=False)
    figures = eval_caption_study(result.model, torch.device("cpu"), n=3)
    assert {"accuracy", "one_digit", "identity", "motion", "motion_shuffled"} <= set(figures)
    assert all(0 <= figures[k] <= 1 for k in ("accuracy", "one_digit", "motion", "motion_shuffled"))
