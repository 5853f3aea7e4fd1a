"""Backend 'cupy': the CUDA kernels of csrc/cuda/lif_kernels.cuh compiled at run time with NVRTC
through CuPy, for installs built without nvcc.

Source: csrc/cuda/lif_kernels.cuh with csrc/lif_step.h inlined, after a preamble that fixes the
storage / compute types and the flags (hard_reset, decay_input, detach_reset, whether tau is a
power of two, surrogate) and asks for the extern "C" entry points. One module per (flags,
dtype, device), compiled once and kept for the process (CuPy also keeps the binary in its
on-disk cache). The float scalars are kernel arguments, rounded to the compute type here
exactly as make_lif_params does in C++.

Launches run on torch's current stream (cupy.cuda.ExternalStream) on torch's memory (raw
data_ptr() pointers, no copies), inside `cupy.cuda.Device(index)`, which restores the previous
device on exit, so torch's current device never changes.

Compilation: NVRTC through CuPy's binding (cupy_backends.cuda.libs.nvrtc) with --fmad=false
(no FMA contraction, as nvcc's build) and WITHOUT -ftz, then loaded with cupy.RawModule(path=).
cupy.RawModule(code=) is the fallback when that binding is missing; it always appends
-ftz=true (subnormal fp32 values flushed to zero), which can change a spike only when
H - v_threshold is subnormal.

Everything above the `launcher()` section is pure Python (no CuPy, no GPU) and is tested on CPU.
"""
import functools
import hashlib
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable, Dict, Hashable, Iterable, Optional, Tuple

import torch

from . import _ext
from .config import (FLAG_DECAY_INPUT, FLAG_DETACH_RESET, FLAG_HARD_RESET, LIFConfig,
                     backward_reads_bits, save_mode, tau_is_pow2, window_rows)
from .reference import compute_dtype

THREADS = 256  # tssd_fast::cuda::kThreads
VECS = (4, 2, 1)  # every dtype; 16-bit storage also has 8 (vecs())
# -default-device: lif_step.h's host-side make_lif_params is unannotated (NVRTC rejects host code).
NVRTC_OPTIONS = ("--fmad=false", "-std=c++17", "-default-device")


def nvcc_options() -> Tuple[str, ...]:
    """NVRTC_OPTIONS as nvcc takes them, to compile the same source with nvcc (the tests' NVRTC
    proxy, benchmarks/cuda_variants.py): nvcc has no -default-device, and needs none (it
    compiles make_lif_params for the host, where no kernel calls it)."""
    return tuple(o for o in NVRTC_OPTIONS if o != "-default-device")

# storage dtype -> (storage type in the kernels, compute type)
_KERNEL_TYPES = {
    torch.float32: ("float", "float"),
    torch.float64: ("double", "double"),
    torch.float16: ("tssd_fast::cuda::f16_t", "float"),
    torch.bfloat16: ("tssd_fast::cuda::bf16_t", "float"),
}
_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)
_PRAGMA_ONCE_RE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$", re.MULTILINE)


# ------------------------------------------------------------------------------------------
# Pure functions: source assembly, cache keys, kernel names, vector width, scalar arguments.
# ------------------------------------------------------------------------------------------

