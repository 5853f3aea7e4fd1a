"""Inference at any T, and early exit through the weak classifier.

Inputs are in loader layout (static ``[B, C, H, W]`` or DVS ``[B, T_max, C, H, W]``, see
``tssd_fast.models.encoding``); ``batches`` is any iterable of ``(x, y)`` (e.g. a DataLoader).
The functions run the model in eval mode without gradients and restore its previous mode.

Compute estimate: dense multiply-accumulates (MACs) of every ``Conv2d`` and ``Linear`` for one
sample and one timestep, counted with forward hooks (BN folds into the conv at inference; pooling,
neurons and additions are ignored). Every layer runs once per timestep, so the ratios hold for any
T. An exited sample costs stages 1..k plus the weak head; any other sample costs the whole network
plus the weak head; ``saved_compute = 1 - mean cost / full network cost`` (negative when few
samples exit, since the weak head is paid by everyone).
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models.base import StagedNet, reset_states
from .models.encoding import to_sequence


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield next(model.parameters()).device
    finally:
        reset_states(model)
        model.train(was_training)


def evaluate(model: StagedNet, batches: Iterable, T: int) -> dict:
    """Top-1 accuracy of the time-averaged logits at ``T`` timesteps: ``{'accuracy', 'n'}``."""
    correct = n = 0
    with _eval_mode(model) as device:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            pred = model(to_sequence(x, T)).mean(0).argmax(-1)
            correct += (pred == y).sum().item()
            n += y.numel()
    return {"accuracy": correct / max(n, 1), "n": n}


@torch.no_grad()
def early_exit_predict(model: StagedNet, x: torch.Tensor, T: int, threshold: float):
    """Predictions with early exit: ``(pred [B], exited [B] bool)``.

    A sample exits at the weak classifier when ``max softmax(mean_t weak logits) >= threshold``;
    the others continue from the stored stage-k feature through the later stages. Call in eval
    mode (BN with running statistics makes the per-sample results independent of the batch).
    """
    if model.weak is None:
        raise ValueError("early exit needs the weak classifier: use the training model, not strip_weak(model)")
    k = model.weak_stage
    reset_states(model)
    h = model.run_stages(to_sequence(x, T), 0, k)
    conf, pred = F.softmax(model.weak(h).mean(0), dim=-1).max(-1)
    exited = conf >= threshold
    rest = ~exited
    if rest.any():
        pred[rest] = model.head(model.run_stages(h[:, rest], k, len(model.stages))).mean(0).argmax(-1)
    reset_states(model)
    return pred, exited


def macs_per_sample(model: StagedNet, sample: torch.Tensor) -> dict:
    """Dense Conv2d/Linear MACs for one sample and one timestep, split by part.

    ``sample`` is one loader-layout input (batch of 1). Returns ``{'stages': [per stage],
    'head': int, 'weak': int, 'total': stages + head}`` (``weak`` is 0 without a weak head).
    """
    counts: dict[nn.Module, int] = {}

    def hook(mod, inp, out):
        per_out = mod.in_features if isinstance(mod, nn.Linear) else (
            mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1])
        counts[mod] = counts.get(mod, 0) + out.numel() * per_out

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with _eval_mode(model) as device:
            model(to_sequence(sample[:1].to(device), 1), return_weak=model.weak is not None)
    finally:
        for h in handles:
            h.remove()

    def of(part):
        return sum(counts.get(m, 0) for m in part.modules()) if part is not None else 0

    stages = [of(s) for s in model.stages]
    return {"stages": stages, "head": of(model.head), "weak": of(model.weak), "total": sum(stages) + of(model.head)}


def early_exit_evaluate(model: StagedNet, batches: Iterable, T: int, threshold: float) -> dict:
    """Accuracy with early exit at ``threshold``, the exited fraction and the estimated saved compute.

    Returns ``{'accuracy', 'exit_fraction', 'exit_accuracy' (on exited samples, nan if none),
    'saved_compute', 'macs': macs_per_sample(...), 'n'}``; see the module docstring for the estimate.
    """
    correct = exited_n = exited_correct = n = 0
    macs = None
    with _eval_mode(model) as device:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            if macs is None:
                macs = macs_per_sample(model, x)
            pred, exited = early_exit_predict(model, x, T, threshold)
            hit = pred == y
            correct += hit.sum().item()
            exited_n += exited.sum().item()
            exited_correct += (hit & exited).sum().item()
            n += y.numel()
    frac = exited_n / max(n, 1)
    early = sum(macs["stages"][: model.weak_stage]) + macs["weak"]
    mean_cost = frac * early + (1 - frac) * (macs["total"] + macs["weak"])
    return {"accuracy": correct / max(n, 1), "exit_fraction": frac,
            "exit_accuracy": exited_correct / exited_n if exited_n else float("nan"),
            "saved_compute": 1 - mean_cost / macs["total"], "macs": macs, "n": n}
