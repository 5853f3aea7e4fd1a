"""The neuron's configuration, one record for the op, the module, the benchmarks and the tests.

`LIFConfig` holds the scalars of docs/NEURON.md; `op_args()` packs them the way the op's schema
takes them (four floats and an int of flags, csrc/lif_host.h), so no caller re-derives a
flag or a scalar. `memory_order` is the layout rule of the op (the same as memory_order in
csrc/lif_host.h), used by the fake implementation and the Python-launcher op.
"""
import functools
import math
import struct
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

# Bits of the op's `flags` argument: the same numbers as csrc/lif_host.h.
FLAG_HARD_RESET = 1
FLAG_DECAY_INPUT = 2
FLAG_DETACH_RESET = 4
FLAG_STORE_V_SEQ = 8
FLAG_SAVE = 16  # save H / window bits for backward (the C++ autograd formula sets it itself)
SURROGATE_SHIFT = 5  # surrogate id (0 Rect, 1 Sigmoid, 2 ATan) in bits 5-6
FLAG_GRAD_V0 = 128  # backward: compute grad_v0 [*] (else [0]); the autograd formulas set it


@dataclass(frozen=True)
class LIFConfig:
    """Scalars of one LIF neuron. v_reset None means soft reset. surrogate_id: 0 Rect,
    1 Sigmoid, 2 ATan (tssd_fast.surrogate.SURROGATE_IDS)."""

    tau: float
    v_threshold: float
    v_reset: Optional[float]
    decay_input: bool
    surrogate_id: int
    alpha: float
    detach_reset: bool

    @property
    def hard_reset(self) -> bool:
        return self.v_reset is not None

    @property
    def v_reset_value(self) -> float:
        """Vr of the charge equation: v_reset, or 0 for soft reset."""
        return 0.0 if self.v_reset is None else float(self.v_reset)

    @property
    def v_init(self) -> float:
        """V[-1] of a fresh neuron: v_reset, or 0 for soft reset."""
        return self.v_reset_value

    @property
    def saves_window_bits(self) -> bool:
        """Rect + soft reset: backward needs only the window bit, not H."""
        return window_bits_saved(self.flags())

    @property
    def half_width(self) -> float:
        """Rect window half-width 0.5/alpha, in double (kernels round it once)."""
        return 0.5 / self.alpha

    def flags(self, store_v_seq: bool = False, save: bool = False) -> int:
        """The op's `flags` integer for this neuron and call."""
        return ((FLAG_HARD_RESET if self.hard_reset else 0)
                | (FLAG_DECAY_INPUT if self.decay_input else 0)
                | (FLAG_DETACH_RESET if self.detach_reset else 0)
                | (FLAG_STORE_V_SEQ if store_v_seq else 0)
                | (FLAG_SAVE if save else 0)
                | (int(self.surrogate_id) << SURROGATE_SHIFT))

    def scalars(self) -> Tuple[float, float, float, float]:
        """(tau, v_threshold, v_reset or 0, alpha): the op's float arguments after v_init."""
        return (float(self.tau), float(self.v_threshold), self.v_reset_value, float(self.alpha))

    def op_args(self, store_v_seq: bool = False, save: bool = False) -> tuple:
        """(tau, v_threshold, v_reset, alpha, flags): lif_forward's arguments after v0, v_init."""
        return self.scalars() + (self.flags(store_v_seq, save),)

    @classmethod
    def from_op_args(cls, tau: float, v_threshold: float, v_reset: float, alpha: float,
                     flags: int) -> "LIFConfig":
        """The inverse of op_args (store_v_seq / save are per call, not part of the neuron)."""
        return cls(tau=tau, v_threshold=v_threshold,
                   v_reset=v_reset if flags & FLAG_HARD_RESET else None,
                   decay_input=bool(flags & FLAG_DECAY_INPUT),
                   surrogate_id=(flags >> SURROGATE_SHIFT) & 3, alpha=alpha,
                   detach_reset=bool(flags & FLAG_DETACH_RESET))


    def neuron_kwargs(self) -> dict:
        """LIFNode / lif_multistep keyword arguments of this neuron (the surrogate as an object
        of tssd_fast.surrogate)."""
        from .. import surrogate
        cls = (surrogate.Rect, surrogate.Sigmoid, surrogate.ATan)[self.surrogate_id]
        return dict(tau=float(self.tau), decay_input=bool(self.decay_input),
                    v_threshold=float(self.v_threshold), v_reset=self.v_reset,
                    surrogate_function=cls(alpha=float(self.alpha)),
                    detach_reset=bool(self.detach_reset))


