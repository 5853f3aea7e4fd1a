"""The functional form of the LIF neuron: `lif_multistep`, for users who do not want a module.

It validates the input, picks the backend, flattens [T, *] to [T, N] and calls either the
pure-PyTorch reference ('torch') or the registered fused op (every other backend).
"""
import math
import numbers
import warnings
from typing import Callable, Optional, Tuple, Union

import torch

from . import surrogate as _surrogate
from .ops import lif_op  # noqa: F401  (registers torch.ops.tssd_fast.*)
from .ops.reference import compute_dtype, lif_multistep_ref
from .ops.registry import check_backend_name, resolve_backend

_warned_surrogates = set()


def check_neuron_args(tau, v_threshold, v_reset, surrogate_function) -> None:
    """Validate the neuron's scalars and surrogate (shared by LIFNode and lif_multistep)."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not tau > 1.0:
        raise ValueError(f"tau must be a number > 1 (as in SpikingJelly), got {tau!r}")
    for name, val in (("v_threshold", v_threshold), ("v_reset", v_reset)):
        if val is None and name == "v_reset":
            continue
        if isinstance(val, bool) or not isinstance(val, numbers.Real) or not math.isfinite(val):
            raise ValueError(f"{name} must be a finite number{' or None' if name == 'v_reset' else ''}"
                             f", got {val!r}")
    if not callable(surrogate_function):
        raise TypeError(f"surrogate_function must be callable (e.g. tssd_fast.surrogate.Rect()), "
                        f"got {surrogate_function!r}")


def _memory_order(x: torch.Tensor) -> list:
    """A permutation of x's dims, time first, under which x is contiguous (x's memory order,
    e.g. channels_last), or the identity when there is none (the op then copies)."""
    ident = list(range(x.dim()))
    if x.is_contiguous():
        return ident
    perm = [0] + sorted(range(1, x.dim()), key=lambda d: -x.stride(d))
    return perm if x.permute(perm).is_contiguous() else ident


def _state_tensor(v_init, x_seq: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
    """V[-1] as a tensor of shape x_seq.shape[1:] in the compute dtype."""
    shape = x_seq.shape[1:]
    if isinstance(v_init, torch.Tensor):
        if v_init.shape != shape:
            raise RuntimeError(
                f"the neuron state has shape {tuple(v_init.shape)} but the input needs "
                f"{tuple(shape)} (input {tuple(x_seq.shape)}, [T, *]): call reset() on the "
                f"neuron (or tssd_fast.reset_net(model)) before feeding a new shape")
        if v_init.device != x_seq.device:
            raise RuntimeError(f"the neuron state is on {v_init.device} but the input is on "
                               f"{x_seq.device}: call reset() after moving the model")
        return v_init.to(cdt)
    return torch.full(shape, float(v_init), dtype=cdt, device=x_seq.device)


def lif_multistep(x_seq: torch.Tensor, v_init: Union[None, float, torch.Tensor] = None,
                  tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                  v_reset: Optional[float] = 0.0, surrogate_function: Optional[Callable] = None,
                  detach_reset: bool = False, store_v_seq: bool = False,
                  backend: str = "auto"
                  ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Run the LIF neuron over x_seq [T, *] (any trailing dims): shared NEURON.md semantics.

    Args:
        x_seq: input current [T, *], floating point (fp16/bf16 are computed in fp32).
        v_init: V[-1]: None (v_reset, or 0 for soft reset), a float, or a tensor of shape [*].
        tau, decay_input, v_threshold, v_reset, detach_reset: as SpikingJelly's LIFNode;
            v_reset=None is soft reset (subtract the threshold).
        surrogate_function: tssd_fast.surrogate.Rect/Sigmoid/ATan or SpikingJelly's objects of
            those classes (default Sigmoid(alpha=4)). Any other callable runs on the 'torch'
            backend only.
        store_v_seq: also return V[0..T-1].
        backend: 'auto' (default; TSSD_FAST_BACKEND overrides), 'torch', 'cpp', 'cuda',
            'triton' or 'cupy'.

    Returns:
        (spike_seq [T, *] in x_seq's dtype, v_last [*], v_seq [T, *] or None); voltages are in
        the compute dtype (float32, or float64 for float64 input).
    """
    if not isinstance(x_seq, torch.Tensor):
        raise TypeError(f"x_seq must be a torch.Tensor, got {type(x_seq).__name__}")
    if not x_seq.is_floating_point():
        raise TypeError(f"the LIF input must be floating point, got {x_seq.dtype}: convert it "
                        f"with x.float() (spike inputs too)")
    if x_seq.dim() == 0:
        raise ValueError("multi-step input must be [T, *] with at least one dimension; got a "
                         "0-dim tensor (use step_mode='s' for single steps)")
    surrogate_function = _surrogate.Sigmoid() if surrogate_function is None else surrogate_function
    check_neuron_args(tau, v_threshold, v_reset, surrogate_function)
    check_backend_name(backend)
    v_init = (0.0 if v_reset is None else v_reset) if v_init is None else v_init

    spec = _surrogate.surrogate_spec(surrogate_function)
    if spec is None:
        if backend not in ("auto", "torch"):
            raise ValueError(
                f"backend {backend!r} implements only tssd_fast.surrogate.Rect/Sigmoid/ATan (or "
                f"SpikingJelly's objects of those classes); got {surrogate_function!r}. Use "
                f"backend='torch' for other surrogate functions")
        key = type(surrogate_function).__qualname__
        if key not in _warned_surrogates:
            _warned_surrogates.add(key)
            warnings.warn(f"tssd_fast: surrogate {key} has no fused kernel; running the "
                          f"pure-PyTorch backend", RuntimeWarning, stacklevel=2)
    name = resolve_backend(backend, x_seq.device, x_seq.dtype, fused_ok=spec is not None)
    cdt = compute_dtype(x_seq.dtype)
    v0 = _state_tensor(v_init, x_seq, cdt)
    if name == "torch":
        return lif_multistep_ref(x_seq, v0, float(tau), bool(decay_input), float(v_threshold),
                                 None if v_reset is None else float(v_reset),
                                 surrogate_function, bool(detach_reset), store_v_seq)

    T = x_seq.shape[0]
    # Elementwise in the neuron dims: run on x's own memory order (e.g. channels_last) instead
    # of copying it to contiguous, and hand the outputs back in the same layout, as torch's
    # elementwise ops do.
    perm = _memory_order(x_seq)
    inv = [perm.index(d) for d in range(len(perm))]
    xs = x_seq.permute(perm)
    N = math.prod(xs.shape[1:])
    x2 = xs.reshape(T, N).contiguous()
    v0 = v0.permute([d - 1 for d in perm[1:]]).reshape(N).contiguous()
    save = torch.is_grad_enabled() and (x2.requires_grad or v0.requires_grad)
    spikes, v_last, v_seq, _, _ = torch.ops.tssd_fast.lif_forward(
        x2, v0, float(tau), float(v_threshold), 0.0 if v_reset is None else float(v_reset),
        v_reset is not None, bool(decay_input), spec[0], spec[1], bool(detach_reset),
        bool(store_v_seq), save, name)
    return (spikes.reshape(xs.shape).permute(inv),
            v_last.reshape(xs.shape[1:]).permute([d - 1 for d in inv[1:]]),
            v_seq.reshape(xs.shape).permute(inv) if store_v_seq else None)
