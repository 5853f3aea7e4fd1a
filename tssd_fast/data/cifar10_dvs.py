"""CIFAR10-DVS (10 classes, 1000 recordings each, 128x128 sensor), split 9:1 per class.

Sources (``source='auto'`` takes the first found):

* ``'aedat'``: the original release, one folder per class holding AEDAT 2.0 files,
  ``<data_dir>/airplane/cifar10_airplane_0.aedat`` ... (or under ``<data_dir>/extract/``,
  where SpikingJelly extracts them).
* ``'events_np'``: SpikingJelly's converted events,
  ``<data_dir>/events_np/airplane/cifar10_airplane_0.npz`` (keys t, x, y, p).

The release has no train/test split. ``split_method='random'`` (default) shuffles each class
with ``numpy.random.default_rng(split_seed)`` (classes in the order below, one generator) and
keeps the first ceil(0.9 n) for training; ``'tebn'`` uses TEBN's split (in each class the files
with the lowest 10 % of indices, 0-99 for the full set, are the test set).
"""
import re
from pathlib import Path
from typing import List, Optional, Tuple

from .aedat import load_events_npz, read_cifar10dvs_aedat
from .event_dataset import AUTO, EventFrameDataset, EventSample, resolve_cache_dir
from .splits import split_per_class

CIFAR10DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                      "ship", "truck")
CIFAR10DVS_URL = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"
_SOURCES = {"aedat": ".aedat", "events_np": ".npz"}


def _file_index(path: Path) -> Tuple[int, str]:
    m = re.search(r"(\d+)$", path.stem)
    return (int(m.group(1)) if m else -1, path.name)


def find_cifar10dvs_root(data_dir, source: str = AUTO) -> Tuple[Path, str]:
    """Locate the class folders -> (folder holding them, source kind)."""
    data_dir = Path(data_dir)
    candidates = {"aedat": [data_dir, data_dir / "extract"],
                  "events_np": [data_dir / "events_np", data_dir]}
    kinds = list(_SOURCES) if source == AUTO else [source]
    if source not in _SOURCES and source != AUTO:
        raise ValueError(f"source must be 'auto', 'aedat' or 'events_np', got {source!r}")
    for kind in kinds:
        for root in candidates[kind]:
            first = root / CIFAR10DVS_CLASSES[0]
            if first.is_dir() and any(first.glob("*" + _SOURCES[kind])):
                return root, kind
    raise FileNotFoundError(
        f"CIFAR10-DVS not found under {data_dir}: expected class folders airplane/ ... truck/ "
        f"holding cifar10_<class>_<i>.aedat (the original AEDAT 2.0 release, {CIFAR10DVS_URL}), "
        f"or SpikingJelly's events_np/<class>/cifar10_<class>_<i>.npz")


def cifar10dvs_samples(root: Path, kind: str) -> List[EventSample]:
    """All samples under ``root`` (class folders), per class in file-index order."""
    samples = []
    for label, cls in enumerate(CIFAR10DVS_CLASSES):
        folder = root / cls
        files = sorted(folder.glob("*" + _SOURCES[kind]), key=_file_index) \
            if folder.is_dir() else []
        if not files:
            raise FileNotFoundError(f"CIFAR10-DVS class folder missing or empty: {folder} "
                                    f"(expected cifar10_{cls}_<i>{_SOURCES[kind]} files)")
        samples += [EventSample(f"{cls}/{f.stem}", label, f) for f in files]
    return samples


class CIFAR10DVS(EventFrameDataset):
    """CIFAR10-DVS frames [T, 2, h, w] (default T=10, 48x48), labels 0-9.

    Args:
        data_dir: dataset folder (see the module docstring for the layouts).
        split: 'train' or 'test'.
        T: frames per sample.
        split_by: 'number' (default), 'time' or 'window' (``window_us`` default 10000 µs,
            the TSSD paper's 10 ms slices).
        size: output size (default 48).
        train_ratio, split_seed, split_method: the per-class 9:1 split.
        source: 'auto', 'aedat' or 'events_np'.
        cache_dir: 'auto' (``<data_dir>/frames_cache``), a folder, or None for no cache.
        **kwargs: passed to :class:`EventFrameDataset` (teacher_T, downsample, flip, ...).
    """

    def __init__(self, data_dir, split: str = "train", T: int = 10, split_by: str = "number",
                 size=48, window_us: Optional[int] = 10_000, train_ratio: float = 0.9,
                 split_seed: int = 0, split_method: str = "random", source: str = AUTO,
                 cache_dir=AUTO, **kwargs):
        root, kind = find_cifar10dvs_root(data_dir, source)
        everything = cifar10dvs_samples(root, kind)
        keep = split_per_class([s.label for s in everything], split, train_ratio, split_seed,
                               split_method)
        self.split = split
        self.source = kind
        self.classes = CIFAR10DVS_CLASSES
        reader = read_cifar10dvs_aedat if kind == "aedat" else load_events_npz
        super().__init__([everything[i] for i in keep], reader, 10, T, split_by, size,
                         window_us=window_us, cache_dir=resolve_cache_dir(cache_dir, data_dir),
                         cache_name=f"cifar10-dvs-{kind}", **kwargs)
