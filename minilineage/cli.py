"""The `minilineage` command: train, sample, eval, bench, recipes. Every argparse definition lives here.

Bad input fails before any work starts, with one line that says what was wrong and what is valid.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from minilineage import bench, video_cli
from minilineage.checkpoint import load_model
from minilineage.data import load_dataset, prompt_digit, to_uint8
from minilineage.distributed import launched
from minilineage.metrics import (
    CLASSIFIER,
    check_samples,
    evaluate_samples,
    format_table,
    inception_weights,
    load_classifier,
    load_samples,
    standard_fid,
)
from minilineage.recipes import PRESETS, RECIPES, train_recipe
from minilineage.train import PRECISIONS, pick_device

SAMPLE_SUFFIXES = (".npz", ".png")


def frame_size(text: str) -> tuple[int, int]:
    """argparse type: a frame size, "32" (square) or "HxW" such as "24x48" (height by width), each side >= 1."""
    sides = text.lower().split("x")
    if len(sides) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected a side (32) or HEIGHTxWIDTH (24x48), got {text!r}")
    height, width = map(positive_int, sides * 2 if len(sides) == 1 else sides)
    return height, width


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def parse_labels(text: str) -> list[int]:
    """'0-9' -> [0..9]; '3,5,7' -> [3, 5, 7]; '4' -> [4]."""
    labels: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-"))
                if hi < lo:
                    raise ValueError
                labels.extend(range(lo, hi + 1))
            else:
                labels.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"labels must look like '0-9' or '1,3,5', got {text!r}") from None
    return labels


def save_images(images: np.ndarray, out: Path, labels: np.ndarray | None = None) -> None:
    """`.npz` with `images` (and `labels`), or `.png` with a grid."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
        np.savez_compressed(out, **arrays)
    else:
        from torchvision.utils import make_grid, save_image

        nrow = int(np.ceil(np.sqrt(len(images)))) if labels is None else len(np.unique(labels))
        save_image(make_grid(torch.from_numpy(images).float() / 255, nrow=nrow, padding=2), out)


def cmd_train(args) -> None:
    command = shlex.join(["minilineage", *args.argv])  # recorded in the checkpoint: how it was made
    result = train_recipe(args.recipe, preset=args.preset, steps=args.steps, out=args.out, device=args.device,
                          resume=args.resume, seed=args.seed, keep_every=args.keep_every, command=command,
                          compile=args.compile, precision=args.precision, channels_last=args.channels_last,
                          pre_encode=args.pre_encode)
    if launched()[0] != 0:  # under torchrun rank 0 reports for all
        return
    r = result.record
    print(f"{args.recipe}: {r['step']} steps in {r['wall_time_s']} s on {r['device']}; metrics {r['metrics']}")
    if result.path is not None:
        print(f"wrote {result.path} and {result.path.with_suffix('.json')}")


