"""Optimisers and learning-rate schedules of the presets (SGD + step decay; Lamb + cosine)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    """LAMB (You et al., 2020): Adam moments with decoupled weight decay and a layer-wise trust ratio.

    Per parameter: ``u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p``;
    ``p -= lr * (||p|| / ||u||) * u`` (trust ratio 1 when either norm is 0). torch has no Lamb;
    this is the plain algorithm of the paper (no gradient pre-normalisation: use ``grad_clip``).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        if lr <= 0 or eps <= 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1:
            raise ValueError(f"invalid Lamb hyper-parameters lr={lr} betas={betas} eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                update = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt_().add_(group["eps"]))
                if group["weight_decay"]:
                    update.add_(p.float(), alpha=group["weight_decay"])
                w_norm, u_norm = p.float().norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_((update * trust).to(p.dtype), alpha=-group["lr"])
        return loss


def build_optimizer(cfg, params) -> Optimizer:
    """SGD (momentum, the paper), AdamW or Lamb from ``cfg.optimizer``, ``cfg.lr``, ``cfg.weight_decay``."""
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lamb":
        return Lamb(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def build_scheduler(cfg, optimizer: Optimizer):
    """Per-epoch schedule: ``step`` (x ``lr_gamma`` every ``lr_step`` epochs, the paper), ``cosine``
    (to 0 over ``schedule_epochs`` or ``epochs``) or ``constant``."""
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    if cfg.scheduler == "cosine":
        period = max(1, cfg.schedule_epochs or cfg.epochs)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * min(e, period) / period)))
    if cfg.scheduler == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}")
