"""Video datasets: moving-mnist, generated from mnist-5k with a seed, and UCF-101 from a local copy.

Both give an `ArrayData` of uint8 videos (N, F, C, H, W). moving-mnist is made in memory in a
second or two, so it needs no cache: the same options and seed always give the same clips. Its
`texts` describe each clip in a small fixed grammar, and `info` keeps what was drawn (digits,
positions and velocities per frame), so a chapter can check a generated clip against its caption.
UCF-101 is decoded once with PyAV (the `video` extra) and the sampled, resized clips are written
to one file in the cache folder; every later load reads that file and decodes nothing.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minilineage.data.arrays import ArrayData, to_float
from minilineage.data.batches import bucket_batches
from minilineage.data.captions import DIGIT_WORDS
from minilineage.data.images import DatasetUnavailable, cache_dir, load_mnist_5k

# Starting directions: (name, (dx, dy)) with y growing downwards, as in an image.
DIRECTIONS = (("right", (1, 0)), ("left", (-1, 0)), ("up", (0, -1)), ("down", (0, 1)),
              ("up-right", (1, -1)), ("up-left", (-1, -1)), ("down-right", (1, 1)), ("down-left", (-1, 1)))
# Every word a motion caption can use ("an 8 moves down-left and bounces, a 4 moves up"): a fixed vocabulary of 19.
CAPTION_WORDS = sorted({"a", "an", "moves", "and", "bounces", *"0123456789",
                        *(word for name, _ in DIRECTIONS for word in re.findall(r"[a-z]+", name))})
POOR_CAPTION = "a video of digits"  # the uninformative caption of the re-captioning experiment
SPEED = (1 / 32, 1 / 8)  # range of a digit's speed, in units of its free room (frame - digit size) per frame
# The digit x direction pairs held out of training: each digit once, the directions spread over all eight
# (digit d, direction 3d mod 8): 10 of the 80 pairs. A clip of any of them is left out of the training set.
HELD_OUT_PAIRS = tuple((d, 3 * d % len(DIRECTIONS)) for d in range(10))


def bouncing_paths(n: int, k: int, frames: int, room: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Paths of n x k points moving at constant speed in a box [0, room]^2 and bouncing off its walls.

    Each point starts at a uniform position, in one of the 8 `DIRECTIONS`, at a speed drawn from
    `SPEED`. A step is p <- p + v; a coordinate that leaves [0, room] is reflected back into it and
    its velocity flips, the elastic bounce of Srivastava et al. 2015's Moving MNIST.
    Returns positions (n, F, k, 2) and velocities (n, F, k, 2) as (x, y) floats, the velocity at
    frame f being the one that leads to frame f + 1; directions (n, k) indexing `DIRECTIONS`; and
    bounced (n, k), True where the point hit a wall during the clip.
    """
    directions = torch.randint(len(DIRECTIONS), (n, k), generator=generator)
    unit = torch.tensor([d for _, d in DIRECTIONS], dtype=torch.float32)[directions]  # (n, k, 2)
    speed = SPEED[0] + (SPEED[1] - SPEED[0]) * torch.rand(n, k, 1, generator=generator)
    v = room * speed * unit / unit.norm(dim=-1, keepdim=True)  # (n, k, 2) pixels per frame
    p = room * torch.rand(n, k, 2, generator=generator)  # (n, k, 2)
    positions, velocities = [p], []
    bounced = torch.zeros(n, k, dtype=torch.bool)
    for _ in range(frames - 1):
        velocities.append(v)
        p = p + v
        low, high = p < 0, p > room
        p = torch.where(low, -p, torch.where(high, 2 * room - p, p))  # reflect into [0, room]
        v = torch.where(low | high, -v, v)
        bounced |= (low | high).any(dim=-1)
        positions.append(p)
    velocities.append(v)
    return {"positions": torch.stack(positions, 1), "velocities": torch.stack(velocities, 1),
            "directions": directions, "bounced": bounced}


