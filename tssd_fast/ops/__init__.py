"""The LIF op and its implementations: reference (pure PyTorch), registry of backends,
the torch.library registration (lif_op), and the launchers of each fused backend."""
from .config import LIFConfig
from .reference import lif_multistep_ref, lif_step_ref
from .registry import AUTO_ORDER, BACKENDS, ENV_BACKEND, available_backends

__all__ = ["LIFConfig", "lif_multistep_ref", "lif_step_ref", "available_backends", "BACKENDS",
           "AUTO_ORDER", "ENV_BACKEND"]
