"""A diffusion model as one object: a denoiser bound to its noise schedule, optionally inside an
autoencoder, optionally conditioned on labels or text.

    DDPM (Chapter 3)              denoiser = U-Net on pixels, conditioned on class labels
    latent diffusion (Chapter 4)  denoiser = U-Net on the latents of a frozen autoencoder, text via a
                                  frozen text encoder and cross-attention (Rombach et al. 2022)
    DiT, video (Chapters 6-7)     the same pipeline with a transformer denoiser

The maths lives elsewhere: the forward process in `process`, the losses in `losses`, DDPM / DDIM /
guidance in `samplers`, rectified flow in `flow`, and which loss goes with which sampler in
`objectives`. This class only binds the parts, so that one checkpoint holds everything `sample`
needs, and every model trains and samples through the same two methods, `loss` and `sample`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from minilineage.diffusion.conditioning import LabelCondition, TextCondition
from minilineage.diffusion.objectives import get_objective
from minilineage.diffusion.process import NoiseSchedule
from minilineage.diffusion.samplers import Given, guided
from minilineage.layers import CrossAttention, unwrap
from minilineage.models import MODELS, build
from minilineage.models.clip import MiniCLIP, MiniCLIPConfig
from minilineage.models.latent import latent_statistics, reparameterize
from minilineage.models.video_clip import VideoCLIP


def _complete(spec: dict | None) -> dict | None:
    """{"cls": name, "config": partial dict} -> the same with every field of the config filled in."""
    if spec is None:
        return None
    if spec.get("cls") not in MODELS:
        raise ValueError(f"unknown model class {spec.get('cls')!r}; known: {', '.join(MODELS)}")
    return {"cls": spec["cls"], "config": asdict(MODELS[spec["cls"]].Config(**spec.get("config", {})))}


@dataclass
class PipelineConfig:
    denoiser: dict = field(default_factory=lambda: {"cls": "UNet", "config": {}})  # eps_theta(x_t, t, **cond)
    shape: tuple[int, ...] = (1, 28, 28)  # one sample where diffusion runs: (C, H, W) or (F, C, H, W)
    autoencoder: dict | None = None  # {"cls": "LatentVAE", "config": ...}: diffusion on its latents, frozen
    latent_scale: float = 1.0  # z0 = latent_scale * z: 1 / std of the training latents
    text: dict | None = None  # MiniCLIPConfig of a text encoder: conditioning on prompts
    train_text: bool = False  # False: that encoder is a CLIP's, frozen; True: it trains with the denoiser (GLIDE)
    schedule: str = "cosine"
    T: int = 1000
    objective: str = "eps"  # "eps" (predict the noise), "eps-min-snr", "v", "v-min-snr", or "flow" (rectified flow): see `objectives`
    clip_x0: float | None = 1.0  # bound on the predicted x0 (see `samplers`); latents: their largest |z0|
    p_uncond: float = 0.1  # how often training drops the condition (for classifier-free guidance)
    guidance: float = 2.0  # default guidance scale when sampling
    sample_steps: int = 50  # default number of DDIM steps when sampling

    def __post_init__(self):
        # a config read back from a checkpoint holds lists; partial part configs are filled in once,
        # so a checkpoint records every field and rebuilds the same network whatever defaults become
        self.shape = tuple(self.shape)
        self.denoiser, self.autoencoder = _complete(self.denoiser), _complete(self.autoencoder)
        self.text = None if self.text is None else asdict(MiniCLIPConfig(**self.text))


class DiffusionPipeline(nn.Module):
    """A denoiser + its schedule (+ a frozen autoencoder) (+ labels or text). Ho et al. 2020; Rombach et al. 2022."""

    Config = PipelineConfig

    def __init__(self, config: PipelineConfig):
        super().__init__()
        self.config = config
        self.net = build(config.denoiser["cls"], config.denoiser["config"])
        self.autoencoder = None
        if config.autoencoder is not None:
            self.autoencoder = build(config.autoencoder["cls"], config.autoencoder["config"]).requires_grad_(False)
        net = self.net.config
        self.condition: LabelCondition | TextCondition | None = None
        if config.text is not None:
            self.condition = TextCondition(MiniCLIPConfig(**config.text), trainable=config.train_text)
            if net.context_dim != self.condition.width:
                raise ValueError(f"denoiser context_dim {net.context_dim} != text width {self.condition.width}")
        elif getattr(net, "num_classes", None):
            self.condition = LabelCondition(net.num_classes)
        self.sched = NoiseSchedule.named(config.schedule, config.T)
        self.objective = get_objective(config.objective)

    @classmethod
    def from_parts(cls, config: PipelineConfig, autoencoder: nn.Module | None = None,
                   clip: MiniCLIP | VideoCLIP | None = None, x_train: Tensor | None = None) -> DiffusionPipeline:
        """A fresh denoiser next to copies of a trained autoencoder and CLIP text encoder.

        The denoiser's input channels and context width, the diffusion shape, the latent scale
        and the x0 bound are all taken from the parts; the scale is measured on x_train.
        """
        denoiser = {"cls": config.denoiser["cls"], "config": dict(config.denoiser["config"])}
        changes = {}
        if autoencoder is not None:
            scale, bound = latent_statistics(autoencoder, x_train)
            denoiser["config"]["in_channels"] = autoencoder.config.latent_channels
            changes |= {"autoencoder": {"cls": type(autoencoder).__name__, "config": asdict(autoencoder.config)},
                        "shape": autoencoder.latent_shape, "latent_scale": scale, "clip_x0": bound}
        if clip is not None:
            denoiser["config"]["context_dim"] = clip.config.text_width
            changes["text"] = clip.config.text_config()  # the text encoder's sizes and vocabulary
        elif config.text is not None:  # a text encoder of its own, trained from scratch with the denoiser
            denoiser["config"]["context_dim"] = MiniCLIPConfig(**config.text).text_width
        model = cls(replace(config, denoiser=denoiser, **changes))
        if autoencoder is not None:
            model.autoencoder.load_state_dict(autoencoder.state_dict())
        if clip is not None:
            model.condition.encoder.load_state_dict(clip.text.state_dict())
        return model

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def sample_options(self) -> tuple[str, ...]:
        """The keywords `sample` accepts for this model (and so the flags of `minilineage sample`)."""
        return (*((self.condition.option, "guidance") if self.condition else ()), "steps")

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        return self.net(x, t, **cond)  # eps_hat, shaped like x

    @torch.no_grad()
    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Data -> where diffusion runs: z0 = scale * z, z ~ q(z | x) (the mean if generator=None); x itself without an autoencoder."""
        if self.autoencoder is None:
            return x
        return self.encode_moments(torch.cat(self.autoencoder.encode(x), dim=1), generator)

    @torch.no_grad()
    def pre_encode(self, x: Tensor, batch_size: int = 500) -> Tensor:
        """The frozen autoencoder's q(z | x) for a whole dataset, once: moments (N, 2c, h, w) = [mu, log sigma^2].

        Training on these (`data.encoded_batches`, `--pre-encode`) skips the encoder at every step;
        `loss` then draws z ~ q(z | x) from them with the step's generator, as `encode` would.
        """
        if self.autoencoder is None:
            raise ValueError("pre_encode needs a model with an autoencoder (a latent diffusion model)")
        return torch.cat([torch.cat(self.autoencoder.encode(chunk), dim=1) for chunk in x.split(batch_size)])

    def encode_moments(self, moments: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """`encode` from precomputed moments (`pre_encode`): z0 = scale * z, z ~ q(z | x)."""
        mu, logvar = moments.chunk(2, dim=1)
        z = mu if generator is None else reparameterize(mu, logvar, generator)
        return self.config.latent_scale * z  # about unit variance

    @torch.no_grad()
    def decode(self, z0: Tensor) -> Tensor:
        """Where diffusion runs -> data, roughly in [-1, 1]."""
        return z0 if self.autoencoder is None else self.autoencoder.decode(z0 / self.config.latent_scale)

    def conditioning(self, n: int, labels: Tensor | None = None, prompt: str | list[str] | None = None) -> dict:
        """The denoiser's keywords for n samples: {"y": ...} or {"context": ..., "context_mask": ...}."""
        asked = {k for k, v in (("labels", labels), ("prompt", prompt)) if v is not None}
        wrong = asked - {self.condition.option} if self.condition else asked
        if wrong:
            takes = f"takes {self.condition.option}" if self.condition else "is unconditional"
            raise ValueError(f"this model {takes}; it takes no {', '.join(sorted(wrong))}")
        if self.condition is None:
            return {}
        return self.condition.encode(labels if self.condition.option == "labels" else prompt, n, self.device)

    def null_condition(self) -> dict:
        """The unconditional input of guidance (the null label, or the empty prompt's tokens)."""
        return self.condition.null(self.device)

    def predict(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        """What the objective's sampler steps with: eps_hat for "eps" and "v", the velocity for "flow"
        (t is then in [0, 1]). See `objectives`."""
        return self.objective.prediction(self, self.sched)(x, t, **cond)

    def predict_eps(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        """eps_hat from the denoiser's output, for the diffusion objectives (the noise itself for "eps")."""
        if self.objective.name == "flow":
            raise ValueError("a 'flow' pipeline predicts a velocity, not eps: use `predict`")
        return self.predict(x, t, **cond)

    def denoiser(self, guidance: float):
        """What a sampler calls: the objective's prediction, or its guided mix (one batched call) when guidance != 1."""
        model = self.objective.prediction(self, self.sched)
        if self.condition is None or guidance == 1.0:
            return model
        return guided(model, guidance, self.null_condition())

    def loss(self, batch: dict, generator: torch.Generator, net: nn.Module | None = None) -> Tensor:
        """The objective's loss on z0 = encode(x) (Algorithm 1 of Ho et al. 2020 for "eps"), the condition dropped at rate p_uncond.

        With "eps" and an autoencoder this is L_LDM of Rombach et al. 2022, Eq. (2); with text too, their Eq. (3).

        A batch with "given" (B, F) trains with frame masks (the objective's `masked_loss`). `net` is the
        callable that predicts eps (a DDP or compiled wrapper of this model), by default this model.
        """
        z0 = self.encode_moments(batch["moments"], generator) if "moments" in batch else self.encode(batch["x"], generator)
        cond = {} if self.condition is None else self.condition.from_batch(batch, self.config.p_uncond, generator)
        net, sched = self if net is None else net, self.sched.to(z0.device)
        if "given" in batch:
            if self.objective.masked_loss is None:
                raise ValueError(f"training with given frames needs the 'eps' or 'v' objective, not {self.objective.name!r}")
            return self.objective.masked_loss(net, sched, z0, batch["given"], generator, **cond)
        return self.objective.loss(net, sched, z0, generator, **cond)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: Tensor | None = None,
               prompt: str | list[str] | None = None, steps: int | None = None, guidance: float | None = None,
               shape: tuple[int, ...] | None = None, given: Given | None = None, trajectory: bool = False):
        """n samples in [-1, 1] with the objective's sampler: for "eps" and "v" DDIM with `steps` steps
        (ancestral DDPM when steps >= T), for "flow" `steps` Euler steps.

        `shape` asks for another size or length than the training one, e.g. (1, 56, 56). `given`
        holds known entries (in the space diffusion runs in: latents if there is an autoencoder).
        With trajectory=True also returns the sampler's records {t, xt, x0_hat, eps_hat}.
        """
        if n < 1:
            raise ValueError(f"n must be a positive number of samples, got {n}")
        steps = steps or self.config.sample_steps
        guidance = self.config.guidance if guidance is None else guidance
        cond = self.conditioning(n, labels, prompt)
        size = (n, *(shape or self.config.shape))
        out = self.objective.sample(self.denoiser(guidance), self.sched, size, steps, generator, self.device,
                                    trajectory, self.config.clip_x0, given, **cond)
        z0, frames = out if trajectory else (out, None)
        images = self.decode(z0).clamp(-1, 1)
        return (images, frames) if trajectory else images

    @torch.no_grad()
    def cross_attention_maps(self, zt: Tensor, t: Tensor, prompts: list[str]) -> Tensor:
        """How each latent position splits its cross-attention over the text tokens: weights (B, N_ctx, h, w)
        of one conditional denoiser call, averaged over heads and over every cross-attention layer.

        Row i of a cross-attention's weights says how latent position i splits its attention over
        the N_ctx tokens; read column j instead and you get a map of where token j's vector is read.
        That is not where the word acts: the text encoder mixes the whole prompt into every token's
        vector, and a weight says nothing of how much the value it fetches changes the output
        (Chapter 4 measures both).
        """
        layers = [m for m in self.net.modules() if isinstance(m, CrossAttention)]
        if not isinstance(self.condition, TextCondition) or not layers:
            raise ValueError("cross-attention maps need a text-conditioned model with cross-attention")
        for layer in layers:
            layer.keep_weights = True
        try:
            self(zt, t, **self.condition.tokens(prompts))
            weights = [layer.last_weights.mean(dim=1) for layer in layers]  # each (B, N_q, N_ctx)
        finally:
            for layer in layers:
                layer.keep_weights, layer.last_weights = False, None
        h, w = zt.shape[-2:]
        maps = []
        for weight in weights:
            side = math.isqrt(weight.shape[1] * h // w)  # this layer's height; its map keeps the latent's aspect
            grid = rearrange(weight, "b (h w) n -> b n h w", h=side)  # (B, N_ctx, h', w')
            maps.append(grid if grid.shape[-2:] == (h, w) else F.interpolate(grid, size=(h, w), mode="bilinear"))
        return torch.stack(maps).mean(dim=0)  # (B, N_ctx, h, w)


def diffusion_loss(model: nn.Module, batch: dict, generator: torch.Generator) -> Tensor:
    """The training loss of any pipeline, for `train.fit`: `model` may be a DDP / compiled wrapper."""
    return unwrap(model).loss(batch, generator, net=model)
