"""The triton backend's direct launch (tssd_fast.ops.triton_lif._Launch) against Triton's own:
for every launch, the compiled kernel it runs and the arguments its launcher gets must be the
ones JITFunction.run would use.

No GPU here: a child process (without TRITON_INTERPRET) makes a stand-in CUDA driver active
(benchmarks/_triton_fake_driver.py). Triton compiles the kernels for sm_90 as on a GPU and
runs its whole launch path; the kernels' C launchers record their arguments instead of
launching. The GPU runs the same checks for real with TSSD_FAST_TRITON_LAUNCH_CHECK=1.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent / "benchmarks"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_direct_launch_runs_what_triton_would():
    import tssd_fast
    root = str(Path(tssd_fast.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, str(BENCH), str(HERE)]))
    env.pop("TRITON_INTERPRET", None)
    env.pop("TSSD_FAST_TRITON_LAUNCH_CHECK", None)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], cwd=str(HERE),
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "launches compared:" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_op_overhead_triton_host_runs_the_module_path():
    """`op_overhead.py --triton-host`: LIFNode forward and backward on the triton backend,
    through the direct launch and through JITFunction.run, with the stand-in driver."""
    import tssd_fast
    from tssd_fast.ops import triton_lif
    if not triton_lif._DIRECT:  # the stand-in driver is written for the same releases
        pytest.skip(f"the direct launch is off for this triton (written for "
                    f"{triton_lif.DIRECT_TRITON})")
    root = str(Path(tssd_fast.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, str(BENCH / "op_overhead.py"), "--triton-host",
                           "--rounds", "1", "--calls", "3"], cwd=str(HERE), env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = sorted(line.split()[0] for line in proc.stdout.splitlines()[-4:])
    assert rows == ["cpp", "torch.sigmoid", "triton", "triton"], proc.stdout[-2000:]
    assert "triton (JITFunction.run)" in proc.stdout


# ------------------------------------------------------------------ the child process


def _same(a, b) -> bool:
    """Launcher arguments equal: tensors by identity, launch metadata by content."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if hasattr(x, "get") and hasattr(x, "extras"):  # LazyDict launch metadata
            if not (hasattr(y, "get") and x.get() == y.get()):
                return False
        elif x is not y and not (type(x) is type(y) and x == y):
            return False
    return True


def _child() -> int:
    import torch
    import triton
    from tssd_fast.ops import triton_lif as L
    if not L._DIRECT:
        print(f"triton {triton.__version__}: the direct launch is off (written for "
              f"{L.DIRECT_TRITON})")
        return 3
    import _triton_fake_driver as F
    F.install()
    F.cpu_as_cuda()
    from tssd_fast.ops.config import PAPER, SPIKINGJELLY_DEFAULT
    la = L.launcher()

    def buffers(T, N, dtype, misalign=0):
        """Launch buffers for [T, N]; misalign shifts x / grad_s by elements off 16 bytes."""
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        base = torch.randn(T * N + misalign, dtype=dtype)
        x = base[misalign:].view(T, N)
        return dict(x=x, v0=torch.randn(N, dtype=acc), s=torch.empty(T, N, dtype=dtype),
                    vl=torch.empty(N, dtype=acc), vs=torch.empty(T, N, dtype=acc),
                    h=torch.empty(T, N, dtype=acc), bits=torch.empty((T + 7) // 8, N,
                                                                     dtype=torch.uint8),
                    gx=torch.empty(T, N, dtype=dtype), gv0=torch.empty(N, dtype=acc))

    def calls(T, N, dtype, misalign=0):
        """A forward and backward of each kind on fresh buffers."""
        b = buffers(T, N, dtype, misalign)
        return [
            lambda: la.forward(b["x"], None, b["s"], b["vl"], None, None, b["bits"], PAPER, 0.25),
            lambda: la.forward(b["x"], b["v0"], b["s"], b["vl"], b["vs"], b["h"], None,
                               SPIKINGJELLY_DEFAULT),
            lambda: la.backward(b["x"], None, None, None, b["bits"], b["gx"], None, PAPER),
            lambda: la.backward(b["x"], b["vs"], b["v0"], b["h"], None, b["gx"], b["gv0"],
                                SPIKINGJELLY_DEFAULT),
        ]

    def recorded(call, direct):
        L._DIRECT = direct
        F.record(True)
        call()
        out = list(F.LAUNCHES)
        F.record(False)
        return out

    # Specialisations Triton tells apart: N % 16, N == 1, 16-byte alignment, dtype; and
    # constexprs (4112: a partial last program, EVEN False, all else as 4096).
    shapes = [(4, 4096, torch.float32, 0), (4, 4112, torch.float32, 0),
              (9, 17, torch.float32, 0), (3, 1, torch.float32, 0),
              (4, 4096, torch.float32, 1), (8, 4096, torch.bfloat16, 0),
              (2, 48, torch.float64, 0)]
    compared = 0
    for T, N, dtype, mis in shapes:
        for i, call in enumerate(calls(T, N, dtype, mis)):
            call()  # first launch of the key: Triton's own, and the kernel is cached
            for _ in range(2):
                theirs, ours = recorded(call, False), recorded(call, True)
                assert len(theirs) == len(ours) == 1, (len(theirs), len(ours))
                assert _same(theirs[0], ours[0]), (T, N, dtype, mis, i)
                compared += 1
    # A new buffer with the same specialisation reuses the cached kernel; a cached kernel is
    # always the one Triton picks (asked on every launch with the check on).
    L._DIRECT, L._CHECK = True, True
    kernels = len(L._fwd_launch.kernels) + len(L._bwd_launch.kernels)
    for T, N, dtype, mis in shapes:
        for call in calls(T, N, dtype, mis):
            call()
    assert len(L._fwd_launch.kernels) + len(L._bwd_launch.kernels) == kernels
    # The check catches a key coarser than Triton's: ignore what an int is specialised on; N = 47
    # after N = 48 reuses the N % 16 == 0 kernel (same block and EVEN).
    L._int_spec = lambda i: None
    L._fwd_launch.kernels.clear()
    calls(3, 48, torch.float32)[0]()
    try:
        calls(3, 47, torch.float32)[0]()
    except RuntimeError as e:
        assert "is not the kernel Triton picks" in str(e), e
    else:
        raise AssertionError("a cached kernel of another specialisation was not caught")
    print(f"launches compared: {compared}, kernels cached: {kernels}")
    return 0


if __name__ == "__main__":
    sys.exit(_child())
