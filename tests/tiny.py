"""Helpers shared by the model tests (imported as `from tiny import ...`; pytest puts tests/ on the path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised layers random weights, as if trained a little."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == 0):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


VIDEO_VOCAB = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "an", *"0123456789", "moves", "left", "right"]


def video_pipeline(sample_steps: int = 4):
    """A tiny text-to-video pipeline (causal VAE3d on 9 x 16 x 16 clips, VideoDiT on 3 x 2 x 4 x 4 latents), random
    where DiT starts at zero so that its output depends on its input."""
    from minilineage.diffusion import DiffusionPipeline, PipelineConfig

    torch.manual_seed(0)
    config = PipelineConfig(
        denoiser={"cls": "VideoDiT", "config": {"in_channels": 2, "patch": 2, "width": 32, "depth": 1, "heads": 2,
                                                "context_dim": 16}},
        autoencoder={"cls": "VAE3d", "config": {"width": 4, "latent_channels": 2, "frames": 9, "size": 16}},
        text={"vocab": VIDEO_VOCAB, "context_length": 8, "text_width": 16, "text_layers": 1, "text_heads": 2},
        shape=(3, 2, 4, 4), T=50, sample_steps=sample_steps, guidance=2.0)
    return randomize_(DiffusionPipeline(config).eval())


# UCF-101 in the official layout, a few tiny videos: what the loader and recipe tests read ---------------
UCF_CLASSES = ("ApplyEyeMakeup", "PlayingViolin", "YoYo")


NO_PYAV = "PyAV is not installed: the UCF-101 loader tests need the video extra (pip install -e .[video])"


def write_avi(path, channel: int, frames: int, height: int = 48, width: int = 64) -> None:
    """A tiny MPEG-4 .avi like UCF-101's: frame i is one flat colour, 40 + 15 i in one RGB channel."""
    av = pytest.importorskip("av", reason=NO_PYAV)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "2"}
        for i in range(frames):
            rgb = np.zeros((height, width, 3), dtype=np.uint8)
            rgb[..., channel] = 40 + 15 * i
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def write_layout(root, write=write_avi) -> None:
    """Three classes in the official layout: UCF-101/<Class>/v_<Class>_gXX_cYY.avi and ucfTrainTestlist/ (CRLF lines)."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {name}\r\n" for i, name in enumerate(UCF_CLASSES)))
    train, test = [], []
    for c, name in enumerate(UCF_CLASSES):
        for group, frames in ((8, 12), (1, 5)):  # the test clip is shorter than the 4-frame, stride-2 window
            clip = f"{name}/v_{name}_g{group:02d}_c01.avi"
            write(root / "UCF-101" / clip, c, frames)
            (train if group == 8 else test).append(f"{clip} {c + 1}\r\n" if group == 8 else f"{clip}\r\n")
    (lists / "trainlist01.txt").write_text("".join(train))
    (lists / "testlist01.txt").write_text("".join(test))
