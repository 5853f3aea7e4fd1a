"""ImageNet-style image folders: ``<data_dir>/{train,val}/<class>/<image>.JPEG``.

Classes are the sorted subfolder names of the split folder. Pillow is imported only when an
image is read (optional extra ``pillow``). Transforms, written with PIL + torch:
train = random-resized-crop 224 (scale 0.08-1, ratio 3/4-4/3) + horizontal flip;
test = resize the short side to 256 + center crop 224; both normalized with the ImageNet
mean / std. Samples are float tensors [3, 224, 224] and int labels.
"""
import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .transforms import IMAGENET_MEAN, IMAGENET_STD, Normalize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def _pil():
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("reading image folders needs Pillow: pip install pillow "
                          "(or pip install tssd_fast[train])") from e
    return Image


def pil_to_tensor(img) -> torch.Tensor:
    """PIL RGB image -> float32 tensor [3, H, W] in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255.0


def random_resized_crop_box(width: int, height: int, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3), generator=None) -> Tuple[int, int, int, int]:
    """Crop box (left, top, w, h) as torchvision's RandomResizedCrop picks it: up to 10 tries
    of a random area fraction in ``scale`` and log-uniform aspect ``ratio``, then a central crop
    clamped to ``ratio``."""
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
        aspect = math.exp(float(torch.empty(1).uniform_(log_r[0], log_r[1], generator=generator)))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class ImageNetTrainTransform:
    """PIL image -> random-resized-crop ``size`` + flip + normalize -> [3, size, size]."""

    def __init__(self, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD, generator=None):
        self.size = size
        self.normalize = Normalize(mean, std)
        self.generator = generator

    def __call__(self, img) -> torch.Tensor:
        Image = _pil()
        left, top, w, h = random_resized_crop_box(img.width, img.height, generator=self.generator)
        img = img.resize((self.size, self.size), Image.BILINEAR,
                         box=(left, top, left + w, top + h))
        x = pil_to_tensor(img)
        if float(torch.rand((), generator=self.generator)) < 0.5:
            x = x.flip(-1)
        return self.normalize(x)


class ImageNetTestTransform:
    """PIL image -> resize short side to ``resize`` + center crop ``size`` + normalize."""

    def __init__(self, size: int = 224, resize: int = 256, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD):
        self.size, self.resize = size, resize
        self.normalize = Normalize(mean, std)

    def __call__(self, img) -> torch.Tensor:
        Image = _pil()
        w, h = img.size
        if w <= h:
            nw, nh = self.resize, int(self.resize * h / w)
        else:
            nw, nh = int(self.resize * w / h), self.resize
        img = img.resize((nw, nh), Image.BILINEAR)
        left = int(round((nw - self.size) / 2.0))
        top = int(round((nh - self.size) / 2.0))
        img = img.crop((left, top, left + self.size, top + self.size))
        return self.normalize(pil_to_tensor(img))


class ImageFolder(Dataset):
    """Images in class subfolders of ``root`` (sorted names -> labels 0..C-1).

    Args:
        root: the split folder (holding one folder per class).
        transform: callable on the RGB PIL image.
    """

    kind = "static"
    in_channels = 3

    def __init__(self, root, transform: Optional[Callable] = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root} (expected one "
                                    f"subfolder per class holding JPEG/PNG images)")
        self.classes: List[str] = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        exts = tuple(e.lower() for e in extensions)
        self.samples: List[Tuple[Path, int]] = [
            (f, label) for label, c in enumerate(self.classes)
            for f in sorted((self.root / c).rglob("*")) if f.suffix.lower() in exts]
        if not self.samples:
            raise FileNotFoundError(f"no images found in {self.root} (expected "
                                    f"<class>/<image>{{{','.join(exts)}}})")
        self.num_classes = len(self.classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, i: int):
        """The RGB PIL image of sample ``i``; ValueError naming the file if unreadable."""
        Image = _pil()
        path = self.samples[i][0]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except Exception as e:
            raise ValueError(f"cannot read image {path} ({type(e).__name__}: {e}); expected "
                             f"a JPEG/PNG image") from e

    def __getitem__(self, i: int):
        img = self.load_image(i)
        x = self.transform(img) if self.transform is not None else pil_to_tensor(img)
        return x, self.samples[i][1]


class ImageNet(ImageFolder):
    """ImageNet (ILSVRC-2012 layout): ``<data_dir>/train/<wnid>/*.JPEG`` and
    ``<data_dir>/val/<wnid>/*.JPEG`` (split 'test' reads ``val``, or ``test`` if there is no
    ``val``). Training augmentation as in the module docstring; ``size``/``resize`` change the
    crop (default 224 / 256)."""

    def __init__(self, data_dir, split: str = "train", size: int = 224, resize: int = 256,
                 transform: Optional[Callable] = None, augment: Optional[bool] = None):
        if split not in ("train", "test", "val"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        data_dir = Path(data_dir)
        folder = data_dir / "train" if split == "train" else data_dir / "val"
        if split != "train" and not folder.is_dir() and (data_dir / "test").is_dir():
            folder = data_dir / "test"
        augment = (split == "train") if augment is None else augment
        if transform is None:
            transform = ImageNetTrainTransform(size) if augment \
                else ImageNetTestTransform(size, resize)
        super().__init__(folder, transform)
        self.split = split
        self.input_size = (size, size)
