"""The CUDA sources compile without a GPU: every source of tssd_fast._C_cuda (csrc/cuda/*.cu and
*.cpp) with nvcc -arch=sm_90 against torch's headers (setup.py's flags), their objects resolve
each other's symbols, and the CuPy path's NVRTC source, assembled for each dtype
and flag set, with nvcc as a proxy for NVRTC (and with NVRTC itself when libnvrtc is found).
Skipped, with the reason, when nvcc (or libnvrtc) is not on this machine."""
import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tssd_fast.ops import cupy_lif
from tssd_fast.ops.config import SAVE_BITS, SAVE_H, LIFConfig

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
CU_FILES = sorted((CSRC / "cuda").glob("*.cu"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import _sass  # noqa: E402  (nvcc / cuobjdump lookup, compile flags, SASS parsing)

NVCC = _sass.find_nvcc()
CUOBJDUMP = _sass.find_cuobjdump()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, $NVCC, $CUDA_HOME)")

# Assembled NVRTC sources to check: every dtype, every surrogate, both resets, the bits case.
KEYS = [
    cupy_lif.config_key(LIFConfig(2.0, 1.0, None, False, 0, 1.0, False), torch.float32),
    cupy_lif.config_key(LIFConfig(2.0, 1.0, 0.0, True, 1, 4.0, True), torch.float16),
    cupy_lif.config_key(LIFConfig(2.0, 1.0, -0.5, False, 2, 2.0, False), torch.bfloat16),
    cupy_lif.config_key(LIFConfig(1.7, 0.6, None, True, 1, 4.0, False), torch.float64),
]


def test_there_are_cuda_sources():
    names = [p.name for p in CU_FILES]
    assert names == sorted([f"lif_cuda_{d}.cu" for d in ("bf16", "fp16", "fp32", "fp64")]
                           + ["spike_pack_kernels.cu"]), names
    assert (CSRC / "cuda" / "lif_cuda.cpp").is_file()
    assert [p.name for p in _sass.cuda_sources()] == names + ["lif_cuda.cpp"]
    assert (CSRC / "cuda" / "lif_kernels.cuh").is_file()


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    """setup.py's sources of tssd_fast._C_cuda compiled for sm_90, in parallel as a build would:
    {source: (object path, nvcc's CompletedProcess)}."""
    out = tmp_path_factory.mktemp("cuda_objects")
    procs = _sass.compile_objects(out, nvcc=NVCC)
    return {src: (out / f"{src.stem}.o", proc) for src, proc in procs.items()}


@needs_nvcc
@pytest.mark.parametrize("src", _sass.cuda_sources(), ids=lambda p: p.name)
def test_cuda_source_compiles_for_sm90(src, objects):
    obj, proc = objects[src]
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert obj.stat().st_size > 0


@needs_nvcc
def test_the_objects_link_each_others_symbols(objects):
    """What one translation unit of _C_cuda uses from ours (tssd_fast::...) another defines:
    the dtype dispatch in lif_cuda.cpp finds every dtype's launchers, the launchers find the
    launch shape. (The link of the extension happens only on a CUDA build.)"""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found")
    assert all(proc.returncode == 0 for _, proc in objects.values())
    defined, wanted = set(), {}
    for src, (obj, _) in objects.items():
        for line in subprocess.run([nm, "-C", str(obj)], capture_output=True, text=True,
                                   check=True).stdout.splitlines():
            kind, name = (line[17:18], line[19:]) if line[:1] != " " else ("U", line[19:])
            if "tssd_fast::" not in name:
                continue
            if kind == "U":
                wanted.setdefault(name, src.name)
            elif kind in "TtWw":
                defined.add(name)
    missing = {name: src for name, src in wanted.items() if name not in defined}
    assert not missing, missing
    typed = [n for n in wanted if "launch_forward_typed<" in n or "launch_backward_typed<" in n]
    assert len(typed) == 8, typed  # 4 storage types x 2 directions, called by lif_cuda.cpp
    packing = [n for n in wanted if "launch_pack_typed<" in n or "launch_unpack_typed<" in n]
    assert len(packing) == 8, packing  # the spike packing ops' launchers, same count


@needs_nvcc
def test_spike_pack_kernels_machine_code(objects):
    """spike_pack_kernels.cu holds a pack and an unpack kernel per storage type, each one thread per
    byte: one byte load or store per plane, and no local memory (the per-plane arrays of
    csrc/spike_pack.h stay in registers)."""
    if CUOBJDUMP is None:
        pytest.skip("cuobjdump not found (CUDA toolkit, or triton's wheel)")
    obj = objects[CSRC / "cuda" / "spike_pack_kernels.cu"][0]
    bodies = re.split(r"\n\s*Function : ", _sass.dump_sass(obj, CUOBJDUMP))[1:]
    names = [b.split("\n", 1)[0].strip() for b in bodies]
    assert sum("pack_kernel" in n and "unpack_kernel" not in n for n in names) == 4, names
    assert sum("unpack_kernel" in n for n in names) == 4, names
    for name, body in zip(names, bodies):
        assert not re.search(r"\b(LDL|STL)\b", body), f"{name} spills to local memory"
        byte_ops = re.findall(r"\b(LDG\.E\.U8|STG\.E\.U8)\b", body)
        assert byte_ops, (name, "no byte access")


@needs_nvcc
def test_kernels_machine_code(objects):
    """Every 16-byte kernel's accesses, the tau division, and the SASS report over the kernels
    of all four storage types' objects."""
    if CUOBJDUMP is None:
        pytest.skip("cuobjdump not found (CUDA toolkit, or triton's wheel)")
    objs = [obj for src, (obj, _) in objects.items() if src.suffix == ".cu"]
    kernels = _sass.kernels(_sass.dump_sass(objs, CUOBJDUMP))
    regs = _sass.registers(objs, CUOBJDUMP)
    assert {k.storage for k in kernels} == {"fp32", "fp64", "fp16", "bf16"}
    assert all(0 < regs.get(k.mangled, 0) <= 255 for k in kernels)
    _check_128_bit_accesses(kernels)
    _check_tau_division(kernels)
    _check_sass_report(kernels, regs)
    _check_tuning_switches_off(kernels)


def _check_tuning_switches_off(kernels):
    """The build's kernels have lif_kernels.cuh's tuning switches off (benchmarks/
    cuda_variants.py turns them on): no L2 prefetch, no evict-first access, and every 16-byte
    row load on the read-only path."""
    for k in kernels:
        ops = re.findall(r"\b((?:LDG|STG|CCTL)\.[\w.]+)", k.body)
        assert not any(o.startswith("CCTL") or ".EF" in o for o in ops), (k.name, set(ops))
        assert all(o.endswith(".CONSTANT") for o in ops if o.startswith("LDG.E.128")), k.name


def _check_128_bit_accesses(kernels):
    """Every kernel instantiated with 16 bytes of storage per thread and row reads and writes
    x / spikes / H / V / gradients with 128-bit accesses (LDG.E.128 / STG.E.128); only the
    Rect window bits (VEC bytes per thread) use a narrower access, of exactly VEC bytes."""
    checked = 0
    for k in kernels:
        if not k.vec16:
            continue
        accesses = re.findall(r"\b((?:LDG|STG)\.E[.\w]*)", k.body)
        wide = [a for a in accesses if ".128" in a]
        narrow = [a for a in accesses if ".128" not in a]
        assert any(a.startswith("LDG") for a in wide) and any(a.startswith("STG") for a in wide), \
            (k.name, accesses)
        # the window bits: VEC bytes per thread and row, one access of exactly that width
        bits_width = {8: ".64", 4: "", 2: ".U16"}[k.vec]
        assert all(k.saves_bits and re.sub(r"\.CONSTANT$", "", a)[5:] == bits_width
                   for a in narrow), (k.name, narrow)
        checked += 1
    assert checked >= 40, f"only {checked} 16-byte kernels found in the SASS"


def _check_sass_report(kernels, regs):
    """benchmarks/sass_report.py finds the time loop of every kernel it reports: the paper's and
    SpikingJelly's neuron, forward and backward, fp32 / bf16 / fp16, one or more steps per
    iteration."""
    import argparse
    import sass_report
    args = argparse.Namespace(all=False, sms=132, clock_ghz=1.98, copy_tbps=4.21)
    rows, budget = sass_report.rows(kernels, args, regs)
    assert 7 < budget < 9
    got = {(r["neuron"], r["direction"], r["dtype"]) for r in rows}
    assert got == {(n, d, t) for n in ("paper", "sj") for d in ("fwd", "bwd")
                   for t in ("fp32", "bf16", "fp16")}, got
    assert all(r["step"] > 0 and r["elem"] > 0 and r["ipb"] > 0 for r in rows), rows
    assert all(256 <= r["threads"] <= 2048 and r["in_flight"] > 0 for r in rows), rows


def _check_tau_division(kernels):
    """The kernels specialized for a power-of-two tau (LIFParams flag 8 static and set) divide
    by nothing in the forward and the Rect backward: no reciprocal (MUFU.RCP) and no call into
    the division's slow path. Those specialized for another tau keep the IEEE division."""
    pow2 = other = 0
    for k in kernels:
        if k.flag(8) is None or not (k.direction == "forward" or k.save_or_surr == 0):
            continue
        divides = "MUFU.RCP" in k.body or re.search(r"\bCALL\b", k.body) is not None
        if k.flag(8):
            assert not divides, (k.name, "a power-of-two tau still divides")
            pow2 += 1
        else:
            assert divides, (k.name, "expected the IEEE division of a general tau")
            other += 1
    assert pow2 >= 24 and other >= 24, (pow2, other)


def _entries(ptx: str):
    return set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))


