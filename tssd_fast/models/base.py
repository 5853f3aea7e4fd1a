"""Common frame of all networks: a list of stages, a head, and an optional weak classifier."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .encoding import direct_encode


def reset_states(module: nn.Module) -> None:
    """Reset the membrane state of every spiking neuron in ``module`` (``tssd_fast.reset_net``)."""
    import tssd_fast

    tssd_fast.reset_net(module)


class StagedNet(nn.Module):
    """A classifier made of ``stages`` (run in order) and a ``head``, with a weak head after a stage.

    Spiking mode (``spiking=True``): ``forward(x, T)`` takes a static image batch ``[B, C, H, W]``
    (direct encoding: repeated ``T`` times) or a time-first sequence ``[T, B, C, H, W]`` and returns
    per-timestep logits ``[T, B, classes]``; ``return_weak=True`` also returns the weak head's
    ``[T, B, classes]``. Neuron states are reset at the start of every call, so each call is one
    independent run. ANN twin (``spiking=False``): ``forward(x)`` takes ``[B, C, H, W]`` and returns
    ``[B, classes]`` (one pass, ReLU in place of LIF, no weak head).

    Stages are numbered from 1 as in docs/NETWORKS.md; ``weak_stage = k`` attaches the weak head
    to the output of stage ``k``.
    """

    def __init__(self, stages: list[nn.Module], head: nn.Module, weak: nn.Module | None,
                 weak_stage: int | None, spiking: bool):
        super().__init__()
        if (weak is None) != (weak_stage is None):
            raise ValueError("weak and weak_stage must be given together")
        if weak_stage is not None and not 1 <= weak_stage < len(stages):
            raise ValueError(f"weak_stage must be in 1..{len(stages) - 1}, got {weak_stage}")
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.weak = weak
        self.weak_stage = weak_stage
        self.spiking = spiking

    def as_sequence(self, x: torch.Tensor, T: int | None) -> torch.Tensor:
        """``[B, C, H, W]`` with ``T`` → repeated ``[T, B, C, H, W]``; a 5-D ``x`` is used as is."""
        if x.dim() == 5:
            if T is not None and T != x.shape[0]:
                raise ValueError(f"x has {x.shape[0]} timesteps but T={T} was passed")
            return x
        if x.dim() != 4 or T is None:
            raise ValueError("pass x as [B, C, H, W] with T, or as a time-first [T, B, C, H, W] sequence")
        return direct_encode(x, T)

    def run_stages(self, h: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run stages ``start+1 .. stop`` (1-based, inclusive) on the sequence ``h``."""
        for stage in self.stages[start:stop]:
            h = stage(h)
        return h

    def forward(self, x: torch.Tensor, T: int | None = None, return_weak: bool = False):
        """Per-timestep logits (see the class docstring); ``(logits, weak_logits)`` with ``return_weak``."""
        if not self.spiking:
            if x.dim() != 4 or T is not None or return_weak:
                raise ValueError("the ANN twin takes x as [B, C, H, W] only (no T, no weak head)")
            return self.head(self.run_stages(x.unsqueeze(0), 0, len(self.stages))).squeeze(0)
        if return_weak and self.weak is None:
            raise ValueError("this model has no weak classifier (it was stripped or built without one)")
        seq = self.as_sequence(x, T)
        reset_states(self)
        if not return_weak:
            return self.head(self.run_stages(seq, 0, len(self.stages)))
        h = self.run_stages(seq, 0, self.weak_stage)
        weak = self.weak(h)
        out = self.head(self.run_stages(h, self.weak_stage, len(self.stages)))
        return out, weak

    def inference_model(self) -> "StagedNet":
        """A deep copy without the weak classifier (its parameters are gone; outputs are unchanged)."""
        return strip_weak(self)


def strip_weak(model: StagedNet) -> StagedNet:
    """Return a deep copy of ``model`` with the weak head removed: exactly the inference network."""
    reset_states(model)  # a membrane state still attached to an autograd graph cannot be deep-copied
    stripped = copy.deepcopy(model)
    stripped.weak = None
    stripped.weak_stage = None
    return stripped
