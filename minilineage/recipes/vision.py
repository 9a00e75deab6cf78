"""Chapter 5's recipes: a Vision Transformer classifier on MNIST, with each kind of position embedding.

`vit-mnist` (fixed 2-D sine-cosine), `vit-mnist-learned` (a learned table) and `vit-mnist-nopos` (none)
are the same model trained the same way, so the chapter can compare what position information buys.
"""

from __future__ import annotations

from minilineage.metrics import eval_vit
from minilineage.models.classifier import classifier_loss
from minilineage.models.vit import ViT
from minilineage.recipes.core import Preset, Recipe, register
from minilineage.train import TrainConfig

# 28 x 28 digits in 4 x 4 patches: 49 tokens of 16 pixels, width 64, 4 pre-norm blocks (0.2 M parameters).
VIT_MNIST = {"image_size": 28, "patch": 4, "width": 64, "depth": 4, "heads": 4}


def _vit_presets() -> dict[str, Preset]:
    """AdamW with weight decay, warm-up and cosine decay (ViT's recipe); digits shifted by up to 2 pixels
    (`classifier_loss`), which a transformer needs more than a CNN: it has no built-in translation invariance."""
    return {
        "cpu": Preset("mnist-5k", TrainConfig(steps=1200, batch_size=128, lr=2e-3, weight_decay=0.05,
                                              warmup_steps=100, ema_decay=0.0)),
        "gpu": Preset("mnist", TrainConfig(steps=10_000, batch_size=256, lr=1e-3, weight_decay=0.05,
                                           warmup_steps=500, ema_decay=0.0), {"width": 128, "depth": 6}),
    }


for _name, _pos, _what in (("vit-mnist", "sincos", "fixed 2-D sine-cosine position embeddings"),
                           ("vit-mnist-learned", "learned", "learned position embeddings"),
                           ("vit-mnist-nopos", "none", "no position embeddings (a bag of patches)")):
    register(Recipe(_name, f"Chapter 5: ViT classifier, 4x4 patches, {_what}",
                    ViT, {**VIT_MNIST, "pos_embed": _pos}, classifier_loss, _vit_presets(), eval_vit))
