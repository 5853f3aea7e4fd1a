"""Spiking ResNet-18 / ResNet-34 with the neuron before the residual addition (MLF / DS-ResNet)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import StagedNet
from .layers import NeuronFactory, SeqToANN, binary_neuron, conv_bn, resolve_neuron, scaled
from .spike_layers import SPIKES, SpikeCode, set_memory_mode
from .weak import WeakClassifier



class SpikingBasicBlock(nn.Module):
    """``LIF(BN(conv(LIF(BN(conv(x)))))) + shortcut(x)``: both branches fire before the addition.

    The shortcut is the identity, or ``conv1x1(stride) + BN + LIF`` when the shape changes. The sum
    is not passed through another neuron, so the block output is a small count: {0, 1, 2} after a
    conv shortcut, and one more per identity block that follows (``out_code``).
    ``in_code``: what the block input holds (``spike_layers.SpikeCode``) when the neuron emits
    0/1; the block's convs then keep their inputs packed, and ``out_code`` is what it outputs.
    """

    def __init__(self, cin: int, cout: int, stride: int, neuron: NeuronFactory,
                 in_code: SpikeCode | None = None):
        super().__init__()
        mid = None if in_code is None else SPIKES
        self.branch = nn.Sequential(conv_bn(cin, cout, 3, stride, code=in_code), neuron(),
                                    conv_bn(cout, cout, 3, code=mid), neuron())
        identity = stride == 1 and cin == cout
        self.shortcut = (nn.Identity() if identity
                         else nn.Sequential(conv_bn(cin, cout, 1, stride, code=in_code), neuron()))
        # a LIF's 0/1 plus what the shortcut carries: the input itself, or another LIF's 0/1
        self.out_code = None if in_code is None else SpikeCode(1 + (in_code.max_count if identity else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.branch(x) + self.shortcut(x)


def _stem(kind: str, cin: int, cout: int, neuron: NeuronFactory) -> nn.Sequential:
    if kind == "cifar":
        return nn.Sequential(conv_bn(cin, cout, 3), neuron())
    if kind == "imagenet":
        return nn.Sequential(conv_bn(cin, cout, 7, stride=2), neuron(), SeqToANN(nn.MaxPool2d(3, 2, 1)))
    raise ValueError(f"stem must be 'cifar' (3x3, stride 1) or 'imagenet' (7x7/2 + maxpool), got {kind!r}")


def spiking_resnet(blocks: tuple[int, int, int, int], num_classes: int, in_channels: int, width: float,
                   stem: str, weak_stage: int | None, weak_channels: int | None,
                   neuron: NeuronFactory | None, backend: str, neuron_kwargs: dict | None,
                   spiking: bool, memory: str = "default", binary_spikes: bool | None = None) -> StagedNet:
    """Generic spiking ResNet: stage 1 = stem, stages 2-5 = ``blocks[i]`` basic blocks at 64..512.

    ``memory`` / ``binary_spikes``: what is kept for backward, as for ``vgg9`` (docs/MEMORY.md).
    """
    act = resolve_neuron(neuron, backend, neuron_kwargs, spiking)
    binary = binary_neuron(act, spiking, binary_spikes)
    c0 = scaled(64, width)
    stages, widths, cin = [_stem(stem, in_channels, c0, act)], {1: c0}, c0
    # what each stage outputs; the stem ends with a LIF (ImageNet: and a max pool, still 0/1)
    codes = {1: SPIKES if binary else None}
    for k, (n, c, stride) in enumerate(zip(blocks, (64, 128, 256, 512), (1, 2, 2, 2)), start=2):
        cout, code, stage = scaled(c, width), codes[k - 1], []
        for i in range(n):
            stage.append(SpikingBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, act, in_code=code))
            code = stage[-1].out_code
        stages.append(nn.Sequential(*stage))
        cin = widths[k] = cout
        codes[k] = code
    head = SeqToANN(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
    if not spiking:
        weak_stage = None
    weak = None
    if weak_stage is not None:
        if not 1 <= weak_stage <= 4:
            raise ValueError(f"ResNet weak_stage must be in 1..4, got {weak_stage}")
        weak = WeakClassifier(widths[weak_stage], num_classes, act, weak_channels, in_code=codes[weak_stage])
    return set_memory_mode(StagedNet(stages, head, weak, weak_stage, spiking), memory)


def resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, stem: str = "cifar",
             weak_stage: int | None = 3, weak_channels: int | None = None,
             neuron: NeuronFactory | None = None, backend: str = "auto",
             neuron_kwargs: dict | None = None, spiking: bool = True, memory: str = "default",
             binary_spikes: bool | None = None) -> StagedNet:
    """Spiking ResNet-18 (2-2-2-2 blocks), CIFAR stem by default; ``spiking=False``: ANN twin."""
    return spiking_resnet((2, 2, 2, 2), num_classes, in_channels, width, stem, weak_stage,
                          weak_channels, neuron, backend, neuron_kwargs, spiking, memory, binary_spikes)


def resnet34(num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, stem: str = "imagenet",
             weak_stage: int | None = 3, weak_channels: int | None = None,
             neuron: NeuronFactory | None = None, backend: str = "auto",
             neuron_kwargs: dict | None = None, spiking: bool = True, memory: str = "default",
             binary_spikes: bool | None = None) -> StagedNet:
    """Spiking ResNet-34 (3-4-6-3 blocks) for 224x224 inputs (ImageNet stem); ``spiking=False``: ANN twin."""
    return spiking_resnet((3, 4, 6, 3), num_classes, in_channels, width, stem, weak_stage,
                          weak_channels, neuron, backend, neuron_kwargs, spiking, memory, binary_spikes)
