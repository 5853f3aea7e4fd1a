"""The CuPy backend's GPU-free parts: source assembly from csrc/, cache keys and the module cache,
kernel names, the vector-width rule, scalar rounding, and that importing tssd_fast (with or
without CuPy installed, with no GPU) neither imports CuPy nor fails. Compiling the assembled
source is tested in test_cuda_compile.py; launching it in test_gpu_backends.py."""
import importlib.util
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tssd_fast.ops import cupy_lif, kernel_sources
from tssd_fast.ops.config import SAVE_BITS, SAVE_H, SAVE_NONE, LIFConfig, tau_is_pow2

ROOT = Path(__file__).resolve().parent.parent


def _run_python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that imports the tssd_fast this process imported."""
    import os
    import tssd_fast
    pkg_root = str(Path(tssd_fast.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pkg_root, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], cwd=str(ROOT / "tests"), env=env,
                          capture_output=True, text=True, timeout=300)


def cfg(hard=True, decay=True, detach=False, surr=1, tau=2.0, vth=1.0, alpha=4.0):
    return LIFConfig(tau, vth, 0.0 if hard else None, decay, surr, alpha, detach)


def test_config_key_depends_on_flags_and_dtype_only():
    k = cupy_lif.config_key(cfg(), torch.float32)
    assert k == ("float32", 1 + 2 + 8, 1)  # hard reset, decay_input, tau 2 a power of two
    # the float scalars are kernel arguments: they do not make a new module, except that a
    # power-of-two tau (a multiply for the division) is a flag of its own
    assert cupy_lif.config_key(cfg(tau=4.0, vth=0.5, alpha=2.0), torch.float32) == k
    assert cupy_lif.config_key(cfg(tau=3.0), torch.float32) == ("float32", 1 + 2, 1)
    keys = {cupy_lif.config_key(cfg(h, d, dt, s, tau), dtype)
            for h in (True, False) for d in (True, False) for dt in (True, False)
            for s in (0, 1, 2) for tau in (2.0, 1.7)
            for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
    assert len(keys) == 2 * 2 * 2 * 3 * 2 * 4
    with pytest.raises(TypeError):
        cupy_lif.config_key(cfg(), torch.int32)


@pytest.mark.parametrize("tau,pow2", [(2.0, True), (4.0, True), (0.5, True), (1.0, True),
                                      (2.0 ** -126, True), (2.0 ** -127, True),
                                      (2.0 ** 126, True), (2.0 ** 127, False),
                                      (1.7, False), (3.0, False),
                                      (0.0, False), (-2.0, False), (float("inf"), False),
                                      (float("nan"), False)])
def test_tau_is_pow2_like_lif_step_h(tau, pow2):
    # a power of two (subnormal ones too) whose reciprocal is a normal fp32 number: 2^127's
    # reciprocal 2^-127 is subnormal, so a * (1/tau) could lose bits that a / tau keeps
    assert tau_is_pow2(tau, torch.float32) is pow2


def test_source_is_self_contained():
    key = cupy_lif.config_key(cfg(hard=False, surr=0), torch.float16)
    src = cupy_lif.kernel_source(key)
    # lif_step.h and lif_kernels.cuh are inlined: no local include is left, no pragma once, and
    # a system include only under #ifndef __CUDACC_RTC__ (NVRTC has no standard headers)
    assert not re.search(r'^\s*#\s*include\s*"', src, re.M)
    lines = src.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*include", line):
            conds = [ln.strip() for ln in lines[:i] if re.match(r"\s*#\s*(if|endif)", ln)]
            assert conds and conds[-1] == "#ifndef __CUDACC_RTC__", line
    assert not re.search(r"^\s*#\s*pragma\s+once", src, re.M)
    assert "lif_charge" in src and "lif_forward_body" in src  # both files are in
    assert src.count("struct LIFParams") == 1  # each header once
    for line in ("#define LIF_STORAGE_T tssd_fast::cuda::f16_t", "#define LIF_ACC_T float",
                 "#define LIF_MATH_FLAGS 10", "#define LIF_SURROGATE 0", "#define LIF_NVRTC_VEC8 1",
                 "#define LIF_NVRTC_ENTRY_POINTS 1"):
        assert line in src
    # the preamble comes before the kernels that use it
    assert src.index("#define LIF_NVRTC_ENTRY_POINTS") < src.index("lif_forward_body")
    # the shipped header is the one used: the text of lif_step.h appears verbatim
    step = (kernel_sources() / "lif_step.h").read_text()
    assert "LIF_HD acc_t lif_charge" in step and "LIF_HD acc_t lif_charge" in src


@pytest.mark.parametrize("dtype,storage,acc", [
    (torch.float32, "float", "float"), (torch.float64, "double", "double"),
    (torch.float16, "tssd_fast::cuda::f16_t", "float"),
    (torch.bfloat16, "tssd_fast::cuda::bf16_t", "float")])
def test_source_types_per_dtype(dtype, storage, acc):
    src = cupy_lif.kernel_source(cupy_lif.config_key(cfg(), dtype))
    assert f"#define LIF_STORAGE_T {storage}\n" in src and f"#define LIF_ACC_T {acc}\n" in src


def test_inline_includes_recursion_and_errors(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.h").write_text('#pragma once\nint a;\n#include "sub/b.h"\n')
    (tmp_path / "sub" / "b.h").write_text('#pragma once\n#include "../a.h"\nint b;\n')
    (tmp_path / "main.cu").write_text('#include "a.h"\n#include "sub/b.h"\n  #include <cmath>\n')
    out = cupy_lif.inline_includes(tmp_path / "main.cu")
    assert out.count("int a;") == 1 and out.count("int b;") == 1  # each file once
    assert "#include <cmath>" in out  # system includes are not touched
    assert "pragma once" not in out
    (tmp_path / "bad.cu").write_text('#include "missing.h"\n')
    with pytest.raises(FileNotFoundError, match="missing.h"):
        cupy_lif.inline_includes(tmp_path / "bad.cu")


def test_kernel_names_cover_every_launch():
    soft_rect = cupy_lif.config_key(cfg(hard=False, surr=0), torch.float32)
    hard_sig = cupy_lif.config_key(cfg(hard=True, surr=1), torch.float32)
    names = set(cupy_lif.kernel_names(soft_rect))
    assert cupy_lif.vecs(torch.float32) == (4, 2, 1)
    assert cupy_lif.vecs(torch.bfloat16) == cupy_lif.vecs(torch.float16) == (8, 4, 2, 1)
    assert not any("_v8_" in n for n in names)  # fp32: 16 bytes is VEC 4
    half = set(cupy_lif.kernel_names(cupy_lif.config_key(cfg(hard=False, surr=0),
                                                         torch.bfloat16)))
    assert {cupy_lif.fwd_kernel_name(8, 2), cupy_lif.bwd_kernel_name(8, True)} <= half
    for vec in cupy_lif.VECS:
        for save in (SAVE_NONE, SAVE_H, SAVE_BITS):
            assert cupy_lif.fwd_kernel_name(vec, save) in names
        assert cupy_lif.bwd_kernel_name(vec, True) in names
        assert cupy_lif.bwd_kernel_name(vec, False) in names
    # only Rect + soft reset saves bits, so only its module has the bits backward
    assert not any(n.endswith("_b1") for n in cupy_lif.kernel_names(hard_sig))
    # the names the source can produce (macro arguments) match the Python names
    src = cupy_lif.kernel_source(soft_rect)
    assert "lif_fwd_v##VEC##_s##SAVE(" in src and "lif_bwd_v##VEC##_b##BITS" in src
    assert cupy_lif.fwd_kernel_name(4, 2) == "lif_fwd_v4_s2"
    assert cupy_lif.bwd_kernel_name(2, False) == "lif_bwd_v2_b0"


def test_pick_vec():
    assert cupy_lif.pick_vec(1024, [(4096, 4), (8192, 4), (0, 4), (512, 1)]) == 4
    assert cupy_lif.pick_vec(1022, [(4096, 4)]) == 2            # N % 4 != 0
    assert cupy_lif.pick_vec(1023, [(4096, 4)]) == 1            # odd N
    assert cupy_lif.pick_vec(1024, [(4096 + 8, 4)]) == 2        # 8-byte aligned only
    assert cupy_lif.pick_vec(1024, [(4096 + 4, 4)]) == 1        # 4-byte aligned only
    assert cupy_lif.pick_vec(1024, [(4096 + 8, 2), (4096, 4)]) == 4  # fp16: 4 x 2 bytes
    assert cupy_lif.pick_vec(1024, [(4096 + 2, 1)]) == 2        # bits: 2-byte aligned
    assert cupy_lif.pick_vec(8, [(16, 8)]) == 2                 # fp64: 32-byte rule for VEC 4
    bf16 = cupy_lif.vecs(torch.bfloat16)
    assert cupy_lif.pick_vec(1024, [(4096, 2), (8192, 4)], bf16) == 8   # 16 bytes of bf16
    assert cupy_lif.pick_vec(1020, [(4096, 2)], bf16) == 4              # N % 8 != 0
    assert cupy_lif.pick_vec(1024, [(4096 + 8, 2)], bf16) == 4          # 8-byte aligned only
    assert cupy_lif.num_blocks(1, 1) == 1 and cupy_lif.num_blocks(1024, 4) == 1
    assert cupy_lif.num_blocks(1025, 4) == 2 and cupy_lif.num_blocks(257, 1) == 2


def test_scalar_args_round_like_make_lif_params():
    c = cfg(hard=True, tau=1.7, vth=0.6, alpha=3.3)
    f32 = cupy_lif.scalar_args(c, torch.float32)
    assert all(type(a) is np.float32 for a in f32)
    assert f32 == (np.float32(1.7), np.float32(1) / np.float32(1.7), np.float32(0.6),
                   np.float32(0.0), np.float32(3.3), np.float32(0.5 / 3.3),
                   np.float32(1.5707963267948966 * 3.3))
    # the rounding is from the double, once (not via an intermediate float)
    assert f32[5] == np.float32(0.5 / 3.3) and float(f32[5]) != 0.5 / 3.3
    # inv_tau is divided in the compute type, as make_lif_params does
    assert f32[1] == np.float32(1) / np.float32(1.7)
    f64 = cupy_lif.scalar_args(c, torch.float64)
    assert all(type(a) is np.float64 for a in f64) and float(f64[0]) == 1.7
    soft = cupy_lif.scalar_args(cfg(hard=False), torch.float32)
    assert soft[3] == 0.0  # Vr = 0 for soft reset


def test_module_cache_builds_once_per_key_thread_safe():
    built = []

    def build(key):
        built.append(key)
        return object()

    cache = cupy_lif.ModuleCache(build)
    k1 = (cupy_lif.config_key(cfg(), torch.float32), 0)
    k2 = (cupy_lif.config_key(cfg(), torch.float16), 0)
    k3 = (cupy_lif.config_key(cfg(), torch.float32), 1)  # another device
    m1 = cache.get(k1)
    assert cache.get(k1) is m1 and built == [k1]
    assert cache.get(k2) is not m1 and cache.get(k3) is not m1
    assert built == [k1, k2, k3] and len(cache) == 3
    results = []
    k4 = (cupy_lif.config_key(cfg(surr=2), torch.float32), 0)
    threads = [threading.Thread(target=lambda: results.append(cache.get(k4)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built.count(k4) == 1 and all(r is results[0] for r in results)
    cache.clear()
    assert len(cache) == 0


def test_binary_name_hashes_everything_it_depends_on(tmp_path, monkeypatch):
    src = cupy_lif.kernel_source(cupy_lif.config_key(cfg(), torch.float32))
    a = cupy_lif.binary_name(src, cupy_lif.NVRTC_OPTIONS, "90", (12, 8))
    assert a == cupy_lif.binary_name(src, cupy_lif.NVRTC_OPTIONS, "90", (12, 8))
    assert a != cupy_lif.binary_name(src + " ", cupy_lif.NVRTC_OPTIONS, "90", (12, 8))
    assert a != cupy_lif.binary_name(src, cupy_lif.NVRTC_OPTIONS, "80", (12, 8))
    assert a != cupy_lif.binary_name(src, cupy_lif.NVRTC_OPTIONS, "90", (13, 0))
    assert a != cupy_lif.binary_name(src, ("--fmad=true",), "90", (12, 8))
    assert re.fullmatch(r"lif_[0-9a-f]{32}_90", a)
    monkeypatch.setenv("TSSD_FAST_CUPY_CACHE", str(tmp_path))
    assert cupy_lif.cache_dir() == tmp_path


def test_nvrtc_options_keep_ieee_arithmetic():
    opts = cupy_lif.NVRTC_OPTIONS
    assert "--fmad=false" in opts
    assert not any("ftz=true" in o or "fast-math" in o for o in opts)


def test_no_gpu_launcher_is_none_with_a_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the launcher is exercised by test_gpu_backends.py")
    assert cupy_lif.launcher() is None
    assert "CUDA" in cupy_lif.unavailable_reason()


def test_importing_tssd_fast_never_imports_cupy():
    code = ("import sys, torch, tssd_fast\n"
            "from tssd_fast.ops import registry, cupy_lif\n"
            "print(tssd_fast.available_backends('cpu'))\n"
            "print(registry.runs_on('cupy', 'cuda') == torch.cuda.is_available() "
            "or not torch.cuda.is_available())\n"
            "assert 'cupy' not in sys.modules, 'importing tssd_fast imported cupy'\n")
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(importlib.util.find_spec("cupy") is None,
                    reason="cupy is not installed (pip install cupy-cuda12x to run this check)")
def test_with_cupy_installed_import_is_harmless():
    code = ("import torch, tssd_fast\n"
            "from tssd_fast.ops import registry, cupy_lif\n"
            "dev = torch.cuda.current_device() if torch.cuda.is_available() else None\n"
            "launcher = registry.launcher('cupy')\n"
            "if not torch.cuda.is_available():\n"
            "    assert launcher is None and registry.why_unavailable('cupy')\n"
            "    assert 'cupy' not in tssd_fast.available_backends('cuda')\n"
            "else:\n"
            "    assert torch.cuda.current_device() == dev\n"
            "print('ok')\n")
    proc = _run_python(code)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_nvrtc_target():
    # a cubin for the device when NVRTC knows it, else PTX for the newest arch below it
    assert cupy_lif.nvrtc_target(90, (75, 80, 86, 89, 90, 100), True) == ("sm_90", "cubin")
    assert cupy_lif.nvrtc_target(90, None, True) == ("sm_90", "cubin")
    assert cupy_lif.nvrtc_target(120, (75, 80, 90, 100), True) == ("compute_100", "ptx")
    assert cupy_lif.nvrtc_target(90, (75, 80, 90), False) == ("compute_90", "ptx")