def draw_clips(glyphs: torch.Tensor, positions: torch.Tensor, size: int) -> torch.Tensor:
    """Frames with every glyph pasted at its position: glyphs (n, k, d, d) uint8, positions (n, F, k, 2)
    whole-pixel top-left (x, y) -> uint8 clips (n, F, 1, S, S).

    `windows` is a view of every d x d window of every frame (no copy: the same memory, read with
    other strides), so pasting all n * F digits of a slot is one indexed write. Where digits overlap
    the brighter pixel wins, as in Moving MNIST. Empty slots hold all-zero glyphs.
    """
    n, k, d, _ = glyphs.shape
    frames = torch.zeros(n, positions.shape[1], size, size, dtype=torch.uint8)  # (n, F, S, S)
    s_n, s_f, s_y, s_x = frames.stride()
    room = size - d + 1
    windows = frames.as_strided((n, positions.shape[1], room, room, d, d), (s_n, s_f, s_y, s_x, s_y, s_x))
    item, frame = torch.arange(n)[:, None], torch.arange(positions.shape[1])[None, :]  # (n, 1), (1, F)
    for j in range(k):
        x, y = positions[:, :, j, 0], positions[:, :, j, 1]  # (n, F) each
        windows[item, frame, y, x] = torch.maximum(windows[item, frame, y, x], glyphs[:, None, j])  # (n, F, d, d)
    return frames[:, :, None]  # (n, F, 1, S, S)


def motion_caption(digits: list[int], directions: list[int], bounced: list[bool]) -> str:
    """The caption of one clip: "a 3 moves left and bounces, an 8 moves down-right".

    Grammar: clause (", " clause)*, clause = ("a" | "an") DIGIT "moves" DIRECTION ["and bounces"];
    DIRECTION is the one the digit starts in (left, up-right, ...). The words come from a fixed
    vocabulary of 19 (`CAPTION_WORDS`: a, an, 0-9, moves, left, right, up, down, and, bounces); the tokenizer drops
    the comma, and every clause still starts with "a"/"an" and a digit. Two digits take at most 14
    words, so with <bos> and <eos> a caption fits the course's 16-token text context.
    """
    clauses = [f"{'an' if digit == 8 else 'a'} {digit} moves {DIRECTIONS[way][0]}" + (" and bounces" if bounce else "")
               for digit, way, bounce in zip(digits, directions, bounced, strict=True)]
    return ", ".join(clauses)


