"""The LIF op and its implementations: reference (pure PyTorch), registry of backends,
the torch.library registration (lif_op), and the launchers of each fused backend."""
from ._alloc import poison as poison_outputs
from ._ext import csrc_dir as kernel_sources
from .config import LIFConfig
from .reference import lif_multistep_ref, lif_step_ref
from .registry import AUTO_ORDER, BACKENDS, ENV_BACKEND, available_backends


def kernel_origin() -> str:
    """Where the compiled CPU kernel comes from: 'prebuilt' (built by pip install), 'JIT'
    (compiled on first use) or 'none' (unavailable: see registry.why_unavailable('cpp'))."""
    from . import _ext
    cpu = _ext.cpu_module()
    return "none" if cpu is None else ("prebuilt" if cpu.__name__ == "tssd_fast._C" else "JIT")


__all__ = ["LIFConfig", "lif_multistep_ref", "lif_step_ref", "available_backends", "BACKENDS",
           "AUTO_ORDER", "ENV_BACKEND", "poison_outputs", "kernel_sources", "kernel_origin"]
