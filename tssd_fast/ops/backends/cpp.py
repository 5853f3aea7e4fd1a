"""Backend 'cpp': the compiled CPU kernel (csrc/cpu/lif_cpu.cpp), registered with the op's
schema and C++ autograd formula (csrc/lif_op.cpp) in the module tssd_fast._C."""
from .. import _ext
from . import ALL_FLOATS, CPP_OP, Backend


def _load():
    return (True, "") if _ext.cpu_module() is not None else (None, _ext.load_error("cpp"))


BACKEND = Backend(
    name="cpp", summary="compiled CPU kernel (parallel over neurons, vectorised), C++ op",
    kind=CPP_OP, dtypes=ALL_FLOATS, devices=lambda: ("cpu",), load=_load)
