"""The fused multi-step LIF op, registered once with torch.library.

    tssd_fast::lif_forward   x [T, N], v0 [N] -> spikes, v_last, v_seq, h_saved, bits
    tssd_fast::lif_backward  grads of (spikes, v_seq, v_last) + saved -> grad_x, grad_v0

One schema, a CPU and a CUDA implementation (each dispatching on `backend` to a launcher of
tssd_fast.ops.registry), a fake implementation (shapes only, for torch.compile / FakeTensor),
and an autograd formula that calls lif_backward. Outputs are allocated here (tssd_fast.ops._alloc),
launchers only write them. Unused outputs are empty tensors: v_seq without store_v_seq,
h_saved / bits when no backward is needed or the other one is saved (bits for Rect + soft reset:
1 bit per neuron-step, H otherwise).
"""
import math
from typing import Optional, Tuple

import torch

from . import _alloc, registry
from .config import LIFConfig, window_rows
from .reference import compute_dtype

Tensors5 = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _cfg(tau, v_threshold, v_reset, hard_reset, decay_input, surrogate, alpha, detach_reset):
    return LIFConfig(tau=tau, v_threshold=v_threshold, v_reset=v_reset if hard_reset else None,
                     decay_input=decay_input, surrogate_id=surrogate, alpha=alpha,
                     detach_reset=detach_reset)


def _forward_specs(x, store_v_seq, save, cfg):
    """(shape, dtype) of (spikes, v_last, v_seq, h_saved, bits); shape (0,) marks an unused
    output. Shared by the real and the fake implementation."""
    T, N = x.shape
    cdt = compute_dtype(x.dtype)
    shapes = ((T, N), (N,), (T, N) if store_v_seq else (0,),
              (T, N) if save and not cfg.saves_window_bits else (0,),
              (window_rows(T), N) if save and cfg.saves_window_bits else (0,))
    return list(zip(shapes, (x.dtype, cdt, cdt, cdt, torch.uint8)))


@torch.library.custom_op("tssd_fast::lif_forward", mutates_args=(), device_types=("cpu", "cuda"))
def lif_forward(x: torch.Tensor, v0: torch.Tensor, tau: float, v_threshold: float,
                v_reset: float, hard_reset: bool, decay_input: bool, surrogate: int,
                alpha: float, detach_reset: bool, store_v_seq: bool, save: bool,
                backend: str) -> Tensors5:
    """Fused LIF forward over x [T, N] (contiguous) from v0 [N] (compute dtype)."""
    cfg = _cfg(tau, v_threshold, v_reset, hard_reset, decay_input, surrogate, alpha,
               detach_reset)
    outs = [_alloc.new_empty(s, d, x.device) for s, d in _forward_specs(x, store_v_seq, save, cfg)]
    spikes, v_last, v_seq, h_saved, bits = outs
    if x.numel() == 0:
        v_last.copy_(v0)
    else:
        registry.get_launcher(backend).forward(
            x, v0, spikes, v_last, v_seq if v_seq.numel() else None,
            h_saved if h_saved.numel() else None, bits if bits.numel() else None, cfg)
    return spikes, v_last, v_seq, h_saved, bits


@lif_forward.register_fake
def _(x, v0, tau, v_threshold, v_reset, hard_reset, decay_input, surrogate, alpha,
      detach_reset, store_v_seq, save, backend):
    cfg = _cfg(tau, v_threshold, v_reset, hard_reset, decay_input, surrogate, alpha,
               detach_reset)
    return tuple(x.new_empty(s, dtype=d) for s, d in _forward_specs(x, store_v_seq, save, cfg))


@torch.library.custom_op("tssd_fast::lif_backward", mutates_args=(),
                         device_types=("cpu", "cuda"))
def lif_backward(grad_s: torch.Tensor, grad_v_seq: Optional[torch.Tensor],
                 grad_v_last: Optional[torch.Tensor], h_saved: torch.Tensor,
                 bits: torch.Tensor, tau: float, v_threshold: float, v_reset: float,
                 hard_reset: bool, decay_input: bool, surrogate: int, alpha: float,
                 detach_reset: bool, backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused LIF backward (BPTT over the whole sequence): returns (grad_x, grad_v0)."""
    cfg = _cfg(tau, v_threshold, v_reset, hard_reset, decay_input, surrogate, alpha,
               detach_reset)
    T, N = grad_s.shape
    cdt = compute_dtype(grad_s.dtype)
    grad_x = _alloc.new_empty((T, N), grad_s.dtype, grad_s.device)
    grad_v0 = _alloc.new_empty((N,), cdt, grad_s.device)
    if grad_s.numel() == 0:
        if grad_v_last is not None:
            grad_v0.copy_(grad_v_last)
        else:
            grad_v0.zero_()
    else:
        registry.get_launcher(backend).backward(
            grad_s.contiguous(),
            None if grad_v_seq is None else grad_v_seq.contiguous(),
            None if grad_v_last is None else grad_v_last.contiguous(),
            h_saved if h_saved.numel() else None, bits if bits.numel() else None,
            grad_x, grad_v0, cfg)
    return grad_x, grad_v0


@lif_backward.register_fake
def _(grad_s, grad_v_seq, grad_v_last, h_saved, bits, tau, v_threshold, v_reset, hard_reset,
      decay_input, surrogate, alpha, detach_reset, backend):
    return grad_s.new_empty(grad_s.shape), grad_s.new_empty(
        grad_s.shape[1:], dtype=compute_dtype(grad_s.dtype))


_CFG_ARGS = ("tau", "v_threshold", "v_reset", "hard_reset", "decay_input", "surrogate",
             "alpha", "detach_reset")


def _setup_context(ctx, inputs, output):
    x, v0, *scalars = inputs
    ctx.cfg_args = tuple(scalars[:len(_CFG_ARGS)])
    ctx.backend = scalars[-1]
    ctx.x_meta = (x.shape, x.dtype, x.device)
    _, _, _, h_saved, bits = output
    ctx.save_for_backward(h_saved, bits)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_s, grad_v_last, grad_v_seq, _grad_h, _grad_bits):
    h_saved, bits = ctx.saved_tensors
    if h_saved.numel() == 0 and bits.numel() == 0 and math.prod(ctx.x_meta[0]) > 0:
        raise RuntimeError("tssd_fast::lif_forward ran without saving for backward (save=False) "
                           "but a gradient was requested; call it with save=True")
    if grad_s is None:  # only v_last / v_seq were used downstream
        shape, dtype, device = ctx.x_meta
        grad_s = torch.zeros(shape, dtype=dtype, device=device)
    if grad_v_seq is not None and grad_v_seq.numel() == 0:
        grad_v_seq = None
    grad_x, grad_v0 = lif_backward(grad_s, grad_v_seq, grad_v_last, h_saved, bits,
                                   *ctx.cfg_args, ctx.backend)
    return (grad_x, grad_v0) + (None,) * 11


lif_forward.register_autograd(_backward, setup_context=_setup_context)
