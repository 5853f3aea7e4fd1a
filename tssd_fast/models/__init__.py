"""Multi-step spiking networks (VGG-9, ResNet-18/34) with a weak classifier, and their ANN twins.

See docs/NETWORKS.md for the structures, the BN choice and the layouts.
"""
from .base import StagedNet, reset_states, strip_weak
from .encoding import ann_input, direct_encode, to_sequence
from .layers import SeqToANN, lif_factory, paper_neuron_kwargs
from .resnet import SpikingBasicBlock, resnet18, resnet34
from .spike_layers import (MEMORY_MODES, SPIKES, ConvBN, LeanAvgPool2d, SpikeCode, SpikeConv2d, SpikeLinear,
                           check_spikes, set_memory_mode)
from .vgg import vgg9
from .weak import WeakClassifier
from .zoo import ARCHITECTURES, build_ann, build_model

__all__ = [
    "StagedNet", "reset_states", "strip_weak", "ann_input", "direct_encode", "to_sequence", "SeqToANN",
    "lif_factory", "paper_neuron_kwargs", "SpikingBasicBlock", "resnet18", "resnet34", "vgg9",
    "WeakClassifier", "ARCHITECTURES", "build_ann", "build_model", "MEMORY_MODES", "SPIKES", "ConvBN",
    "LeanAvgPool2d", "SpikeCode", "SpikeConv2d", "SpikeLinear", "check_spikes", "set_memory_mode",
]
