"""Backend 'cupy': the CUDA kernel source (csrc/cuda/lif_kernels.cuh) compiled at run time by
NVRTC through CuPy (tssd_fast.ops.cupy_lif), behind the Python op tssd_fast::lif_forward_py."""
import importlib

from . import ALL_FLOATS, PY_LAUNCHER, Backend


def _load():
    try:
        mod = importlib.import_module("tssd_fast.ops.cupy_lif")
    except Exception as e:  # noqa: BLE001 - an optional backend must never break import
        return None, f"tssd_fast.ops.cupy_lif failed to import: {e}"
    launcher = mod.launcher()
    return (launcher, "") if launcher is not None else (None, mod.unavailable_reason())


BACKEND = Backend(
    name="cupy", summary="CUDA kernels compiled at run time by NVRTC (CuPy), Python launcher",
    kind=PY_LAUNCHER, dtypes=ALL_FLOATS, devices=lambda: ("cuda",), load=_load)
