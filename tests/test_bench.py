"""`minilineage bench`: FLOP counts pinned and checked against hand counts, the matched diffusers U-Net,
the sampling job's network calls, and the whole bench end to end. No timing is asserted."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import pytest
import torch
from torch import nn

from minilineage import bench, cli
from minilineage.bench import BenchSettings, Job, flop_counter, measure
from minilineage.diffusion import DiffusionPipeline, diffusion_loss
from minilineage.diffusion.pipeline import PipelineConfig
from minilineage.models.unet import UNet, UNetConfig
from minilineage.recipes import get_recipe

# 8x8 images -> 4x4 maps (patch 2) at level 0, 2x2 at level 1 (with attention); embeddings 4 * 8 = 32 wide
TINY = UNetConfig(width=8, channel_mults=(1, 2), attention_levels=(1,), num_classes=10, patch=2)
TINY_PIPELINE = PipelineConfig(denoiser={"cls": "UNet", "config": asdict(TINY)}, shape=(1, 8, 8))
B, D = 2, 32
QUICK = BenchSettings(device="cpu", batch_size=B, iters=1, sample_n=2, sample_steps=3, sample_iters=1,
                      fresh_process=False, threads=1)


# Hand counts, one multiply-add = 2 FLOPs, biases and elementwise ops not counted (FlopCounterMode's rule)
def conv(c_in, c_out, hw, k=3):
    return 2 * B * hw * c_in * c_out * k * k


def linear(rows, c_in, c_out):
    return 2 * rows * c_in * c_out


def attention(c, n):  # q/k/v projections, Q K^T and A V over n positions, output projection
    return linear(B * n, c, 3 * c) + 2 * (2 * B * n * n * c) + linear(B * n, c, c)


def resblock(c_in, c_out, hw):  # conv1, scale-and-shift projection, conv2, 1x1 skip when widths differ
    skip = conv(c_in, c_out, hw, k=1) if c_in != c_out else 0
    return conv(c_in, c_out, hw) + linear(B, D, 2 * c_out) + conv(c_out, c_out, hw) + skip


def tiny_job() -> Job:
    """Our tiny pipeline as the bench sees a recipe's: the training loss and `pipeline_sample`."""
    pipeline = DiffusionPipeline(TINY_PIPELINE)
    return Job("ours", pipeline, diffusion_loss, bench.pipeline_sample, pipeline.net, TINY_PIPELINE.shape)


def tiny_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, 1, 8, 8, generator=g), torch.tensor([3, 500]), torch.tensor([1, 10])


def test_tiny_unet_forward_flops_equal_a_hand_count_layer_by_layer():
    x, t, y = tiny_inputs()
    with flop_counter() as counter:
        UNet(TINY)(x, t, y=y)
    hand = (2 * linear(B, D, D) + conv(4, 8, 16)  # time MLP (32 sinusoids -> 32 -> 32), in_conv
            + resblock(8, 8, 16) + conv(8, 8, 4)  # level 0, stride-2 downsample to 2x2
            + resblock(8, 16, 4) + attention(16, 4)  # level 1
            + resblock(16, 16, 4) + attention(16, 4) + resblock(16, 16, 4)  # middle
            + resblock(32, 16, 4) + attention(16, 4)  # decoder level 1: [h, skip] = 32 channels
            + conv(16, 8, 16) + resblock(16, 8, 16) + conv(8, 4, 16))  # upsample to 8 channels, level 0, out_conv
    assert counter.get_total_flops() == hand == 719_872
    assert sum(counter.get_flop_counts()["UNet.in_conv"].values()) == 2 * B * 16 * 4 * 8 * 9 == 18_432