def math_flags(cfg: LIFConfig, dtype: torch.dtype) -> int:
    """LIFParams::flags of csrc/lif_step.h (kMathHardReset 1, kMathDecayInput 2,
    kMathDetachReset 4, kMathTauPow2 8) for cfg with storage dtype `dtype`."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    # the op's flag bits 1, 2, 4 are the same three (csrc/lif_host.h, ops/config.py)
    return (cfg.flags() & (FLAG_HARD_RESET | FLAG_DECAY_INPUT | FLAG_DETACH_RESET)) | \
        (8 if tau_is_pow2(cfg.tau, acc) else 0)


@functools.lru_cache(maxsize=256)
def config_key(cfg: LIFConfig, dtype: torch.dtype) -> Tuple:
    """What a compiled module depends on: the storage dtype, the math flags and the surrogate
    (memoised: every launch asks)."""
    if dtype not in _KERNEL_TYPES:
        raise TypeError(f"tssd_fast cupy backend: unsupported dtype {dtype}")
    return (str(dtype).replace("torch.", ""), math_flags(cfg, dtype), int(cfg.surrogate_id))


def inline_includes(path: Path, _seen: Optional[set] = None) -> str:
    """The text of `path` with every local `#include "file"` replaced by that file's text
    (recursively, each file once, `#pragma once` dropped): NVRTC then needs no include path."""
    path = Path(path).resolve()
    seen = set() if _seen is None else _seen
    if path in seen:
        return ""
    seen.add(path)
    text = _PRAGMA_ONCE_RE.sub("", path.read_text())

    def repl(m):
        inc = (path.parent / m.group(1)).resolve()
        if not inc.is_file():
            raise FileNotFoundError(f"{path}: included file {m.group(1)!r} not found at {inc}")
        return f"// ---- begin {m.group(1)} ----\n{inline_includes(inc, seen)}\n" \
               f"// ---- end {m.group(1)} ----"

    return _INCLUDE_RE.sub(repl, text)


def kernel_source(key: Tuple, csrc: Optional[Path] = None) -> str:
    """The complete NVRTC source of the module for config_key `key`."""
    dtype_name, flags, surr = key
    storage, acc = _KERNEL_TYPES[getattr(torch, dtype_name)]
    csrc = Path(_ext.csrc_dir() if csrc is None else csrc)
    preamble = "\n".join([
        f"// tssd_fast LIF kernels for CuPy/NVRTC: dtype={dtype_name} math flags={flags} "
        f"(hard_reset 1, decay_input 2, detach_reset 4, tau a power of two 8) surrogate={surr}",
        f"#define LIF_STORAGE_T {storage}",
        f"#define LIF_ACC_T {acc}",
        f"#define LIF_MATH_FLAGS {int(flags)}",
        f"#define LIF_SURROGATE {int(surr)}",
        f"#define LIF_NVRTC_VEC8 {int(8 in vecs(getattr(torch, dtype_name)))}",
        "#define LIF_NVRTC_ENTRY_POINTS 1",
        "",
    ])
    return preamble + inline_includes(csrc / "cuda" / "lif_kernels.cuh")


def fwd_kernel_name(vec: int, save: int) -> str:
    return f"lif_fwd_v{vec}_s{save}"


def bwd_kernel_name(vec: int, bits: bool) -> str:
    return f"lif_bwd_v{vec}_b{int(bool(bits))}"


def vecs(dtype: torch.dtype) -> Tuple[int, ...]:
    """The vector widths compiled for `dtype`, widest first: 8 (16 bytes) for 16-bit storage."""
    return ((8,) if torch.empty((), dtype=dtype).element_size() == 2 else ()) + VECS


def kernel_names(key: Tuple) -> Tuple[str, ...]:
    """Every entry point the module of `key` defines."""
    dtype_name, flags, surr = key
    widths = vecs(getattr(torch, dtype_name))
    names = [fwd_kernel_name(v, s) for v in widths for s in (0, 1, 2)]
    names += [bwd_kernel_name(v, False) for v in widths]
    if surr == 0 and not flags & 1:
        names += [bwd_kernel_name(v, True) for v in widths]
    return tuple(names)


def pick_vec(N: int, ptrs: Iterable[Tuple[int, int]], widths: Tuple[int, ...] = VECS) -> int:
    """The widest VEC in `widths` (vecs(dtype); default 4, 2, 1) with N % VEC == 0 and every
    (address, element size) aligned to VEC elements; address 0 (absent tensor) does not
    constrain."""
    ptrs = list(ptrs)
    for vec in widths:
        if vec > 1 and N % vec == 0 and all(p == 0 or p % (vec * es) == 0 for p, es in ptrs):
            return vec
    return 1


def num_blocks(N: int, vec: int) -> int:
    return (-(-N // vec) + THREADS - 1) // THREADS


def _np_acc(acc_dtype):
    """The NumPy scalar type of the compute type: a Python double becomes a kernel argument
    through it, rounded once (to nearest even), as make_lif_params rounds in C++."""
    import numpy as np
    return np.float64 if acc_dtype == torch.float64 else np.float32


def scalar_args(cfg: LIFConfig, acc_dtype) -> Tuple:
    """(tau, inv_tau, v_threshold, v_reset, alpha, half_width, atan_scale) rounded once from
    Python doubles to the compute type, as make_lif_params in csrc/lif_step.h (inv_tau = 1 / tau
    divided in the compute type)."""
    import numpy as np
    f = _np_acc(acc_dtype)
    with np.errstate(over="ignore", divide="ignore"):
        inv_tau = f(1) / f(cfg.tau)
    return (f(cfg.tau), inv_tau, f(cfg.v_threshold), f(cfg.v_reset_value), f(cfg.alpha),
            f(0.5 / cfg.alpha), f(1.5707963267948966 * cfg.alpha))


class ModuleCache:
    """Compiled modules by key, each built once by `build(key)` (thread-safe)."""

    def __init__(self, build: Callable[[Hashable], object]):
        self._build = build
        self._modules: Dict[Hashable, object] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable):
        mod = self._modules.get(key)
        if mod is None:
            with self._lock:
                mod = self._modules.get(key)
                if mod is None:
                    mod = self._modules[key] = self._build(key)
        return mod

    def __len__(self) -> int:
        return len(self._modules)

    def clear(self) -> None:
        with self._lock:
            self._modules.clear()


def cache_dir() -> Path:
    """Where compiled binaries are kept between processes (TSSD_FAST_CUPY_CACHE overrides)."""
    env = os.environ.get("TSSD_FAST_CUPY_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tssd_fast" / "cupy"


def binary_name(source: str, options: Tuple[str, ...], arch: str, nvrtc_version) -> str:
    """File name of a compiled binary: a hash of everything the binary depends on."""
    h = hashlib.sha256()
    for part in (source, "\0".join(options), arch, repr(nvrtc_version)):
        h.update(part.encode())
        h.update(b"\1")
    return f"lif_{h.hexdigest()[:32]}_{arch}"


# ------------------------------------------------------------------------------------------
# CuPy (GPU) part.
# ------------------------------------------------------------------------------------------

_reason = ""


def unavailable_reason() -> str:
    """Why launcher() returned None ('' when it did not)."""
    return _reason


def nvrtc_target(device_cc: int, supported, has_cubin: bool) -> Tuple[str, str]:
    """(-arch value, binary kind) for NVRTC: a cubin for the device itself when NVRTC knows it
    (no driver JIT, and no PTX newer than the driver), else PTX for the newest architecture
    NVRTC supports below it (the driver compiles that). `supported`: NVRTC's list or None."""
    if has_cubin and (supported is None or device_cc in supported):
        return f"sm_{device_cc}", "cubin"
    below = [a for a in (supported or ()) if a <= device_cc]
    return f"compute_{max(below) if below else device_cc}", "ptx"


