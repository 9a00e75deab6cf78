"""Neural building blocks shared by the course's networks: time embedding, residual blocks, attention,
transformer blocks, and patches with their position embeddings."""

from minilineage.layers.attention import CrossAttention, SelfAttention2d, SpatialCrossAttention
from minilineage.layers.blocks import Downsample, ResBlock, Upsample
from minilineage.layers.common import norm, unwrap, zero_init
from minilineage.layers.embeddings import TimeEmbedding, timestep_embedding
from minilineage.layers.patching import (
    LearnedPositionEmbedding,
    grid_positions,
    patchify,
    patchify_video,
    resample_positions,
    sincos_1d,
    sincos_2d,
    sincos_3d,
    unpatchify,
    unpatchify_video,
)
from minilineage.layers.transformer import MLP, SelfAttention, TransformerBlock

__all__ = [
    "MLP", "CrossAttention", "Downsample", "LearnedPositionEmbedding", "ResBlock", "SelfAttention", "SelfAttention2d",
    "SpatialCrossAttention", "TimeEmbedding", "TransformerBlock", "Upsample", "grid_positions", "norm", "patchify",
    "patchify_video", "resample_positions", "sincos_1d", "sincos_2d", "sincos_3d", "timestep_embedding",
    "unpatchify", "unpatchify_video", "unwrap", "zero_init",
]
