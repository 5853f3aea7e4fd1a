"""tests/cuda_on_cpu.cpp (the CUDA kernel bodies compiled for the CPU) built with g++ and loaded
through ctypes, for the tests that run the bodies without a GPU."""
import ctypes
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
GXX = shutil.which("g++")
DTYPES = {"float32": 0, "bfloat16": 1, "float64": 2}  # the shim's dtype codes (no fp16)


def build(folder: Path, *defines: str) -> ctypes.CDLL:
    """The shim as a shared library in `folder`, with `defines` (-D...)."""
    out = Path(folder) / "cuda_on_cpu.so"
    proc = subprocess.run([GXX, "-O0", "-std=c++17", "-ffp-contract=off", "-shared", "-fPIC",
                           *defines, f"-I{HERE.parent / 'csrc'}", str(HERE / "cuda_on_cpu.cpp"),
                           "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    so = ctypes.CDLL(str(out))
    i64, dbl, ptr, i32 = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p, ctypes.c_int
    # lif_emu_forward(dtype, vec, save, static_flags, x, v0, v_init, spikes, v_last, v_seq, h,
    #                 bits, T, N, tau, v_threshold, v_reset, alpha, hard, decay, detach)
    so.lif_emu_forward.argtypes = [i32] * 4 + [ptr, ptr, dbl] + [ptr] * 5 + [i64, i64] + \
        [dbl] * 4 + [i32] * 3
    # lif_emu_backward(dtype, vec, surrogate, use_bits, static_flags, grad_s, grad_v_seq,
    #                  grad_v_last, h, bits, grad_x, grad_v0, T, N, tau, v_threshold, v_reset,
    #                  alpha, hard, decay, detach)
    so.lif_emu_backward.argtypes = [i32] * 5 + [ptr] * 7 + [i64, i64] + [dbl] * 4 + [i32] * 3
    return so
