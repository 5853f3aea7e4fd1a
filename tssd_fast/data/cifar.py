"""CIFAR-10 / CIFAR-100 from the standard python-pickle folders, read with our own code.

    <data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <data_dir>/cifar-100-python/{train, test, meta}          (fine labels, 100 classes)

``data_dir`` may also be the pickle folder itself. Samples are normalized float tensors
[3, 32, 32] and int labels; direct encoding over T is left to the model (see
``transforms.direct_encode``).
"""
import pickle
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ._io import require_file
from .transforms import (CIFAR100_MEAN, CIFAR100_STD, CIFAR10_MEAN, CIFAR10_STD,
                         cifar_transform)

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _get(d: dict, key: str):
    """Look up ``key`` as bytes (the real, Python-2 pickles) or as str."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def load_cifar_pickle(path: Path, what: str, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch pickle -> (images uint8 [N, 3, 32, 32], labels int64 [N]).

    Raises FileNotFoundError if the file is missing and ValueError (naming the file and
    what was expected) if it cannot be unpickled or lacks ``data`` / ``label_key``.
    """
    expected = f"the python-pickle folder from {CIFAR_URL}"
    require_file(path, what, expected)
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:  # truncated / not a pickle
        raise ValueError(f"{what} is corrupt: {path} could not be unpickled "
                         f"({type(e).__name__}: {e}); expected {expected}") from e
    if not isinstance(d, dict):
        raise ValueError(f"{what} is corrupt: {path} holds a {type(d).__name__}, "
                         f"expected a dict with b'data' and b'{label_key}'")
    data, labels = _get(d, "data"), _get(d, label_key)
    if data is None or labels is None:
        raise ValueError(f"{what} is corrupt: {path} lacks b'data' or b'{label_key}' "
                         f"(keys: {sorted(map(str, d.keys()))})")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"{what} is corrupt: {path} has data of shape {data.shape} and "
                         f"{labels.shape[0]} labels; expected [N, 3072] uint8 and N labels")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32), labels


def _find_folder(data_dir, folder: str, marker: str, what: str) -> Path:
    """``data_dir/folder`` if it exists, else ``data_dir`` if it holds ``marker``."""
    data_dir = Path(data_dir)
    if (data_dir / folder).is_dir():
        return data_dir / folder
    if (data_dir / marker).exists():
        return data_dir
    raise FileNotFoundError(f"{what} folder not found: {data_dir / folder} (expected the "
                            f"python-pickle folder from {CIFAR_URL}, extracted under data_dir)")


class _CIFAR(Dataset):
    """Shared body of CIFAR10 / CIFAR100 (images held in memory as uint8)."""

    kind = "static"
    in_channels = 3
    input_size = (32, 32)
    num_classes: int
    mean: Sequence[float]
    std: Sequence[float]

    def __init__(self, images: np.ndarray, labels: np.ndarray, split: str,
                 transform: Optional[Callable], augment: Optional[bool]):
        self.split = split
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = labels.astype(np.int64)
        if transform is None:
            transform = cifar_transform(split == "train" if augment is None else augment,
                                        self.mean, self.std)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


class CIFAR10(_CIFAR):
    """CIFAR-10 from ``cifar-10-batches-py`` (50000 train / 10000 test, 10 classes).

    Args:
        data_dir: folder holding ``cifar-10-batches-py`` (or that folder itself).
        split: 'train' (data_batch_1..5) or 'test' (test_batch).
        transform: callable on the uint8 tensor [3, 32, 32]; default: crop+flip+normalize
            for train, normalize for test (``transforms.cifar_transform``).
        augment: override whether the default transform augments (default: split == 'train').
    """

    num_classes = 10
    mean, std = CIFAR10_MEAN, CIFAR10_STD

    def __init__(self, data_dir, split: str = "train", transform: Optional[Callable] = None,
                 augment: Optional[bool] = None):
        self.root = _find_folder(data_dir, "cifar-10-batches-py", "test_batch", "CIFAR-10")
        names = [f"data_batch_{i}" for i in range(1, 6)] if _check_split(split) == "train" \
            else ["test_batch"]
        parts = [load_cifar_pickle(self.root / n, "CIFAR-10 batch", "labels") for n in names]
        super().__init__(np.concatenate([p[0] for p in parts]),
                         np.concatenate([p[1] for p in parts]), split, transform, augment)

    @property
    def classes(self) -> List[str]:
        """Class names from ``batches.meta``."""
        meta = require_file(self.root / "batches.meta", "CIFAR-10 meta file",
                            f"the python-pickle folder from {CIFAR_URL}")
        with open(meta, "rb") as f:
            return [n.decode() for n in _get(pickle.load(f, encoding="bytes"), "label_names")]


class CIFAR100(_CIFAR):
    """CIFAR-100 (fine labels) from ``cifar-100-python`` (50000 train / 10000 test).

    Args are as for :class:`CIFAR10`; the files are ``train`` and ``test``.
    """

    num_classes = 100
    mean, std = CIFAR100_MEAN, CIFAR100_STD

    def __init__(self, data_dir, split: str = "train", transform: Optional[Callable] = None,
                 augment: Optional[bool] = None):
        self.root = _find_folder(data_dir, "cifar-100-python", "test", "CIFAR-100")
        images, labels = load_cifar_pickle(self.root / _check_split(split), "CIFAR-100 file",
                                           "fine_labels")
        super().__init__(images, labels, split, transform, augment)

    @property
    def classes(self) -> List[str]:
        """Fine class names from ``meta``."""
        meta = require_file(self.root / "meta", "CIFAR-100 meta file",
                            f"the python-pickle folder from {CIFAR_URL}")
        with open(meta, "rb") as f:
            return [n.decode() for n in _get(pickle.load(f, encoding="bytes"),
                                             "fine_label_names")]
