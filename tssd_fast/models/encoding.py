"""Input encodings: static images (direct encoding) and DVS frame tensors.

Two layouts are used in tssd_fast:
- loader layout (what a DataLoader yields, what ``distill`` and ``inference`` take):
  static ``[B, C, H, W]``; DVS frames batch-first ``[B, T_max, C, H, W]``;
- network layout (what ``StagedNet.forward`` takes): time-first ``[T, B, C, H, W]``.
"""
from __future__ import annotations

import torch


def direct_encode(x: torch.Tensor, T: int) -> torch.Tensor:
    """Static ``[B, C, H, W]`` → ``[T, B, C, H, W]``: the image repeated at every timestep.

    The result is a view of ``x`` expanded over time (stride 0, no copy): the first ``ConvBN`` of
    a network recognises it and keeps the batch once for backward instead of ``T`` copies
    (docs/MEMORY.md). Like every expanded view it cannot be written in place; ``.contiguous()``
    gives a copy.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return x.unsqueeze(0).expand(T, *x.shape)


def to_sequence(x: torch.Tensor, T: int) -> torch.Tensor:
    """Loader layout → network layout for ``T`` timesteps.

    ``[B, C, H, W]`` is direct-encoded; ``[B, T_max, C, H, W]`` (DVS frames) gives its first ``T``
    frames, time-first. Taking a prefix means the T-step student and the T'-step teacher see the
    same first T frames of one sample (frames of fixed duration, as in the paper's preprocessing).
    """
    if x.dim() == 4:
        return direct_encode(x, T)
    if x.dim() != 5:
        raise ValueError(f"expected [B, C, H, W] or [B, T_max, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] < T:
        raise ValueError(f"the sample has {x.shape[1]} frames but {T} timesteps were asked for")
    return x[:, :T].transpose(0, 1).contiguous()


def ann_input(x: torch.Tensor, T: int) -> torch.Tensor:
    """Loader layout → ANN input ``[B, C, H, W]``: an image as is, DVS frames as the mean of the first T."""
    return x[:, :T].mean(1) if x.dim() == 5 else x