def test_tiny_reference_forward_flops_equal_a_hand_count_with_its_deeper_decoder():
    pytest.importorskip("diffusers")
    x, t, y = tiny_inputs()
    with flop_counter() as counter:
        bench.reference_unet(TINY, 8)(x, t, y)
    hand = (linear(B, 8, D) + linear(B, D, D) + conv(4, 8, 16)  # its time MLP reads width[0] = 8 sinusoids
            + resblock(8, 8, 16) + conv(8, 8, 4) + resblock(8, 16, 4) + attention(16, 4)  # encoder: as ours
            + resblock(16, 16, 4) + attention(16, 4) + resblock(16, 16, 4)  # middle: as ours
            # decoder: 2 blocks per level, reading skips of 16 and 8 (level 1), 8 and 8 (level 0), and
            # an upsampling conv that keeps 16 channels
            + resblock(32, 16, 4) + attention(16, 4) + resblock(24, 16, 4) + attention(16, 4) + conv(16, 16, 16)
            + resblock(24, 8, 16) + resblock(16, 8, 16) + conv(8, 4, 16))
    assert counter.get_total_flops() == hand == 1_073_152


def test_training_and_sampling_flops_of_the_tiny_pair_are_pinned():
    pytest.importorskip("diffusers")
    ours = measure(tiny_job, QUICK)
    ref = measure(lambda: bench.reference_job(TINY_PIPELINE), QUICK)
    assert (ours["params"], ref["params"]) == (37_236, 49_188)
    assert (ours["train_flops"], ref["train_flops"]) == (2_140_160, 3_204_096)
    # backward = 2 x forward, minus the input gradients nobody needs (in_conv's, the first time-MLP
    # layer's), plus half of the attention's forward (its backward recomputes Q K^T: 5 products, not 4)
    assert ours["train_flops"] == 3 * 719_872 - conv(4, 8, 16) - linear(B, D, D) + 3 * 2 * B * 4 * 4 * 16
    assert ref["train_flops"] == 3 * 1_073_152 - conv(4, 8, 16) - linear(B, 8, D) + 4 * 2 * B * 4 * 4 * 16
    # sampling 2 images with 3 steps = 3 forward passes at batch 2
    assert (ours["sample_flops"], ref["sample_flops"]) == (3 * 719_872, 3 * 1_073_152)


def test_reference_matches_ddpm_mnist_layer_for_layer_except_the_decoder():
    pytest.importorskip("diffusers")
    config = get_recipe("ddpm-mnist").config()
    ours, ref = DiffusionPipeline(config).net, bench.reference_unet(UNetConfig(**config.denoiser["config"]), 28)
    x, t, y = torch.randn(1, 1, 28, 28), torch.tensor([999]), torch.tensor([10])
    assert ours(x, t, y=y).shape == ref(x, t, y).shape == x.shape
    params = lambda *modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    u = ref.unet
    assert params(ours.in_conv, ours.down_blocks, ours.downsamples, ours.mid, ours.class_embed, ours.out_norm,
                  ours.out_conv) == params(u.conv_in, u.down_blocks, u.mid_block, u.class_embedding,
                                           u.conv_norm_out, u.conv_out)
    assert params(ours.time_embed) - params(u.time_embedding) == (128 - 32) * 128  # 128 vs 32 sinusoids in
    assert (params(ours), params(ref)) == (571_332, 758_148)
    groups = lambda net: {m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)}  # noqa: E731
    assert groups(ours) == groups(ref) == {8}
    assert {m.heads for m in u.modules() if type(m).__name__ == "Attention"} == {ours.mid[0].attn.heads} == {4}
    with flop_counter() as mine:
        ours(x, t, y=y)
    with flop_counter() as theirs:
        ref(x, t, y)
    a, b = ({k: sum(v.values()) for k, v in c.get_flop_counts().items()} for c in (mine, theirs))
    assert a["UNet.down_blocks.0.0"] + a["UNet.downsamples.0"] == b["DiffusersUNet.unet.down_blocks.0"]
    assert a["UNet.down_blocks.1.0"] == b["DiffusersUNet.unet.down_blocks.1"]
    assert a["UNet.mid.0"] + a["UNet.mid.1"] == b["DiffusersUNet.unet.mid_block"]
    assert a["UNet.out_conv"] == b["DiffusersUNet.unet.conv_out"]
    assert (a["Global"], b["Global"]) == (66_499_328, 101_258_240)  # per image: the docstring's 1.52x
    assert b["Global"] / a["Global"] == pytest.approx(1.52, abs=0.005)