def _glyphs(split: str, digit_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mnist-5k digits of a split resized to digit_size x digit_size: (N, d, d) uint8, and their labels (N,)."""
    source = load_mnist_5k(split)
    x = source.images.float()  # (N, 1, 28, 28)
    if digit_size != x.shape[-1]:
        x = F.interpolate(x, size=(digit_size, digit_size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)[:, 0], source.labels


def load_moving_mnist(split: str = "train", frames: int = 17, size: int = 32, digit_size: int | None = None,
                      digits: int | tuple[int, ...] = (1, 2), n: int | None = None, seed: int = 0,
                      captions: str = "motion") -> ArrayData:
    """Moving MNIST (Srivastava et al. 2015): clips of 1-2 mnist-5k digits bouncing in a square frame.

    frames, size: clip length F and frame side S (any). digit_size: side of a digit, default S // 2.
    digits: the number of digits per clip, or a tuple of numbers to draw from uniformly.
    n: clips (default: one per digit of the split, 4,500 train / 500 test). The train clips use the
    mnist-5k train digits and the test clips its test digits, with different paths for the same seed.
    captions: "motion" puts each clip's description in `texts` ("a 3 moves left and bounces", see
    `motion_caption`);
    "poor" gives every clip `POOR_CAPTION`, the poorly captioned data of the re-captioning experiment.
    `labels` holds the first digit; `info` holds per clip: digits (N, K) int64, -1 for an empty slot
    (K = the largest number of digits); positions (N, F, K, 2) int64, the top-left (x, y) pixel of each
    digit as drawn; velocities (N, F, K, 2) float32, pixels per frame; directions (N, K) indexing
    `DIRECTIONS`; bounced (N, K) bool; sources (N, K), the mnist-5k item of each digit in its split.
    """
    counts = (digits,) if isinstance(digits, int) else tuple(digits)
    digit_size = size // 2 if digit_size is None else digit_size
    if frames < 1 or not counts or min(counts) < 1 or max(counts) > 3:
        raise ValueError(f"need frames >= 1 and 1 to 3 digits per clip, got frames={frames}, digits={digits}")
    if not 1 <= digit_size <= size:
        raise ValueError(f"digit_size {digit_size} must be between 1 and the frame size {size}")
    if captions not in ("motion", "poor"):
        raise ValueError(f"unknown captions {captions!r}; choose 'motion' or 'poor'")
    glyphs, glyph_labels = _glyphs(split, digit_size)
    n = len(glyphs) if n is None else n
    k = max(counts)
    generator = torch.Generator().manual_seed(2 * seed + (split == "test"))
    count = torch.tensor(counts)[torch.randint(len(counts), (n,), generator=generator)]  # (n,)
    sources = torch.randint(len(glyphs), (n, k), generator=generator)  # (n, k)
    present = torch.arange(k) < count[:, None]  # (n, k)
    paths = bouncing_paths(n, k, frames, size - digit_size, generator)
    positions = paths["positions"].round().long()  # (n, F, k, 2), whole pixels keep the strokes sharp
    placed = glyphs[sources] * present[..., None, None]  # (n, k, d, d), empty slots drawn as black
    videos = draw_clips(placed, positions, size)  # (n, F, 1, S, S)
    labels = torch.where(present, glyph_labels[sources], -1)  # (n, k)
    if captions == "motion":
        texts = [motion_caption(*(row[: c].tolist() for row in (labels[i], paths["directions"][i], paths["bounced"][i])))
                 for i, c in enumerate(count.tolist())]
    else:
        texts = [POOR_CAPTION] * n
    info = {"digits": labels, "positions": positions, "velocities": paths["velocities"],
            "directions": paths["directions"], "bounced": paths["bounced"] & present, "sources": sources}
    return ArrayData("moving-mnist", videos, labels[:, 0].clone(), DIGIT_WORDS, texts=texts, info=info)


UCF101_HINT = (
    "UCF-101 is not in {root}. Download the videos, UCF101.rar (6.5 GB), and the official splits,\n"
    "UCF101TrainTestSplits-RecognitionTask.zip, from https://www.crcv.ucf.edu/data/UCF101.php\n"
    "(https://www.crcv.ucf.edu/data/UCF101/UCF101.rar and\n"
    " https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip), then unpack both there:\n"
    "  unrar x UCF101.rar {root}/\n"
    "  unzip UCF101TrainTestSplits-RecognitionTask.zip -d {root}/\n"
    "so that {root}/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi and {root}/ucfTrainTestlist/trainlist01.txt exist.\n"
    "Missing: {missing}. (Or pass root= the folder that holds UCF-101/ and ucfTrainTestlist/.)"
)


def class_words(name: str) -> str:
    """A UCF-101 class name as lower-case words: "PlayingViolin" -> "playing violin", "YoYo" -> "yo yo"."""
    return " ".join(re.findall(r"[A-Z][a-z]*|[a-z]+|[0-9]+", name)).lower()


def frame_indices(total: int, frames: int, stride: int) -> list[int]:
    """The F frames to keep of a clip of `total`: every `stride`-th frame of a window centred in the clip,
    or, for a clip shorter than the window, F frames spread evenly over it (some repeated)."""
    span = (frames - 1) * stride + 1
    if total >= span:
        start = (total - span) // 2
        return [start + i * stride for i in range(frames)]
    return np.linspace(0, total - 1, frames).round().astype(int).tolist()


def import_av():
    """PyAV, the optional dependency that decodes UCF-101's .avi files (its wheels carry FFmpeg)."""
    try:
        import av
    except ImportError as error:
        raise ImportError("decoding UCF-101 needs PyAV: pip install -e .[video]  (or: pip install av)") from error
    return av


def decode_clip(path: str, frames: int, stride: int, height: int, width: int) -> np.ndarray:
    """F frames of one video, decoded with PyAV and resized by FFmpeg: uint8 (F, 3, H, W)."""
    av = import_av()
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        wanted = frame_indices(stream.frames, frames, stride) if stream.frames > 0 else None
        kept = {}
        for i, frame in enumerate(container.decode(stream)):
            if wanted is None or i in wanted:
                kept[i] = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
            if wanted is not None and i >= wanted[-1]:
                break
    if wanted is None or len(kept) < len(set(wanted)):  # no frame count in the header, or a wrong one
        wanted = [sorted(kept)[j] for j in frame_indices(len(kept), frames, 1 if wanted is None else stride)]
    return np.stack([kept[i] for i in wanted]).transpose(0, 3, 1, 2)  # (F, H, W, 3) -> (F, 3, H, W)


