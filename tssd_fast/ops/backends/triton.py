"""Backend 'triton': the Triton kernels of tssd_fast.ops.triton_lif behind the Python op
tssd_fast::lif_forward_py. On CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1 (tests)."""
import os

from . import ALL_FLOATS, PY_LAUNCHER, Backend, python_launcher


def _devices():
    # Under TRITON_INTERPRET=1, Triton kernels run on CPU tensors (slow; for tests).
    return ("cuda", "cpu") if os.environ.get("TRITON_INTERPRET", "0") == "1" else ("cuda",)


BACKEND = Backend(
    name="triton", summary="Triton kernels (GPU; CPU under TRITON_INTERPRET=1), Python launcher",
    kind=PY_LAUNCHER, dtypes=ALL_FLOATS, devices=_devices,
    load=lambda: python_launcher("triton_lif"))
