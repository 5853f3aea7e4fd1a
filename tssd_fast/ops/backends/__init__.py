"""One module per backend of the LIF op, each describing itself with a `Backend` record.

    reference  'torch'   the pure-PyTorch autograd loop (tssd_fast.ops.reference)
    cpp        'cpp'     compiled CPU kernel, registered in C++ (csrc/cpu, csrc/lif_op.cpp)
    cuda       'cuda'    compiled CUDA kernel, registered in C++ (csrc/cuda)
    triton     'triton'  Triton kernels (tssd_fast.ops.triton_lif), a Python launcher
    cupy       'cupy'    the CUDA kernels compiled at run time by NVRTC (tssd_fast.ops.cupy_lif)

Use them through tssd_fast.ops.registry (info, backends, why_unavailable), not directly.
"""
from dataclasses import dataclass
from typing import Callable, Tuple

import torch

ALL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# How a backend runs: the reference autograd loop, the C++-registered op (dispatch by device,
# autograd in C++), or a Python launcher behind the op tssd_fast::lif_forward_py.
REFERENCE, CPP_OP, PY_LAUNCHER = "reference", "op", "python"


@dataclass(frozen=True)
class Backend:
    """What a backend is: its name, a one-line summary, how it runs (REFERENCE / CPP_OP /
    PY_LAUNCHER), the storage dtypes it takes, where it can run (`devices()`, a function since
    Triton's depends on TRITON_INTERPRET) and how to load it: `load()` returns
    (launcher or True, '') when it works here, (None, reason) when not."""

    name: str
    summary: str
    kind: str
    dtypes: Tuple[torch.dtype, ...]
    devices: Callable[[], Tuple[str, ...]]
    load: Callable[[], tuple]
