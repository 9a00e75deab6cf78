"""Tokenizer, text and image encoders, the CLIP loss, and a small CLIP that learns digits."""

from __future__ import annotations

import io
import math

import pytest
import torch

from minilineage.data import load_dataset
from minilineage.models.clip import (
    CLIP,
    CLIPConfig,
    ImageEncoder,
    caption_tokenizer,
    clip_loss,
    similarity,
)
from minilineage.models.text import BOS, EOS, PAD, UNK, TextEncoder, Tokenizer


@pytest.fixture
def tok() -> Tokenizer:
    # vocab: <pad> <bos> <eos> <unk> a=4 digit=5 seven=6 the=7
    return Tokenizer.from_captions(["The digit seven", "a seven"], context_length=8)


def test_vocab_is_sorted_and_independent_of_caption_order(tok):
    assert tok.vocab == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "digit", "seven", "the"]
    assert Tokenizer.from_captions(["a seven", "The digit seven"], 8).vocab == tok.vocab


def test_encode_lays_out_bos_words_eos_then_padding(tok):
    tokens, mask = tok.encode(["a seven", "The DIGIT, seven!"])
    assert tokens.dtype == torch.int64 and mask.dtype == torch.bool
    assert tokens.tolist() == [
        [BOS, 4, 6, EOS, PAD, PAD, PAD, PAD],
        [BOS, 7, 5, 6, EOS, PAD, PAD, PAD],
    ]
    assert mask.tolist() == [[True] * 4 + [False] * 4, [True] * 5 + [False] * 3]


def test_decode_round_trips_lowercased_words(tok):
    texts = ["the digit seven", "a seven", "seven"]
    assert tok.decode(tok.encode(texts)[0]) == texts
    assert tok.decode(tok.encode("A Seven!")[0][0]) == "a seven"


def test_unknown_word_becomes_unk(tok):
    tokens, _ = tok.encode(["a purple seven"])
    assert tokens[0, :5].tolist() == [BOS, 4, UNK, 6, EOS]
    assert tok.decode(tokens) == ["a <unk> seven"]


def test_over_long_prompt_is_truncated_keeping_eos(tok):
    tokens, mask = tok.encode(["the digit seven " * 20, "a seven"])
    assert tokens.shape == (2, 8)
    assert tokens[0].tolist() == [BOS, 7, 5, 6, 7, 5, 6, EOS]
    assert mask[0].all()


@pytest.mark.parametrize("text", ["", "   ", "?!."])
def test_empty_prompt_gives_bos_eos(tok, text):
    tokens, mask = tok.encode([text])
    assert tokens[0].tolist() == [BOS, EOS] + [PAD] * 6
    assert mask.sum().item() == 2
    per_token, pooled = TextEncoder(len(tok), 8, width=16, layers=1, heads=2, embed_dim=8)(
        tokens, mask
    )
    assert torch.isfinite(per_token).all() and torch.isfinite(pooled).all()


def test_tokenizer_state_survives_a_weights_only_checkpoint(tok):
    buffer = io.BytesIO()
    torch.save({"tokenizer": tok.state_dict()}, buffer)
    buffer.seek(0)
    again = Tokenizer.from_state(torch.load(buffer, weights_only=True)["tokenizer"])
    assert again.vocab == tok.vocab and again.context_length == tok.context_length
    assert torch.equal(again.encode(["the seven"])[0], tok.encode(["the seven"])[0])


def test_text_encoder_shapes(tok):
    torch.manual_seed(0)
    encoder = TextEncoder(len(tok), context_length=8, width=64, layers=2, heads=4, embed_dim=32)
    per_token, pooled = encoder(*tok.encode(["a seven", "the digit seven", ""]))
    assert per_token.shape == (3, 8, 64) and pooled.shape == (3, 32)
    with pytest.raises(ValueError, match="N <= 8"):
        encoder(torch.zeros(1, 9, dtype=torch.long), torch.ones(1, 9, dtype=torch.bool))


def test_padding_does_not_change_real_token_outputs(tok):
    torch.manual_seed(0)
    encoder = TextEncoder(len(tok), context_length=8, width=32, layers=2, heads=4, embed_dim=16)
    tokens, mask = tok.encode(["a seven", "the digit seven"])
    noisy = torch.where(mask, tokens, torch.randint(4, len(tok), tokens.shape))  # junk in padding
    per_token, pooled = encoder(tokens, mask)
    per_token_noisy, pooled_noisy = encoder(noisy, mask)
    torch.testing.assert_close(per_token_noisy[mask], per_token[mask])
    torch.testing.assert_close(pooled_noisy, pooled)
    # Without the mask the junk is attended to, so the check above can fail.
    _, pooled_unmasked = encoder(noisy, torch.ones_like(mask))
    assert (pooled_unmasked - pooled).abs().max() > 1e-3


def test_image_encoder_shapes_and_bad_sizes():
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    assert ImageEncoder(1, width=16, embed_dim=32)(x).shape == (5, 32)
    assert ImageEncoder(3, width=16, embed_dim=8, image_size=32)(
        torch.zeros(2, 3, 32, 32)
    ).shape == (2, 8)
    with pytest.raises(ValueError, match="image_size"):
        ImageEncoder(1, width=16, image_size=30)


