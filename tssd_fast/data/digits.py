"""scikit-learn's bundled handwritten digits: a small real dataset that works offline.

1797 grayscale 8x8 images (values 0-16, scaled to [0, 1]), 10 classes. Split per class with
``numpy.random.default_rng(seed)``: the first ceil((1 - test_fraction) * n) of each shuffled
class train, the rest test. Needs the optional ``scikit-learn`` (imported on construction).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .splits import split_per_class
from .transforms import image_size_pair


def load_digits_arrays():
    """(images float32 [1797, 8, 8] in [0, 1], labels int64 [1797]) from scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the 'digits' dataset needs scikit-learn: pip install scikit-learn "
                          "(or pip install tssd_fast[train])") from e
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


class Digits(Dataset):
    """Digits as float tensors [channels, h, w] and int labels.

    Args:
        split: 'train' or 'test'.
        size: None keeps 8x8; an int or (h, w) upsamples (bilinear, align_corners=False).
        channels: 1, or e.g. 3 to repeat the gray channel for RGB models.
        test_fraction: share of each class held out (default 0.2).
        seed: split seed.
    """

    kind = "static"
    num_classes = 10

    def __init__(self, split: str = "train", size=None, channels: int = 1,
                 test_fraction: float = 0.2, seed: int = 0):
        images, labels = load_digits_arrays()
        keep = split_per_class(labels, split, 1.0 - test_fraction, seed)
        x = torch.from_numpy(images[keep]).unsqueeze(1)
        self.input_size = (8, 8) if size is None else image_size_pair(size)
        if self.input_size != (8, 8):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        self.images = x.expand(-1, channels, -1, -1).contiguous()
        self.labels = labels[keep]
        self.in_channels = channels
        self.split = split

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])
