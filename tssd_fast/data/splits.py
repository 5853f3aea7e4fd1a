"""Deterministic per-class train / test splits (CIFAR10-DVS 9:1, digits)."""
import math
from typing import List, Sequence

import numpy as np


def split_per_class(labels: Sequence[int], split: str, train_ratio: float = 0.9, seed: int = 0,
                    method: str = "random") -> List[int]:
    """Indices of ``split`` ('train' / 'test') in a per-class train_ratio split.

    ``labels`` are in file-index order within each class. 'random': one
    ``numpy.random.default_rng(seed)`` permutes each class in turn (classes in increasing label
    order) and the first ceil(train_ratio * n) go to train. 'tebn': the last
    ceil(train_ratio * n) (the highest file indices) go to train. Both are deterministic and
    the two splits are disjoint and complete. Returned indices are sorted.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if method not in ("random", "tebn"):
        raise ValueError(f"split_method must be 'random' or 'tebn', got {method!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_train = math.ceil(round(len(idx) * train_ratio, 6))  # 0.8*180 is 144.00000000000003
        if method == "random":
            idx = idx[rng.permutation(len(idx))]
            part = idx[:n_train] if split == "train" else idx[n_train:]
        else:
            n_test = len(idx) - n_train
            part = idx[n_test:] if split == "train" else idx[:n_test]
        chosen.append(part)
    return sorted(int(i) for i in np.concatenate(chosen)) if chosen else []
