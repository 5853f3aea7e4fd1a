"""On-disk cache of integrated frames: one compressed .npz per sample, written atomically.

Layout: ``<cache_dir>/<dataset>-<source>/T<T>_<split_by>[<window>us]_<h>x<w>_<downsample>/<key>.npz``
holding ``frames`` (float32 [T, 2, h, w]); a ``meta.json`` beside the samples records the
settings. A setting never overwrites another, so frames for several T (student T and teacher T')
live side by side. Delete a folder to rebuild it (e.g. after the raw files changed).
"""
import json
import warnings
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ._io import atomic_save_npz, atomic_write_text

CACHE_VERSION = 1


def cache_setting_name(T: int, split_by: str, size: Tuple[int, int], downsample: str,
                       window_us: Optional[int] = None) -> str:
    """Folder name of one integration setting, e.g. ``T10_number_48x48_area``."""
    window = f"{int(window_us)}us" if split_by == "window" else ""
    return f"T{T}_{split_by}{window}_{size[0]}x{size[1]}_{downsample}"


class FrameCache:
    """Frames of one dataset under one integration setting.

    Args:
        root: cache root folder.
        dataset: dataset id, e.g. ``'cifar10-dvs-aedat'``.
        T, split_by, size, downsample, window_us: the integration setting (see ``events``).
    """

    def __init__(self, root, dataset: str, T: int, split_by: str, size: Tuple[int, int],
                 downsample: str, window_us: Optional[int] = None):
        self.dir = Path(root) / dataset / cache_setting_name(T, split_by, size, downsample,
                                                             window_us)
        self.meta = {"version": CACHE_VERSION, "dataset": dataset, "T": T,
                     "split_by": split_by, "size": list(size), "downsample": downsample,
                     "window_us": window_us if split_by == "window" else None}
        self._meta_written = False

    def path(self, key: str) -> Path:
        """File of sample ``key`` (keys may hold '/' to make subfolders)."""
        return self.dir / f"{key}.npz"

    def has(self, key: str) -> bool:
        """Whether sample ``key`` is cached."""
        return self.path(key).is_file()

    def load(self, key: str) -> Optional[np.ndarray]:
        """Cached frames of ``key``, or None if absent or unreadable (warns; it is rebuilt)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return z["frames"]
        except Exception as e:
            warnings.warn(f"unreadable frame cache file {path} ({type(e).__name__}: {e}); "
                          f"rebuilding it", RuntimeWarning)
            return None

    def save(self, key: str, frames: np.ndarray) -> None:
        """Store ``frames`` for ``key`` (atomic write)."""
        if not self._meta_written:
            meta = self.dir / "meta.json"
            if not meta.is_file():
                atomic_write_text(meta, json.dumps(self.meta, indent=1) + "\n")
            self._meta_written = True
        atomic_save_npz(self.path(key), frames=np.asarray(frames, dtype=np.float32))
