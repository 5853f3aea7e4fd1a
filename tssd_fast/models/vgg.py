"""Spiking VGG-9 (8 conv + 1 FC) and its ANN twin; structure in docs/NETWORKS.md."""
from __future__ import annotations

import torch.nn as nn

from .base import StagedNet
from .layers import NeuronFactory, SeqToANN, binary_neuron, conv_bn, resolve_neuron, scaled
from .spike_layers import SPIKES, LeanAvgPool2d, SpikeCode, SpikeLinear, set_memory_mode
from .weak import WeakClassifier

# stage number -> conv output channels; every stage 2..5 ends with a 2x2 average pool.
VGG9_STAGES = {2: (64, 128), 3: (256, 256), 4: (512, 512), 5: (512, 512)}

POOLED_SPIKES = SpikeCode(4, 4)
"""A 2x2 average pool of spikes: {0, 1/4, 1/2, 3/4, 1} (each stage's output)."""


def _vgg_stage(cin: int, channels: tuple[int, ...], neuron: NeuronFactory, code: SpikeCode | None,
               binary: bool) -> nn.Sequential:
    layers = []
    for cout in channels:
        layers += [conv_bn(cin, cout, code=code), neuron()]
        cin, code = cout, SPIKES if binary else None
    return nn.Sequential(*layers, SeqToANN(LeanAvgPool2d(2)))


def vgg9(num_classes: int = 10, in_channels: int = 3, input_size: int | tuple[int, int] = 32,
         width: float = 1.0, weak_stage: int | None = 3, weak_channels: int | None = None,
         neuron: NeuronFactory | None = None, backend: str = "auto",
         neuron_kwargs: dict | None = None, spiking: bool = True, memory: str = "default",
         binary_spikes: bool | None = None) -> StagedNet:
    """Spiking VGG-9 (``spiking=False``: the ReLU ANN twin, without weak head).

    ``input_size`` (H or (H, W), divisible by 16) fixes the FC input (flattened 512 x H/16 x W/16).
    ``neuron`` is a factory of multi-step neurons; by default ``tssd_fast.LIFNode`` with the
    paper's settings (``layers.paper_neuron_kwargs``) updated by ``neuron_kwargs``, on ``backend``.
    Stage 1 is empty for VGG-9 (the paper's table starts VGG-9 at stage 2).
    ``memory`` (``'default'``, ``'min'``, ``'plain'``) and ``binary_spikes``: what is kept for
    backward (``spike_layers.set_memory_mode``, ``layers.binary_neuron``; docs/MEMORY.md).
    """
    act = resolve_neuron(neuron, backend, neuron_kwargs, spiking)
    binary = binary_neuron(act, spiking, binary_spikes)
    pooled = POOLED_SPIKES if binary else None
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    if h % 16 or w % 16:
        raise ValueError(f"VGG-9 needs an input size divisible by 16, got {(h, w)}")
    stages, cin, widths, code = [nn.Identity()], in_channels, {}, None
    for k, chans in VGG9_STAGES.items():
        chans = tuple(scaled(c, width) for c in chans)
        stages.append(_vgg_stage(cin, chans, act, code, binary))
        cin, code = chans[-1], pooled
        widths[k] = cin
    fc_in = cin * (h // 16) * (w // 16)
    fc = nn.Linear(fc_in, num_classes) if pooled is None else SpikeLinear(fc_in, num_classes, code=pooled)
    head = SeqToANN(nn.Flatten(), fc)
    if not spiking:
        weak_stage = None
    weak = None
    if weak_stage is not None:
        if weak_stage not in widths:
            raise ValueError(f"VGG-9 weak_stage must be one of 2, 3, 4, got {weak_stage}")
        weak = WeakClassifier(widths[weak_stage], num_classes, act, weak_channels, in_code=pooled)
    return set_memory_mode(StagedNet(stages, head, weak, weak_stage, spiking), memory)
