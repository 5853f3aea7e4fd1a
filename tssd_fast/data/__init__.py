"""Datasets for tssd_fast: static images (CIFAR-10/100, ImageNet folders, digits, synthetic) and
event data integrated into frames (CIFAR10-DVS, DVS128 Gesture, synthetic DVS).

Entry points: :func:`build_dataset` and :func:`build_loaders`; docs/DATA.md describes the
folder layouts, the frame integration and the cache. Optional packages (tqdm, pillow,
scikit-learn) are imported only where used.
"""
from .aedat import (cut_events, decode_cifar10dvs_address, load_events_npz, read_aedat2_raw,
                    read_aedat31_polarity, read_cifar10dvs_aedat)
from .build import (DATASET_NAMES, DEFAULT_T, build_dataset, build_loaders, canonical_name,
                    dataset_info)
from .cifar import CIFAR10, CIFAR100, load_cifar_pickle
from .cifar10_dvs import CIFAR10DVS, CIFAR10DVS_CLASSES
from .digits import Digits
from .dvs_gesture import GESTURE_CLASSES, DVSGesture, read_gesture_labels
from .event_dataset import EventFrameDataset, EventSample
from .events import downsample_frames, frame_index, integrate_events
from .frame_cache import FrameCache
from .imagenet import ImageFolder, ImageNet
from .splits import split_per_class
from .synthetic import SyntheticDVS, SyntheticImages
from .transforms import cifar_transform, direct_encode

__all__ = [
    "build_dataset", "build_loaders", "dataset_info", "canonical_name", "DATASET_NAMES",
    "DEFAULT_T",
    "CIFAR10", "CIFAR100", "CIFAR10DVS", "DVSGesture", "ImageNet", "ImageFolder",
    "SyntheticImages", "SyntheticDVS", "Digits", "EventFrameDataset", "EventSample",
    "FrameCache", "CIFAR10DVS_CLASSES", "GESTURE_CLASSES",
    "integrate_events", "frame_index", "downsample_frames", "direct_encode", "cifar_transform",
    "read_cifar10dvs_aedat", "read_aedat2_raw", "decode_cifar10dvs_address",
    "read_aedat31_polarity", "load_events_npz", "cut_events", "read_gesture_labels",
    "load_cifar_pickle", "split_per_class",
]
