"""LIFNode: a drop-in replacement for SpikingJelly's activation_based.neuron.LIFNode.

Same constructor (names, order, defaults; plus `backend`), same state semantics (`.v`, `.v_seq`,
`.reset()`, `step_mode` 's' or 'm'), so it works inside SpikingJelly networks and with
SpikingJelly's functional.reset_net; the computation runs on the fused op of tssd_fast.
"""
from typing import Callable, Optional

import torch
from torch import nn

from . import surrogate as _surrogate
from .functional import check_neuron_args, lif_multistep
from .ops.registry import check_backend_name


class LIFNode(nn.Module):
    """Leaky integrate-and-fire neuron (shared NEURON.md).

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
    """

    def __init__(self, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: Optional[float] = 0.0,
                 surrogate_function: Callable = _surrogate.Sigmoid(alpha=4.0),
                 detach_reset: bool = False, step_mode: str = "s", backend: str = "auto",
                 store_v_seq: bool = False):
        super().__init__()
        check_neuron_args(tau, v_threshold, v_reset, surrogate_function)
        check_backend_name(backend)
        self.tau = float(tau)
        self.decay_input = bool(decay_input)
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.surrogate_function = surrogate_function
        self.detach_reset = bool(detach_reset)
        self.step_mode = step_mode
        self.backend = backend
        self.store_v_seq = bool(store_v_seq)
        self.reset()

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
        return 0.0 if self.v_reset is None else self.v_reset

    def reset(self) -> None:
        """Forget the membrane potential (and v_seq): the next call starts from v_init."""
        self.v = self.v_init
        self.v_seq = None

    def _run(self, x_seq: torch.Tensor):
        return lif_multistep(x_seq, self.v, self.tau, self.decay_input, self.v_threshold,
                             self.v_reset, self.surrogate_function, self.detach_reset,
                             self.store_v_seq, self.backend)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: x [*] -> spikes [*]; the state moves on by one step."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"LIFNode input must be a torch.Tensor, got {type(x).__name__}")
        spikes, v, v_seq = self._run(x.unsqueeze(0))
        self.v = v
        if self.store_v_seq:
            self.v_seq = v_seq if self.v_seq is None else torch.cat((self.v_seq, v_seq))
        return spikes[0]

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """T steps: x_seq [T, *] -> spikes [T, *]; `.v` becomes V[T-1]."""
        spikes, v, v_seq = self._run(x_seq)
        self.v = v
        if self.store_v_seq:
            self.v_seq = v_seq
        return spikes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._step_mode == "s":
            return self.single_step_forward(x)
        return self.multi_step_forward(x)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, decay_input={self.decay_input}, v_threshold={self.v_threshold}"
                f", v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"step_mode={self._step_mode}, backend={self.backend}, "
                f"store_v_seq={self.store_v_seq}")


def reset_net(net: nn.Module) -> None:
    """Reset the state of every stateful module in `net` (LIFNode and any module with a
    `reset()` method, as SpikingJelly's functional.reset_net does)."""
    for m in net.modules():
        reset = getattr(m, "reset", None)
        if callable(reset):
            reset()
