"""Allocation of the op's fresh outputs, in one place.

Tests switch `poison(True)` on so every fresh output starts as NaN (0xA5 for bytes): an element
a kernel forgets to write then cannot pass a comparison.
"""
import torch

_POISON = False


def poison(enabled: bool) -> None:
    """Fill every fresh output with NaN / 0xA5 (tests) or leave it uninitialised (default)."""
    global _POISON
    _POISON = bool(enabled)
    from . import _ext
    for m in _ext.loaded_modules():  # the C++ op allocates its outputs itself
        m.set_poison(_POISON)


def poisoning() -> bool:
    """Whether fresh outputs are poisoned now."""
    return _POISON


def new_empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor, or a poisoned one when `poison(True)` is on."""
    t = torch.empty(shape, dtype=dtype, device=device)
    if _POISON and t.numel():
        t.fill_(float("nan") if t.is_floating_point() else 0xA5)
    return t
