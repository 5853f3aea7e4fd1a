"""Architecture registry: build a spiking network or its ANN twin by name."""
from __future__ import annotations

from typing import Callable

from .base import StagedNet
from .resnet import resnet18, resnet34
from .vgg import vgg9

ARCHITECTURES: dict[str, Callable[..., StagedNet]] = {"vgg9": vgg9, "resnet18": resnet18, "resnet34": resnet34}


def build_model(arch: str, **kwargs) -> StagedNet:
    """Build ``arch`` (one of ``ARCHITECTURES``) with keyword arguments of its builder."""
    try:
        builder = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}") from None
    return builder(**kwargs)


def build_ann(arch: str, **kwargs) -> StagedNet:
    """The ANN twin of ``arch``: same structure with ReLU for LIF, one pass, ``[B, C, H, W] -> [B, classes]``.

    Usable as the teacher of the ``kd`` and ``tser`` methods.
    """
    for k in ("neuron", "neuron_kwargs", "backend", "weak_stage", "weak_channels", "spiking"):
        kwargs.pop(k, None)
    return build_model(arch, spiking=False, weak_stage=None, **kwargs)
