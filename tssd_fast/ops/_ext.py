"""Loading the compiled kernels: the extensions built by `pip install`, else a JIT build.

`tssd_fast._C` (CPU) and `tssd_fast._C_cuda` (CUDA) are built by setup.py when torch is
importable at build time. When `_C` is missing (plain isolated `pip install .`, or a source
checkout), the CPU kernel is compiled once on first use with ninja through
torch.utils.cpp_extension.load and cached in torch's extension folder. If that fails too, the
'cpp' backend is reported unavailable, with the reason, and 'auto' falls back to 'torch'.
"""
import os
import sys
import warnings
from pathlib import Path

REINSTALL_HINT = ("pip install --no-build-isolation .   (from a tssd_fast checkout, with torch "
                  "installed; add `ninja` for the JIT fallback)")


def csrc_dir() -> Path:
    """Where the kernel sources are: shipped in the package, or the checkout's csrc/."""
    pkg = Path(__file__).resolve().parent.parent
    for cand in (pkg / "_csrc", pkg.parent / "csrc"):
        if (cand / "lif_step.h").is_file():
            return cand
    raise FileNotFoundError(f"tssd_fast kernel sources not found (looked in {pkg / '_csrc'} and "
                            f"{pkg.parent / 'csrc'}); reinstall: {REINSTALL_HINT}")


_errors = {}


def load_error(name: str) -> str:
    """Why an extension could not be loaded ('' when it loaded or was never tried)."""
    return _errors.get(name, "")


def _jit_cpu():
    from torch.utils import cpp_extension
    src = csrc_dir()
    print("tssd_fast: compiling the CPU kernel (once; cached by torch.utils.cpp_extension)...",
          file=sys.stderr, flush=True)
    return cpp_extension.load(
        name="tssd_fast_cpu_jit",
        sources=[str(src / "lif_op.cpp"), str(src / "cpu" / "lif_cpu.cpp")],
        extra_include_paths=[str(src)],
        extra_cflags=["-O3", "-std=c++17", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"],  # as setup.py
        extra_ldflags=["-fopenmp"],
        verbose=os.environ.get("TSSD_FAST_VERBOSE_BUILD", "0") == "1",
    )


def _cached(fn):
    """Load once; a plain dict cache (torch.compile traces it as a constant lookup)."""
    cache = {}

    def wrapper():
        if "m" not in cache:
            cache["m"] = fn()
        return cache["m"]
    wrapper.__doc__ = fn.__doc__
    return wrapper


_loaded_modules = []


def loaded_modules() -> list:
    """The compiled modules loaded so far (each has set_poison)."""
    return list(_loaded_modules)


def _registered(module):
    """A freshly loaded module has registered its part of the op: add the Python fakes and the
    tests' poison setting."""
    from . import _alloc, lif_op
    lif_op.register_fakes()
    module.set_poison(_alloc.poisoning())
    _loaded_modules.append(module)
    return module


@_cached
def cpu_module():
    """The module with the op's schema, C++ autograd and CPU kernel (tssd_fast._C, or its JIT
    build), or None (reason in load_error('cpp'))."""
    try:
        from tssd_fast import _C  # built by setup.py
        return _registered(_C)
    except ImportError as e:
        first = f"prebuilt tssd_fast._C not importable ({e})"
    if os.environ.get("TSSD_FAST_NO_JIT", "0") == "1":
        _errors["cpp"] = first + "; JIT disabled by TSSD_FAST_NO_JIT=1"
        return None
    try:
        return _registered(_jit_cpu())
    except Exception as e:  # compiler, ninja or sources missing: report, do not crash
        _errors["cpp"] = f"{first}; JIT build failed: {type(e).__name__}: {e}"
        warnings.warn(f"tssd_fast: the compiled CPU kernel is unavailable, using the "
                      f"pure-PyTorch backend. Reason: {_errors['cpp']}. To get it: "
                      f"{REINSTALL_HINT}", RuntimeWarning, stacklevel=3)
        return None


@_cached
def cuda_module():
    """The CUDA kernel module built by setup.py (it registers the op's CUDA kernel; the schema
    comes from cpu_module()), or None (reason in load_error('cuda'))."""
    if cpu_module() is None:
        _errors["cuda"] = f"the op's schema module is missing: {load_error('cpp')}"
        return None
    try:
        from tssd_fast import _C_cuda
        return _registered(_C_cuda)
    except ImportError as e:
        _errors["cuda"] = (f"tssd_fast._C_cuda not built ({e}); build it on a machine with "
                           f"nvcc and CUDA torch: {REINSTALL_HINT}")
        return None