def read_split(root: Path, split: str, fold: int) -> tuple[list[str], list[str], list[int]]:
    """(class names, video paths relative to UCF-101/, labels) of an official split file, labels 0-based."""
    lists = root / "ucfTrainTestlist"
    classes = [line.split()[1] for line in (lists / "classInd.txt").read_text().splitlines() if line.strip()]
    index = {name.lower(): i for i, name in enumerate(classes)}  # the lists spell some class folders differently
    lines = (lists / f"{split}list{fold:02d}.txt").read_text().splitlines()
    paths = [line.split()[0] for line in lines if line.strip()]
    return classes, paths, [index[p.split("/")[0].lower()] for p in paths]


def load_ucf101(split: str = "train", root: Path | None = None, fold: int = 1, frames: int = 17, stride: int = 2,
                size: int | tuple[int, int] = (48, 64), workers: int = 4) -> ArrayData:
    """UCF-101 (Soomro et al. 2012): 13,320 clips of 101 human actions, captioned "a video of playing violin".

    root: the folder holding UCF-101/ (the videos) and ucfTrainTestlist/ (the splits); default
    cache_dir()/ucf101. fold: which of the three official train/test splits. Each clip keeps F
    frames (17 = 1 + 4 k by default, what chapter 7's causal VAE encodes whole), every `stride`-th
    one of a window in its middle, resized (not cropped) to size = (H, W), 3:4 like the 320x240
    originals by default. The first load decodes every video of the split
    (`workers` processes) and writes one .npz of uint8 clips (N, F, 3, H, W) to cache_dir()/ucf101-clips;
    later loads read it and need neither PyAV nor the videos.
    """
    root = Path(root) if root is not None else cache_dir() / "ucf101"
    height, width = (size, size) if isinstance(size, int) else size
    if fold not in (1, 2, 3) or frames < 1 or stride < 1 or min(height, width) < 1:
        raise ValueError(f"need fold 1-3 and positive frames, stride and size; got fold={fold}, frames={frames}, "
                         f"stride={stride}, size={size}")
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]  # one cache per copy of the videos
    cached = cache_dir() / "ucf101-clips" / f"{split}{fold}-{frames}x{height}x{width}-stride{stride}-{key}.npz"
    if not cached.exists():
        _preprocess(root, split, fold, frames, stride, height, width, workers, cached)
    with np.load(cached, allow_pickle=False) as arrays:
        videos, labels, classes = torch.from_numpy(arrays["videos"]), torch.from_numpy(arrays["labels"]), arrays["classes"]
    classes = tuple(class_words(str(name)) for name in classes)
    return ArrayData("ucf101", videos, labels.long(), classes, templates=("a video of {word}",))


def _preprocess(root: Path, split: str, fold: int, frames: int, stride: int, height: int, width: int,
                workers: int, cached: Path) -> None:
    """Decode every video of a split once and write the clips, their labels and the class names to `cached`."""
    needed = [root / "ucfTrainTestlist" / "classInd.txt", root / "ucfTrainTestlist" / f"{split}list{fold:02d}.txt"]
    missing = [str(p) for p in needed if not p.exists()]
    if not missing:
        classes, paths, labels = read_split(root, split, fold)
        missing = [str(root / "UCF-101" / p) for p in paths if not (root / "UCF-101" / p).exists()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetUnavailable(UCF101_HINT.format(root=root, missing=shown))
    import_av()  # fail before starting any worker
    jobs = [(str(root / "UCF-101" / p), frames, stride, height, width) for p in paths]
    videos = np.empty((len(jobs), frames, 3, height, width), dtype=np.uint8)  # (N, F, 3, H, W), filled in place
    if workers > 1:  # spawned, not forked: a forked child of a process running torch threads can hang
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for i, clip in enumerate(pool.map(decode_clip, *zip(*jobs), chunksize=16)):
                videos[i] = clip
    else:
        for i, job in enumerate(jobs):
            videos[i] = decode_clip(*job)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".partial.npz")  # written whole, then renamed: never half a cache
    np.savez(partial, videos=videos, labels=np.array(labels, dtype=np.int64), classes=np.array(classes))
    partial.replace(cached)


