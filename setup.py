"""Build script of tssd_fast.

`pip install --no-build-isolation .` compiles the kernels against the torch already installed:
  - tssd_fast._C       CPU kernel (csrc/cpu), always when torch is importable;
  - tssd_fast._C_cuda  CUDA kernels (csrc/cuda), when torch has CUDA and nvcc is found.
A plain `pip install .` builds in an isolated environment without torch: the package is then
pure Python and compiles its CPU kernel on first use (tssd_fast/ops/_ext.py).

Environment switches:
  TSSD_FAST_SKIP_CUDA=1   never build the CUDA extension
  TSSD_FAST_FORCE_CUDA=1  build it even when no GPU / CUDA torch is detected (fails loudly)
  TSSD_FAST_SKIP_EXT=1    build no extension at all (pure-Python package, JIT on first use)
  TORCH_CUDA_ARCH_LIST    CUDA architectures (default "8.0;9.0")
  MAX_JOBS                parallel compile jobs (default: bounded by cores and memory)
"""
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


class BuildPyWithSources(build_py):
    """Ships csrc/ inside the package (tssd_fast/_csrc) so the kernels can be JIT-compiled
    (CPU) or compiled at run time by CuPy/NVRTC on an install that did not build them."""

    def run(self):
        super().run()
        dest = Path(self.build_lib) / "tssd_fast" / "_csrc"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(CSRC, dest, ignore=shutil.ignore_patterns("*.o", "__pycache__"))


def _default_max_jobs():
    cores = os.cpu_count() or 1
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = 8
    return max(1, min(cores, int(mem_gb // 3)))  # nvcc can take ~3 GB per job


def _extensions():
    if _flag("TSSD_FAST_SKIP_EXT"):
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("tssd_fast: torch is not importable at build time (isolated build?): installing "
              "the pure-Python package; the CPU kernel will be compiled on first use. "
              "Use `pip install --no-build-isolation .` to compile now.", file=sys.stderr)
        return [], {}

    os.environ.setdefault("MAX_JOBS", str(_default_max_jobs()))
    # Same flags as the JIT build in tssd_fast/ops/_ext.py. No -ffast-math: it would change results;
    # -fno-trapping-math changes none (it lets FP selects vectorize) and -ffp-contract=off keeps
    # every product rounded as in the reference. No -std: torch's build adds the C++ standard its
    # headers need (C++20 since torch 2.13; torch 2.14's headers do not compile as C++17).
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]
    exts = [CppExtension(
        "tssd_fast._C",
        # the op (schema, autograd, registration) and its CPU kernel; relative paths:
        # setuptools refuses absolute ones
        sources=["csrc/lif_op.cpp", "csrc/cpu/lif_cpu.cpp", "csrc/cpu/spike_pack_cpu.cpp",
                 "csrc/cpu/avg_pool_cpu.cpp", "csrc/spike_ops.cpp", "csrc/conv_bn_op.cpp",
                 "csrc/lean_pool_op.cpp"],
        include_dirs=[str(CSRC)],
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )]

    # One translation unit per storage type (lif_cuda_<dtype>.cu: nvcc, compiled in parallel by
    # ninja) and the host-only dispatch and registration (lif_cuda.cpp: the host compiler).
    cuda_sources = [str(p.relative_to(ROOT)) for pattern in ("*.cu", "*.cpp")
                    for p in sorted((CSRC / "cuda").glob(pattern))]
    want_cuda = (torch.version.cuda is not None and CUDA_HOME is not None and bool(cuda_sources))
    if _flag("TSSD_FAST_FORCE_CUDA"):
        want_cuda = True
    if _flag("TSSD_FAST_SKIP_CUDA"):
        want_cuda = False
    if want_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        exts.append(CUDAExtension(
            "tssd_fast._C_cuda",
            sources=cuda_sources,
            include_dirs=[str(CSRC)],
            extra_compile_args={
                "cxx": ["-O3"],
                # --fmad=false: no FMA contraction, so spikes match the reference bitwise.
                "nvcc": ["-O3", "--fmad=false", "-lineinfo"],
            },
        ))
    return exts, {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = _extensions()
cmdclass["build_py"] = BuildPyWithSources

setup(ext_modules=ext_modules, cmdclass=cmdclass)
