"""The backend registry: which implementations of the LIF op exist, where they run, and
which one 'auto' picks.

'torch' is the pure-PyTorch reference (tssd_fast.ops.reference). Every other backend is a
*launcher* of the one registered op (tssd_fast.ops.lif_op): an object with
    forward(x, v0, spikes, v_last, v_seq, h_saved, bits, cfg)
    backward(grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x, grad_v0, cfg)
that writes into tensors the op allocated (None for an output not needed).

'auto' picks the first available backend of AUTO_ORDER for the input's device; the
environment variable TSSD_FAST_BACKEND overrides it (for every LIFNode with backend='auto').
"""
import importlib
import os
from dataclasses import dataclass
from typing import Callable, List, Tuple

import torch

from . import _ext

ENV_BACKEND = "TSSD_FAST_BACKEND"
BACKENDS = ("torch", "cpp", "cuda", "triton", "cupy")
AUTO_ORDER = {"cpu": ("cpp", "triton", "torch"), "cuda": ("cuda", "triton", "cupy", "torch")}
_ALL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class _ExtLauncher:
    """Adapter from the launcher protocol to a compiled module (CPU or CUDA extension)."""

    def __init__(self, module):
        self.module = module

    def forward(self, x, v0, spikes, v_last, v_seq, h_saved, bits, cfg):
        self.module.lif_forward(x, v0, spikes, v_last, v_seq, h_saved, bits, cfg.tau,
                                cfg.v_threshold, cfg.v_reset_value, cfg.hard_reset,
                                cfg.decay_input, cfg.alpha, cfg.detach_reset)

    def backward(self, grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x, grad_v0, cfg):
        self.module.lif_backward(grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x,
                                 grad_v0, cfg.tau, cfg.v_threshold, cfg.v_reset_value,
                                 cfg.hard_reset, cfg.decay_input, cfg.surrogate_id, cfg.alpha,
                                 cfg.detach_reset)


def _python_launcher(module_name: str, backend: str):
    """Import tssd_fast.ops.<module_name>; its `launcher()` returns the launcher or None and
    its `unavailable_reason()` says why not."""
    try:
        mod = importlib.import_module(f"tssd_fast.ops.{module_name}")
    except Exception as e:  # noqa: BLE001 - an optional backend must never break import
        _reasons[backend] = f"tssd_fast.ops.{module_name} failed to import: {e}"
        return None
    launcher = mod.launcher()
    if launcher is None:
        _reasons[backend] = mod.unavailable_reason()
    return launcher


_reasons = {}


@dataclass(frozen=True)
class BackendInfo:
    """One backend: where it runs, in which storage dtypes, and how to get its launcher."""

    name: str
    devices: Callable[[], Tuple[str, ...]]
    dtypes: Tuple[torch.dtype, ...]
    load: Callable[[], object]


def _triton_devices():
    # Under TRITON_INTERPRET=1, Triton kernels run on CPU tensors (slow; for tests).
    return ("cuda", "cpu") if os.environ.get("TRITON_INTERPRET", "0") == "1" else ("cuda",)


_INFO = {
    "torch": BackendInfo("torch", lambda: ("cpu", "cuda"), _ALL_FLOATS, lambda: None),
    "cpp": BackendInfo("cpp", lambda: ("cpu",), _ALL_FLOATS,
                       lambda: _ExtLauncher(m) if (m := _ext.cpu_module()) else None),
    "cuda": BackendInfo("cuda", lambda: ("cuda",), _ALL_FLOATS,
                        lambda: _ExtLauncher(m) if (m := _ext.cuda_module()) else None),
    "triton": BackendInfo("triton", _triton_devices, _ALL_FLOATS,
                          lambda: _python_launcher("triton_lif", "triton")),
    "cupy": BackendInfo("cupy", lambda: ("cuda",), _ALL_FLOATS,
                        lambda: _python_launcher("cupy_lif", "cupy")),
}


_launchers = {}


def get_launcher(name: str):
    """The launcher of a fused backend (loaded once), or None when it cannot be loaded."""
    # A plain dict, not functools.lru_cache: torch.compile traces this lookup as a constant.
    if name not in _launchers:
        _launchers[name] = _INFO[name].load()
    return _launchers[name]


def unavailable_reason(name: str) -> str:
    """Why backend `name` is unavailable (empty when it is available or not tried)."""
    return _reasons.get(name) or _ext.load_error(name)


def _device_type(device) -> str:
    return torch.device(device).type


def backend_runs_on(name: str, device) -> bool:
    """Whether backend `name` can run on tensors of `device` on this install, right now."""
    dev = _device_type(device)
    if dev not in _INFO[name].devices():
        return False
    if dev == "cuda" and not torch.cuda.is_available():
        return False
    return name == "torch" or get_launcher(name) is not None


def available_backends(device="cpu") -> List[str]:
    """The backends that really work for tensors on `device` (loads them to find out),
    fastest-first in the order 'auto' tries them, 'torch' last."""
    dev = _device_type(device)
    order = AUTO_ORDER.get(dev, ("torch",))
    return [b for b in order if backend_runs_on(b, dev)]


def check_backend_name(name: str) -> str:
    """Validate a backend name ('auto' or one of BACKENDS)."""
    if not isinstance(name, str) or (name != "auto" and name not in BACKENDS):
        raise ValueError(f"unknown backend {name!r}: choose 'auto' or one of {BACKENDS}")
    return name


def resolve_backend(name: str, device, dtype: torch.dtype,
                    fused_ok: bool = True) -> str:
    """The backend that will run an op call: 'auto' (or the TSSD_FAST_BACKEND override) becomes
    the first available backend for the device and dtype. A named backend that cannot run there
    raises RuntimeError saying what to use instead. fused_ok=False (a surrogate only the torch
    reference implements) makes 'auto' choose 'torch'."""
    check_backend_name(name)
    dev = _device_type(device)
    # what the user should change: the argument, or the environment variable that overrode 'auto'
    fix = "use backend='auto' or one of"
    if name == "auto":
        env = os.environ.get(ENV_BACKEND, "auto")
        if env != "auto":
            try:
                check_backend_name(env)
            except ValueError as e:
                raise ValueError(f"{ENV_BACKEND}={env}: {e}") from None
            name = env
            fix = f"{ENV_BACKEND}={env} (environment) overrides backend='auto': unset it or set it to one of"
    if name == "auto":
        if not fused_ok:
            return "torch"
        for b in AUTO_ORDER.get(dev, ("torch",)):
            if dtype in _INFO[b].dtypes and backend_runs_on(b, dev):
                return b
        return "torch"
    if dev not in _INFO[name].devices():
        raise RuntimeError(
            f"tssd_fast backend {name!r} cannot run on {dev} tensors (it runs on "
            f"{', '.join(_INFO[name].devices())}); {fix} {available_backends(dev)}")
    if dtype not in _INFO[name].dtypes:
        raise TypeError(f"tssd_fast backend {name!r} does not support {dtype}")
    if not backend_runs_on(name, dev):
        reason = unavailable_reason(name) or "not available on this machine"
        todo = (f"{fix} {available_backends(dev)}" if fix.startswith(ENV_BACKEND)
                else f"Available for {dev}: {available_backends(dev)}")
        raise RuntimeError(f"tssd_fast backend {name!r} is unavailable: {reason}. {todo}")
    return name