def hand_clip_loss(image, text, scale):
    """Radford et al. 2021, Fig. 3 with Python floats, one row and one column at a time."""

    def unit(v):
        n = math.sqrt(sum(a * a for a in v))
        return [a / n for a in v]

    image, text = [unit(v) for v in image], [unit(v) for v in text]
    N = len(image)
    logits = [
        [scale * sum(a * b for a, b in zip(image[i], text[j], strict=True)) for j in range(N)]
        for i in range(N)
    ]
    rows = [math.log(sum(math.exp(z) for z in logits[i])) - logits[i][i] for i in range(N)]
    cols = [
        math.log(sum(math.exp(logits[i][j]) for i in range(N))) - logits[j][j] for j in range(N)
    ]
    return (sum(rows) / N + sum(cols) / N) / 2


def test_clip_loss_matches_hand_computation_on_3x3():
    image = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [0.0, 3.0, 1.0]]
    text = [[2.0, 0.5, 1.0], [0.0, -2.0, 0.5], [-1.0, 1.0, 1.0]]
    loss = clip_loss(torch.tensor(image), torch.tensor(text), torch.tensor(2.5))
    assert loss.item() == pytest.approx(hand_clip_loss(image, text, 2.5), rel=1e-6)
    assert loss.item() == pytest.approx(0.31057, abs=1e-5)  # pinned value of the above


def test_clip_loss_is_symmetric_in_images_and_texts():
    torch.manual_seed(0)
    image, text = torch.randn(6, 8), torch.randn(6, 8)
    torch.testing.assert_close(clip_loss(image, text, 10.0), clip_loss(text, image, 10.0))


def test_aligned_pairs_have_lower_loss_than_shuffled():
    torch.manual_seed(0)
    emb = torch.randn(8, 16)
    shuffled = emb.roll(1, dims=0)  # every caption moved to the wrong image
    assert clip_loss(emb, emb, 10.0) < 0.1 < 2.0 < clip_loss(emb, shuffled, 10.0)


def test_similarity_is_scaled_cosine_for_any_number_of_texts():
    torch.manual_seed(0)
    image, text = torch.randn(4, 8), torch.randn(3, 8)
    logits = similarity(image, text, 5.0)
    assert logits.shape == (4, 3)
    cosine = torch.nn.functional.cosine_similarity(image[:, None], text[None], dim=-1)
    torch.testing.assert_close(logits, 5.0 * cosine)


def test_soft_targets_ignore_which_same_label_caption_goes_where():
    torch.manual_seed(0)
    image, text = torch.randn(5, 8), torch.randn(5, 8)
    labels = torch.tensor([0, 0, 1, 1, 2])
    swapped = text[[1, 0, 3, 2, 4]]  # captions exchanged within each label
    torch.testing.assert_close(
        clip_loss(image, swapped, 3.0, labels), clip_loss(image, text, 3.0, labels)
    )
    assert not torch.isclose(clip_loss(image, swapped, 3.0), clip_loss(image, text, 3.0))
    distinct = torch.arange(5)  # one item per label: soft targets are the identity
    torch.testing.assert_close(clip_loss(image, text, 3.0, distinct), clip_loss(image, text, 3.0))


def test_clip_model_api(tok):
    torch.manual_seed(0)
    config = CLIPConfig(
        context_length=8, text_width=32, text_layers=1, text_heads=2, image_width=16, embed_dim=16
    )
    model = CLIP(tok, config)
    assert model.logit_scale.item() == pytest.approx(1 / 0.07)
    x = torch.zeros(3, 1, 28, 28)
    assert model.encode_image(x).shape == (3, 16)
    assert model.encode_text(["a seven", "the digit seven"]).shape == (2, 16)
    per_token, mask = model.encode_text_tokens(["a seven"])
    assert per_token.shape == (1, 8, 32) and mask.sum().item() == 4
    assert model.loss(x, ["a seven", "seven", "the digit"]).ndim == 0
    predicted = model.zero_shot_classify(x, ["a seven", "the digit", "seven", "a"])
    assert predicted.shape == (3,) and predicted.dtype == torch.int64 and predicted.max() < 4
    with torch.no_grad():
        model.log_scale.fill_(10.0)
    assert model.logit_scale.item() == pytest.approx(100.0)


def test_clip_rejects_mismatched_sizes_and_unknown_presets(tok):
    with pytest.raises(ValueError, match="context"):
        CLIP(tok, CLIPConfig(context_length=16))
    with pytest.raises(ValueError, match="tiny"):
        CLIPConfig.preset("huge")
    model = CLIP(Tokenizer.from_captions(["a seven"]), CLIPConfig.preset("tiny"))
    with pytest.raises(ValueError, match="3 captions"):
        model.loss(torch.zeros(2, 1, 28, 28), ["a", "b", "c"])


def test_tiny_clip_overfits_64_digits_and_classifies_them_zero_shot(one_thread):
    data = load_dataset("mnist-5k")
    data = data.subset(torch.arange(0, len(data), 70)[:64])  # every class, 6-7 of each
    x, y = data.float_images(), data.labels
    torch.manual_seed(0)
    model = CLIP(caption_tokenizer(data), CLIPConfig.preset("tiny"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    first = model.loss(x, data.captions(torch.arange(len(data)), generator)).item()
    for _ in range(100):
        loss = model.loss(x, data.captions(torch.arange(len(data)), generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # log(64) = 4.16 is "knows nothing"; the floor is about log(64 / 10) = 1.86, since a
    # caption cannot tell apart the ~6 images of its digit in the batch.
    assert first > 4.16 and 1.8 < loss.item() < 2.1
    prompts = [data.caption(label) for label in range(10)]  # "a handwritten zero", ...
    accuracy = (model.zero_shot_classify(x, prompts) == y).float().mean().item()
    assert accuracy > 0.9  # chance is 0.1
