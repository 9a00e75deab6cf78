"""Every inference mode from one video pipeline: the given latent frames, lengths, and what is kept exactly.

A causal decoder makes frame k depend only on latent frames up to its own, so whatever a mode keeps of
its input latents, the decoded clip keeps exactly: these tests check that, on a tiny random pipeline.
"""

from __future__ import annotations

import pytest
import torch
from tiny import video_pipeline

from minilineage.diffusion import DiffusionPipeline
from minilineage.recipes import video_modes as modes


@pytest.fixture(scope="module")
def pipe() -> DiffusionPipeline:
    return video_pipeline(sample_steps=4)


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return torch.rand(2, 9, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def reconstruct(pipe, x):
    return pipe.decode(pipe.encode(x)).clamp(-1, 1)


def test_text_to_video_and_text_to_image_at_any_length_and_size(pipe):
    g = torch.Generator().manual_seed(0)
    assert modes.text_to_video(pipe, ["a 3", "an 8"], g).shape == (2, 9, 1, 16, 16)
    assert modes.text_to_video(pipe, ["a 3"], g, frames=1).shape == (1, 1, 1, 16, 16)
    assert modes.text_to_video(pipe, ["a 3"], g, frames=13, size=24).shape == (1, 13, 1, 24, 24)
    assert modes.text_to_video(pipe, ["a 3"], g, frames=5, size=(16, 32)).shape == (1, 5, 1, 16, 32)  # 1:2 aspect
    with pytest.raises(ValueError, match="use 9 or 13 frames"):
        modes.text_to_video(pipe, ["a 3"], g, frames=10)


def test_image_to_video_starts_with_the_image_as_the_vae_sees_it(pipe, clips):
    images = clips[:, 0]  # (2, 1, 16, 16)
    out = modes.image_to_video(pipe, images, ["a 3", "a 4"], torch.Generator().manual_seed(0), frames=9)
    assert out.shape == (2, 9, 1, 16, 16)
    torch.testing.assert_close(out[:, 0], reconstruct(pipe, images[:, None])[:, 0], atol=1e-5, rtol=0)


def test_continuing_a_video_gives_its_starts_latent_frames_and_generates_the_rest(pipe, clips, monkeypatch):
    seen = []  # the GivenFrames sampled with
    real = modes.sample_latents
    monkeypatch.setattr(modes, "sample_latents", lambda *args, **kw: seen.append(args[4]) or real(*args, **kw))
    out = modes.continue_video(pipe, clips[:, :5], ["a 3", "a 4"], torch.Generator().manual_seed(0), frames=9)
    assert out.shape == (2, 9, 1, 16, 16)
    torch.testing.assert_close(out[:, :5], reconstruct(pipe, clips[:, :5]), atol=1e-5, rtol=0)
    assert seen[0].mask.tolist() == [[True, True, False]] * 2  # 5 frames are 2 latent frames; the third is sampled
    torch.testing.assert_close(seen[0].x0[:, :2], pipe.encode(clips[:, :5]))
    with pytest.raises(ValueError, match="leave nothing to generate"):
        modes.continue_video(pipe, clips, ["a 3", "a 4"], torch.Generator(), frames=9)


def test_extension_keeps_the_clip_and_adds_f_minus_keep_latent_frames_per_window(pipe, clips):
    out = modes.extend(pipe, clips, ["a 3", "a 4"], torch.Generator().manual_seed(0), windows=2, keep=1)
    assert out.shape == (2, 9 + 2 * 2 * 4, 1, 16, 16)  # 3 latent frames a window, 1 given: 2 new = 8 frames
    torch.testing.assert_close(out[:, :9], reconstruct(pipe, clips), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="keep must be between 1 and 2"):
        modes.extend(pipe, clips, ["a 3", "a 4"], torch.Generator(), keep=3)


def test_extension_and_merging_can_give_slot_0_a_first_frame_latent_as_training_did(pipe, clips, monkeypatch):
    seen = []  # the GivenFrames of every window sampled
    real = modes.sample_latents
    monkeypatch.setattr(modes, "sample_latents", lambda *args, **kw: seen.append(args[4]) or real(*args, **kw))
    z = pipe.encode(clips)  # (2, 3, c, h, w): latent 0 is frame 0 alone, latents 1 and 2 four frames each
    modes.extend(pipe, clips, ["a 3", "a 4"], torch.Generator().manual_seed(0), windows=1, keep=2, reencode=True)
    tail = clips[:, -5:]  # 1 + 4 (keep - 1) of the clip's own frames: frame 4 alone, then frames 5-8
    first_frame = pipe.encode(tail[:, :1])[:, 0]  # an image is a 1-frame video
    torch.testing.assert_close(seen[-1].x0[:, 0], first_frame, atol=1e-5, rtol=0)
    torch.testing.assert_close(seen[-1].x0[:, :2], modes.tail_latents(pipe, z, 2, clips))
    modes.extend(pipe, clips, ["a 3", "a 4"], torch.Generator().manual_seed(0), windows=2, keep=2, reencode=True)
    assert not torch.allclose(seen[-1].x0[:, 0], first_frame)  # a later window: its tail is generated, decoded
    assert seen[-1].mask[:, :2].all() and not seen[-1].mask[:, 2:].any()
    modes.extend(pipe, clips, ["a 3", "a 4"], torch.Generator().manual_seed(0), windows=1, keep=2)
    torch.testing.assert_close(seen[-1].x0[:, :2], z[:, -2:])  # the default: z's own, a mid-clip latent in slot 0
    modes.merge(pipe, clips, clips.flip(0), ["a 3", "a 4"], torch.Generator().manual_seed(0), keep=1, reencode=True)
    torch.testing.assert_close(seen[-1].x0[:, 0], pipe.encode(clips[:, -1:])[:, 0])
    torch.testing.assert_close(seen[-1].x0[:, 2], pipe.encode(clips.flip(0))[:, 1])


def test_interpolation_and_merging_hold_the_given_ends(pipe, clips):
    g = torch.Generator().manual_seed(0)
    between = modes.interpolate(pipe, clips, ["a 3", "a 4"], g)
    assert between.shape == clips.shape
    torch.testing.assert_close(between[:, 0], reconstruct(pipe, clips)[:, 0], atol=1e-5, rtol=0)
    merged = modes.merge(pipe, clips, clips.flip(0), ["a 3", "a 4"], g, keep=1)
    assert merged.shape == (2, 9 + 1 * 4 + 2 * 4, 1, 16, 16)  # first clip, 1 new latent frame, 2 of the second
    torch.testing.assert_close(merged[:, :9], reconstruct(pipe, clips), atol=1e-5, rtol=0)


def test_sdedit_strength_zero_is_the_reconstruction_and_one_forgets_the_clip(pipe, clips, monkeypatch):
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(modes.edit(pipe, clips, ["a 3", "a 4"], 0.0, g()), reconstruct(pipe, clips))
    # How much of the input survives is judged on latents (this tiny random VAE maps every clip to nearly one latent)
    # with a denoiser that predicts eps_hat = 0 (a random one amplifies tiny differences chaotically): what is left
    # of the input is then only what the noising kept.
    monkeypatch.setattr(pipe, "encode", lambda x: x)
    monkeypatch.setattr(pipe, "decode", lambda z0: z0)
    monkeypatch.setattr(pipe, "denoiser", lambda guidance: lambda x, t, **cond: torch.zeros_like(x))
    z = torch.rand(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(2)) * 2 - 1  # latents (n, f, c, h, w)
    gap = {s: (modes.edit(pipe, z, ["a 3", "a 4"], s, g()) - modes.edit(pipe, -z, ["a 3", "a 4"], s, g())).abs().mean()
           for s in (0.0, 0.3, 1.0)}  # how much two opposite inputs still differ after editing
    assert gap[1.0] < gap[0.3] < gap[0.0], gap  # the more noise, the less of the input survives
    assert gap[1.0] < 0.05 * gap[0.0], gap  # from (almost) pure noise the input no longer matters