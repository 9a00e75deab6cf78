"""Text for text-to-image models: a word-level tokenizer and a small transformer text encoder.

Stable Diffusion turns a prompt into 77 token vectors of width 768 with CLIP's text encoder
(Radford et al. 2021) and lets the U-Net attend to them through cross-attention (Rombach et al.
2022, Eq. (3)). Ours does the same at MNIST scale: 16 tokens of width 64, with a vocabulary built
from the captions themselves, so it trains from scratch in minutes on a CPU. The contrastive loss
that trains it, and the image encoder it is paired with, are in `minilineage.clip`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from minilineage.data.captions import split_words

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(len(SPECIALS))


class Tokenizer:
    """Word-level tokenizer with a fixed context: `<bos> words... <eos> <pad>...`.

    CLIP uses byte-pair encoding over 49,152 sub-words so that any text has a tokenization; our
    captions use a few dozen words, so one token per word is enough and every token is readable.
    Words outside the vocabulary become `<unk>`; prompts longer than the context are cut, keeping
    `<eos>` last because the text encoder reads its summary from that position.
    """

    def __init__(self, vocab: list[str], context_length: int = 16):
        if list(vocab[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"vocab must start with the special tokens {SPECIALS}")
        if context_length < 2:
            raise ValueError(f"context_length must hold <bos> and <eos>, got {context_length}")
        self.vocab = list(vocab)
        self.context_length = context_length
        self.index = {word: i for i, word in enumerate(self.vocab)}

    @classmethod
    def from_captions(cls, captions: Iterable[str], context_length: int = 16) -> Tokenizer:
        """Vocabulary of every word in `captions`, sorted so that it does not depend on order."""
        words = sorted({w for text in captions for w in split_words(text)} - set(SPECIALS))
        return cls(list(SPECIALS) + words, context_length)

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, texts: list[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, N) int64 and mask (B, N) bool, True on real tokens (N = context_length)."""
        if isinstance(texts, str):
            texts = [texts]
        N = self.context_length
        tokens = torch.full((len(texts), N), PAD, dtype=torch.long)
        for b, text in enumerate(texts):
            ids = [self.index.get(w, UNK) for w in split_words(text)][: N - 2]
            row = [BOS, *ids, EOS]
            tokens[b, : len(row)] = torch.tensor(row)
        return tokens, tokens != PAD

    def decode(self, tokens: torch.Tensor) -> list[str] | str:
        """Text of token ids (B, N) -> list of B strings, or (N,) -> one string; stops at `<eos>`."""
        if tokens.ndim == 1:
            return self.decode(tokens[None])[0]
        texts = []
        for row in tokens.tolist():
            row = row[: row.index(EOS)] if EOS in row else row
            texts.append(" ".join(self.vocab[i] for i in row if i not in (PAD, BOS)))
        return texts

    def state_dict(self) -> dict:
        """Plain lists and ints, safe for `torch.save` and `torch.load(weights_only=True)`."""
        return {"vocab": list(self.vocab), "context_length": self.context_length}

    @classmethod
    def from_state(cls, state: dict) -> Tokenizer:
        return cls(list(state["vocab"]), int(state["context_length"]))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={len(self)}, context_length={self.context_length})"


class TextEncoder(nn.Module):
    """Transformer text encoder: per-token features for cross-attention, one pooled embedding.

    Radford et al. 2021, Sec. 2.4: token + learned position embeddings, a pre-norm transformer,
    a final LayerNorm; the `<eos>` token's output, linearly projected, is the text embedding.
    CLIP also uses a causal mask; we use only a padding mask, so every real token sees the whole
    prompt and padding never changes the real tokens' outputs.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int = 16,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        embed_dim: int = 32,
    ):
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.zeros(context_length, width))
        block = nn.TransformerEncoderLayer(
            width,
            heads,
            4 * width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # enable_nested_tensor=False: keep padded positions as ordinary (dense) outputs.
        self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)
        self.initialize_weights()

    def initialize_weights(self):
        # CLIP's choices: small embeddings so the residual stream starts near zero.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)
        nn.init.normal_(self.projection.weight, std=self.projection.in_features**-0.5)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, N), mask (B, N) True on real tokens -> per-token (B, N, D), pooled (B, E)."""
        if tokens.ndim != 2 or tokens.shape[1] > self.context_length:
            raise ValueError(
                f"tokens must be (B, N) with N <= {self.context_length}, got {tuple(tokens.shape)}"
            )
        mask = tokens != PAD if mask is None else mask
        if mask.shape != tokens.shape:
            raise ValueError(
                f"mask {tuple(mask.shape)} does not match tokens {tuple(tokens.shape)}"
            )
        N = tokens.shape[1]
        h = self.token_embedding(tokens) + self.position_embedding[:N]  # (B, N, D)
        h = self.transformer(h, src_key_padding_mask=~mask)  # (B, N, D)
        h = self.ln_final(h)  # (B, N, D)
        eos = mask.sum(dim=1) - 1  # (B,) the last real token is <eos>
        pooled = self.projection(h[torch.arange(len(h)), eos])  # (B, E)
        return h, pooled
