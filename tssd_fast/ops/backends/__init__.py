"""One module per backend of the LIF op, each describing itself with a `Backend` record.

    reference  'torch'   the pure-PyTorch autograd loop (tssd_fast.ops.reference)
    cpp        'cpp'     compiled CPU kernel, registered in C++ (csrc/cpu, csrc/lif_op.cpp)
    cuda       'cuda'    compiled CUDA kernel, registered in C++ (csrc/cuda)
    triton     'triton'  Triton kernels (tssd_fast.ops.triton_lif), a Python launcher
    cupy       'cupy'    the CUDA kernels compiled at run time by NVRTC (tssd_fast.ops.cupy_lif)

Use them through tssd_fast.ops.registry (info, backends, why_unavailable), not directly.
"""
import importlib
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


def python_launcher(module_name: str) -> tuple:
    """load() of a PY_LAUNCHER backend: tssd_fast.ops.<module_name>.launcher(), or (None, why)
    when the module does not import or its launcher() is None (the module says why)."""
    try:
        mod = importlib.import_module(f"tssd_fast.ops.{module_name}")
    except Exception as e:  # noqa: BLE001 - an optional backend must never break import
        return None, f"tssd_fast.ops.{module_name} failed to import: {e}"
    launcher = mod.launcher()
    return (launcher, "") if launcher is not None else (None, mod.unavailable_reason())
