"""The CLIP on moving-mnist clips: its text encoder knows every caption word, and a video pipeline reads prompts with it."""

from __future__ import annotations

from dataclasses import asdict

import torch

from minilineage.data import load_dataset
from minilineage.data.video import CAPTION_WORDS, motion_caption
from minilineage.diffusion import DiffusionPipeline
from minilineage.models.text import UNK
from minilineage.models.vae3d import VAE3d, VAE3dConfig
from minilineage.models.video_clip import VideoCLIP, VideoCLIPConfig


def tiny_clip(seed: int = 0) -> tuple[VideoCLIP, torch.Tensor, list[str]]:
    torch.manual_seed(seed)
    vae = VAE3d(VAE3dConfig(width=8, latent_channels=4, frames=9, size=16))
    clips = load_dataset("moving-mnist", "train", n=8, frames=9, size=16, digits=1)
    config = VideoCLIPConfig(text_width=32, text_layers=1, text_heads=2, embed_dim=16, video_width=32, video_layers=1,
                             video_heads=2)
    return VideoCLIP.from_parts(config, vae, clips.float_images()), clips.float_images(), list(clips.texts)


def test_every_caption_word_has_its_own_token():
    model, _, texts = tiny_clip()
    every = motion_caption([3, 8], [5, 6], [True, False])  # "a 3 moves up-left and bounces, an 8 moves down-right"
    tokens, mask = model.tokenizer.encode([every, *texts])
    assert not (tokens[mask] == UNK).any()
    assert set(model.config.vocab[4:]) == set(CAPTION_WORDS)


def test_a_few_steps_learn_to_match_clips_and_captions():
    model, clips, texts = tiny_clip()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = model.loss(clips, texts).item()
    for _ in range(90):
        loss = model.loss(clips, texts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first  # eight pairs memorised: the diagonal of the similarity matrix wins
    assert (model.retrieval(clips, texts) == torch.arange(8)).all()
    assert not any(p.grad is not None for p in model.autoencoder.parameters())  # the VAE stays frozen


def test_a_pipeline_built_from_it_reads_prompts_with_its_text_encoder():
    model, clips, _ = tiny_clip()
    denoiser = {"cls": "VideoDiT", "config": {"width": 32, "depth": 1, "heads": 2, "patch": 2}}
    pipe = DiffusionPipeline.from_parts(DiffusionPipeline.Config(denoiser=denoiser, objective="v"),
                                        autoencoder=model.autoencoder, clip=model, x_train=clips)
    assert pipe.config.text["vocab"] == model.config.vocab and "video_width" not in pipe.config.text
    prompts = ["a 3 moves left", "a 3 moves right"]
    context = pipe.condition.tokens(prompts)["context"]
    tokens, mask = model.tokenizer.encode(prompts)
    assert torch.allclose(context, model.text(tokens, mask)[0], atol=1e-5)
    assert not torch.allclose(context[0], context[1])  # the direction word changes what the DiT reads
    assert not pipe.config.train_text and not any(p.requires_grad for p in pipe.condition.encoder.parameters())
    assert not pipe.condition.tokens(prompts)["context"].requires_grad  # a CLIP's encoder stays frozen
    rebuilt = DiffusionPipeline(DiffusionPipeline.Config(**asdict(pipe.config)))
    rebuilt.load_state_dict(pipe.state_dict())  # the record rebuilds the same text encoder
    assert torch.allclose(rebuilt.condition.tokens(prompts)["context"], context, atol=1e-5)
