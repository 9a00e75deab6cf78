"""The `minilineage` command: train, sample, eval, bench, recipes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from minilineage.bench import add_bench_command
from minilineage.metrics import add_eval_command


def parse_labels(text: str) -> list[int]:
    """'0-9' -> [0..9]; '3,5,7' -> [3, 5, 7]; '4' -> [4]."""
    labels: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-"))
                labels.extend(range(lo, hi + 1))
            else:
                labels.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"labels must look like '0-9' or '1,3,5', got {text!r}") from None
    if not labels:
        raise argparse.ArgumentTypeError(f"no labels in {text!r}")
    return labels


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [-1, 1] (N, C, H, W) -> uint8 array (N, C, H, W)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def save_images(images: np.ndarray, out: Path, labels: np.ndarray | None = None) -> None:
    """`.npz` with `images` (and `labels`), or `.png` with a grid."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
        np.savez_compressed(out, **arrays)
    elif out.suffix == ".png":
        from torchvision.utils import make_grid, save_image

        nrow = int(np.ceil(np.sqrt(len(images)))) if labels is None else len(np.unique(labels))
        save_image(make_grid(torch.from_numpy(images).float() / 255, nrow=nrow, padding=2), out)
    else:
        raise ValueError(f"output must end in .npz or .png, got {out.name!r}")


def cmd_train(args) -> None:
    from minilineage.recipes import train_recipe

    result = train_recipe(args.recipe, preset=args.preset, steps=args.steps, out=args.out,
                          device=args.device, resume=args.resume, seed=args.seed, plot=False,
                          keep_every=args.keep_every)
    r = result.record
    print(f"{args.recipe}: {r['step']} steps in {r['wall_time_s']} s on {r['device']}; metrics {r['metrics']}")
    print(f"wrote {result.path} and {result.path.with_suffix('.json')}")


def cmd_sample(args) -> None:
    from minilineage.recipes import load_model
    from minilineage.train import pick_device

    device = pick_device(args.device)
    model = load_model(args.checkpoint, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    labels = None
    options = {"steps": args.steps, "guidance": args.guidance, "prompt": args.prompt}
    if args.labels is not None:
        labels = torch.tensor(args.labels)[torch.arange(args.n) % len(args.labels)]
        options["labels"] = labels.to(device)
    given = {k: v for k, v in options.items() if v is not None}
    accepted = getattr(model, "sample_options", ())
    unsupported = sorted(set(given) - set(accepted))
    if unsupported:
        raise SystemExit(f"{type(model).__name__} does not take {', '.join('--' + u for u in unsupported)}; "
                         f"it accepts: {', '.join('--' + a for a in accepted) or 'only --n/--seed'}")
    images = []
    for start in range(0, args.n, args.batch_size):
        part = {k: (v[start : start + args.batch_size] if k == "labels" else v) for k, v in given.items()}
        images.append(model.sample(min(args.batch_size, args.n - start), generator=generator, **part).cpu())
    array = to_uint8(torch.cat(images))
    if args.prompt is not None and labels is None:
        from minilineage.ldm import prompt_digit

        digit = prompt_digit(args.prompt)  # lets `minilineage eval` report prompt adherence
        labels = None if digit is None else torch.full((args.n,), digit)
    save_images(array, Path(args.out), labels.numpy().astype(np.int64) if labels is not None else None)
    print(f"wrote {args.n} samples {array.shape} to {args.out}")


def cmd_recipes(args) -> None:
    from minilineage.recipes import RECIPES

    for name, recipe in RECIPES.items():
        sizes = ", ".join(f"{k}: {p.train.steps} steps on {p.dataset}" for k, p in recipe.presets.items())
        print(f"{name:24s} {recipe.summary}  [{sizes}]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minilineage", description="Train, sample and evaluate the course's models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a named recipe", description="Train a named recipe and write OUT/RECIPE.pt and OUT/RECIPE.json.")
    p.add_argument("recipe", help="recipe name (see `minilineage recipes`)")
    p.add_argument("--preset", default="cpu", choices=("cpu", "gpu"), help="cpu: minutes on a laptop; gpu: full dataset (default: cpu)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    p.add_argument("--out", default="runs", help="folder for the checkpoint (default: runs/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's, 0)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/RECIPE.resume.pt if it exists")
    p.add_argument("--keep-every", type=int, default=0, metavar="N",
                   help="also keep OUT/RECIPE-stepN.pt every N steps (the shipped weights at that step, with its "
                        "training wall time), e.g. to plot quality against training minutes (default: 0, off)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a checkpoint", description="Draw samples and save them as .npz (uint8 `images` (N, C, H, W), `labels`) or a .png grid.")
    p.add_argument("checkpoint", help="a .pt file, or the name of a shipped checkpoint (e.g. ddpm-mnist)")
    p.add_argument("--n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--out", required=True, help="output file, .npz or .png")
    p.add_argument("--labels", type=parse_labels, help="class labels to cycle through, e.g. 0-9 or 1,7 (class-conditional models)")
    p.add_argument("--prompt", help="text prompt (text-conditioned models); a prompt naming one digit "
                   "(\"a handwritten seven\") also stores that digit as `labels`, for `minilineage eval`")
    p.add_argument("--steps", type=int, help="sampling steps (diffusion models; DDIM when fewer than trained)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (conditional diffusion models)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--batch-size", type=int, default=100,
                   help="samples per forward batch (default: 100, the fastest on a 2-core CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("recipes", help="list the recipes", description="List every recipe with its presets.")
    p.set_defaults(func=cmd_recipes)

    add_eval_command(sub)
    add_bench_command(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"minilineage {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
