"""Image and frame transforms written with torch (no torchvision), plus direct encoding.

Random transforms draw from torch's RNG (``generator=None`` means the global one, which
DataLoader seeds per worker), so ``torch.manual_seed(s)`` makes a run repeatable.
"""
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

# Per-channel statistics of the training sets (pixel values in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Compose:
    """Apply transforms one after the other."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class ToFloat:
    """uint8 tensor -> float32 tensor scaled by ``scale`` (1/255 maps pixels to [0, 1])."""

    def __init__(self, scale: float = 1.0 / 255.0):
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32) * self.scale

    def __repr__(self) -> str:
        return f"ToFloat({self.scale:g})"


class Normalize:
    """``(x - mean) / std`` per channel on a float tensor [C, H, W]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class RandomCrop:
    """Zero-pad the last two dims by ``padding`` then cut a random ``size`` x ``size`` window.

    Works on [C, H, W] and [T, C, H, W]; the same window is used for every leading index.
    """

    def __init__(self, size: int, padding: int = 0, generator: Optional[torch.Generator] = None):
        self.size = size
        self.padding = padding
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, (self.padding,) * 4)
        h, w = x.shape[-2:]
        if h < self.size or w < self.size:
            raise ValueError(f"RandomCrop({self.size}): input {h}x{w} is smaller than the crop")
        i = int(torch.randint(0, h - self.size + 1, (1,), generator=self.generator))
        j = int(torch.randint(0, w - self.size + 1, (1,), generator=self.generator))
        return x[..., i:i + self.size, j:j + self.size]

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Flip the last (width) dim with probability ``p``; [C, H, W] or [T, C, H, W]."""

    def __init__(self, p: float = 0.5, generator: Optional[torch.Generator] = None):
        self.p = p
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if float(torch.rand((), generator=self.generator)) < self.p:
            return x.flip(-1)
        return x

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def cifar_transform(train: bool, mean: Sequence[float] = CIFAR10_MEAN,
                    std: Sequence[float] = CIFAR10_STD) -> Compose:
    """The CIFAR pipeline on a uint8 tensor [3, 32, 32] -> normalized float [3, 32, 32].

    ``train=True``: random crop 32 with zero padding 4, random horizontal flip, then
    normalization (padding is black before normalization, as in torchvision).
    ``train=False``: normalization only.
    """
    steps = [ToFloat()]
    if train:
        steps += [RandomCrop(32, padding=4), RandomHorizontalFlip()]
    steps.append(Normalize(mean, std))
    return Compose(steps)


def direct_encode(x: torch.Tensor, T: int, dim: int = 1) -> torch.Tensor:
    """Direct (repeat) encoding: insert a time dim of size ``T`` at ``dim`` and repeat ``x``.

    ``direct_encode(images[B, C, H, W], T)`` -> [B, T, C, H, W] (batch first, like the DVS
    batches); use ``dim=0`` for time-first [T, B, C, H, W]. Returns a view (expand), so
    call ``.contiguous()`` if the consumer needs contiguous memory.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    x = x.unsqueeze(dim)
    shape = list(x.shape)
    shape[dim] = T
    return x.expand(*shape)


def image_size_pair(size) -> Tuple[int, int]:
    """``48`` -> ``(48, 48)``; ``(h, w)`` -> ``(h, w)``."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))
