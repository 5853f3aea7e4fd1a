"""Counting rules for the LIF op, for SpikingJelly's op counters (`op_counter.FlopCounter`,
`op_counter.MemoryAccessCounter` under `DispatchCounterMode`), which see a fused op as one call
and count it as nothing unless told how:

    from spikingjelly.activation_based import op_counter
    from tssd_fast.counting import flop_rules, memory_access_rules
    flops = op_counter.FlopCounter(extra_rules=flop_rules())
    mem = op_counter.MemoryAccessCounter(extra_rules=memory_access_rules())
    with op_counter.DispatchCounterMode([flops, mem], strict=True):
        net(x).sum().backward()

FLOPs are the arithmetic of docs/NEURON.md's formulas per neuron and step, one per +, -, *, /,
comparison, exp or abs:

    forward   charge 4, fire 2 (subtract, compare), reset soft 2 / hard 4
    backward  surrogate Rect 3 / Sigmoid 6 / ATan 6 (from the saved H; 1 from the window bit),
              dV/dH soft 2 / hard 4 (detach_reset: 0 / 1), gH 3, dL/dX 1, dL/dV[t-1] 1,
              + 1 for dL/dV[t] from v_seq

Memory access is what the op reads and writes, in bytes: every input and output tensor once
(the saved H or window bits included), as the kernels move them.
"""
from typing import Callable, Dict

import torch

from .ops.config import FLAG_DETACH_RESET, FLAG_HARD_RESET, SURROGATE_SHIFT

_SURROGATE_FLOPS = {0: 3, 1: 6, 2: 6}


def _forward_flops(args, kwargs, out) -> int:
    x, flags = args[0], args[7]
    per = 4 + 2 + (4 if flags & FLAG_HARD_RESET else 2)
    return per * x.numel()


def _backward_flops(args, kwargs, out) -> int:
    grad_s, grad_v_seq, saved, flags = args[0], args[1], args[3], args[8]
    hard, detach = bool(flags & FLAG_HARD_RESET), bool(flags & FLAG_DETACH_RESET)
    bits = saved.dtype == torch.uint8
    sg = 1 if bits else _SURROGATE_FLOPS[(flags >> SURROGATE_SHIFT) & 3]
    dv_dh = (1 if hard else 0) if detach else (4 if hard else 2)
    per = sg + dv_dh + 3 + 1 + 1 + (1 if grad_v_seq is not None and grad_v_seq.numel() else 0)
    return per * grad_s.numel()


def _bytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def _tensors_bytes(args, kwargs, out) -> int:
    """Every tensor argument and output once (None and empty placeholders count 0)."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return sum(_bytes(a) for a in args) + sum(_bytes(o) for o in outs)


def _ops(name: str):
    """The overloads of tssd_fast::<name> and of its Python-launcher twin that exist here."""
    found = []
    for n in (name, name + "_py"):
        packet = getattr(torch.ops.tssd_fast, n, None)
        if packet is not None:
            found.append(packet.default)
    return found


def _load_ops() -> None:
    from .ops import lif_op, registry  # noqa: F401 - importing lif_op defines the _py ops
    registry.runs_on("cpp", "cpu")  # loads the compiled module, which defines the C++ op


def flop_rules() -> Dict[object, Callable]:
    """{op overload: rule(args, kwargs, out) -> FLOPs} for lif_forward / lif_backward."""
    _load_ops()
    rules = {op: _forward_flops for op in _ops("lif_forward")}
    rules.update({op: _backward_flops for op in _ops("lif_backward")})
    return rules


def memory_access_rules() -> Dict[object, Callable]:
    """{op overload: rule(args, kwargs, out) -> bytes read + written} for both ops."""
    _load_ops()
    return {op: _tensors_bytes for name in ("lif_forward", "lif_backward") for op in _ops(name)}


__all__ = ["flop_rules", "memory_access_rules"]