def _entry_body(ptx: str, name: str) -> str:
    start = ptx.index(f".entry {name}(")
    end = ptx.find(".entry ", start + 1)
    return ptx[start:end if end > 0 else len(ptx)]


@needs_nvcc
def test_nvrtc_sources_compile_with_nvcc(tmp_path):
    """Proxy for NVRTC: the assembled source alone (no include path, no torch) compiles with
    nvcc, defines exactly the entry points the launcher calls, and its forward is FMA-free
    with correctly rounded division and vector accesses."""
    for i, key in enumerate(KEYS):
        src = tmp_path / f"lif_{i}.cu"
        src.write_text(cupy_lif.kernel_source(key))
        ptx_path = tmp_path / f"lif_{i}.ptx"
        opts = cupy_lif.nvcc_options()
        proc = subprocess.run([NVCC, "-arch=sm_90", "-ptx", *opts, str(src), "-o", str(ptx_path)],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, (key, proc.stderr[-4000:])
        ptx = ptx_path.read_text()
        assert _entries(ptx) == set(cupy_lif.kernel_names(key)), key
        f64 = key[0] == "float64"
        fwd = _entry_body(ptx, cupy_lif.fwd_kernel_name(4, SAVE_H))
        assert "fma." not in fwd, (key, "FMA contraction in forward")
        assert (".ftz" not in fwd), (key, "flush-to-zero in forward")
        # a / tau: correctly rounded division, or a multiply by 1/tau for a power-of-two tau
        div = "div.rn.f64" if f64 else "div.rn.f32"
        assert (div not in fwd) if key[1] & 8 else (div in fwd), key
        if key[0] == "float32":
            assert "ld.global.nc.v4.f32" in fwd and "st.global.v4.f32" in fwd, key
        if key[0] in ("float16", "bfloat16"):  # 16 bytes = 8 elements, moved as 4 words
            fwd8 = _entry_body(ptx, cupy_lif.fwd_kernel_name(8, SAVE_BITS))
            assert re.search(r"ld\.global\.nc\.v4\.[ub]32", fwd8), key
            assert re.search(r"st\.global\.v4\.[ub]32", fwd8), key
        _check_launch_arguments(ptx, key)


_PTX_TYPES = {"uint64": "u64", "int64": "u64", "float32": "f32", "float64": "f64"}


def _params(ptx: str, name: str):
    head = _entry_body(ptx, name).split(")", 1)[0]
    return re.findall(r"\.param \.(\w+) " + name + r"_param_\d+", head)


def _check_launch_arguments(ptx: str, key):
    """The CuPy launcher's argument tuples (built on CPU tensors) match the entry points'
    parameters one by one: count and type (pointers and T, N 64-bit, scalars in the compute
    type, the forward's v_init last)."""
    dtype = getattr(torch, key[0])
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    cfg = LIFConfig(2.0, 1.0, None, False, 0, 1.0, False)
    T, N = 3, 64
    x, s, gx = (torch.zeros(T, N, dtype=dtype) for _ in range(3))
    v0, vl, gv0 = (torch.zeros(N, dtype=acc) for _ in range(3))
    h = torch.zeros(T, N, dtype=acc)
    bits = torch.zeros(1, N, dtype=torch.uint8)
    launches = (cupy_lif.forward_launch(x, v0, s, vl, None, h, None, cfg, 0.5),
                cupy_lif.forward_launch(x, None, s, vl, h, None, bits, cfg, 0.5),
                cupy_lif.backward_launch(x, h, v0, h, None, gx, gv0, cfg),
                cupy_lif.backward_launch(x, None, None, None, bits, gx, None, cfg))  # no grad_v0
    checked = 0
    for name, vec, args in launches:
        if name in cupy_lif.kernel_names(key):  # the bits entries exist for Rect + soft reset
            got = [_PTX_TYPES[type(a).__name__] for a in args]
            assert _params(ptx, name) == got, (key, name)
            checked += 1
    assert checked >= 3, key
    # the forward's v0 pointer (null: start at v_init) and v_init, last
    assert [int(launches[i][2][1]) for i in (0, 1)] == [v0.data_ptr(), 0]
    assert [float(launches[i][2][-1]) for i in (0, 1)] == [0.5, 0.5]


def _find_libnvrtc():
    cands = [os.environ.get("TSSD_FAST_LIBNVRTC")]
    name = ctypes.util.find_library("nvrtc")
    cands.append(name)
    for base in [os.environ.get("CUDA_HOME", "/usr/local/cuda")] + sys.path:
        if not base:
            continue
        cands += glob.glob(os.path.join(base, "lib64", "libnvrtc.so*"))
        cands += glob.glob(os.path.join(base, "nvidia", "*", "lib", "libnvrtc.so*"))
        cands += glob.glob(os.path.join(base, "nvidia", "cu*", "lib", "libnvrtc.so*"))
    for c in cands:
        if not c or "builtins" in c:
            continue
        try:
            return ctypes.CDLL(c)
        except OSError:
            continue
    return None


def test_nvrtc_compiles_the_sources():
    """The real thing: NVRTC (libnvrtc, found via $TSSD_FAST_LIBNVRTC, the loader, CUDA_HOME or
    the nvidia-cuda-nvrtc wheels) compiles every assembled source with the launcher's options.
    NVRTC needs no GPU."""
    lib = _find_libnvrtc()
    if lib is None:
        pytest.skip("libnvrtc not found (set TSSD_FAST_LIBNVRTC, or install nvidia-cuda-nvrtc)")
    for key in KEYS:
        src = cupy_lif.kernel_source(key).encode()
        prog = ctypes.c_void_p()
        assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"lif.cu", 0, None, None) == 0
        opts = [o.encode() for o in cupy_lif.NVRTC_OPTIONS] + [b"-arch=compute_80"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value + 1)
        lib.nvrtcGetProgramLog(prog, log)
        psize = ctypes.c_size_t()
        lib.nvrtcGetPTXSize(prog, ctypes.byref(psize))
        ptx = ctypes.create_string_buffer(psize.value + 1)
        lib.nvrtcGetPTX(prog, ptx)
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
        assert rc == 0, (key, log.value.decode(errors="replace")[-4000:])
        assert _entries(ptx.value.decode()) == set(cupy_lif.kernel_names(key)), key
