"""LIFNode: a drop-in replacement for SpikingJelly's activation_based.neuron.LIFNode.

Same constructor (names, order, defaults; plus `backend`), same state semantics (`.v`, `.v_seq`,
`.reset()`, `step_mode` 's' or 'm'), so it works inside SpikingJelly networks and with
SpikingJelly's functional.reset_net; the computation runs on the fused op of tssd_fast.
"""
from typing import Callable, Optional

import torch
from torch import nn

from . import surrogate as _surrogate
from .functional import check_fused_surrogate, check_neuron_args, neuron_config
from .ops import lif_op, registry
from .ops.backends import CPP_OP

# Attributes that define the neuron: setting one re-validates and rebuilds the cached call plan.
_CONFIG_ATTRS = frozenset({"tau", "decay_input", "v_threshold", "v_reset", "surrogate_function",
                           "detach_reset", "backend", "store_v_seq"})


class LIFNode(nn.Module):
    """Leaky integrate-and-fire neuron (docs/NEURON.md).

    Args:
        tau: membrane time constant (> 1).
        decay_input: H = V + (X - (V - Vr)) / tau if True, else H = V - (V - Vr) / tau + X.
        v_threshold: firing threshold (H == threshold fires).
        v_reset: hard-reset voltage; None means soft reset (V = H - v_threshold * S).
        surrogate_function: tssd_fast.surrogate.Rect/Sigmoid/ATan, or SpikingJelly's objects
            of those classes. Another callable runs on the pure-PyTorch backend (with a warning).
        detach_reset: detach the reset path from the graph.
        step_mode: 's' (input [*], one step per call) or 'm' (input [T, *]).
        backend: 'auto' (fastest available; env TSSD_FAST_BACKEND overrides), 'torch',
            'cpp', 'cuda', 'triton' or 'cupy'.
        store_v_seq: keep V[0..T-1] in `.v_seq` (in 's' mode, the steps since reset()).

    State: `.v` is V[T-1] of the last call (a float before the first call), kept until
    `.reset()`; its dtype is the compute dtype (float32 for fp16/bf16/fp32 input).

    Arguments are validated here and whenever one of them is assigned, not on every call; the
    backend is resolved when the neuron first sees a (device, dtype), and TSSD_FAST_BACKEND is
    read then (assigning `backend`, even the same value, resolves again). A call then costs one
    C++ op call on the 'cpp' and 'cuda' backends, with the scalar start state passed as a number,
    not a tensor.
    """

    def __init__(self, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: Optional[float] = 0.0,
                 surrogate_function: Callable = _surrogate.Sigmoid(alpha=4.0),
                 detach_reset: bool = False, step_mode: str = "s", backend: str = "auto",
                 store_v_seq: bool = False):
        super().__init__()
        check_neuron_args(tau, v_threshold, v_reset, surrogate_function)
        registry.check_backend_name(backend)
        self.tau = float(tau)
        self.decay_input = bool(decay_input)
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.surrogate_function = surrogate_function
        self.detach_reset = bool(detach_reset)
        self.step_mode = step_mode
        self.backend = backend
        self.store_v_seq = bool(store_v_seq)
        self._configure()
        self.reset()

    def _configure(self) -> None:
        """Validate the neuron's arguments and cache what a call needs (raises on bad ones)."""
        check_neuron_args(self.tau, self.v_threshold, self.v_reset, self.surrogate_function)
        registry.check_backend_name(self.backend)
        spec = _surrogate.surrogate_spec(self.surrogate_function)
        cfg = neuron_config(self.tau, self.decay_input, self.v_threshold, self.v_reset, spec,
                            self.detach_reset)
        d = self.__dict__
        d["_cfg"] = cfg
        d["_op_args"] = cfg.op_args(bool(self.store_v_seq))
        d["_plans"] = {}  # (device, dtype) -> (backend name, kind)

    def __setattr__(self, name, value):
        if name in _CONFIG_ATTRS and "_cfg" in self.__dict__:
            old = getattr(self, name)
            super().__setattr__(name, value)
            try:
                self._configure()
            except Exception:
                super().__setattr__(name, old)
                raise
            return
        super().__setattr__(name, value)

    def _plan(self, x: torch.Tensor, key):
        """Resolve the backend for x's device and dtype (cached under key)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"LIFNode input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"the LIF input must be floating point, got {x.dtype}: convert it "
                            f"with x.float() (spike inputs too)")
        spec = check_fused_surrogate(self.surrogate_function, self.backend)
        name = registry.resolve_backend(self.backend, x.device, x.dtype,
                                        fused_ok=spec is not None)
        plan = (name, registry.info(name).kind)
        self._plans[key] = plan
        return plan

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, mode: str) -> None:
        if mode not in ("s", "m"):
            raise ValueError(f"step_mode must be 's' (single step) or 'm' (multi step), got "
                             f"{mode!r}")
        self._step_mode = mode

    @property
    def v_init(self) -> float:
        """V[-1] after reset: v_reset, or 0 for soft reset."""
        return self._cfg.v_init

    def reset(self) -> None:
        """Forget the membrane potential (and v_seq): the next call starts from v_init."""
        # Plain attributes written straight into __dict__: nn.Module.__setattr__ costs more
        # than the whole op call on a small input.
        d = self.__dict__
        d["v"] = self._cfg.v_init
        d["v_seq"] = None

    def _run(self, x_seq: torch.Tensor):
        """(spikes, v_last, v_seq or None) of x_seq [T, *] from the current state."""
        key = (x_seq.device, x_seq.dtype)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(x_seq, key)
        if plan[1] is CPP_OP:  # the fast path: straight into the C++ op
            fwd = lif_op.traced_forward if _is_compiling() else lif_op.eager_forward
            v = self.v
            if isinstance(v, torch.Tensor):
                if v.shape != x_seq.shape[1:] or v.device != x_seq.device:
                    lif_op.check_state(v, x_seq)  # raises, saying to call reset()
                out = fwd(x_seq, v, 0.0, *self._op_args)
            else:
                out = fwd(x_seq, None, v, *self._op_args)
            return out[0], out[1], (out[2] if self.store_v_seq else None)
        return lif_op.run(plan[0], self._cfg, self._op_args, x_seq, self.v, self.store_v_seq,
                          self.surrogate_function)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: x [*] -> spikes [*]; the state moves on by one step."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"LIFNode input must be a torch.Tensor, got {type(x).__name__}")
        spikes, v, v_seq = self._run(x.unsqueeze(0))
        self.__dict__["v"] = v
        if self.store_v_seq:
            self.v_seq = v_seq if self.v_seq is None else torch.cat((self.v_seq, v_seq))
        return spikes[0]

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """T steps: x_seq [T, *] -> spikes [T, *]; `.v` becomes V[T-1]."""
        spikes, v, v_seq = self._run(x_seq)
        self.__dict__["v"] = v
        if self.store_v_seq:
            self.v_seq = v_seq
        return spikes

    def detach(self) -> "LIFNode":
        """Cut the graph at the current state (truncated BPTT): `.v` (and `.v_seq`) stay, without
        their history. SpikingJelly's functional.detach_net(net) calls this on every neuron."""
        if isinstance(self.v, torch.Tensor):
            self.v = self.v.detach()
        if isinstance(self.v_seq, torch.Tensor):
            self.v_seq = self.v_seq.detach()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._step_mode == "s":
            return self.single_step_forward(x)
        return self.multi_step_forward(x)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, decay_input={self.decay_input}, v_threshold={self.v_threshold}"
                f", v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"step_mode={self._step_mode}, backend={self.backend}, "
                f"store_v_seq={self.store_v_seq}")


_is_compiling = torch.compiler.is_compiling


def reset_net(net: nn.Module) -> None:
    """Reset the state of every stateful module in `net` (LIFNode and any module with a
    `reset()` method, as SpikingJelly's functional.reset_net does)."""
    for m in net.modules():
        reset = _reset_of(m)
        if callable(reset):
            reset()


_MODULE_GETATTR = nn.Module.__getattr__


def _reset_of(m: nn.Module):
    """getattr(m, "reset", None), answered without the lookup for the common module that has no
    `reset`: there nn.Module.__getattr__ builds an AttributeError. reset_net runs twice per
    network run; for a VGG-9 (60 modules) this took it from 76 to 60 µs. Any class that could
    supply `reset` another way (its own __getattr__ / __getattribute__) takes the full lookup."""
    cls = type(m)
    if (not hasattr(cls, "reset") and cls.__getattr__ is _MODULE_GETATTR
            and cls.__getattribute__ is object.__getattribute__):
        d = m.__dict__
        if ("reset" not in d and "reset" not in d.get("_modules", ())
                and "reset" not in d.get("_parameters", ()) and "reset" not in d.get("_buffers", ())):
            return None
    return getattr(m, "reset", None)
