"""One entry point for every dataset: ``build_dataset`` and ``build_loaders``."""
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

DATASET_NAMES = ("cifar10", "cifar100", "cifar10-dvs", "dvs-gesture", "imagenet", "synthetic",
                 "synthetic-dvs", "digits")
# spelling without '-' / '_' -> canonical name
_ALIASES = {n.replace("-", ""): n for n in DATASET_NAMES}
_ALIASES.update({"dvs128gesture": "dvs-gesture", "gesture": "dvs-gesture",
                 "ilsvrc2012": "imagenet"})
_NEEDS_DATA_DIR = ("cifar10", "cifar100", "cifar10-dvs", "dvs-gesture", "imagenet")
_DVS = ("cifar10-dvs", "dvs-gesture", "synthetic-dvs")
#: default T of the DVS datasets when ``T`` is None
DEFAULT_T = {"cifar10-dvs": 10, "dvs-gesture": 16, "synthetic-dvs": 4}


def canonical_name(name: str) -> str:
    """Normalize a dataset name: case, '_' -> '-', aliases (e.g. 'CIFAR10_DVS' -> 'cifar10-dvs')."""
    key = name.strip().lower().replace("_", "").replace("-", "")
    if key not in _ALIASES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return _ALIASES[key]


def build_dataset(name: str, data_dir=None, split: str = "train", T: Optional[int] = None,
                  **opts) -> Dataset:
    """Build one split of a dataset.

    Args:
        name: one of ``DATASET_NAMES`` (cifar10, cifar100, cifar10-dvs, dvs-gesture, imagenet,
            synthetic, synthetic-dvs, digits); aliases like 'CIFAR10_DVS' are accepted.
        data_dir: dataset folder (needed by the file-backed datasets).
        split: 'train' or 'test'.
        T: frames per sample for DVS datasets (default ``DEFAULT_T``); ignored by static
            datasets, whose images the model repeats over T (direct encoding).
        **opts: passed to the dataset class (e.g. ``size``, ``split_by``, ``teacher_T``,
            ``cache_dir``, ``augment``, ``num_samples``); ``teacher_T`` is ignored by static
            datasets for the same reason as T.

    Returns a Dataset with attributes ``num_classes``, ``in_channels``, ``input_size`` (h, w)
    and ``kind`` ('static': samples [C, h, w]; 'dvs': samples [T, 2, h, w], or a pair of
    frame tensors for T and teacher_T).
    """
    name = canonical_name(name)
    if name in _NEEDS_DATA_DIR and data_dir is None:
        raise ValueError(f"dataset {name!r} reads files: pass data_dir")
    if name in _DVS:
        T = DEFAULT_T[name] if T is None else T
    else:
        opts.pop("teacher_T", None)
    if name == "cifar10":
        from .cifar import CIFAR10
        return CIFAR10(data_dir, split, **opts)
    if name == "cifar100":
        from .cifar import CIFAR100
        return CIFAR100(data_dir, split, **opts)
    if name == "cifar10-dvs":
        from .cifar10_dvs import CIFAR10DVS
        return CIFAR10DVS(data_dir, split, T=T, **opts)
    if name == "dvs-gesture":
        from .dvs_gesture import DVSGesture
        return DVSGesture(data_dir, split, T=T, **opts)
    if name == "imagenet":
        from .imagenet import ImageNet
        return ImageNet(data_dir, split, **opts)
    if name == "synthetic":
        from .synthetic import SyntheticImages
        return SyntheticImages(split, **opts)
    if name == "synthetic-dvs":
        from .synthetic import SyntheticDVS
        return SyntheticDVS(split, T=T, **opts)
    from .digits import Digits
    return Digits(split, **opts)


def dataset_info(dataset: Dataset) -> Dict[str, Any]:
    """``{'num_classes', 'in_channels', 'input_size', 'kind', 'T', 'teacher_T'}`` of a dataset
    from ``build_dataset`` (T and teacher_T are None for static datasets)."""
    return {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels,
            "input_size": tuple(dataset.input_size), "kind": dataset.kind,
            "T": getattr(dataset, "T", None), "teacher_T": getattr(dataset, "teacher_T", None)}


def _rank0_first(build: Callable[[], Any]) -> Any:
    """Run ``build`` on rank 0 first (it fills the frame cache), then on the other ranks."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return build()
    if dist.get_rank() != 0:
        dist.barrier()
    out = build()
    if dist.get_rank() == 0:
        dist.barrier()
    return out


def build_loaders(name: str, data_dir=None, T: Optional[int] = None, batch_size: int = 64,
                  workers: int = 4, distributed: bool = False, seed: int = 0,
                  test_batch_size: Optional[int] = None, pin_memory: Optional[bool] = None,
                  drop_last: bool = False, world_size: Optional[int] = None,
                  rank: Optional[int] = None, **opts) -> Tuple[DataLoader, DataLoader]:
    """Train and test DataLoaders of a dataset -> ``(train_loader, test_loader)``.

    Args:
        name, data_dir, T, **opts: as for :func:`build_dataset`; ``flip`` and ``teacher_T``
            go to the train split only (evaluation runs the student's T).
        batch_size: per-process batch size (``test_batch_size`` defaults to it).
        workers: DataLoader worker processes (persistent when > 0).
        distributed: use ``DistributedSampler`` (shuffled for train, in order for test, which
            pads to equal shards); needs an initialized ``torch.distributed`` process group or
            explicit ``world_size`` and ``rank``. Call ``train_loader.sampler.set_epoch(epoch)``
            each epoch. In a process group rank 0 builds the datasets (and the frame cache)
            before the other ranks.
        seed: seed of the shuffling (and of the sampler when distributed); worker RNGs derive
            from it, so the augmentation is repeatable too.
        pin_memory: default ``torch.cuda.is_available()``.
        drop_last: drop the last incomplete training batch.

    Batches: static ``x`` [B, C, h, w]; DVS ``x`` [B, T, 2, h, w] (batch first), or a pair
    ``(x_T, x_teacher)`` with ``teacher_T`` (train loader only); labels int64 [B]. Dataset attributes are on
    ``loader.dataset`` (see :func:`dataset_info`).
    """
    test_opts = {k: v for k, v in opts.items() if k not in ("flip", "teacher_T")}
    train_set, test_set = _rank0_first(lambda: (
        build_dataset(name, data_dir, "train", T, **opts),
        build_dataset(name, data_dir, "test", T, **test_opts)))
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    train_sampler = test_sampler = None
    if distributed:
        dist = torch.distributed
        if (world_size is None or rank is None) and not (dist.is_available()
                                                         and dist.is_initialized()):
            raise RuntimeError("distributed=True needs torch.distributed.init_process_group() "
                               "first, or explicit world_size and rank")
        train_sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank,
                                           shuffle=True, seed=seed, drop_last=drop_last)
        test_sampler = DistributedSampler(test_set, num_replicas=world_size, rank=rank,
                                          shuffle=False)
    common = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=train_sampler is None,
                              sampler=train_sampler, drop_last=drop_last, generator=generator,
                              **common)
    test_loader = DataLoader(test_set, batch_size=test_batch_size or batch_size, shuffle=False,
                             sampler=test_sampler, **common)
    return train_loader, test_loader
