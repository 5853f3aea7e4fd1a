"""Building blocks of the multi-step networks.

Layout convention: every tensor between blocks is time-first, ``[T, B, ...]``. Stateless layers
(conv, BN, pooling, linear) run once over the merged ``[T*B, ...]`` axis (:class:`SeqToANN`);
spiking neurons (``LIFNode(step_mode='m')``) run on ``[T, B, ...]`` between them.

BatchNorm choice: ``BatchNorm2d`` over the merged ``T*B`` axis, i.e. statistics pooled over time
and batch (as SpikingJelly's ``SeqToANNContainer(Conv2d, BatchNorm2d)`` baselines the TSSD paper
compares with). One consequence: in train mode a run with T' steps normalises with statistics of
all T' steps, so its first T steps differ from a separate T-step run; in eval mode (running
statistics) they are identical.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn

from .spike_layers import ConvBN, SpikeCode, SpikeConv2d

NeuronFactory = Callable[[], nn.Module]


class SeqToANN(nn.Sequential):
    """Applies stateless modules to a ``[T, B, ...]`` sequence over the merged ``[T*B, ...]`` axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        T, B = x.shape[:2]
        y = super().forward(x.flatten(0, 1))
        return y.reshape(T, B, *y.shape[1:])


def paper_neuron_kwargs() -> dict:
    """LIF settings of the TSSD paper: tau=2, no input decay, threshold 1, soft reset, Rect(1)
    (tssd_fast.ops.config.PAPER)."""
    from tssd_fast.ops.config import PAPER

    return PAPER.neuron_kwargs()


def lif_factory(backend: str = "auto", **overrides) -> NeuronFactory:
    """Factory of multi-step ``tssd_fast.LIFNode`` with the paper's defaults, updated by ``overrides``.

    Example: ``lif_factory('torch', tau=4.0, surrogate_function=tssd_fast.surrogate.ATan())``.
    """
    import tssd_fast

    kwargs = paper_neuron_kwargs()
    kwargs.update(overrides)
    kwargs.update(step_mode="m", backend=backend)
    return partial(tssd_fast.LIFNode, **kwargs)


def resolve_neuron(neuron: NeuronFactory | None, backend: str, neuron_kwargs: dict | None,
                   spiking: bool) -> NeuronFactory:
    """The activation factory a model uses: ReLU for the ANN twin, else ``neuron`` or a LIF factory."""
    if not spiking:
        return nn.ReLU
    if neuron is not None:
        if neuron_kwargs:
            raise ValueError("pass either a neuron factory or neuron_kwargs, not both")
        return neuron
    return lif_factory(backend, **(neuron_kwargs or {}))


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, code: SpikeCode | None = None) -> ConvBN:
    """``Conv2d`` (no bias, 'same' padding) followed by ``BatchNorm2d``, over merged time and batch.

    ``code``: what the input holds when it is spikes (``spike_layers.SpikeCode``): the conv is
    then a ``SpikeConv2d`` that keeps it packed for backward; ``None`` for any other input.
    """
    args = (cin, cout, kernel, stride, kernel // 2)
    conv = nn.Conv2d(*args, bias=False) if code is None else SpikeConv2d(*args, bias=False, code=code)
    return ConvBN(conv, nn.BatchNorm2d(cout))


def binary_neuron(neuron: NeuronFactory, spiking: bool, binary_spikes: bool | None) -> bool:
    """Whether the layers after ``neuron`` may keep their input as bits (spike_layers).

    ``binary_spikes`` decides when given; by default only ``tssd_fast.LIFNode`` is known to emit
    exactly 0 and 1 (another neuron's outputs are kept as they are unless ``binary_spikes=True``).
    """
    if not spiking:
        return False
    if binary_spikes is not None:
        return bool(binary_spikes)
    import tssd_fast

    return isinstance(neuron(), tssd_fast.LIFNode)


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))
