"""Backend 'triton': the Triton kernels of tssd_fast.ops.triton_lif behind the Python op
tssd_fast::lif_forward_py. On CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1 (tests)."""
import importlib
import os

from . import ALL_FLOATS, PY_LAUNCHER, Backend


def _devices():
    # Under TRITON_INTERPRET=1, Triton kernels run on CPU tensors (slow; for tests).
    return ("cuda", "cpu") if os.environ.get("TRITON_INTERPRET", "0") == "1" else ("cuda",)


def _load():
    try:
        mod = importlib.import_module("tssd_fast.ops.triton_lif")
    except Exception as e:  # noqa: BLE001 - an optional backend must never break import
        return None, f"tssd_fast.ops.triton_lif failed to import: {e}"
    launcher = mod.launcher()
    return (launcher, "") if launcher is not None else (None, mod.unavailable_reason())


BACKEND = Backend(
    name="triton", summary="Triton kernels (GPU; CPU under TRITON_INTERPRET=1), Python launcher",
    kind=PY_LAUNCHER, dtypes=ALL_FLOATS, devices=_devices, load=_load)
