"""Checkpoints: atomic writes, the registry of model classes, and a model rebuilt from its record.

A checkpoint is a plain dict saved with torch.save:
  recipe, preset, model_class, model_config, model (state dict), step, seed, wall_time_s,
  device, torch, command, metrics  (+ optimizer, raw_model, ema, history in a resume file).
`load_model("ddpm-mnist")` (a path, or the name of a shipped checkpoint) gives the model, ready.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from minilineage.diffusion import DiffusionPipeline
from minilineage.models import MODELS as NETWORKS

# Every class a checkpoint may hold: the networks, and the diffusion pipeline that binds them.
MODELS: dict[str, type[nn.Module]] = {**NETWORKS, "DiffusionPipeline": DiffusionPipeline}
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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private (0600); a checkpoint is an ordinary file
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
    """Read a checkpoint dict, checking that it is a whole file and one of ours."""
    path = resolve(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # zip, pickle and EOF errors all mean "not a readable checkpoint"
        raise ValueError(f"{path} is not a readable checkpoint (truncated or corrupt? {type(error).__name__}: "
                         f"{error}); train it again with `minilineage train RECIPE`") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        what = f"a {type(ckpt).__name__}" if not isinstance(ckpt, dict) else f"a dict with keys {', '.join(list(ckpt)[:5])}"
        raise ValueError(f"{path} is not a minilineage checkpoint (format {FORMAT!r}); it holds {what}")
    return ckpt


def build_model(ckpt: dict, expect: str | type | None = None) -> nn.Module:
    """Instantiate the checkpoint's model class from its config and load its weights."""
    name = ckpt["model_class"]
    if name not in MODELS:
        raise ValueError(f"checkpoint holds unknown model class {name!r}; known: {', '.join(MODELS)}")
    expect_name = expect.__name__ if isinstance(expect, type) else expect
    if expect_name is not None and name != expect_name:
        raise ValueError(f"this checkpoint holds a {name} (recipe {ckpt.get('recipe')!r}), not a {expect_name}")
    cls = MODELS[name]
    model = cls(cls.Config(**ckpt["model_config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    return model.eval()


def load_model(path: str | Path, expect: str | type | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint (a path or a shipped name like 'ae-mnist') as a ready model in eval mode.

    The record (recipe, command, steps, metrics, ...) is kept as `model.checkpoint_info`."""
    ckpt = load(path)
    model = build_model(ckpt, expect).to(device)
    model.checkpoint_info = {k: v for k, v in ckpt.items() if k != "model"}
    return model