# What a forward launch saves for backward: the kernels' SAVE parameter (kSaveNone, kSaveH,
# kSaveBits in csrc/cuda/lif_kernels.cuh), shared by the Python launchers (Triton, CuPy).
SAVE_NONE, SAVE_H, SAVE_BITS = 0, 1, 2


def save_mode(h_saved, bits) -> int:
    """The kernels' SAVE for a forward launch with these optional outputs (H, window bits)."""
    return SAVE_H if h_saved is not None else (SAVE_BITS if bits is not None else SAVE_NONE)


def backward_reads_bits(h_saved, bits, backend: str) -> bool:
    """Whether a backward launch reads the window bits (True) or H (False); an error when
    forward saved neither."""
    if bits is None and h_saved is None:
        raise RuntimeError(f"tssd_fast {backend} backend: backward needs the saved H or window "
                           f"bits")
    return bits is not None


def window_bits_saved(flags: int) -> bool:
    """Whether a neuron with the op's `flags` saves the Rect window bits for backward (Rect +
    soft reset: backward needs only the window bit, not H)."""
    return (flags >> SURROGATE_SHIFT) & 3 == 0 and not flags & FLAG_HARD_RESET


@functools.lru_cache(maxsize=256)
def config(tau: float, v_threshold: float, v_reset: float, alpha: float,
           flags: int) -> LIFConfig:
    """LIFConfig.from_op_args, memoised: the Python-launcher op rebuilds the neuron's record
    from the op's arguments on every call (the record is frozen, so one can be shared)."""
    return LIFConfig.from_op_args(tau, v_threshold, v_reset, alpha, flags)


def tau_is_pow2(tau: float, acc_dtype: torch.dtype) -> bool:
    """lif_tau_is_pow2 of csrc/lif_step.h for tau rounded to the compute type: a power of two
    whose reciprocal is a normal number (then a / tau == a * (1 / tau) for every a, and the
    kernels multiply). The Python-launched kernels (triton, cupy) decide with this."""
    if acc_dtype == torch.float64:
        t, min_exp, max_exp = float(tau), -1022, 1023
    else:
        try:
            t = struct.unpack("f", struct.pack("f", float(tau)))[0]  # round to fp32
        except OverflowError:
            return False
        min_exp, max_exp = -126, 127
    if not (math.isfinite(t) and t > 0):
        return False
    m, e = math.frexp(t)  # t = m * 2**e: a power of two has m == 0.5, and 1/t = 2**(1 - e)
    return m == 0.5 and min_exp <= 1 - e <= max_exp


# The two neurons the project names: the TSSD paper's (tau 2, no input decay, soft reset,
# Rect(1)) and SpikingJelly's LIFNode defaults (hard reset to 0, Sigmoid(4), input decay).
PAPER = LIFConfig(tau=2.0, v_threshold=1.0, v_reset=None, decay_input=False, surrogate_id=0,
                  alpha=1.0, detach_reset=False)
SPIKINGJELLY_DEFAULT = LIFConfig(tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True,
                                 surrogate_id=1, alpha=4.0, detach_reset=False)


def window_rows(T: int) -> int:
    """Rows of the packed window-bit tensor [ceil(T/8), N]: bit t%8 of row t//8."""
    return (T + 7) // 8


def memory_order(x: torch.Tensor) -> List[int]:
    """x's dims, time first, in the order of its memory (e.g. channels_last), or [] when x is
    contiguous or has no dense time-outermost order (the op then runs on a contiguous copy).
    Mirror of memory_order in csrc/lif_host.h."""
    if x.dim() <= 2 or x.is_contiguous():
        return []
    order = [0] + sorted(range(1, x.dim()), key=lambda d: -x.stride(d))  # stable, as C++
    return order if x.permute(order).is_contiguous() else []


def inverse(order: List[int]) -> List[int]:
    """The inverse permutation ([] stays [])."""
    inv = [0] * len(order)
    for i, d in enumerate(order):
        inv[d] = i
    return inv


def tail_order(order: List[int]) -> List[int]:
    """The permutation of the neuron dims: order without time, shifted down by one."""
    return [d - 1 for d in order[1:]]


def permuted(t: torch.Tensor, order: List[int]) -> torch.Tensor:
    return t.permute(order) if order else t


def flat_size(shape) -> int:
    """N of a [T, *] shape: the product of the neuron dims."""
    return math.prod(shape[1:])
