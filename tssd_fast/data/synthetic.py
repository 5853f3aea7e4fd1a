"""Synthetic, learnable datasets for smoke runs (no files needed).

Each class has a fixed smooth pattern (from ``seed``); a sample is its class pattern plus
noise drawn from a generator seeded by (seed, split, index), so a sample is the same whatever
the access order, and train / test share the patterns but not the noise. Label of sample i is
``i % num_classes`` (balanced).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .transforms import image_size_pair

_SPLIT_ID = {"train": 0, "test": 1}


def _sample_generator(seed: int, split: str, i: int) -> torch.Generator:
    if split not in _SPLIT_ID:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return torch.Generator().manual_seed((seed * 2 + _SPLIT_ID[split]) * 1_000_003 + i + 1)


def class_patterns(num_classes: int, channels: int, size: Tuple[int, int], seed: int,
                   grid: int = 4) -> torch.Tensor:
    """Smooth per-class patterns [num_classes, channels, h, w] (random grid x grid, bilinear
    upsampled, scaled to zero mean / unit std per pattern)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_classes, channels, grid, grid, generator=g)
    p = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    p = p - p.mean(dim=(1, 2, 3), keepdim=True)
    return p / p.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)


class SyntheticImages(Dataset):
    """Static images [channels, h, w] = class pattern + ``noise`` * N(0, 1).

    Args:
        split: 'train' or 'test'.
        num_samples: default 1000 for train, 200 for test.
        num_classes, channels, size: shape of the task (default 10 classes, 3x32x32).
        noise: noise std (the patterns have unit std).
        seed: fixes patterns and noise.
    """

    kind = "static"

    def __init__(self, split: str = "train", num_samples: Optional[int] = None,
                 num_classes: int = 10, channels: int = 3, size=32, noise: float = 1.0,
                 seed: int = 0):
        _sample_generator(seed, split, 0)  # validates split
        self.split, self.seed, self.noise = split, seed, noise
        self.num_samples = num_samples if num_samples is not None else \
            (1000 if split == "train" else 200)
        self.num_classes, self.in_channels = num_classes, channels
        self.input_size = image_size_pair(size)
        self.patterns = class_patterns(num_classes, channels, self.input_size, seed)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int):
        if not 0 <= i < self.num_samples:
            raise IndexError(i)
        label = i % self.num_classes
        g = _sample_generator(self.seed, self.split, i)
        x = self.patterns[label] + self.noise * torch.randn(self.patterns[label].shape,
                                                            generator=g)
        return x, label


class SyntheticDVS(Dataset):
    """DVS-like binary frames [T, 2, h, w]: per class a pattern drifting with a class velocity.

    Frame t fires pixel (c, y, x) with probability ``base + gain * sigmoid(2 * P)`` where P is
    the class pattern shifted by ``t * velocity[class]`` (``torch.roll``). Frames for T are
    the first T frames of any longer sequence of the same sample, so ``teacher_T`` frames
    extend the student's.

    Args:
        split: 'train' or 'test'.
        T: frames per sample; ``teacher_T`` (optional) -> samples ``((x_T, x_teacher), label)``.
        num_samples: default 500 for train, 100 for test.
        num_classes, size: default 10 classes, 32x32.
        base, gain: firing probabilities (noise level and signal strength).
        seed: fixes patterns, velocities and spikes.
    """

    kind = "dvs"
    in_channels = 2

    def __init__(self, split: str = "train", T: int = 4, teacher_T: Optional[int] = None,
                 num_samples: Optional[int] = None, num_classes: int = 10, size=32,
                 base: float = 0.05, gain: float = 0.5, seed: int = 0):
        _sample_generator(seed, split, 0)
        self.split, self.seed, self.T, self.teacher_T = split, seed, T, teacher_T
        self.num_samples = num_samples if num_samples is not None else \
            (500 if split == "train" else 100)
        self.num_classes = num_classes
        self.input_size = image_size_pair(size)
        self.base, self.gain = base, gain
        self.patterns = class_patterns(num_classes, 2, self.input_size, seed)
        g = torch.Generator().manual_seed(seed + 7919)
        self.velocity = torch.randint(-2, 3, (num_classes, 2), generator=g)

    @property
    def Ts(self) -> Tuple[int, ...]:
        """(T,) or (T, teacher_T)."""
        return (self.T,) if self.teacher_T is None else (self.T, self.teacher_T)

    def __len__(self) -> int:
        return self.num_samples

    def frames(self, i: int, T: Optional[int] = None) -> torch.Tensor:
        """Frames of sample ``i`` for ``T`` (default ``self.T``): float32 {0, 1} [T, 2, h, w]."""
        if not 0 <= i < self.num_samples:
            raise IndexError(i)
        T = self.T if T is None else T
        label = i % self.num_classes
        g = _sample_generator(self.seed, self.split, i)
        dy, dx = (int(v) for v in self.velocity[label])
        out = torch.empty(T, 2, *self.input_size)
        for t in range(T):
            prob = self.base + self.gain * torch.sigmoid(
                2 * torch.roll(self.patterns[label], shifts=(t * dy, t * dx), dims=(1, 2)))
            out[t] = (torch.rand(prob.shape, generator=g) < prob).to(torch.float32)
        return out

    def __getitem__(self, i: int):
        label = i % self.num_classes
        xs = [self.frames(i, T) for T in self.Ts]
        return (xs[0], label) if len(xs) == 1 else (tuple(xs), label)
