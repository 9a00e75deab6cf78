"""Minibatches as a pure function of (step, generator): the contract that makes a resumed run exact.

A batch maker is `next_batch(step, generator) -> dict`. It keeps no state between calls, so the
training loop can rebuild the batch of any step from a generator seeded with (seed, step): a run
resumed at step k draws exactly the batches it would have drawn. Under torchrun every rank draws
the same global batch from the same generator and keeps its own slice (`shard`), so N processes
see exactly the batch one process would.

Batches hold floats in [-1, 1] under "x" (converted from uint8 only for the drawn items), labels
under "y", and for text-conditioned models one caption per item under "captions". Indices are drawn
on the CPU generator and the items are gathered wherever the dataset lives, so a dataset moved to the
GPU once (`ArrayData.to`) yields batches already there. `encoded_batches` draws the same items but
returns precomputed codes (e.g. a frozen autoencoder's latent moments) under "moments" instead of "x".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from minilineage.data.arrays import ArrayData, to_float

BatchFn = Callable[[int, torch.Generator], dict]


def _draw(data: ArrayData, batch_size: int, generator: torch.Generator, with_captions: bool):
    """The items of one batch (indices drawn with replacement), and their captions if asked for."""
    idx = torch.randint(len(data), (batch_size,), generator=generator)
    return idx, (data.captions(idx, generator) if with_captions else None)


def _check(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


def image_batches(data: ArrayData, batch_size: int, with_captions: bool = False) -> BatchFn:
    """Random minibatches {x, y} of `batch_size` items drawn with replacement, afresh at every step
    (with one caption per item under "captions" if `with_captions`)."""
    _check(batch_size)

    def next_batch(step: int, generator: torch.Generator) -> dict:
        idx, captions = _draw(data, batch_size, generator, with_captions)
        on = idx.to(data.images.device)
        batch = {"x": to_float(data.images[on]), "y": data.labels[on]}
        return batch if captions is None else {**batch, "captions": captions}

    return next_batch


def caption_batches(data: ArrayData, batch_size: int) -> BatchFn:
    """`image_batches` plus one caption per item {x, y, captions}: its own text, or a random template."""
    return image_batches(data, batch_size, with_captions=True)


def encoded_batches(data: ArrayData, codes: torch.Tensor, batch_size: int, with_captions: bool = False) -> BatchFn:
    """The items `image_batches` would draw, with `codes[i]` under "moments" instead of x_i.

    `codes` (N, ...) are computed once from the whole dataset (the latent moments of a frozen
    autoencoder: `DiffusionPipeline.pre_encode`), so training skips the encoder at every step, as
    fast-DiT does with pre-extracted features. The random numbers are drawn in the same order, so a
    run gets the same items and captions either way.
    """
    _check(batch_size)
    if len(codes) != len(data):
        raise ValueError(f"{len(data)} items but {len(codes)} codes")

    def next_batch(step: int, generator: torch.Generator) -> dict:
        idx, captions = _draw(data, batch_size, generator, with_captions)
        batch = {"moments": codes[idx.to(codes.device)], "y": data.labels[idx.to(data.labels.device)]}
        return batch if captions is None else {**batch, "captions": captions}

    return next_batch


def bucket_batches(buckets: Sequence[ArrayData], batch_size: int, with_captions: bool = False) -> BatchFn:
    """Minibatches from datasets of different item shapes (sizes, lengths), each batch from one bucket.

    A bucket is drawn with probability proportional to its size, so every item is equally likely
    to be seen, as in one big dataset; items of one shape then share a batch without cropping or
    padding (native-size training, as NaViT and Sora do). Stateless like `image_batches`.
    """
    if not buckets:
        raise ValueError("bucket_batches needs at least one bucket")
    sizes = torch.tensor([len(b) for b in buckets], dtype=torch.float64)
    inner = [image_batches(b, batch_size, with_captions) for b in buckets]

    def next_batch(step: int, generator: torch.Generator) -> dict:
        k = torch.multinomial(sizes, 1, generator=generator).item()
        return inner[k](step, generator)

    return next_batch


def staged_batches(stages: Sequence[tuple[int, BatchFn]], last: BatchFn) -> BatchFn:
    """A curriculum: the batches of each (steps, next_batch) stage in turn, then `last` for every later step.

    Video models are trained images first, then videos (Open-Sora 1.x, Movie Gen, Sora's "images as
    1-frame videos"): a cheap stage learns what the things look like, the expensive one how they move.
    Which stage a step is in depends on the step alone, so batches stay a pure function of
    (step, generator) and a resumed run continues in the right stage.
    """
    if any(steps < 1 for steps, _ in stages):
        raise ValueError(f"every stage needs at least one step, got {[steps for steps, _ in stages]}")

    def next_batch(step: int, generator: torch.Generator) -> dict:
        start = 0
        for steps, batches in stages:
            if step < start + steps:
                return batches(step, generator)
            start += steps
        return last(step, generator)

    return next_batch


def shard(batch: dict, rank: int, world: int) -> dict:
    """This rank's contiguous slice of a global batch: items [rank * B / world, (rank + 1) * B / world)."""
    if world == 1:
        return batch
    sizes = {len(v) for v in batch.values()}
    if len(sizes) != 1:
        raise ValueError(f"batch entries have different lengths {sorted(sizes)}")
    total = sizes.pop()
    if total % world:
        raise ValueError(f"global batch size {total} is not divisible by the {world} processes")
    part = total // world
    return {k: v[rank * part : (rank + 1) * part] for k, v in batch.items()}