def _nvrtc_compile(source: str, device_cc: int) -> Tuple[bytes, str]:
    """(binary, kind) from NVRTC through CuPy's binding, with NVRTC_OPTIONS only: no -ftz, so
    denormals are kept as in the nvcc build."""
    from cupy_backends.cuda.libs import nvrtc
    try:
        supported = tuple(int(a) for a in nvrtc.getSupportedArchs())
    except Exception:  # noqa: BLE001 - older binding: assume NVRTC knows the device
        supported = None
    arch, kind = nvrtc_target(device_cc, supported, hasattr(nvrtc, "getCUBIN"))
    prog = nvrtc.createProgram(source, "tssd_fast_lif.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(prog, list(NVRTC_OPTIONS) + [f"-arch={arch}"])
        except nvrtc.NVRTCError as e:
            log = nvrtc.getProgramLog(prog)
            raise RuntimeError(f"tssd_fast cupy backend: NVRTC failed ({e}):\n{log}") from None
        if kind == "cubin":
            return bytes(nvrtc.getCUBIN(prog)), kind
        ptx = nvrtc.getPTX(prog)
        return (ptx.encode() if isinstance(ptx, str) else bytes(ptx)), kind
    finally:
        nvrtc.destroyProgram(prog)


def _compile_module(key):
    """The RawModule of (config key, device index); called inside cupy.cuda.Device(index)."""
    import cupy
    cfg_key, device_index = key
    source = kernel_source(cfg_key)
    cc = int(cupy.cuda.Device(device_index).compute_capability)
    try:
        from cupy_backends.cuda.libs import nvrtc
        version = tuple(nvrtc.getVersion())
    except (ImportError, AttributeError, TypeError):
        version = None
    if version is not None:
        try:
            path = _compiled_binary(source, cc, version)
        except (AttributeError, TypeError) as e:  # a binding unlike the one this was written for
            warnings.warn(f"tssd_fast cupy backend: CuPy's NVRTC binding is not usable ({e}); "
                          f"compiling through cupy.RawModule, which flushes fp32 denormals "
                          f"to zero", RuntimeWarning, stacklevel=2)
        else:
            return cupy.RawModule(path=str(path))
    return cupy.RawModule(code=source, options=NVRTC_OPTIONS)  # appends -ftz=true (see top)


def _compiled_binary(source: str, cc: int, version) -> Path:
    """The cached cubin / PTX file of `source` for compute capability `cc`, built if missing."""
    name = binary_name(source, NVRTC_OPTIONS, str(cc), version)
    folder = cache_dir()
    for kind in ("cubin", "ptx"):
        path = folder / f"{name}.{kind}"
        if path.is_file() and path.stat().st_size > 0:
            return path
    binary, kind = _nvrtc_compile(source, cc)
    path = folder / f"{name}.{kind}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(binary)
        os.replace(tmp, path)  # atomic: a concurrent process never reads a partial file
    except OSError:  # read-only home: keep it for this process only
        fd, tmp = tempfile.mkstemp(suffix=f".{kind}")
        with os.fdopen(fd, "wb") as f:
            f.write(binary)
        path = Path(tmp)
    return path


_modules = ModuleCache(_compile_module)


def _ptr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _check(t: Optional[torch.Tensor], like: torch.Tensor, name: str, dtype=None, numel=None):
    if t is None:
        return
    if t.device != like.device:
        raise RuntimeError(f"tssd_fast cupy backend: {name} is on {t.device}, x on {like.device}")
    if not t.is_contiguous():
        raise RuntimeError(f"tssd_fast cupy backend: {name} must be contiguous")
    if dtype is not None and t.dtype != dtype:
        raise RuntimeError(f"tssd_fast cupy backend: {name} must be {dtype}, got {t.dtype}")
    if numel is not None and t.numel() != numel:
        raise RuntimeError(f"tssd_fast cupy backend: {name} has {t.numel()} elements, "
                           f"expected {numel}")


def forward_launch(x, v0, spikes, v_last, v_seq, h_saved, bits, cfg: LIFConfig,
                   v_init: float = 0.0) -> Tuple[str, int, Tuple]:
    """(kernel name, vector width, argument tuple) of a forward launch, in the order of the
    entry point's parameters (csrc/cuda/lif_kernels.cuh, NVRTC entry points); v0 None starts
    every neuron at v_init. Checks every tensor. Pure: tested on CPU tensors."""
    import numpy as np
    T, N = x.shape
    acc = v_last.dtype
    _check(x, x, "x")
    for t, n, d, k in ((v0, "v0", acc, N), (spikes, "spikes", x.dtype, T * N),
                       (v_last, "v_last", acc, N), (v_seq, "v_seq", acc, T * N),
                       (h_saved, "h_saved", acc, T * N),
                       (bits, "bits", torch.uint8, window_rows(T) * N)):
        _check(t, x, n, d, k)
    es, ea = x.element_size(), v_last.element_size()
    vec = pick_vec(N, [(_ptr(x), es), (_ptr(spikes), es), (_ptr(v0), ea), (_ptr(v_last), ea),
                       (_ptr(v_seq), ea), (_ptr(h_saved), ea), (_ptr(bits), 1)], vecs(x.dtype))
    save = save_mode(h_saved, bits)
    args = tuple(np.uint64(_ptr(t)) for t in (x, v0, spikes, v_last, v_seq, h_saved, bits))
    args += (np.int64(T), np.int64(N)) + scalar_args(cfg, acc) + (_np_acc(acc)(v_init),)
    return fwd_kernel_name(vec, save), vec, args


def backward_launch(grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x, grad_v0,
                    cfg: LIFConfig) -> Tuple[str, int, Tuple]:
    """(kernel name, vector width, argument tuple) of a backward launch, as forward_launch."""
    import numpy as np
    T, N = grad_s.shape
    acc = compute_dtype(grad_s.dtype)
    use_bits = backward_reads_bits(h_saved, bits, "cupy")
    if use_bits:
        h_saved = None
    _check(grad_s, grad_s, "grad_s")
    for t, n, d, k in ((grad_v_seq, "grad_v_seq", acc, T * N),
                       (grad_v_last, "grad_v_last", acc, N),
                       (h_saved, "h_saved", acc, T * N),
                       (bits, "bits", torch.uint8, window_rows(T) * N),
                       (grad_x, "grad_x", grad_s.dtype, T * N), (grad_v0, "grad_v0", acc, N)):
        _check(t, grad_s, n, d, k)
    es, ea = grad_s.element_size(), acc.itemsize
    vec = pick_vec(N, [(_ptr(grad_s), es), (_ptr(grad_x), es), (_ptr(grad_v_seq), ea),
                       (_ptr(grad_v_last), ea), (_ptr(h_saved), ea), (_ptr(bits), 1),
                       (_ptr(grad_v0), ea)], vecs(grad_s.dtype))
    args = tuple(np.uint64(_ptr(t)) for t in (grad_s, grad_v_seq, grad_v_last, h_saved,
                                              bits, grad_x, grad_v0))
    args += (np.int64(T), np.int64(N)) + scalar_args(cfg, acc)
    return bwd_kernel_name(vec, use_bits), vec, args


class CupyLauncher:
    """The launcher protocol of tssd_fast.ops.registry over the NVRTC-compiled kernels."""

    def __init__(self, cupy_module):
        self.cupy = cupy_module
        self._kernels: Dict[Tuple, object] = {}  # (config key, device, name) -> RawKernel

    def _launch(self, device: torch.device, cfg: LIFConfig, dtype: torch.dtype, name: str,
                N: int, vec: int, args: Tuple):
        cp = self.cupy
        index = device.index if device.index is not None else torch.cuda.current_device()
        stream_ptr = torch.cuda.current_stream(device).cuda_stream
        with cp.cuda.Device(index):  # restores the previous current device on exit
            key = (config_key(cfg, dtype), index, name)
            kernel = self._kernels.get(key)
            if kernel is None:
                kernel = _modules.get(key[:2]).get_function(name)
                self._kernels[key] = kernel
            with cp.cuda.ExternalStream(stream_ptr):  # torch's current stream, made current
                kernel((num_blocks(N, vec),), (THREADS,), args)

    def forward(self, x, v0, spikes, v_last, v_seq, h_saved, bits, cfg, v_init=0.0):
        T, N = x.shape
        if T == 0 or N == 0:
            return
        name, vec, args = forward_launch(x, v0, spikes, v_last, v_seq, h_saved, bits, cfg,
                                         v_init)
        self._launch(x.device, cfg, x.dtype, name, N, vec, args)

    def backward(self, grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x, grad_v0, cfg):
        T, N = grad_s.shape
        if T == 0 or N == 0:
            return
        name, vec, args = backward_launch(grad_s, grad_v_seq, grad_v_last, h_saved, bits,
                                          grad_x, grad_v0, cfg)
        self._launch(grad_s.device, cfg, grad_s.dtype, name, N, vec, args)


_launcher = None


def launcher():
    """The CuPy launcher, or None (reason in unavailable_reason()) when CuPy or a CUDA device
    is missing. Importing this module never imports CuPy."""
    global _launcher, _reason
    if _launcher is not None:
        return _launcher
    if not torch.cuda.is_available():
        _reason = "torch sees no CUDA device"
        return None
    try:
        import cupy
    except Exception as e:  # noqa: BLE001 - CuPy missing or broken: report, do not crash
        _reason = (f"cupy is not importable ({type(e).__name__}: {e}); install the wheel for "
                   f"your CUDA: pip install cupy-cuda12x (or cupy-cuda13x)")
        return None
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001
        _reason = f"cupy cannot use the GPU ({type(e).__name__}: {e})"
        return None
    _launcher = CupyLauncher(cupy)
    return _launcher
