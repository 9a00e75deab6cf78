"""Widgets that let a student see what each chapter's model does, each one line in a notebook.

What works where:
- `FramePlayer` (and `FramePlayer.from_panels`, `denoise_player`) shows precomputed frames; its
  Play button, slider and frames are linked in the browser (`jslink`), so after `save_html` (or
  a notebook saved with widget state) it plays in a static HTML page with no kernel.
- Chapter 2 (`posterior_sampler`, `traversal_player`, `beta_player`) and Chapter 3
  (`noising_explorer`, `reverse_player`, `step_comparison`) run their models once, up front, and
  return players of precomputed frames, so they too play in a static page. `noising_explorer`
  returns a `PlayerSwitch`: one player per schedule behind a jslinked selector.
- Chapter 4: `similarity_explorer` (CLIP's N x N matrix, one frame per batch) is precomputed;
  `text_to_image` precomputes every guidance value of its prompt (guidance and step sliders are
  jslinked) and needs a kernel only to run a newly typed prompt.
- Chapter 5: `patch_grid` (patch-size slider: the image in patches and its token sequence),
  `position_similarity` (pick a patch: cosine similarity of its position embedding to all others),
  `noised_patches` (x_t at a chosen t cut into the tokens a DiT sees) and `denoised_tokens` (x_t's tokens
  and what a DiT recovers from them, with and without the label) are all precomputed and jslinked.
- Chapter 6: `token_player` (a DiT's reverse process as its grid of tokens, x_t and the predicted image
  cell by cell) is precomputed and jslinked.
- Chapter 7: `video_player` (clips played side by side over time), `denoising_player` (every frame of a
  clip denoised at once), `sdedit_player` (SDEdit strength) and `strips` (one clip per setting: inference
  modes, sizes, lengths) are all precomputed and jslinked.
- `LatentExplorer` decodes a new image on every slider move, so it needs a running kernel.
- `LossPlot` draws only inside a notebook kernel and is a no-op elsewhere; `train_with_plot(name, ...)`
  trains a recipe with one.

Image helpers (`to_pixels`, `grid`, `png_bytes`, ...) turn model tensors in [-1, 1] into pixels.
"""

from __future__ import annotations

from .diffusion import (
    PlayerSwitch,
    interpolation_player,
    noise_caption,
    noising_explorer,
    reverse_player,
    schedule_figure,
    slerp,
    step_comparison,
)
from .dit import denoised_tokens, token_player, token_tiles, x0_prediction
from .images import decode_png, encode_png, figure_png, grid, png_bytes, side_by_side, to_pixels
from .latent import LatentExplorer, LatentMap
from .ldm import (
    TextToImage,
    attention_figure,
    latent_strip,
    similarity_explorer,
    similarity_figure,
    text_to_image,
)
from .lossplot import LossPlot, in_notebook, train_with_plot
from .player import FramePlayer, denoise_player
from .vae import beta_player, posterior_sampler, traversal_player
from .video import denoising_player, sdedit_player, strip, strips, video_player
from .vit import (
    PatchGrid,
    cosine_similarities,
    noised_patches,
    patch_figure,
    patch_grid,
    patch_mosaic,
    position_similarity,
)

__all__ = [
    "interpolation_player",
    "FramePlayer",
    "LatentExplorer",
    "LatentMap",
    "LossPlot",
    "PatchGrid",
    "PlayerSwitch",
    "TextToImage",
    "attention_figure",
    "beta_player",
    "cosine_similarities",
    "denoised_tokens",
    "denoising_player",
    "decode_png",
    "denoise_player",
    "encode_png",
    "figure_png",
    "grid",
    "in_notebook",
    "latent_strip",
    "noise_caption",
    "noised_patches",
    "noising_explorer",
    "patch_figure",
    "patch_grid",
    "patch_mosaic",
    "png_bytes",
    "position_similarity",
    "posterior_sampler",
    "reverse_player",
    "schedule_figure",
    "sdedit_player",
    "side_by_side",
    "similarity_explorer",
    "similarity_figure",
    "slerp",
    "step_comparison",
    "strip",
    "strips",
    "text_to_image",
    "to_pixels",
    "token_player",
    "token_tiles",
    "train_with_plot",
    "traversal_player",
    "video_player",
    "x0_prediction",
]
