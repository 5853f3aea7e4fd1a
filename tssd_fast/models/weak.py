"""The weak classifier of spatial self-distillation (training only; optional early exit)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import NeuronFactory, SeqToANN, conv_bn
from .spike_layers import SpikeCode


class WeakClassifier(nn.Module):
    """Conv3x3(stride 2) + BN + LIF + global average pool + FC, on a ``[T, B, C, H, W]`` feature.

    Returns per-timestep logits ``[T, B, num_classes]``. ``channels`` defaults to the input's
    channel count, which keeps the head small (a few percent of the network's MACs; see
    docs/NETWORKS.md for the numbers). ``in_code``: what the feature holds when it is spikes
    (``spike_layers.SpikeCode``; its conv then keeps it packed for backward).
    """

    def __init__(self, in_channels: int, num_classes: int, neuron: NeuronFactory,
                 channels: int | None = None, in_code: SpikeCode | None = None):
        super().__init__()
        channels = channels or in_channels
        self.conv = conv_bn(in_channels, channels, 3, stride=2, code=in_code)
        self.act = neuron()
        self.fc = SeqToANN(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.fc(self.act(self.conv(feature)))
