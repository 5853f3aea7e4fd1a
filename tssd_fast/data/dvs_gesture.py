"""DVS128 Gesture (11 classes, 128x128 sensor): 1176 train / 288 test samples.

Sources (``source='auto'`` takes the first found):

* ``'aedat'``: the IBM release (``DvsGesture.tar.gz`` extracted), a folder holding
  ``trials_to_train.txt``, ``trials_to_test.txt`` and per recording ``user01_fluorescent.aedat``
  (AEDAT 3.1) + ``user01_fluorescent_labels.csv`` (``class,startTime_usec,endTime_usec``,
  classes 1-11). Looked for at ``<data_dir>``, ``<data_dir>/DvsGesture`` and
  ``<data_dir>/extract/DvsGesture``.
* ``'events_np'``: SpikingJelly's converted samples,
  ``<data_dir>/events_np/{train,test}/<label 0-10>/user01_fluorescent_0.npz``.

As in SpikingJelly, every CSV row is one sample (``start <= t < end``, label = class - 1), also
when a recording repeats a class; sample ``k`` of a class in a recording is keyed
``<label>/<recording>_<k>``, the name SpikingJelly gives its .npz. SpikingJelly documents this
rule as giving 1176 / 288 samples on the full dataset (the paper's counts).
"""
import csv
from pathlib import Path
from typing import List, Optional, Tuple

from ._io import require_file
from .aedat import load_events_npz, read_aedat31_polarity
from .event_dataset import AUTO, EventFrameDataset, EventSample, resolve_cache_dir

GESTURE_CLASSES = ("hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
                   "right_arm_counter_clockwise", "left_arm_clockwise",
                   "left_arm_counter_clockwise", "arm_roll", "air_drums", "air_guitar", "other")
GESTURE_URL = "https://research.ibm.com/interactive/dvsgesture/"


def read_gesture_labels(path) -> List[Tuple[int, int, int]]:
    """Rows of a ``*_labels.csv`` -> [(label 0-10, start_us, end_us)], header skipped."""
    path = require_file(path, "DVS Gesture label file",
                        "a CSV with rows class,startTime_usec,endTime_usec")
    rows = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            cells = [c.strip() for c in row if c.strip()]
            if not cells or (lineno == 1 and not cells[0].isdigit()):
                continue  # blank line or the header
            try:
                cls, start, end = (int(c) for c in cells[:3])
                if len(cells) != 3 or not 1 <= cls <= 11:
                    raise ValueError
            except ValueError:
                raise ValueError(f"DVS Gesture label file {path}, line {lineno}: {row!r} is not "
                                 f"'class,startTime_usec,endTime_usec' with class 1-11") from None
            rows.append((cls - 1, start, end))
    return rows


def find_gesture_root(data_dir, source: str = AUTO) -> Tuple[Path, str]:
    """Locate the dataset -> (folder, source kind)."""
    data_dir = Path(data_dir)
    if source not in ("aedat", "events_np", AUTO):
        raise ValueError(f"source must be 'auto', 'aedat' or 'events_np', got {source!r}")
    if source in ("aedat", AUTO):
        for root in (data_dir, data_dir / "DvsGesture", data_dir / "extract" / "DvsGesture"):
            if (root / "trials_to_train.txt").is_file():
                return root, "aedat"
    if source in ("events_np", AUTO):
        for root in (data_dir / "events_np", data_dir):
            if (root / "train").is_dir() and (root / "test").is_dir():
                return root, "events_np"
    raise FileNotFoundError(
        f"DVS128 Gesture not found under {data_dir}: expected the extracted DvsGesture folder "
        f"(trials_to_train.txt, trials_to_test.txt, userXX_<lighting>.aedat and "
        f"userXX_<lighting>_labels.csv; {GESTURE_URL}) or SpikingJelly's "
        f"events_np/{{train,test}}/<label>/*.npz")


def gesture_samples(root: Path, kind: str, split: str) -> List[EventSample]:
    """Samples of ``split`` in trial-list order (aedat) or label/file order (events_np)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    samples = []
    if kind == "events_np":
        for label in range(11):
            folder = root / split / str(label)
            for f in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
                samples.append(EventSample(f"{label}/{f.stem}", label, f))
        if not samples:
            raise FileNotFoundError(f"no DVS Gesture samples in {root / split} (expected "
                                    f"<label 0-10>/*.npz)")
        return samples
    trials = require_file(root / f"trials_to_{split}.txt", "DVS Gesture trial list",
                          "one userXX_<lighting>.aedat name per line")
    for name in trials.read_text().split():
        aedat = require_file(root / name, "DVS Gesture recording",
                             "an AEDAT 3.1 file listed in " + trials.name)
        stem = Path(name).stem
        counts = [0] * 11
        for label, start, end in read_gesture_labels(root / f"{stem}_labels.csv"):
            samples.append(EventSample(f"{label}/{stem}_{counts[label]}", label, aedat,
                                       (start, end)))
            counts[label] += 1
    return samples


class DVSGesture(EventFrameDataset):
    """DVS128 Gesture frames [T, 2, h, w] (default T=16, 48x48), labels 0-10.

    Args:
        data_dir: dataset folder (see the module docstring).
        split: 'train' or 'test'.
        T: frames per sample.
        split_by: 'number' (default), 'time' or 'window' (``window_us`` default 30000 µs,
            the TSSD paper's 30 ms slices).
        size: output size (default 48).
        source: 'auto', 'aedat' or 'events_np'.
        cache_dir: 'auto' (``<data_dir>/frames_cache``), a folder, or None for no cache.
        **kwargs: passed to :class:`EventFrameDataset` (teacher_T, downsample, flip, ...).
    """

    def __init__(self, data_dir, split: str = "train", T: int = 16, split_by: str = "number",
                 size=48, window_us: Optional[int] = 30_000, source: str = AUTO,
                 cache_dir=AUTO, **kwargs):
        root, kind = find_gesture_root(data_dir, source)
        self.split = split
        self.source = kind
        self.classes = GESTURE_CLASSES
        reader = read_aedat31_polarity if kind == "aedat" else load_events_npz
        super().__init__(gesture_samples(root, kind, split), reader, 11, T, split_by, size,
                         window_us=window_us, cache_dir=resolve_cache_dir(cache_dir, data_dir),
                         cache_name=f"dvs-gesture-{kind}", **kwargs)
