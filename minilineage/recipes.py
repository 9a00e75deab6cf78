"""Named, reproducible training recipes: model + data + loss + a CPU and a GPU preset.

`train_recipe("ae-mnist")` (or `minilineage train ae-mnist`) trains one and writes
`OUT/NAME.pt` (weights + how they were made), `OUT/NAME.json` (the same record, readable) and,
while training, `OUT/NAME.resume.pt` (optimizer state too) for `--resume`.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from minilineage import checkpoint
from minilineage.autoencoder import (
    VAE,
    Autoencoder,
    ae_loss,
    denoising_ae_loss,
    kl_to_standard_normal,
    reconstruction_mse,
    vae_loss,
)
from minilineage.data import ImageData, image_batches, load_dataset
from minilineage.ddpm import DDPM, ddpm_loss
from minilineage.train import TrainConfig, describe_device, fit, pick_device

PRESETS = ("cpu", "gpu")


@dataclass
class Preset:
    dataset: str
    train: TrainConfig
    model: dict = field(default_factory=dict)  # overrides of the recipe's model config


@dataclass
class Recipe:
    name: str
    summary: str
    model_cls: type[nn.Module]
    model_config: dict
    loss: Callable[[nn.Module, dict, torch.Generator], torch.Tensor]
    presets: dict[str, Preset]
    evaluate: Callable[[nn.Module, torch.device], dict] | None = None
    batches: Callable[[ImageData, int], Callable[[int, torch.Generator], dict]] | None = None

    def build(self, preset: str = "cpu", out: Path | None = None) -> nn.Module:
        """A fresh model for `preset`. `out` is the run's folder, where recipes that start from other
        checkpoints look for them first."""
        config = self.model_cls.Config(**{**self.model_config, **self.presets[preset].model})
        return self.model_cls(config)


def eval_reconstruction(model: nn.Module, device: torch.device) -> dict:
    x = load_dataset("mnist-5k", "test").float_images().to(device)
    return {"test_mse": round(reconstruction_mse(model, x), 5)}


@torch.no_grad()
def eval_vae(model: VAE, device: torch.device) -> dict:
    x = load_dataset("mnist-5k", "test").float_images().to(device)
    mu, logvar = model.encode(x)
    return {"test_mse": round(reconstruction_mse(model, x), 5), "test_kl": round(kl_to_standard_normal(mu, logvar).mean().item(), 3)}


@torch.no_grad()
def eval_class_conditional(model: nn.Module, device: torch.device, n: int = 1000) -> dict:
    """Sample n digits (labels 0-9 cycling, default steps and guidance) and score them with lenet-mnist."""
    from minilineage.metrics import evaluate_samples  # the classifier is itself a recipe

    generator = torch.Generator(device=device).manual_seed(0)
    labels = torch.arange(n) % 10
    started = time.perf_counter()
    images = torch.cat([model.sample(len(chunk), generator, labels=chunk) for chunk in labels.split(500)])
    seconds = time.perf_counter() - started
    uint8 = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    scores = evaluate_samples(uint8, labels)
    return {**scores, "sample_seconds": round(seconds, 1)}


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def _ae_presets(steps_cpu: int) -> dict[str, Preset]:
    return {
        "cpu": Preset("mnist-5k", TrainConfig(steps=steps_cpu, batch_size=128, lr=3e-3, ema_decay=0.0)),
        "gpu": Preset("mnist", TrainConfig(steps=10_000, batch_size=512, lr=2e-3, ema_decay=0.0)),
    }


register(Recipe("ae-mnist", "Chapter 1: autoencoder with a 2-D code (for the latent explorer)",
                Autoencoder, {"latent_dim": 2}, ae_loss, _ae_presets(2000), eval_reconstruction))
for _z in (4, 8, 16, 32):
    register(Recipe(f"ae-mnist-z{_z}", f"Chapter 1: autoencoder with a {_z}-number code (code-size study)",
                    Autoencoder, {"latent_dim": _z}, ae_loss, _ae_presets(2000), eval_reconstruction))
register(Recipe("dae-mnist", "Chapter 1: denoising autoencoder (inputs corrupted by Gaussian noise)",
                Autoencoder, {"latent_dim": 16}, denoising_ae_loss, _ae_presets(2000), eval_reconstruction))

register(Recipe("vae-mnist", "Chapter 2: VAE, 16-D code, beta = 1 (the true ELBO)",
                VAE, {"latent_dim": 16, "beta": 1.0}, vae_loss, _ae_presets(3000), eval_vae))
for _beta in (0.2, 5.0):
    register(Recipe(f"vae-mnist-beta{_beta:g}", f"Chapter 2: VAE with beta = {_beta:g} (the beta slider)",
                    VAE, {"latent_dim": 16, "beta": _beta}, vae_loss, _ae_presets(3000), eval_vae))
register(Recipe("vae-mnist-z2", "Chapter 2: VAE with a 2-D code (the latent map and traversal)",
                VAE, {"latent_dim": 2, "beta": 1.0}, vae_loss, _ae_presets(3000), eval_vae))

# Chapter 3. The U-Net works on 14x14 maps of 2x2 pixel blocks (patch=2): a quarter of the positions,
# which is where a CPU spends its time (see the chapter's cost study).
DDPM_MNIST = {"unet": {"width": 32, "channel_mults": (1, 2), "attention_levels": (1,), "num_classes": 10, "patch": 2},
              "schedule": "cosine", "T": 1000, "p_uncond": 0.1, "guidance": 2.0, "sample_steps": 50}
register(Recipe("ddpm-mnist", "Chapter 3: class-conditional DDPM (U-Net on 2x2 pixel blocks, cosine schedule)",
                DDPM, DDPM_MNIST, ddpm_loss, {
                    "cpu": Preset("mnist-5k", TrainConfig(steps=5000, batch_size=128, lr=2e-3, warmup_steps=200,
                                                          ema_decay=0.999, checkpoint_every=500)),
                    "gpu": Preset("mnist", TrainConfig(steps=40_000, batch_size=256, lr=1e-3, warmup_steps=1000,
                                                       ema_decay=0.9999, checkpoint_every=2000),
                                  {"unet": {**DDPM_MNIST["unet"], "width": 64, "patch": 1, "channel_mults": (1, 2, 2),
                                            "attention_levels": (1, 2)}}),
                }, eval_class_conditional))


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]


def models() -> dict[str, type[nn.Module]]:
    """Every model class a checkpoint may name."""
    return {r.model_cls.__name__: r.model_cls for r in RECIPES.values()}


def load_model(path: str | Path, expect: str | type | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint (a path or a shipped name like 'ae-mnist') as a ready model in eval mode."""
    ckpt = checkpoint.load(path)
    model = checkpoint.build_model(ckpt, models(), expect).to(device)
    model.checkpoint_info = {k: v for k, v in ckpt.items() if k != "model"}
    return model


