"""Small file helpers shared by the readers: atomic .npz writes, clear missing-file errors, an
optional tqdm progress bar."""
import os
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

from .._atomic import atomic_write_bytes

PathLike = Union[str, "os.PathLike[str]"]


def atomic_save_npz(path: PathLike, compress: bool = True, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` as an .npz, atomically (tssd_fast._atomic), so a reader
    (another DataLoader worker, another rank, a crashed run) never sees a half-written file."""
    save = np.savez_compressed if compress else np.savez
    atomic_write_bytes(path, lambda f: save(f, **arrays))


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def require_file(path: PathLike, what: str, expected: str) -> Path:
    """Return ``Path(path)`` if it is a file, else raise ``FileNotFoundError`` naming it.

    The message reads ``"<what> not found: <path> (expected <expected>)"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (expected {expected})")
    return path


def progress(iterable: Iterable, total: Optional[int] = None, desc: str = "",
             enabled: bool = True) -> Iterable:
    """Wrap ``iterable`` in a tqdm progress bar when tqdm is installed and ``enabled``.

    tqdm is optional: without it the iterable is returned unchanged.
    """
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="sample", leave=False)
