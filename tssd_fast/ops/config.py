"""The neuron configuration every launcher receives (scalars of shared NEURON.md)."""
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class LIFConfig:
    """Scalars of one LIF op call. v_reset None means soft reset. surrogate_id: 0 Rect,
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
    def saves_window_bits(self) -> bool:
        """Rect + soft reset: backward needs only the window bit, not H."""
        return self.surrogate_id == 0 and not self.hard_reset

    @property
    def half_width(self) -> float:
        """Rect window half-width 0.5/alpha, in double (kernels round it once)."""
        return 0.5 / self.alpha


def window_rows(T: int) -> int:
    """Rows of the packed window-bit tensor [ceil(T/8), N]: bit t%8 of row t//8."""
    return (T + 7) // 8
