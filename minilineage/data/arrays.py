"""A dataset held in memory as uint8, and the one conversion between uint8 pixels and model floats.

Images are stored as uint8 (N, C, H, W) and videos as uint8 (N, F, C, H, W), F the frame axis:
a quarter of the memory of float32, and a batch is converted only when it is drawn. Models work
on floats in [-1, 1]; `to_float` and `to_uint8` are the two directions, for images and videos alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from minilineage.data.captions import DIGIT_TEMPLATES, fill_template


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in 0..255 -> float32 in [-1, 1], any shape: x = p / 127.5 - 1."""
    if pixels.dtype != torch.uint8:
        raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
    return pixels.float() / 127.5 - 1.0


def to_uint8(images) -> torch.Tensor:
    """Float images in [-1, 1] -> uint8 pixels round((x + 1) * 127.5), clamped; the layout is kept.

    Works on images (N, C, H, W), videos (N, F, C, H, W) or a single image; tensors on any device
    and numpy arrays are accepted, uint8 input is returned unchanged. The result is a CPU tensor.
    """
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"expected float images in [-1, 1] or uint8 pixels, got {x.dtype}")
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@dataclass
class ArrayData:
    """A whole dataset in memory: uint8 images (N, C, H, W) or videos (N, F, C, H, W), int64 labels (N,).

    `texts` optionally holds one caption per item (a video's own description); otherwise captions
    are made from the labels with `templates` ("a handwritten {word}"). `info` optionally holds more
    per-item tensors, each with the items on its first axis (e.g. moving-mnist's digit positions per
    frame); `subset` keeps them aligned with the items.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    templates: tuple[str, ...] = field(default=DIGIT_TEMPLATES)
    texts: list[str] | None = None
    info: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim not in (4, 5):
            raise ValueError(f"images must be uint8 (N, C, H, W) or videos (N, F, C, H, W), "
                             f"got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} items but {len(self.labels)} labels")
        if self.texts is not None and len(self.texts) != len(self.images):
            raise ValueError(f"{len(self.images)} items but {len(self.texts)} texts")
        for key, value in self.info.items():
            if len(value) != len(self.images):
                raise ValueError(f"{len(self.images)} items but info[{key!r}] has {len(value)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image, or (F, C, H, W) of one video."""
        return tuple(self.images.shape[1:])

    @property
    def is_video(self) -> bool:
        return self.images.ndim == 5

    def float_images(self) -> torch.Tensor:
        """Every item as floats in [-1, 1], the range the models train on (for small sets: a batch converts itself)."""
        return to_float(self.images)

    def caption(self, label: int, template: int = 0) -> str:
        """Caption for a label from one of the dataset's templates ("a handwritten seven")."""
        return fill_template(self.templates[template % len(self.templates)], self.classes, int(label))

    def captions(self, index: torch.Tensor, generator: torch.Generator | None = None) -> list[str]:
        """Captions of the items at `index`: their own texts if the dataset has them, else one per label,
        each from a random template when a generator is given (template 0 otherwise)."""
        if self.texts is not None:
            return [self.texts[i] for i in index.tolist()]
        labels = self.labels[index].tolist()
        if generator is None:
            return [self.caption(y) for y in labels]
        picks = torch.randint(len(self.templates), (len(labels),), generator=generator).tolist()
        return [self.caption(y, k) for y, k in zip(labels, picks, strict=True)]

    def to(self, device: torch.device | str) -> ArrayData:
        """The same dataset with its tensors on `device` (e.g. a GPU, for datasets that fit: no copy per batch)."""
        info = {key: value.to(device) for key, value in self.info.items()}
        return replace(self, images=self.images.to(device), labels=self.labels.to(device), info=info)

    def subset(self, index: torch.Tensor) -> ArrayData:
        texts = None if self.texts is None else [self.texts[i] for i in index.tolist()]
        info = {key: value[index] for key, value in self.info.items()}
        return ArrayData(self.name, self.images[index], self.labels[index], self.classes, self.templates, texts, info)
