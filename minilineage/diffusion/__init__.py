"""Diffusion: schedules, the forward process, losses, samplers, conditioning, and the pipeline binding them."""

from minilineage.diffusion.conditioning import LabelCondition, TextCondition, drop_captions
from minilineage.diffusion.losses import (
    eps_loss,
    masked_eps_loss,
    masked_v_loss,
    min_snr_eps_loss,
    min_snr_v_loss,
    v_loss,
)
from minilineage.diffusion.objectives import OBJECTIVES, Objective, get_objective
from minilineage.diffusion.pipeline import DiffusionPipeline, PipelineConfig, diffusion_loss
from minilineage.diffusion.process import (
    NoiseSchedule,
    eps_from_v,
    gather,
    predict_eps,
    predict_x0,
    q_posterior,
    q_sample,
    q_step,
    randn,
    v_target,
)
from minilineage.diffusion.samplers import (
    GivenFrames,
    GivenNoised,
    ddim_sample,
    ddim_step,
    ddpm_sample,
    ddpm_step,
    guided,
    reverse,
    sample_with_steps,
    sdedit,
)
from minilineage.diffusion.schedules import make_betas

__all__ = [
    "DiffusionPipeline", "GivenFrames", "OBJECTIVES", "Objective", "GivenNoised", "LabelCondition", "NoiseSchedule", "PipelineConfig",
    "TextCondition", "ddim_sample", "ddim_step", "ddpm_sample", "ddpm_step", "diffusion_loss", "drop_captions",
    "eps_from_v", "eps_loss", "gather", "get_objective", "guided", "make_betas", "masked_eps_loss", "masked_v_loss", "min_snr_eps_loss", "min_snr_v_loss", "predict_eps", "predict_x0", "q_posterior",
    "q_sample", "q_step", "randn", "reverse", "sample_with_steps", "sdedit", "v_loss", "v_target",
]