def cmd_sample(args) -> None:
    out = Path(args.out)
    if out.suffix not in SAMPLE_SUFFIXES + video_cli.CLIP_SUFFIXES:
        raise ValueError(f"--out must end in {' or '.join(SAMPLE_SUFFIXES)}, got {out.name!r} (video checkpoints "
                         "also write .gif or .mp4)")
    device = pick_device(args.device)
    model = load_model(args.checkpoint, device=device)
    if not callable(getattr(model, "sample", None)):
        raise ValueError(f"{type(model).__name__} ({model.checkpoint_info.get('recipe')}) does not generate anything to "
                         "sample: pass an autoencoder, a VAE or a diffusion checkpoint (see `minilineage recipes`)")
    video = video_cli.is_video_model(model)
    if not video:
        video_cli.refuse_video_flags(model, args, images_ok=out.suffix in SAMPLE_SUFFIXES)
        args.n = args.n or 64  # a video's default is one clip per --init-video clip (`video_cli.sample_clips`)
    options = {"steps": args.steps, "guidance": args.guidance, "prompt": args.prompt, "labels": args.labels}
    given = {k: v for k, v in options.items() if v is not None}
    accepted = getattr(model, "sample_options", ())
    unsupported = sorted(set(given) - set(accepted))
    if unsupported:
        raise ValueError(f"{type(model).__name__} ({model.checkpoint_info.get('recipe')}) does not take "
                         f"{', '.join('--' + u for u in unsupported)}; it accepts: "
                         f"{', '.join('--' + a for a in accepted) or 'only --n/--seed'}")
    labels = None
    if args.labels is not None:
        labels = video_cli.cycled(args.labels, args.n or len(args.labels))
        model.conditioning(len(labels), labels=labels)  # out-of-range labels fail here, before any sampling
        given["labels"] = labels
    generator = torch.Generator(device=device).manual_seed(args.seed)
    if video:
        array = video_cli.sample_clips(model, args, generator)
        if labels is not None:  # a class-conditional video model: the labels cycled over the clips
            labels = video_cli.cycled(args.labels, len(array))
    else:
        images = []
        for start in range(0, args.n, args.batch_size):
            part = {k: (v[start : start + args.batch_size] if k == "labels" else v) for k, v in given.items()}
            images.append(model.sample(min(args.batch_size, args.n - start), generator=generator, **part).cpu())
        array = to_uint8(torch.cat(images)).numpy()
    if args.prompt is not None:
        digit = prompt_digit(args.prompt)  # lets `minilineage eval` report prompt adherence
        labels = None if digit is None else torch.full((len(array),), digit)
    labels = labels.numpy().astype(np.int64) if labels is not None else None
    if video:
        video_cli.save_clips(array, out, labels, args.fps or 8)
    else:
        save_images(array, out, labels)
    print(f"wrote {len(array)} samples {array.shape} to {out}")


def cmd_eval(args) -> None:
    if args.metric == "fid":
        return cmd_eval_fid(args)
    images, labels = check_samples(*load_samples(args.samples))  # bad input fails before the classifier loads
    result = evaluate_samples(images, labels, load_classifier(args.classifier))
    print(format_table(result, args.samples))
    if labels is not None and len(labels.unique()) < 10:
        print(f"  (the samples ask for {len(labels.unique())} of the 10 digits; FID-LeNet compares them with all ten, "
              "so read the accuracy, not the FID)")
    if args.json:
        record = {"samples": str(args.samples), "classifier": str(args.classifier), **result}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


def cmd_eval_fid(args) -> None:
    """Standard (Inception) FID of the samples against a dataset's training split: CIFAR-10, UCF-101 frames."""
    images = torch.as_tensor(load_samples(args.samples)[0])
    weights = inception_weights(args.inception_weights)  # a missing file fails before any work
    reference = load_dataset(args.reference, "train").images
    fid = standard_fid(images, reference, weights, device=pick_device(args.device))
    print(f"{args.samples}: FID {fid:.2f} ({len(images)} samples vs the {len(reference)} {args.reference} training items; "
          f"Inception-v3 pool features, Heusel et al. 2017; compare only at equal sample counts)")
    if args.json:
        record = {"samples": str(args.samples), "metric": "fid", "reference": args.reference, "n": len(images), "fid": fid}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


def cmd_bench(args) -> None:
    if args.gpu_report:
        bench.run_gpu_report(args.gpu_report, budget_s=args.budget, device=args.device)
        return
    if args.presets:
        bench.preset_table(tuple(args.model) if args.model else None, json_path=args.json)
        return
    if args.race:
        bench.run_race(tuple(args.race), n=args.race_samples, json_path=args.json)
        return
    settings = bench.BenchSettings(device=args.device, batch_size=args.batch_size, iters=args.iters,
                                   sample_n=args.sample_n, sample_steps=args.sample_steps, rounds=args.rounds)
    bench.run(settings, json_path=args.json, models=tuple(args.model or bench.DEFAULT_MODELS), against=args.against)


