"""Backend 'cupy': the CUDA kernel source (csrc/cuda/lif_kernels.cuh) compiled at run time by
NVRTC through CuPy (tssd_fast.ops.cupy_lif), behind the Python op tssd_fast::lif_forward_py."""
from . import ALL_FLOATS, PY_LAUNCHER, Backend, python_launcher

BACKEND = Backend(
    name="cupy", summary="CUDA kernels compiled at run time by NVRTC (CuPy), Python launcher",
    kind=PY_LAUNCHER, dtypes=ALL_FLOATS, devices=lambda: ("cuda",),
    load=lambda: python_launcher("cupy_lif"))
