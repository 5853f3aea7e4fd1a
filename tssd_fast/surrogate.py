"""Surrogate spike functions: heaviside forward, a smooth derivative backward.

The three classes here are the ones every fused backend implements (ids in SURROGATE_IDS,
the same numbers as csrc/lif_step.h). They follow SpikingJelly's classes of the same names
(same `alpha` defaults and formulas), and `surrogate_spec` also recognises SpikingJelly's own
objects of those classes, without importing spikingjelly.

Derivatives, u = H - v_threshold (docs/NEURON.md):
    Rect(alpha):    alpha * 1{|u| < 0.5/alpha}
    Sigmoid(alpha): alpha * sig(alpha u) * (1 - sig(alpha u))
    ATan(alpha):    (alpha/2) / (1 + (pi/2 * alpha * u)^2)
"""
import math
from typing import Optional, Tuple

import torch
from torch import nn

SURROGATE_IDS = {"Rect": 0, "Sigmoid": 1, "ATan": 2}


def rect_grad(u: torch.Tensor, alpha: float) -> torch.Tensor:
    """Derivative of the rectangular surrogate at u = H - v_threshold."""
    return alpha * (u.abs() < 0.5 / alpha).to(u.dtype)


def sigmoid_grad(u: torch.Tensor, alpha: float) -> torch.Tensor:
    """Derivative of the sigmoid surrogate at u = H - v_threshold."""
    sg = torch.sigmoid(alpha * u)
    return alpha * sg * (1.0 - sg)


def atan_grad(u: torch.Tensor, alpha: float) -> torch.Tensor:
    """Derivative of the arctangent surrogate at u = H - v_threshold."""
    return (alpha / 2) / (1 + ((math.pi / 2 * alpha) * u) ** 2)


_GRADS = {0: rect_grad, 1: sigmoid_grad, 2: atan_grad}


class _SpikeFn(torch.autograd.Function):
    """heaviside(u) forward (u == 0 fires), surrogate derivative backward."""

    @staticmethod
    def forward(ctx, u, surrogate_id, alpha):
        ctx.save_for_backward(u)
        ctx.surrogate_id, ctx.alpha = surrogate_id, alpha
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (u,) = ctx.saved_tensors
        return grad_out * _GRADS[ctx.surrogate_id](u, ctx.alpha), None, None


class SurrogateBase(nn.Module):
    """A spike function with a surrogate gradient. Call it on u = H - v_threshold."""

    default_alpha = 1.0

    def __init__(self, alpha: Optional[float] = None, spiking: bool = True):
        super().__init__()
        if not spiking:
            raise ValueError(f"tssd_fast.surrogate.{type(self).__name__}: spiking=False (the "
                             "smooth primitive in forward) is not supported; use spiking=True")
        self.alpha = float(self.default_alpha if alpha is None else alpha)
        if not self.alpha > 0:
            raise ValueError(f"surrogate alpha must be > 0, got {alpha}")
        self.spiking = True

    @property
    def surrogate_id(self) -> int:
        return SURROGATE_IDS[type(self).__name__]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return _SpikeFn.apply(u, self.surrogate_id, self.alpha)

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative dS/dH evaluated at u = H - v_threshold."""
        return _GRADS[self.surrogate_id](u, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, spiking=True"


class Rect(SurrogateBase):
    """Rectangular window: derivative alpha on |u| < 0.5/alpha (the TSSD paper's, alpha=1)."""

    default_alpha = 1.0

    def __init__(self, alpha: float = 1.0, spiking: bool = True):
        super().__init__(alpha, spiking)


class Sigmoid(SurrogateBase):
    """Sigmoid surrogate (SpikingJelly's default, alpha=4)."""

    default_alpha = 4.0

    def __init__(self, alpha: float = 4.0, spiking: bool = True):
        super().__init__(alpha, spiking)


class ATan(SurrogateBase):
    """Arctangent surrogate (alpha=2)."""

    default_alpha = 2.0

    def __init__(self, alpha: float = 2.0, spiking: bool = True):
        super().__init__(alpha, spiking)


def surrogate_spec(fn) -> Optional[Tuple[int, float]]:
    """(surrogate id, alpha) of a surrogate object every backend implements, else None.

    Accepts this module's Rect / Sigmoid / ATan and SpikingJelly's classes of the same names
    (recognised by class name, module and attributes, so spikingjelly is never imported).
    SpikingJelly objects with spiking=False, or subclasses that may change the formula, give
    None: such a surrogate can only run on the pure-PyTorch backend.
    """
    cls = type(fn)
    name = cls.__name__
    if name not in SURROGATE_IDS:
        return None
    if isinstance(fn, SurrogateBase):
        return SURROGATE_IDS[name], fn.alpha
    if cls.__module__.startswith("spikingjelly.") and getattr(fn, "spiking", False):
        alpha = getattr(fn, "alpha", None)
        if isinstance(alpha, (int, float)) and alpha > 0:
            return SURROGATE_IDS[name], float(alpha)
    return None
