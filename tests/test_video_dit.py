"""The video DiT: spacetime patches at any grid, 3-D positions, per-frame timesteps, frames denoised together,
and the frame-mask training that lets given frames condition the rest."""

from __future__ import annotations

import pytest
import torch
from tiny import randomize_

from minilineage.data.video import frame_masks
from minilineage.diffusion import DiffusionPipeline, GivenFrames, PipelineConfig
from minilineage.layers import sincos_3d
from minilineage.models import MODELS, build
from minilineage.models.video_dit import VideoDiT, VideoDiTConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


def tiny(seed: int = 0, trained: bool = True, **overrides) -> VideoDiT:
    """A small video DiT; trained=True gives its zero-initialised layers random weights, as after training."""
    torch.manual_seed(seed)
    model = VideoDiT(VideoDiTConfig(**{"in_channels": 2, "patch": 2, "width": 32, "depth": 2, "heads": 2,
                                       "num_classes": 10, **overrides})).eval()
    return randomize_(model, seed) if trained else model


@pytest.mark.parametrize("frames, size", [(1, 4), (3, 4), (5, 6), (2, 8)])
def test_any_length_and_size_is_a_sequence_and_a_fresh_model_predicts_zero(frames, size):
    x = torch.randn(2, frames, 2, size, size)
    fresh = tiny(trained=False)
    out = fresh(x, torch.tensor([5, 700]), y=torch.tensor([1, 2]))
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))
    assert tiny()(x, torch.tensor([5, 700])).shape == x.shape


def test_tokens_carry_3d_sincos_positions_in_frame_row_column_order():
    model = tiny()
    tokens, grid = model.patchify(torch.randn(1, 3, 2, 4, 6))
    assert grid == (3, 2, 3) and tokens.shape == (1, 18, 8)
    torch.testing.assert_close(model.position_embedding(grid), sincos_3d((3, 2, 3), 32))
    x = torch.randn(1, 3, 2, 4, 6)
    torch.testing.assert_close(model.unpatchify(model.patchify(x)[0], grid), x)


@torch.no_grad()
def test_frames_are_denoised_together_every_frame_reads_the_others():
    model = tiny()
    x = torch.randn(1, 4, 2, 4, 4)
    out = model(x, torch.tensor([300]))
    changed = x.clone()
    changed[:, 3] += 1.0  # only the last frame
    diff = (model(changed, torch.tensor([300])) - out).flatten(2).abs().amax(-1)[0]  # (4,) per frame
    assert (diff > 1e-3).all(), diff  # the first frames see the last: attention runs across time
    swapped = x[:, [1, 0, 2, 3]]
    assert not torch.allclose(model(swapped, torch.tensor([300]))[:, [1, 0, 2, 3]], out, atol=1e-4)  # order matters


@torch.no_grad()
def test_per_frame_timesteps_condition_each_frame_and_equal_ones_match_one_per_clip():
    model = tiny()
    x = torch.randn(2, 3, 2, 4, 4)
    t = torch.tensor([200, 800])
    torch.testing.assert_close(model(x, t[:, None].expand(2, 3)), model(x, t))
    mixed = model(x, torch.tensor([[0, 200, 200], [800, 800, 0]]))
    assert not torch.allclose(mixed, model(x, t), atol=1e-4)


def test_spacetime_patches_of_two_frames_and_the_sizes_that_do_not_fit():
    model = tiny(patch_t=2)
    x = torch.randn(2, 4, 2, 4, 4)
    assert model.patchify(x)[1] == (2, 2, 2) and model(x, torch.tensor([1, 2])).shape == x.shape
    with pytest.raises(ValueError, match="per-frame timesteps need patch_t = 1"):
        model(x, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="frame count 3 is not divisible by temporal patch size 2"):
        model(torch.randn(1, 3, 2, 4, 4), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"expected videos of shape \(B, F, 2, H, W\)"):
        model(torch.randn(1, 2, 4, 4), torch.tensor([1]))
    with pytest.raises(ValueError, match="width 40 must be divisible by 16"):
        VideoDiTConfig(width=40, heads=2)


def test_registered_and_rebuilt_from_its_config():
    model = build("VideoDiT", {"in_channels": 1, "width": 32, "heads": 2, "depth": 1, "patch_t": 1})
    assert MODELS["VideoDiT"] is VideoDiT and isinstance(model, VideoDiT)


def test_frame_masks_mix_every_task_and_always_leave_a_frame_to_generate():
    masks = frame_masks(6000, 5, torch.Generator().manual_seed(0))
    assert torch.equal(masks, frame_masks(6000, 5, torch.Generator().manual_seed(0)))
    assert not masks.all(dim=1).any() and not frame_masks(50, 1, torch.Generator()).any()
    assert abs((~masks.any(dim=1)).float().mean().item() - 0.5) < 0.03  # half are plain generation
    first_only = (masks[:, 0] & ~masks[:, 1:].any(dim=1)).float().mean().item()
    assert 0.1 < first_only < 0.25  # image-to-video, plus short extensions and some random draws
    ends = (masks[:, 0] & masks[:, -1] & ~masks[:, 1:-1].any(dim=1)).float().mean().item()
    assert 0.05 < ends < 0.2  # interpolation, plus some merges and random draws


def video_pipeline() -> DiffusionPipeline:
    torch.manual_seed(0)
    config = PipelineConfig(denoiser={"cls": "VideoDiT", "config": {"in_channels": 1, "patch": 2, "width": 32,
                                                                     "depth": 2, "heads": 2, "num_classes": 2}},
                            shape=(3, 1, 4, 4), T=100, sample_steps=10)
    return DiffusionPipeline(config)


def test_masked_training_overfits_and_given_frames_are_kept_exactly_when_sampling():
    """Two fixed 3-frame clips: one where frame 2 = -frame 0, so a model given frame 0 must infer frame 2."""
    model = video_pipeline()
    g = torch.Generator().manual_seed(0)
    first = torch.randn(2, 1, 1, 4, 4, generator=g).clamp(-1, 1)
    x = torch.cat([first, torch.zeros_like(first), -first], dim=1)  # (2, 3, 1, 4, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(150):
        given = frame_masks(2, 3, torch.Generator().manual_seed(step))
        loss = model.loss({"x": x, "y": torch.tensor([0, 1]), "given": given}, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20]), (losses[:3], losses[-3:])
    mask = torch.tensor([[True, False, False]] * 2)
    out = model.eval().sample(2, torch.Generator().manual_seed(1), labels=torch.tensor([0, 1]),
                              given=GivenFrames(x, mask), guidance=1.0)
    assert torch.equal(out[:, 0], x[:, 0])  # the given frame comes back untouched
    assert (out[:, 2] * x[:, 2]).sum() > 0  # and the model has learnt that frame 2 mirrors it