def test_sampling_calls_the_network_once_per_step():
    pytest.importorskip("diffusers")
    for job in (tiny_job(), bench.reference_job(TINY_PIPELINE)):
        batches = []  # the batch size of every network call
        job.network.register_forward_hook(lambda module, args, out, calls=batches: calls.append(len(args[0])))
        images = job.sample(job.model.eval(), 3, 4, torch.Generator().manual_seed(0))
        assert images.shape == (3, 1, 8, 8) and batches == [3, 3, 3, 3], job.name  # 4 steps, guidance 1
        assert not images.requires_grad, job.name  # no autograd graph kept across the steps


def test_measure_reports_every_figure_for_any_model():
    job = lambda: Job("linear", nn.Linear(8, 8), lambda m, b, g: m(b["x"]).pow(2).mean(), shape=(8,))  # noqa: E731
    row = measure(job, QUICK)
    assert row["params"] == 72
    assert row["train_flops"] == 2 * (2 * B * 8 * 8)  # forward, and the weight gradient (no input gradient)
    assert row["train_img_s"] > 0 and row["train_tflop_s"] > 0 and "sample_img_s" not in row
    assert row["peak_MB"] is None or row["peak_MB"] >= 0


ROW_KEYS = {"model", "params", "train_flops", "train_img_s", "train_tflop_s", "peak_MB", "speedup_vs_reference"}
SAMPLE_KEYS = {"sample_flops", "sample_img_s", "sample_tflop_s"}


def test_bench_end_to_end_writes_every_figure_and_the_comparison(tmp_path, capsys):
    pytest.importorskip("diffusers")
    bench.run(QUICK, json_path=tmp_path / "bench.json")
    result, out = json.loads((tmp_path / "bench.json").read_text()), capsys.readouterr().out
    assert set(result) == {"device", "settings", "diffusers", "memory_method", "reference_matching", "models"}
    assert list(result["models"]) == ["ae-mnist", "vae-mnist", "lenet-mnist", "ddpm-mnist", "diffusers:ddpm-mnist"]
    for name, row in result["models"].items():
        assert set(row) == ROW_KEYS | (SAMPLE_KEYS if "ddpm" in name else set()), name
    speedup = result["models"]["ddpm-mnist"]["speedup_vs_reference"]
    assert set(speedup) == {"against", "reference_flops_ratio", "per_image", "per_flop"}
    assert set(speedup["per_image"]) == set(speedup["per_flop"]) == {"train", "sample"}
    assert speedup["reference_flops_ratio"] == pytest.approx(1.52, abs=0.005)
    assert result["models"]["ae-mnist"]["speedup_vs_reference"] is None
    assert "per image" in out and "per FLOP" in out and "matched:" in out and "differs:" in out


def test_bench_without_diffusers_skips_the_reference_with_a_message(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    result = bench.run(QUICK, tmp_path / "bench.json", models=("lenet-mnist", "ddpm-mnist", "diffusers:ddpm-mnist"))
    assert "reference skipped: diffusers is not installed" in capsys.readouterr().out
    assert list(result["models"]) == ["lenet-mnist", "ddpm-mnist"] and result["diffusers"] is None
    assert result["models"]["ddpm-mnist"]["speedup_vs_reference"] is None


def test_a_model_measured_in_a_fresh_process_reports_its_own_memory():
    row = bench.measure_in_fresh_process("lenet-mnist", QUICK)
    assert row["model"] == "lenet-mnist" and row["params"] == 77_484 and row["train_flops"] > 0
    assert row["peak_MB"] is None or 0 <= row["peak_MB"] < 100  # the model's memory, not the interpreter's


def test_cli_bench_options_reach_the_settings(monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "run", lambda settings, json_path: seen.update(settings=settings, json=json_path))
    cli.main(["bench", "--device", "cpu", "--batch-size", "4", "--iters", "2", "--sample-n", "3",
              "--sample-steps", "5", "--json", "out.json"])
    s = seen["settings"]
    assert (s.device, s.batch_size, s.iters, s.sample_n, s.sample_steps) == ("cpu", 4, 2, 3, 5)
    assert seen["json"] == "out.json" and s.fresh_process