@dataclass
class TrainResult:
    model: nn.Module
    record: dict
    path: Path | None


def _write(model: nn.Module, record: dict, out: Path | None, name: str) -> Path | None:
    """OUT/NAME.pt (weights + record) and OUT/NAME.json (the record without the loss history)."""
    if out is None:
        return None
    path = checkpoint.save_atomic({**record, "model": model.state_dict()}, out / f"{name}.pt")
    sidecar = {k: v for k, v in record.items() if k != "history"}
    (out / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def train_recipe(
    name: str,
    preset: str = "cpu",
    steps: int | None = None,
    out: str | Path | None = "runs",
    device: str = "auto",
    resume: bool = False,
    seed: int | None = None,
    progress: bool = True,
    plot: bool | None = None,
    keep_every: int = 0,
) -> TrainResult:
    """Train a named recipe; write OUT/NAME.pt and OUT/NAME.json (out=None writes nothing).

    `keep_every=N` also keeps OUT/NAME-stepN.pt, OUT/NAME-step2N.pt, ... (see `fit`)."""
    recipe = get_recipe(name)
    if preset not in recipe.presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(recipe.presets)}")
    p = recipe.presets[preset]
    config = replace(p.train, **{k: v for k, v in {"steps": steps, "seed": seed}.items() if v is not None})
    device = pick_device(device)
    torch.manual_seed(config.seed)
    out = Path(out) if out is not None else None
    model = recipe.build(preset, out)
    data = load_dataset(p.dataset, "train")
    make_batches = recipe.batches or image_batches
    meta = {
        "recipe": name, "preset": preset, "model_class": recipe.model_cls.__name__,
        "model_config": asdict(model.config), "dataset": p.dataset,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if "minilineage" in sys.argv[0] else f"train_recipe({name!r}, steps={config.steps})",
    }
    loss_plot = None
    if plot or plot is None:
        from minilineage.widgets import (  # only the notebook view needs widgets
            LossPlot,
            in_notebook,
        )

        if plot or in_notebook():
            loss_plot = LossPlot(every=max(config.log_every, config.steps // 40), title=name)
    state = fit(model, recipe.loss, make_batches(data, config.batch_size), config, device,
                resume_path=out / f"{name}.resume.pt" if out else None, resume=resume, meta=meta,
                callbacks=(loss_plot.update,) if loss_plot else (), progress=progress, keep_every=keep_every)
    if loss_plot:
        loss_plot.close()
    final = state.final_model
    record = {
        "format": checkpoint.FORMAT, **meta, "step": state.step, "seed": config.seed,
        "train_config": asdict(config), "wall_time_s": round(state.wall_time_s, 1),
        "device": describe_device(device), "torch": torch.__version__, "python": platform.python_version(),
        "parameters": sum(q.numel() for q in final.parameters()), "metrics": {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "history": state.history,
    }
    path = _write(final, record, out, name)  # before evaluating: a failing evaluation never loses the model
    if recipe.evaluate:
        record["metrics"] = recipe.evaluate(final, device)
        path = _write(final, record, out, name)
    final.checkpoint_info = record
    return TrainResult(final, record, path)


# Evaluation: the digit classifier whose features define FID-LeNet (minilineage.metrics).
from minilineage.classifier import LeNet, accuracy, classifier_loss  # noqa: E402


def eval_classifier(model: LeNet, device: torch.device) -> dict:
    test = load_dataset("mnist-5k", "test")
    return {"test_accuracy": round(accuracy(model, test.float_images().to(device), test.labels.to(device)), 4)}


register(Recipe("lenet-mnist", "Evaluation: LeNet digit classifier behind `minilineage eval` (FID-LeNet, accuracy)",
                LeNet, {}, classifier_loss, {
                    "cpu": Preset("mnist-5k", TrainConfig(steps=1500, batch_size=128, lr=3e-3, weight_decay=0.05)),
                    "gpu": Preset("mnist", TrainConfig(steps=5000, batch_size=256, lr=3e-3, weight_decay=0.05)),
                }, eval_classifier))


# Chapter 4: latent diffusion with a CLIP-style text encoder. Three recipes, trained in this order:
# clip-mnist and latent-vae-mnist (independent), then ldm-mnist, which starts from both checkpoints.
from minilineage.clip import MiniCLIP, caption_batches, clip_recipe_loss, zero_shot_accuracy  # noqa: E402
from minilineage.latent import LatentVAE, latent_scale_factor, latent_vae_loss  # noqa: E402
from minilineage.ldm import LatentDiffusion, digit_prompts, ldm_loss  # noqa: E402


@torch.no_grad()
def eval_clip(model: MiniCLIP, device: torch.device) -> dict:
    """Zero-shot accuracy on the held-out digits, per caption template (template 0: "a handwritten seven")."""
    test = load_dataset("mnist-5k", "test")
    per_template = [round(zero_shot_accuracy(model, test, k), 4) for k in range(len(test.templates))]
    return {"zero_shot_accuracy": per_template[0], "zero_shot_accuracy_per_template": per_template}


@torch.no_grad()
def eval_latent_vae(model: LatentVAE, device: torch.device) -> dict:
    x = load_dataset("mnist-5k", "test").float_images().to(device)
    mu, logvar = model.encode(x)
    return {"test_mse": round(reconstruction_mse(model, x), 5),
            "test_kl": round(kl_to_standard_normal(mu.flatten(1), logvar.flatten(1)).mean().item(), 2),
            "latent_scale": round(latent_scale_factor(model, load_dataset("mnist-5k", "train").float_images().to(device)), 4)}


@torch.no_grad()
def eval_text_to_image(model: LatentDiffusion, device: torch.device, n: int = 1000) -> dict:
    """Prompt adherence: n samples for "a handwritten zero" ... "nine" (default steps and guidance), scored by lenet-mnist."""
    from minilineage.metrics import evaluate_samples  # the classifier is itself a recipe

    generator = torch.Generator(device=device).manual_seed(0)
    started = time.perf_counter()
    prompts = digit_prompts(n)
    images = torch.cat([model.sample(len(part), generator, prompt=part) for part in
                        (prompts[i : i + 500] for i in range(0, n, 500))])
    seconds = time.perf_counter() - started
    uint8 = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    scores = evaluate_samples(uint8, torch.arange(n) % 10)
    return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}, "samples": n,
            "sample_seconds": round(seconds, 1), "guidance": model.config.guidance, "steps": model.config.sample_steps}


@dataclass
class LatentDiffusionRecipe(Recipe):
    """A recipe whose model starts from two trained checkpoints: the latent VAE and the CLIP text encoder.

    Each is taken from the run's own folder when it was trained there (`minilineage train latent-vae-mnist
    --out runs/` before `minilineage train ldm-mnist --out runs/`), else the shipped one is used."""

    vae_checkpoint: str = "latent-vae-mnist"
    clip_checkpoint: str = "clip-mnist"

    def build(self, preset: str = "cpu", out: Path | None = None) -> LatentDiffusion:
        p = self.presets[preset]
        config = LatentDiffusion.Config(**{**self.model_config, **p.model})

        def pretrained(name: str, cls: type[nn.Module]) -> nn.Module:
            own = out / f"{name}.pt" if out is not None else None
            return load_model(own if own is not None and own.exists() else name, expect=cls)

        vae, clip = pretrained(self.vae_checkpoint, LatentVAE), pretrained(self.clip_checkpoint, MiniCLIP)
        return LatentDiffusion.from_pretrained(config, vae, clip, load_dataset(p.dataset, "train").float_images())


register(Recipe("clip-mnist", "Chapter 4: CLIP-style text + image encoders trained from scratch on digit captions",
                MiniCLIP, {"text_width": 64, "text_layers": 2, "image_width": 16, "embed_dim": 32},
                clip_recipe_loss, {
                    "cpu": Preset("mnist-5k", TrainConfig(steps=1000, batch_size=128, lr=2e-3, warmup_steps=50)),
                    "gpu": Preset("mnist", TrainConfig(steps=5000, batch_size=512, lr=2e-3, warmup_steps=200)),
                }, eval_clip, caption_batches))
register(Recipe("latent-vae-mnist", "Chapter 4: KL-regularised autoencoder, 28x28 pixels <-> 7x7x4 latents",
                LatentVAE, {"width": 32, "latent_channels": 4, "beta": 0.01}, latent_vae_loss, {
                    "cpu": Preset("mnist-5k", TrainConfig(steps=1500, batch_size=128, lr=3e-3)),
                    "gpu": Preset("mnist", TrainConfig(steps=10_000, batch_size=512, lr=2e-3)),
                }, eval_latent_vae))
# The U-Net's in_channels and context_dim come from the two checkpoints (LatentDiffusion.from_pretrained).
LDM_MNIST = {"unet": {"width": 64, "channel_mults": (1,), "attention_levels": (0,)},
             "schedule": "cosine", "T": 1000, "p_uncond": 0.1, "guidance": 3.0, "sample_steps": 50}
register(LatentDiffusionRecipe(
    "ldm-mnist", "Chapter 4: text-to-image latent diffusion (7x7x4 latents, cross-attention to CLIP text tokens)",
    LatentDiffusion, LDM_MNIST, ldm_loss, {
        "cpu": Preset("mnist-5k", TrainConfig(steps=2000, batch_size=128, lr=2e-3, warmup_steps=200,
                                              ema_decay=0.999, checkpoint_every=500)),
        "gpu": Preset("mnist", TrainConfig(steps=40_000, batch_size=256, lr=1e-3, warmup_steps=1000,
                                           ema_decay=0.9999, checkpoint_every=2000),
                      {"unet": {**LDM_MNIST["unet"], "width": 128, "blocks_per_level": 2}}),
    }, eval_text_to_image, caption_batches))
