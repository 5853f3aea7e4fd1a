"""The backend registry, the public way to ask which implementations of the LIF op exist:

    backends(device)      the backends that work for tensors on `device`, in 'auto' order
    info(name)            the Backend record (tssd_fast.ops.backends): summary, kind, dtypes,
                          devices
    why_unavailable(name) '' when the backend works here, else the reason and the fix
    resolve_backend(name, device, dtype)   what a call with backend=name runs

Each backend describes itself in its own module under tssd_fast.ops.backends. 'auto' picks the
first available backend of AUTO_ORDER for the input's device; the environment variable
TSSD_FAST_BACKEND overrides it (for every LIFNode with backend='auto').
"""
import os
from typing import Dict, List, Tuple

import torch

from .backends import PY_LAUNCHER, Backend
from .backends import cpp as _cpp
from .backends import cuda as _cuda
from .backends import cupy as _cupy
from .backends import reference as _reference
from .backends import triton as _triton

ENV_BACKEND = "TSSD_FAST_BACKEND"
_ALL: Dict[str, Backend] = {b.name: b for b in (_reference.BACKEND, _cpp.BACKEND, _cuda.BACKEND,
                                                _triton.BACKEND, _cupy.BACKEND)}
BACKENDS: Tuple[str, ...] = tuple(_ALL)
AUTO_ORDER = {"cpu": ("cpp", "triton", "torch"), "cuda": ("cuda", "triton", "cupy", "torch")}

# name -> (launcher or True, reason), loaded once. A plain dict: torch.compile traces the lookup
# as a constant.
_loaded: Dict[str, tuple] = {}


def info(name: str) -> Backend:
    """The Backend record of `name` (ValueError for an unknown name)."""
    check_backend_name(name)
    if name == "auto":
        raise ValueError("'auto' is not a backend but a choice among them: see backends(device)")
    return _ALL[name]


def _load(name: str) -> tuple:
    if name not in _loaded:
        _loaded[name] = _ALL[name].load()
    return _loaded[name]


def launcher(name: str):
    """The Python launcher of a PY_LAUNCHER backend (triton, cupy), or None when unavailable."""
    got = _load(name)[0]
    return got if _ALL[name].kind == PY_LAUNCHER else None


def _device_type(device) -> str:
    return device if isinstance(device, str) and ":" not in device else torch.device(device).type


def runs_on(name: str, device) -> bool:
    """Whether backend `name` can run on tensors of `device` on this install, right now."""
    dev = _device_type(device)
    if dev not in _ALL[name].devices():
        return False
    if dev == "cuda" and not torch.cuda.is_available():
        return False
    return _load(name)[0] is not None


def why_unavailable(name: str, device=None) -> str:
    """'' when backend `name` works here (on `device`, when given); else why not, and what to
    do about it."""
    b = info(name)
    if device is not None:
        dev = _device_type(device)
        if dev not in b.devices():
            return f"backend {name!r} runs on {', '.join(b.devices())} tensors, not {dev}"
        if dev == "cuda" and not torch.cuda.is_available():
            return "torch sees no CUDA device"
    got, reason = _load(name)
    return "" if got is not None else (reason or "not available on this machine")


def backends(device="cpu") -> List[str]:
    """The backends that really work for tensors on `device` (loads them to find out),
    fastest-first in the order 'auto' tries them, 'torch' last."""
    dev = _device_type(device)
    return [b for b in AUTO_ORDER.get(dev, ("torch",)) if runs_on(b, dev)]


available_backends = backends  # the name exported as tssd_fast.available_backends


def check_backend_name(name: str) -> str:
    """Validate a backend name ('auto' or one of BACKENDS)."""
    if not isinstance(name, str) or (name != "auto" and name not in BACKENDS):
        raise ValueError(f"unknown backend {name!r}: choose 'auto' or one of {BACKENDS}")
    return name


def resolve_backend(name: str, device, dtype: torch.dtype, fused_ok: bool = True) -> str:
    """The backend that will run an op call: 'auto' (or the TSSD_FAST_BACKEND override) becomes
    the first available backend for the device and dtype. A named backend that cannot run there
    raises RuntimeError saying what to use instead. fused_ok=False (a surrogate only the torch
    reference implements) makes 'auto' choose 'torch'."""
    check_backend_name(name)
    dev = _device_type(device)
    source = f"backend={name!r}"
    if name == "auto":
        env = os.environ.get(ENV_BACKEND, "auto")
        if env != "auto":
            if env not in BACKENDS:
                raise ValueError(f"{ENV_BACKEND}={env} (environment): unknown backend {env!r}; "
                                 f"set it to 'auto' or one of {BACKENDS}, or unset it")
            name, source = env, f"the environment variable {ENV_BACKEND}={env}"
    if name == "auto":
        if not fused_ok:
            return "torch"
        for b in AUTO_ORDER.get(dev, ("torch",)):
            if dtype in _ALL[b].dtypes and runs_on(b, dev):
                return b
        return "torch"
    fix = (f"{ENV_BACKEND} overrides backend='auto': unset it or set it to one of "
           f"{backends(dev)}" if source.startswith("the environment") else
           f"use backend='auto' or one of {backends(dev)}")
    if dev not in _ALL[name].devices():
        raise RuntimeError(
            f"tssd_fast backend {name!r} (from {source}) cannot run on {dev} tensors (it runs "
            f"on {', '.join(_ALL[name].devices())}): {fix}")
    if dtype not in _ALL[name].dtypes:
        raise TypeError(f"tssd_fast backend {name!r} does not support {dtype}")
    if not runs_on(name, dev):
        raise RuntimeError(f"tssd_fast backend {name!r} (from {source}) is unavailable: "
                           f"{why_unavailable(name)}. {fix[0].upper() + fix[1:]}")
    return name
