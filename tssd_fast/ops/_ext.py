"""Loading the compiled kernels: the extensions built by `pip install`, else a JIT build.

`tssd_fast._C` (CPU) and `tssd_fast._C_cuda` (CUDA) are built by setup.py when torch is
importable at build time. When `_C` is missing (plain isolated `pip install .`, or a source
checkout), the CPU kernel is compiled once on first use with ninja through
torch.utils.cpp_extension.load and cached in torch's extension folder (one build per source
folder; announced only when it really compiles). Python started inside a checkout imports the
checkout's package, which has no `_C`: it then uses the `_C` of the installed package if that
was built from the same sources. If all fails, the 'cpp' backend is reported unavailable, with
the reason, and 'auto' falls back to 'torch'.
"""
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import time
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
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


def _jit_name(src: Path) -> str:
    """The JIT extension's name, one per source folder: torch keys its build cache on the name,
    so two checkouts sharing one name would rebuild each other's kernel on every import."""
    return "tssd_fast_cpu_jit_" + hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:10]


def _jit_is_current(name: str, src: Path) -> bool:
    """Best guess whether torch's cache already holds a build of `src` (then loading it compiles
    nothing): the cached library is newer than every source file. Only decides the message."""
    try:
        from torch.utils.cpp_extension import _get_build_directory
        lib = Path(_get_build_directory(name, verbose=False)) / f"{name}.so"
        newest = max(p.stat().st_mtime for p in src.rglob("*") if p.is_file())
        return lib.is_file() and lib.stat().st_mtime >= newest
    except Exception:  # noqa: BLE001 - private torch helper; when unsure, announce the build
        return False


def _jit_cpu():
    from torch.utils import cpp_extension
    src = csrc_dir()
    name = _jit_name(src)
    announce = not _jit_is_current(name, src)
    if announce:
        print(f"tssd_fast: compiling the CPU kernel from {src} (once, about 1-2 minutes; cached by "
              f"torch.utils.cpp_extension). `pip install --no-build-isolation -e .` builds it into "
              f"the checkout instead.", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    module = cpp_extension.load(
        name=name,
        sources=[str(src / "lif_op.cpp"), str(src / "cpu" / "lif_cpu.cpp"),
                 str(src / "cpu" / "spike_pack_cpu.cpp"), str(src / "cpu" / "avg_pool_cpu.cpp"),
                 str(src / "spike_ops.cpp"), str(src / "conv_bn_op.cpp"),
                 str(src / "lean_pool_op.cpp")],
        extra_include_paths=[str(src)],
        # as setup.py (no -std: torch adds the standard its headers need)
        extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"],
        extra_ldflags=["-fopenmp"],
        verbose=os.environ.get("TSSD_FAST_VERBOSE_BUILD", "0") == "1",
    )
    if announce:
        print(f"tssd_fast: CPU kernel ready ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return module


def _installed_prebuilt():
    """The prebuilt `_C` of an installed tssd_fast that this (source-tree) package shadows, or None.

    Running `python` inside a checkout imports the checkout's tssd_fast/, which has no compiled
    kernel, while `pip install .` put a compiled one in site-packages. That one is used only if
    it was built from exactly the sources here (its shipped _csrc/ equals this csrc/): a kernel
    from other sources could take other arguments.
    """
    here = Path(__file__).resolve().parent.parent
    path = None
    try:
        # every copy of the metadata: the checkout's own tssd_fast.egg-info (left by the build)
        # comes first on sys.path and lists no compiled files
        for dist in importlib.metadata.distributions(name="tssd_fast"):
            for f in dist.files or []:
                if (len(f.parts) == 2 and f.parts[0] == "tssd_fast" and f.name.startswith("_C.")
                        and any(f.name.endswith(s) for s in EXTENSION_SUFFIXES)):
                    cand = Path(dist.locate_file(f)).resolve()
                    if cand.parent != here and cand.is_file():  # not this package (plain import)
                        path = cand
                        break
            if path is not None:
                break
    except Exception:  # noqa: BLE001 - unreadable metadata: no installed kernel to reuse
        return None
    if path is None:
        return None

    def tree(root: Path):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".o"}
    try:
        if tree(path.parent / "_csrc") != tree(csrc_dir()):
            return None
        spec = importlib.util.spec_from_file_location("tssd_fast._C", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - e.g. built against another torch: fall back to the JIT build
        return None
    sys.modules["tssd_fast._C"] = module
    return module


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
    installed = _installed_prebuilt()
    if installed is not None:
        return _registered(installed)
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
