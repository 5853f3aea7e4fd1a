"""tssd_fast: fast spiking neural network training.

A fused multi-timestep LIF neuron (pure-PyTorch reference, compiled CPU kernel, CUDA, Triton,
CuPy) behind one op, a drop-in LIFNode for SpikingJelly networks, and on top spiking VGG/ResNet
and the TSSD self-distillation method.
"""
__version__ = "0.1.0"

from . import surrogate
from .functional import lif_multistep
from .neuron import LIFNode, reset_net
from .ops.reference import lif_multistep_ref
from .ops.registry import available_backends

__all__ = ["LIFNode", "reset_net", "surrogate", "lif_multistep", "lif_multistep_ref",
           "available_backends", "__version__"]