def cmd_recipes(args) -> None:
    for name, recipe in RECIPES.items():
        sizes = ", ".join(f"{k}: {p.train.steps} steps on {p.dataset}" for k, p in recipe.presets.items())
        print(f"{name:24s} {recipe.summary}  [{sizes}]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minilineage", description="Train, sample and evaluate the course's models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a named recipe", description="Train a named recipe and write OUT/RECIPE.pt and OUT/RECIPE.json.")
    p.add_argument("recipe", help="recipe name (see `minilineage recipes`)")
    p.add_argument("--preset", default="cpu", choices=PRESETS, help="cpu: minutes on a laptop; gpu: full dataset (default: cpu)")
    p.add_argument("--steps", type=positive_int, help="optimizer steps (default: the preset's)")
    p.add_argument("--out", default="runs", help="folder for the checkpoint (default: runs/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's, 0)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/RECIPE.resume.pt if it exists")
    p.add_argument("--keep-every", type=non_negative_int, default=0, metavar="N",
                   help="also keep OUT/RECIPE-stepN.pt every N steps (the shipped weights at that step, with its "
                        "training wall time), e.g. to plot quality against training minutes (default: 0, off)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="train through torch.compile: slower to start, faster per step on a GPU (default: the preset's, off)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="what the forward pass runs in: auto = bf16 autocast on CUDA, fp32 elsewhere (default: the preset's, auto)")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="NHWC memory layout for the convolutional models (faster convolutions on a GPU)")
    p.add_argument("--pre-encode", action="store_true", default=None,
                   help="latent diffusion: encode the dataset once with the frozen autoencoder instead of at every step")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a checkpoint", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Draw samples and save them as .npz (uint8 `images` (N, C, H, W), `labels`) or a .png grid.\n"
                                   "Video checkpoints (e.g. videodit-moving-mnist) write clips: .npz (N, F, C, H, W), a .gif\n"
                                   "or .mp4 (a grid of the clips per frame), or a .png (a row per clip), in one --mode.",
                       epilog=video_cli.EPILOG)
    p.add_argument("checkpoint", help="a .pt file, or the name of a shipped checkpoint (e.g. ddpm-mnist)")
    p.add_argument("--n", type=positive_int, help="number of samples (default: 64; with --init-video one per input clip)")
    p.add_argument("--out", required=True, help="output file, .npz or .png; for video also .gif or .mp4 (the `video` extra)")
    p.add_argument("--labels", type=parse_labels, help="class labels to cycle through, e.g. 0-9 or 1,7 (class-conditional models)")
    p.add_argument("--prompt", help="text prompt (text-conditioned models); a prompt naming one digit "
                   "(\"a handwritten seven\") also stores that digit as `labels`, for `minilineage eval`")
    p.add_argument("--steps", type=positive_int, help="sampling steps (diffusion models; DDIM when fewer than trained)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (conditional diffusion models)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--batch-size", type=positive_int, default=100,
                   help="samples per forward batch (default: 100, the fastest on a 2-core CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    v = p.add_argument_group("video checkpoints")
    v.add_argument("--mode", choices=video_cli.MODES, help="which frames are given (see below; default: edit with --strength, else t2v)")
    v.add_argument("--frames", type=positive_int, help="frames of a clip drawn from the prompt, 1 + 4k (default: the "
                   "training clips'; 1 = an image, still stored as (N, 1, C, H, W))")
    v.add_argument("--size", type=frame_size, help="frame size of a clip drawn from the prompt: a side (32) or "
                   "HEIGHTxWIDTH for other aspect ratios (24x48); default: the training size")
    v.add_argument("--init-video", nargs="+", metavar="CLIP.npz", help="input clips: an .npz with uint8 `images` "
                   "(N, F, C, H, W) as `sample` writes; two files for --mode merge")
    v.add_argument("--strength", type=float, help="--mode edit: how far to noise the clips, 0 (keep) .. 1 (ignore them)")
    v.add_argument("--windows", type=positive_int, help="--mode extend: windows to add, each given the last --keep latent frames (default: 1)")
    v.add_argument("--keep", type=positive_int, help="--mode extend / merge: latent frames given per window (default: 2)")
    v.add_argument("--fps", type=positive_int, help="frames per second of a .gif or .mp4 (default: 8)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "eval", help="score samples: FID-LeNet next to the real-data level, and class accuracy",
        description="Score samples from `minilineage sample`: FID-LeNet vs the 500 mnist-5k test digits; next to it "
                    "the real-data reference level, the same distance for as many real training digits (mean +- std "
                    "over 5 draws), which is not a floor: FID-LeNet is biased upwards at small N, so compare models at "
                    "equal N and read gaps within about 2 std as chance; samples asked for in equal numbers per class "
                    "can score below it at small N (see minilineage.metrics); and, when the file has labels, the fraction "
                    "classified as asked.")
    p.add_argument("samples", metavar="SAMPLES.npz", help=".npz with uint8 `images` (N, 1, 28, 28) and optional int `labels` (N,)")
    p.add_argument("--classifier", default=CLASSIFIER, metavar="CKPT", help=f"LeNet checkpoint, a .pt path or a shipped name (default: {CLASSIFIER})")
    p.add_argument("--json", metavar="OUT", help="also write the numbers to this .json file")
    p.add_argument("--metric", choices=("fid-lenet", "fid"), default="fid-lenet",
                   help="fid-lenet: digits, offline (default); fid: the standard Inception FID, for CIFAR-10 or "
                        "UCF-101 frames (needs the `fid` extra and the Inception weights file; the error says where to get it)")
    p.add_argument("--reference", default="cifar10", help="--metric fid: the dataset whose training split is the reference (default: cifar10)")
    p.add_argument("--inception-weights", metavar="PTH", help="--metric fid: the weights file (default: $MINILINEAGE_INCEPTION_WEIGHTS or the data cache)")
    p.add_argument("--device", default="auto", help="--metric fid: auto, cpu, cuda or mps (default: auto)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="time the models, optionally against diffusers; the GPU presets, the race, the GPU report",
                       description="Per model, each in a fresh process: parameters, FLOPs per training step, training "
                                   "images/s and TFLOP/s, sampling images/s (a full sample() of N images at S DDIM "
                                   "steps), peak memory, on CUDA the share of the device's bf16 peak; with --against "
                                   "diffusers each model that has one next to its matched diffusers reference "
                                   "(UNet2DModel for ddpm-mnist, DiTTransformer2DModel for dit-mnist; the `bench` "
                                   "extra), per image and per FLOP. --presets: every recipe's GPU preset instead.")
    p.add_argument("--model", nargs="+", metavar="M",
                   help=f"recipes to measure (default: {' '.join(bench.DEFAULT_MODELS)}; with --presets: all)")
    p.add_argument("--against", choices=("diffusers",), help="also run each model's diffusers reference, alternating")
    p.add_argument("--presets", action="store_true",
                   help="tabulate the GPU presets: parameters, FLOPs/step, fp32 memory on the CPU, estimated H100 time")
    p.add_argument("--race", nargs="+", type=positive_float, metavar="MINUTES",
                   help="the time-to-quality race instead: ddpm-mnist, a diffusers UNet2DModel of the same size trained "
                        "with ddpm-mnist's settings and with diffusers' recommended ones, and ddpm-mnist-fast, MINUTES "
                        "of CPU time of the training process each, on one torch thread (on an idle machine CPU "
                        "minutes are wall minutes; on a shared one the budget stays the same), then all scored by "
                        "FID-LeNet and accuracy (the `bench` extra), e.g. --race 2 5 10 20")
    p.add_argument("--race-samples", type=positive_int, default=1000, help="--race: digits sampled per model (default: 1000)")
    p.add_argument("--gpu-report", metavar="OUT",
                   help="everything GPU-side in one command instead: the CUDA-only tests, throughput (fp32, bf16, "
                        "compiled; ours and diffusers'), a timed dit-mnist training scored by FID-LeNet; writes "
                        "OUT/gpu-report.json and OUT/gpu-report.md and stops at --budget (on a CPU: a tiny subset)")
    p.add_argument("--budget", type=positive_float, default=480.0, metavar="SECONDS",
                   help="--gpu-report: stop after this many seconds with whatever was measured (default: 480)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="training batch size (default: 128)")
    p.add_argument("--iters", type=positive_int, default=10, help="timed training steps per model (default: 10)")
    p.add_argument("--sample-n", type=positive_int, default=64, help="images per sample() call (default: 64)")
    p.add_argument("--sample-steps", type=positive_int, default=50, help="DDIM steps per sample() call (default: 50)")
    p.add_argument("--rounds", type=positive_int, default=1,
                   help="measure every model this many times in turn (ours, reference, ours, ...), keep the fastest (default: 1)")
    p.add_argument("--json", metavar="FILE", help="also write every figure, and speedup_vs_reference per model, here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("recipes", help="list the recipes", description="List every recipe with its presets.")
    p.set_defaults(func=cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as error:  # bad input, missing files or extras
        print(f"minilineage {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
