"""Backend 'cuda': the compiled CUDA kernels (csrc/cuda/), registered for the CUDA
dispatch key of the op in the module tssd_fast._C_cuda (built by setup.py with nvcc)."""
import torch

from .. import _ext
from . import ALL_FLOATS, CPP_OP, Backend


def _load():
    if not torch.cuda.is_available():
        return None, "torch sees no CUDA device"
    if _ext.cuda_module() is None:
        return None, _ext.load_error("cuda")
    return True, ""


BACKEND = Backend(
    name="cuda", summary="compiled CUDA kernel (nvcc, built by pip install), C++ op",
    kind=CPP_OP, dtypes=ALL_FLOATS, devices=lambda: ("cuda",), load=_load)
