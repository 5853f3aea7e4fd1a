"""The pure-PyTorch LIF: a plain autograd loop over time (backend 'torch').

It is the oracle every fused backend is compared with, and the baseline of the benchmarks.
Operation order follows docs/NEURON.md and SpikingJelly's reference, and is the order of
csrc/lif_step.h, so fp32 spikes agree bitwise with the fused kernels.
"""
from typing import Callable, Optional, Tuple

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the neuron computes in: float64 for float64 storage, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def lif_step_ref(x: torch.Tensor, v: torch.Tensor, tau: float, decay_input: bool,
                 v_threshold: float, v_reset: Optional[float], surrogate_function: Callable,
                 detach_reset: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """One LIF step in plain PyTorch: returns (spike, V[t]) from X[t] and V[t-1]."""
    vr = 0.0 if v_reset is None else v_reset
    if decay_input:
        h = v + (x - (v - vr)) / tau
    else:
        h = v - (v - vr) / tau + x
    spike = surrogate_function(h - v_threshold)
    s = spike.detach() if detach_reset else spike
    if v_reset is None:
        v_next = h - s * v_threshold
    else:
        v_next = s * v_reset + (1.0 - s) * h
    return spike, v_next


def lif_multistep_ref(x_seq: torch.Tensor, v_init: torch.Tensor, tau: float, decay_input: bool,
                      v_threshold: float, v_reset: Optional[float],
                      surrogate_function: Callable, detach_reset: bool,
                      store_v_seq: bool = False
                      ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Multi-step LIF over x_seq [T, *] from V[-1] = v_init [*], as an autograd loop.

    Computes in float32 (float64 for float64 input); spikes come back in x_seq's dtype and
    voltages in the compute dtype. Returns (spike_seq [T, *], v_last [*], v_seq or None).
    """
    cdt = compute_dtype(x_seq.dtype)
    v = v_init.to(cdt)
    spikes, voltages = [], []
    for x in x_seq.to(cdt).unbind(0):
        spike, v = lif_step_ref(x, v, tau, decay_input, v_threshold, v_reset,
                                surrogate_function, detach_reset)
        spikes.append(spike)
        if store_v_seq:
            voltages.append(v)
    if spikes:
        spike_seq = torch.stack(spikes).to(x_seq.dtype)
    else:
        spike_seq = x_seq.new_empty(x_seq.shape)
    v_seq = None
    if store_v_seq:
        v_seq = torch.stack(voltages) if voltages else x_seq.new_empty(x_seq.shape, dtype=cdt)
    return spike_seq, v, v_seq
