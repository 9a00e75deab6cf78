"""`minilineage bench`: FLOP counts pinned and checked against hand counts, the matched diffusers U-Net and
DiT, the sampling job's network calls, the whole bench end to end, and the GPU-preset table's FLOP
extrapolation. No timing is asserted. Tests of the references skip when diffusers (the `bench` extra) is absent."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import pytest
import torch
from torch import nn

from minilineage import bench, cli
from minilineage.bench import BenchSettings, Job, flop_counter, measure, runner
from minilineage.bench.measure import trainer
from minilineage.diffusion import DiffusionPipeline, diffusion_loss
from minilineage.diffusion.pipeline import PipelineConfig
from minilineage.models.dit import DiT, DiTConfig
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
    pytest.importorskip("diffusers", reason="the diffusers reference needs the `bench` extra")
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
    pytest.importorskip("diffusers", reason="the diffusers reference needs the `bench` extra")
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
    pytest.importorskip("diffusers", reason="the diffusers reference needs the `bench` extra")
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
    pytest.importorskip("diffusers", reason="the diffusers reference needs the `bench` extra")
    for job in (tiny_job(), bench.reference_job(TINY_PIPELINE), tiny_dit_job(), bench.reference_job(TINY_DIT_PIPELINE)):
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
    pytest.importorskip("diffusers", reason="the diffusers reference needs the `bench` extra")
    bench.run(QUICK, json_path=tmp_path / "bench.json", models=("lenet-mnist", "ddpm-mnist"), against="diffusers")
    result, out = json.loads((tmp_path / "bench.json").read_text()), capsys.readouterr().out
    assert set(result) == {"device", "cpu", "settings", "diffusers", "memory_method", "reference_matching", "models"}
    assert list(result["models"]) == ["lenet-mnist", "ddpm-mnist", "diffusers:ddpm-mnist"]
    for name, row in result["models"].items():
        assert set(row) == ROW_KEYS | (SAMPLE_KEYS if "ddpm" in name else set()), name
    speedup = result["models"]["ddpm-mnist"]["speedup_vs_reference"]
    assert set(speedup) == {"against", "reference_flops_ratio", "per_image", "per_flop"}
    assert set(speedup["per_image"]) == set(speedup["per_flop"]) == {"train", "sample"}
    assert speedup["reference_flops_ratio"] == pytest.approx(1.52, abs=0.005)
    assert result["models"]["lenet-mnist"]["speedup_vs_reference"] is None
    assert list(result["reference_matching"]) == ["ddpm-mnist"]
    assert result["reference_matching"]["ddpm-mnist"]["matched"][0] == "size: 1x28x28 input, patch 2, widths [32, 64]"
    assert "per image" in out and "per FLOP" in out and "matched:" in out and "differs:" in out


def test_bench_without_against_runs_no_reference(tmp_path):
    result = bench.run(QUICK, tmp_path / "bench.json", models=("lenet-mnist",))
    assert list(result["models"]) == ["lenet-mnist"] and result["reference_matching"] == {}


def test_bench_without_diffusers_skips_the_reference_with_a_message(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    result = bench.run(QUICK, tmp_path / "bench.json", models=("lenet-mnist", "ddpm-mnist"), against="diffusers")
    assert "reference skipped: diffusers is not installed" in capsys.readouterr().out
    assert list(result["models"]) == ["lenet-mnist", "ddpm-mnist"] and result["diffusers"] is None
    assert result["models"]["ddpm-mnist"]["speedup_vs_reference"] is None


def test_a_model_measured_in_a_fresh_process_reports_its_own_memory():
    row = bench.measure_in_fresh_process("lenet-mnist", QUICK)
    assert row["model"] == "lenet-mnist" and row["params"] == 77_484 and row["train_flops"] > 0
    assert row["peak_MB"] is None or 0 <= row["peak_MB"] < 100  # the model's memory, not the interpreter's


def test_cli_bench_options_reach_the_settings(monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "run", lambda settings, **kwargs: seen.update(settings=settings, **kwargs))
    cli.main(["bench", "--device", "cpu", "--batch-size", "4", "--iters", "2", "--sample-n", "3",
              "--sample-steps", "5", "--json", "out.json"])
    s = seen["settings"]
    assert (s.device, s.batch_size, s.iters, s.sample_n, s.sample_steps) == ("cpu", 4, 2, 3, 5)
    assert seen["json_path"] == "out.json" and s.fresh_process
    assert seen["models"] == bench.DEFAULT_MODELS and seen["against"] is None
    cli.main(["bench", "--model", "dit-mnist", "ddpm-mnist", "--against", "diffusers", "--rounds", "3"])
    assert seen["models"] == ("dit-mnist", "ddpm-mnist") and seen["against"] == "diffusers"
    assert seen["settings"].rounds == 3


def test_rounds_alternate_ours_and_the_reference_and_keep_the_fastest(monkeypatch):
    calls = []

    def fake(name, settings):
        calls.append(name)
        speed = {1: 10.0, 2: 30.0, 3: 20.0}[sum(c == name for c in calls)]  # round 2 is the fastest
        return {"model": name, "params": 1, "train_flops": 1e9, "train_img_s": speed, "train_tflop_s": speed / 1e3,
                "sample_img_s": 40 - speed, "sample_tflop_s": 1.0, "peak_MB": speed}

    monkeypatch.setattr(runner, "measure_named", fake)
    monkeypatch.setattr(runner, "has_reference", lambda name: True)
    settings = BenchSettings(device="cpu", fresh_process=False, rounds=3)
    result = bench.run(settings, models=("ddpm-mnist",), against="diffusers")
    assert calls == ["ddpm-mnist", "diffusers:ddpm-mnist"] * 3
    row = result["models"]["ddpm-mnist"]
    assert (row["train_img_s"], row["sample_img_s"], row["peak_MB"]) == (30.0, 30.0, 30.0)


def test_cli_bench_presets_reaches_the_preset_table(monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "preset_table", lambda names, json_path: seen.update(names=names, json=json_path))
    cli.main(["bench", "--presets", "--model", "ddpm-cifar10", "--json", "p.json"])
    assert seen == {"names": ("ddpm-cifar10",), "json": "p.json"}


# --- DiT against DiTTransformer2DModel ---------------------------------------------------------------

# 8x8 images in 2x2 patches: N = 16 tokens of 4 numbers, width 16, 2 blocks, 2 heads
TINY_DIT = DiTConfig(in_channels=1, patch=2, width=16, depth=2, heads=2, num_classes=10)
TINY_DIT_PIPELINE = PipelineConfig(denoiser={"cls": "DiT", "config": asdict(TINY_DIT)}, shape=(1, 8, 8))
N, W = 16, 16


def dit_block(n=N, d=W):  # q/k/v, Q K^T and A V, output projection, MLP (4x), adaLN-Zero's Linear(D, 6D) on c
    return linear(B * n, d, 3 * d) + 2 * (2 * B * n * n * d) + linear(B * n, d, d) + 2 * linear(B * n, d, 4 * d) \
        + linear(B, d, 6 * d)


def test_tiny_dit_and_its_reference_forward_flops_equal_hand_counts():
    pytest.importorskip("diffusers", reason="the diffusers reference needs the `bench` extra")
    x, t, y = torch.randn(B, 1, 8, 8), torch.tensor([3, 500]), torch.tensor([1, 10])
    final = linear(B, W, 2 * W) + linear(B * N, W, 4)  # adaLN shift and scale, then the patch's 4 numbers
    with flop_counter() as ours:
        DiT(TINY_DIT)(x, t, y=y)
    hand = linear(B * N, 4, W) + 2 * linear(B, W, W) + 2 * dit_block() + final  # patch embedding, time MLP
    assert ours.get_total_flops() == hand == 483_328
    with flop_counter() as theirs:
        bench.reference_dit(TINY_DIT, 8)(x, t, y)
    time_mlp = linear(B, 256, W) + linear(B, W, W)  # 256 sinusoids -> D -> D, in every block and again at the end
    ref_hand = linear(B * N, 4, W) + 2 * (dit_block() + time_mlp) + time_mlp + final
    assert theirs.get_total_flops() == ref_hand == 533_504


def tiny_dit_job() -> Job:
    pipeline = DiffusionPipeline(TINY_DIT_PIPELINE)
    return Job("ours", pipeline, diffusion_loss, bench.pipeline_sample, pipeline.net, TINY_DIT_PIPELINE.shape)


def test_training_and_sampling_flops_and_parameters_of_the_tiny_dit_pair_are_pinned():
    pytest.importorskip("diffusers", reason="the diffusers reference needs the `bench` extra")
    ours, ref = measure(tiny_dit_job, QUICK), measure(lambda: bench.reference_job(TINY_DIT_PIPELINE), QUICK)
    block = 3 * W * W + 3 * W + W * W + W + 2 * 4 * W * W + 4 * W + W + 6 * W * W + 6 * W  # qkv, proj, MLP, adaLN
    head = (4 * W + W) + (W * 2 * W + 2 * W) + (W * 4 + 4)  # patch embedding, final adaLN, final linear
    ref_embed = (256 * W + W) + (W * W + W) + 11 * W  # each block's own timestep MLP and label table
    assert ours["params"] == head + 2 * (W * W + W) + 11 * W + 2 * block == 11_108
    assert ref["params"] == head + 2 * (block + ref_embed) == 19_508
    # backward = 2 x forward, minus input gradients nobody needs (the patch embedding's, the first time-MLP
    # layer's: once for ours, at each of its 3 calls for the reference), plus half of the attention's forward
    attention_extra = 2 * (2 * B * N * N * W)
    assert ours["train_flops"] == 3 * 483_328 - linear(B * N, 4, W) - linear(B, W, W) + attention_extra == 1_477_632
    assert ref["train_flops"] == 3 * 533_504 - linear(B * N, 4, W) - 3 * linear(B, 256, W) + attention_extra == 1_580_032
    assert (ours["sample_flops"], ref["sample_flops"]) == (3 * 483_328, 3 * 533_504)  # 3 steps at batch 2


def test_dit_reference_at_dit_xs1_size_differs_only_in_its_per_block_conditioning():
    pytest.importorskip("diffusers", reason="the diffusers reference needs the `bench` extra")
    config = DiTConfig(in_channels=4, patch=1, width=64, depth=4, heads=4, num_classes=10)  # DiT-XS/1 on 4x7x7 latents
    ours, ref = DiT(config), bench.reference_dit(config, 7)
    params = lambda *modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    assert (params(ours), params(ref)) == (316_676, 392_900)
    d, depth = config.width, config.depth
    per_block = (256 * d + d + d * d + d) + 11 * d  # its own timestep MLP and label table
    assert params(ref) - params(ours) == depth * per_block - params(ours.time_embed, ours.label_embed)
    x, t, y = torch.randn(1, 4, 7, 7), torch.tensor([999]), torch.tensor([10])
    with flop_counter() as mine:
        out = ours(x, t, y=y)
    with flop_counter() as theirs:
        assert ref(x, t, y).shape == out.shape == x.shape
    assert (mine.get_total_flops(), theirs.get_total_flops()) == (22_005_760, 22_194_176)  # per image: 1.009x


def test_only_eps_pipelines_with_a_unet_or_class_conditional_dit_have_a_reference():
    assert bench.has_reference("ddpm-mnist") and bench.has_reference("dit-mnist")
    assert bench.has_reference("ddpm-cifar10") and bench.has_reference("dit-cifar10")
    assert not bench.has_reference("dit-mnist-flow")  # rectified flow, not eps
    assert not bench.has_reference("ldm-mnist")  # text cross-attention
    assert not bench.has_reference("ae-mnist")


def test_bf16_peaks_are_found_by_device_name_and_unknown_devices_give_none():
    assert bench.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bench.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.bf16_peak_tflops("NVIDIA L4") == 121.0 and bench.bf16_peak_tflops("NVIDIA L40S") == 362.1
    assert bench.bf16_peak_tflops("NVIDIA GeForce RTX 4090") == 165.2
    assert bench.bf16_peak_tflops("Tesla T4") is None


# --- the GPU-preset table ---------------------------------------------------------------------------

def test_preset_flops_extended_from_two_small_batches_equal_a_full_batch_count():
    from minilineage.bench import presets

    row = bench.preset_row("lenet-mnist", batches=(2, 4))
    full = get_recipe("lenet-mnist").presets["gpu"].train
    assert (row["batch_size"], row["steps"], row["memory_scaled"]) == (full.batch_size, full.steps, True)
    job = presets.preset_job("lenet-mnist")
    assert row["train_flops"] == bench.count_flops(trainer(job, torch.device("cpu"), full.batch_size))
    assert row["params"] == 77_484
    assert row["memory_GB"] is None or row["memory_GB"] > 0
    step_s = max(row["train_flops"] / (presets.ASSUMED_SHARE * presets.H100_PEAK_FLOPS),
                 row["ops_per_step"] * presets.LAUNCH_S)
    assert row["h100_hours"] == pytest.approx(full.steps * step_s / 3600)
