"""Base dataset of event samples served as frames [T, 2, h, w], with the on-disk frame cache.

A sample is an :class:`EventSample`: the file holding its events, an optional time cut
(DVS128 Gesture cuts recordings by the label CSV) and a key naming its cache file.

Frames for another T from the same sample (the TSSD temporal teacher runs T' > T steps on the
same input): pass ``teacher_T=T'`` and ``__getitem__`` returns ``((frames_T, frames_T'), label)``
(both integrated from the same events, both cached, one random flip shared), or call
``dataset.frames(i, T')`` yourself. With ``split_by='window'`` the T frames are exactly the
first T of the T' frames, so ``frames_T' [:T]`` is also valid there.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ._io import progress
from .aedat import cut_events
from .events import DOWNSAMPLE_MODES, SPLIT_MODES, integrate_events
from .frame_cache import FrameCache
from .transforms import image_size_pair

AUTO = "auto"


@dataclass(frozen=True)
class EventSample:
    """One event sample: ``source`` file, ``label``, cache ``key`` and an optional
    ``t_range`` = (start, end) in µs keeping ``start <= t < end``."""

    key: str
    label: int
    source: Path
    t_range: Optional[Tuple[int, int]] = None


class EventFrameDataset(Dataset):
    """Event samples integrated into frames [T, 2, h, w] (float32 event counts, or their
    average with ``downsample='area'``), cached on disk.

    Args:
        samples: the samples, in a fixed order.
        read_events: ``path -> events dict`` for a source file.
        num_classes: number of classes.
        T: frames per sample.
        split_by: 'number', 'time' or 'window' (see ``tssd_fast.data.events``).
        size: output size, int or (h, w).
        downsample: 'area', 'bilinear' or 'sum' (see ``integrate_events``).
        window_us: frame length in µs for split_by='window'.
        teacher_T: if set, samples are ``((frames_T, frames_teacher_T), label)``.
        sensor_size: (H, W) of the sensor.
        cache_dir: cache root, or None to integrate on every access.
        cache_name: dataset id inside the cache root.
        flip: random horizontal flip (training augmentation, off by default).
        prebuild: build every missing cache file now (with a progress bar) rather than on
            first access.
        show_progress: show the tqdm bar while building (if tqdm is installed).
    """

    kind = "dvs"
    in_channels = 2

    def __init__(self, samples: Sequence[EventSample], read_events: Callable, num_classes: int,
                 T: int, split_by: str = "number", size: Union[int, Tuple[int, int]] = 48,
                 downsample: str = "area", window_us: Optional[int] = None,
                 teacher_T: Optional[int] = None, sensor_size: Tuple[int, int] = (128, 128),
                 cache_dir=None, cache_name: str = "events", flip: bool = False,
                 prebuild: bool = True, show_progress: bool = True):
        if split_by not in SPLIT_MODES:
            raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")
        if downsample not in DOWNSAMPLE_MODES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE_MODES}, got {downsample!r}")
        if split_by == "window" and not window_us:
            raise ValueError("split_by='window' needs window_us (frame length in µs)")
        for name, value in (("T", T), ("teacher_T", teacher_T)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.samples = list(samples)
        self.read_events = read_events
        self.num_classes = num_classes
        self.T = T
        self.teacher_T = teacher_T
        self.split_by = split_by
        self.window_us = window_us
        self.sensor_size = tuple(sensor_size)
        self.input_size = image_size_pair(size)
        self.downsample = downsample
        self.flip = flip
        self.show_progress = show_progress
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache_name = cache_name
        self._caches: Dict[int, FrameCache] = {}
        self._memo: Optional[Tuple[Path, dict]] = None
        #: how many times this object integrated frames from events (cache misses)
        self.n_integrated = 0
        if prebuild and self.cache_dir is not None:
            self.build_cache()

    @property
    def Ts(self) -> Tuple[int, ...]:
        """The frame counts served by ``__getitem__``: (T,) or (T, teacher_T)."""
        return (self.T,) if self.teacher_T is None else (self.T, self.teacher_T)

    @property
    def labels(self) -> List[int]:
        """Labels of all samples, in order."""
        return [s.label for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_memo"] = None  # do not ship a whole recording to worker processes
        return state

    def cache(self, T: int) -> Optional[FrameCache]:
        """The frame cache for ``T`` frames (None without a cache_dir)."""
        if self.cache_dir is None:
            return None
        if T not in self._caches:
            self._caches[T] = FrameCache(self.cache_dir, self.cache_name, T, self.split_by,
                                         self.input_size, self.downsample, self.window_us)
        return self._caches[T]

    def events(self, i: int) -> dict:
        """The events of sample ``i`` (dict t, x, y, p), read from its source file."""
        s = self.samples[i]
        if self._memo is None or self._memo[0] != s.source:
            self._memo = (s.source, self.read_events(s.source))
        ev = self._memo[1]
        return cut_events(ev, *s.t_range) if s.t_range is not None else ev

    def integrate(self, i: int, T: int) -> np.ndarray:
        """Integrate sample ``i`` into ``T`` frames now (no cache) -> float32 [T, 2, h, w]."""
        ev = self.events(i)
        try:
            frames = integrate_events(ev, T, self.split_by, self.sensor_size, self.input_size,
                                      self.downsample, self.window_us)
        except ValueError as e:
            raise ValueError(f"{self.samples[i].source}: {e}") from e
        self.n_integrated += 1
        return frames

    def frames(self, i: int, T: Optional[int] = None) -> torch.Tensor:
        """Frames of sample ``i`` for ``T`` (default ``self.T``): float32 tensor [T, 2, h, w].

        Read from the cache, or integrated and cached on a miss.
        """
        T = self.T if T is None else T
        cache = self.cache(T)
        arr = cache.load(self.samples[i].key) if cache is not None else None
        if arr is None:
            arr = self.integrate(i, T)
            if cache is not None:
                cache.save(self.samples[i].key, arr)
        return torch.from_numpy(arr)

    def build_cache(self, Ts: Optional[Sequence[int]] = None) -> int:
        """Integrate and cache every sample missing for the frame counts ``Ts`` (default
        ``self.Ts``). Each source file is read once. Returns the number of files written."""
        if self.cache_dir is None:
            return 0
        Ts = tuple(self.Ts if Ts is None else Ts)
        todo = [(i, [T for T in Ts if not self.cache(T).has(self.samples[i].key)])
                for i in range(len(self))]
        todo = sorted((t for t in todo if t[1]), key=lambda t: str(self.samples[t[0]].source))
        written = 0
        desc = f"{self.cache_name}: frames T={'/'.join(map(str, Ts))}"
        for i, missing in progress(todo, total=len(todo), desc=desc, enabled=self.show_progress):
            for T in missing:
                self.cache(T).save(self.samples[i].key, self.integrate(i, T))
                written += 1
        self._memo = None
        return written

    def __getitem__(self, i: int):
        xs = [self.frames(i, T) for T in self.Ts]
        if self.flip and float(torch.rand(())) < 0.5:
            xs = [x.flip(-1) for x in xs]
        label = self.samples[i].label
        return (xs[0], label) if len(xs) == 1 else (tuple(xs), label)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, T={self.T}, teacher_T={self.teacher_T}, "
                f"split_by={self.split_by!r}, size={self.input_size}, cache={self.cache_dir})")


def resolve_cache_dir(cache_dir, data_dir) -> Optional[Path]:
    """``'auto'`` -> ``<data_dir>/frames_cache``; None/False -> None (no cache); else the path."""
    if cache_dir == AUTO:
        return Path(data_dir) / "frames_cache"
    return Path(cache_dir) if cache_dir else None
