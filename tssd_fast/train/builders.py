"""Thin adapters from a :class:`~tssd_fast.train.config.TrainConfig` to the package's pieces:
the data loaders (``tssd_fast.data``), the network (``tssd_fast.models``) and the training
method (``tssd_fast.distill``), plus the ANN method used to train KD/TSER teachers.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import DVS_DATASETS, TrainConfig, uses_teacher_run

TSSD_FAMILY = ("baseline", "tsd", "ssd", "tssd")


# ------------------------------------------------------------------------------------------ data

def loader_timesteps(cfg: TrainConfig) -> Tuple[Optional[int], Optional[int]]:
    """``(T, teacher_T)`` to ask the data layer for (only matters for event datasets).

    Event data: the frames are built for the student's ``T`` (evaluation at a smaller T uses
    the first frames, as ``tssd_fast.inference`` does; a larger T is refused). A separate
    teacher run gets its own ``T_teacher``-frame integration of the same events
    (``teacher_T``); ``shared_prefix`` runs the student as the first T steps of one teacher
    run, so the frames are built for ``T_teacher`` and the student and the evaluation use their
    first T (with ``split_by='window'`` that is exactly the T-frame integration; with the
    default 'number'/'time' slicing it covers the first T/T' of the recording).
    """
    if cfg.dataset not in DVS_DATASETS:
        return cfg.T, None
    if uses_teacher_run(cfg):
        if cfg.teacher_mode == "shared_prefix":
            return cfg.T_teacher, None
        return cfg.T, cfg.T_teacher
    return cfg.T, None


def build_data(cfg: TrainConfig, distributed: bool):
    """``(train_loader, test_loader)`` from ``tssd_fast.data.build_loaders``."""
    from ..data import build_loaders

    T, teacher_T = loader_timesteps(cfg)
    opts = dict(cfg.data_opts)
    if teacher_T is not None:
        opts["teacher_T"] = teacher_T
    return build_loaders(cfg.dataset, cfg.data_dir, T=T, batch_size=cfg.batch_size, workers=cfg.workers,
                         distributed=distributed, seed=cfg.seed, test_batch_size=cfg.test_batch_size,
                         **opts)


def dataset_meta(dataset) -> Dict[str, Any]:
    """``num_classes``, ``in_channels``, ``input_size`` (h, w), ``kind`` of a data-layer dataset."""
    return {"num_classes": int(dataset.num_classes), "in_channels": int(dataset.in_channels),
            "input_size": tuple(int(v) for v in dataset.input_size), "kind": dataset.kind,
            "frames": getattr(dataset, "T", None)}


# ----------------------------------------------------------------------------------------- model

def model_kwargs(cfg: TrainConfig, meta: Dict[str, Any]) -> Dict[str, Any]:
    """Keyword arguments of ``tssd_fast.models.build_model`` / ``build_ann`` shared by both."""
    h, w = meta["input_size"]
    kw: Dict[str, Any] = dict(num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                              width=cfg.width, memory=cfg.memory)
    if cfg.arch == "vgg9":
        kw["input_size"] = (h, w)
    else:
        kw["stem"] = cfg.stem if cfg.stem != "auto" else ("imagenet" if min(h, w) >= 112 else "cifar")
    return kw


def build_network(cfg: TrainConfig, meta: Dict[str, Any], weak: bool) -> nn.Module:
    """The spiking network (``method='ann'``: its ANN twin) for the dataset described by ``meta``.

    ``weak``: build the weak classifier (only the methods with spatial self-distillation use it;
    leaving it out keeps every parameter used, which plain DDP needs).
    """
    from ..models import build_ann, build_model

    kw = model_kwargs(cfg, meta)
    if cfg.method == "ann":
        return build_ann(cfg.arch, **kw)
    kw["backend"] = cfg.backend
    if not weak:
        kw["weak_stage"] = None
    elif cfg.weak_stage is not None:
        kw["weak_stage"] = cfg.weak_stage
    return build_model(cfg.arch, **kw)


# ---------------------------------------------------------------------------------------- method

def ann_input(x: torch.Tensor, T: int) -> torch.Tensor:
    """Loader layout -> ANN input: ``tssd_fast.models.ann_input`` (images as is, DVS frames as
    the mean of the first T), the same view the KD/TSER teachers get."""
    try:
        from ..models.encoding import ann_input as _ann_input
    except ImportError:  # older models package
        return x[:, :T].mean(1) if x.dim() == 5 else x
    return _ann_input(x, T)


class ANNMethod:
    """Cross-entropy training of the ANN twin (the teacher of ``kd`` / ``tser``).

    Same ``step`` interface as ``tssd_fast.distill`` methods. Event data are given to the ANN
    as the mean of their first ``T`` frames, as the KD/TSER teachers see them.
    """

    name = "ann"
    needs_weak = False

    def __init__(self, T: int):
        self.T = T

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Loader layout -> ANN input ``[B, C, H, W]``."""
        return ann_input(x, self.T)

    def step(self, model, x, y, epoch=0, epochs=1):
        """``(loss, parts, logits)`` of one batch (CE only)."""
        logits = model(self.inputs(x))
        loss = F.cross_entropy(logits, y)
        return loss, {"ce": loss.detach(), "loss": loss.detach()}, logits.detach()


def load_teacher(path: str, meta: Dict[str, Any], device) -> nn.Module:
    """The ANN teacher saved by a ``--method ann`` run (its checkpoint file), in eval mode."""
    from ..models import build_ann
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    tcfg = ckpt.get("config", {})
    if tcfg.get("method") != "ann":
        raise ValueError(f"--teacher {path}: expected the checkpoint of a --method ann run, got method "
                         f"{tcfg.get('method')!r}")
    tc = TrainConfig(**{k: v for k, v in tcfg.items() if k in TrainConfig.__dataclass_fields__})
    kw = model_kwargs(tc, meta)
    teacher = build_ann(tc.arch, **kw)
    teacher.load_state_dict(ckpt["model"])
    return teacher.to(device).eval()


def build_method(cfg: TrainConfig, teacher: Optional[nn.Module] = None):
    """The training method: ``tssd_fast.distill.make_method`` with the flags that were set."""
    if cfg.method == "ann":
        return ANNMethod(cfg.T)
    from ..distill import make_method

    hp: Dict[str, Any] = {"T": cfg.T}
    if cfg.method in TSSD_FAMILY:
        if uses_teacher_run(cfg):
            hp["T_teacher"] = cfg.T_teacher
        for k in ("alpha", "beta"):
            if getattr(cfg, k) is not None:
                hp[k] = getattr(cfg, k)
        if cfg.extension:
            hp["extension"] = True
        if cfg.teacher_ce:
            hp["teacher_ce"] = True
        if uses_teacher_run(cfg):
            hp["teacher_mode"] = cfg.teacher_mode
    else:
        for k in ("alpha", "tau"):
            if getattr(cfg, k) is not None:
                hp[k] = getattr(cfg, k)
        if cfg.method in ("kd", "tser"):
            hp["teacher"] = teacher
    return make_method(cfg.method, **hp)


def method_needs_weak(cfg: TrainConfig) -> bool:
    """True for the methods with spatial self-distillation (ssd, tssd)."""
    return cfg.method in ("ssd", "tssd")
