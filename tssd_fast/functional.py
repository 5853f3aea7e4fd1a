"""The functional form of the LIF neuron: `lif_multistep`, for users who do not want a module.

It validates its arguments on every call (LIFNode validates once, at construction and on
attribute change), picks the backend and calls tssd_fast.ops.lif_op.run, as LIFNode does.
"""
import math
import numbers
import warnings
from typing import Callable, Optional, Tuple, Union

import torch

from . import surrogate as _surrogate
from .ops import lif_op
from .ops.config import LIFConfig
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


def check_fused_surrogate(surrogate_function, backend: str):
    """surrogate_spec(surrogate_function), or None for a surrogate only the 'torch' backend
    runs: then a fused backend named explicitly raises, and 'auto' warns once per class."""
    spec = _surrogate.surrogate_spec(surrogate_function)
    if spec is None:
        if backend not in ("auto", "torch"):
            raise ValueError(
                f"backend {backend!r} implements only tssd_fast.surrogate.Rect/Sigmoid/ATan (or "
                f"SpikingJelly's objects of those classes); got {surrogate_function!r}. Use "
                f"backend='torch' for other surrogate functions")
        key = type(surrogate_function).__qualname__
        if key not in _warned_surrogates and backend == "auto":
            _warned_surrogates.add(key)
            warnings.warn(f"tssd_fast: surrogate {key} has no fused kernel; running the "
                          f"pure-PyTorch backend", RuntimeWarning, stacklevel=4)
    return spec


def lif_multistep(x_seq: torch.Tensor, v_init: Union[None, float, torch.Tensor] = None,
                  tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                  v_reset: Optional[float] = 0.0, surrogate_function: Optional[Callable] = None,
                  detach_reset: bool = False, store_v_seq: bool = False,
                  backend: str = "auto"
                  ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Run the LIF neuron over x_seq [T, *] (any trailing dims): docs/NEURON.md.

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

    spec = check_fused_surrogate(surrogate_function, backend)
    name = resolve_backend(backend, x_seq.device, x_seq.dtype, fused_ok=spec is not None)
    cfg = neuron_config(tau, decay_input, v_threshold, v_reset, spec, detach_reset)
    return lif_op.run(name, cfg, cfg.op_args(store_v_seq), x_seq, v_init, store_v_seq,
                      surrogate_function)


def neuron_config(tau, decay_input, v_threshold, v_reset, spec, detach_reset) -> LIFConfig:
    """The LIFConfig of validated neuron arguments; spec is surrogate_spec(...) or None (a
    surrogate only the reference runs: its id and alpha are then unused)."""
    sid, alpha = spec if spec is not None else (1, 4.0)
    return LIFConfig(tau=float(tau), v_threshold=float(v_threshold),
                     v_reset=None if v_reset is None else float(v_reset),
                     decay_input=bool(decay_input), surrogate_id=int(sid), alpha=float(alpha),
                     detach_reset=bool(detach_reset))
