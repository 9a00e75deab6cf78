"""Checkpoints: atomic writes, and a model rebuilt from its recorded class and config.

A checkpoint is a plain dict saved with torch.save:
  recipe, preset, model_class, model_config, model (state dict), step, seed, wall_time_s,
  device, torch, command, metrics  (+ optimizer, raw_model, ema, history in a resume file).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

FORMAT = "minilineage/1"
CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"


def save_atomic(obj, path: str | Path) -> Path:
    """torch.save to a temporary file in the same folder, then rename over `path`.

    A rename within one file system is atomic, so a run killed mid-write leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve(path: str | Path) -> Path:
    """A checkpoint path, or a bare name like 'ae-mnist' looked up in assets/checkpoints/."""
    p = Path(path)
    if p.exists():
        return p
    shipped = CHECKPOINT_DIR / (p.name if p.suffix == ".pt" else f"{p.name}.pt")
    if shipped.exists():
        return shipped
    available = sorted(f.stem for f in CHECKPOINT_DIR.glob("*.pt"))
    raise FileNotFoundError(
        f"no checkpoint at {str(path)!r}; shipped checkpoints: {', '.join(available) or '(none)'} "
        f"(in {CHECKPOINT_DIR}), or train one with `minilineage train RECIPE`"
    )


def load(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint dict, checking that it is one of ours."""
    path = resolve(path)
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a minilineage checkpoint (format {FORMAT!r})")
    return ckpt


def build_model(ckpt: dict, models: dict[str, type[nn.Module]], expect: str | type | None = None) -> nn.Module:
    """Instantiate the checkpoint's model class from its config and load its weights."""
    name = ckpt["model_class"]
    if name not in models:
        raise ValueError(f"checkpoint holds unknown model class {name!r}; known: {', '.join(models)}")
    expect_name = expect.__name__ if isinstance(expect, type) else expect
    if expect_name is not None and name != expect_name:
        raise ValueError(f"this checkpoint holds a {name} (recipe {ckpt.get('recipe')!r}), not a {expect_name}")
    cls = models[name]
    model = cls(cls.Config(**ckpt["model_config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    return model.eval()