def window_batches(data: ArrayData, batch_size: int, frames: int) -> Callable[[int, torch.Generator], dict]:
    """Random minibatches {x, y} of `frames`-long windows of random clips, each clip's window starting anywhere.

    Training on windows is cheaper than on whole clips, shows every frame in the first position
    (which a causal model encodes alone) and, for fully convolutional models, loses nothing: they
    apply to longer clips unchanged. Stateless like `image_batches`.
    """
    if batch_size < 1 or not 1 <= frames <= data.shape[0]:
        raise ValueError(f"need batch_size >= 1 and 1 <= frames <= {data.shape[0]} (the clips' length), "
                         f"got batch_size={batch_size}, frames={frames}")

    def next_batch(step: int, generator: torch.Generator) -> dict:
        idx = torch.randint(len(data), (batch_size,), generator=generator)
        start = torch.randint(data.shape[0] - frames + 1, (batch_size, 1), generator=generator)  # (B, 1)
        frame = start + torch.arange(frames)  # (B, frames)
        return {"x": to_float(data.images[idx[:, None], frame]), "y": data.labels[idx]}  # (B, frames, C, H, W)

    return next_batch


def frame_masks(n: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Which frames of n clips of `frames` frames are given clean, (n, frames) bool: Open-Sora 1.x's mask strategies.

    Each clip draws one task: half are plain generation (nothing given); the rest, in equal
    shares, give the first frame (image-to-video), the first k frames (extension), the last k
    (extension backwards), the first and the last (interpolation), the first k and last j
    (merging two clips), or a random set; k, j >= 1 and at least one frame is always left to
    generate. Training on this mix is what lets one checkpoint do every one of those tasks.
    """
    given = torch.zeros(n, frames, dtype=torch.bool)
    if frames < 2:
        return given  # an image: nothing to condition on
    task = torch.randint(12, (n,), generator=generator)  # 0-5: nothing given, 6-11: the six tasks
    k = 1 + torch.randint(frames - 1, (n,), generator=generator)  # 1 .. F-1 frames at the start
    j = 1 + torch.randint(frames - 1, (n,), generator=generator)  # 1 .. F-1 frames at the end
    coin = torch.rand(n, frames, generator=generator) < 0.5
    index = torch.arange(frames)  # (F,)
    first_k, last_j = index < k[:, None], index >= frames - j[:, None]  # (n, F) each
    ends = (index == 0) | (index == frames - 1)  # (F,)
    cases = (index == 0).expand(n, -1), first_k, index >= frames - k[:, None], ends.expand(n, -1), first_k | last_j, coin
    for case, mask in enumerate(cases, start=6):
        given = torch.where((task == case)[:, None], mask, given)
    all_given = given.all(dim=1)  # merging or random may cover every frame: free the last one
    given[all_given, -1] = False
    return given


def masked_bucket_batches(buckets: list[ArrayData], batch_size: int, temporal_stride: int = 1) -> Callable:
    """`bucket_batches` with captions, plus a frame mask "given" (B, f) from `frame_masks` for each batch.

    The masks are over the frames where diffusion runs: with a causal VAE of temporal stride s a
    clip of F frames has f = 1 + (F - 1) / s latent frames, and the mask is drawn for those.
    """
    inner = bucket_batches(buckets, batch_size, with_captions=True)

    def next_batch(step: int, generator: torch.Generator) -> dict:
        batch = inner(step, generator)
        frames = batch["x"].shape[1]
        if (frames - 1) % temporal_stride:
            raise ValueError(f"clips of {frames} frames do not fit temporal stride {temporal_stride} (1 + k s frames)")
        return {**batch, "given": frame_masks(len(batch["x"]), 1 + (frames - 1) // temporal_stride, generator)}

    return next_batch


def without_pairs(data: ArrayData, pairs=HELD_OUT_PAIRS) -> ArrayData:
    """The clips of `data` in which no digit moves in a (digit, direction) pair of `pairs`."""
    digits, directions = data.info["digits"], data.info["directions"]  # (N, K) each, digits -1 in empty slots
    hit = torch.zeros_like(digits, dtype=torch.bool)
    for digit, direction in pairs:
        hit |= (digits == digit) & (directions == direction)
    return data.subset(torch.nonzero(~hit.any(dim=1)).flatten())
