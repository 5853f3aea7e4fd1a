"""Checkpoints: atomic writes, and everything a resumed run needs to continue exactly.

A checkpoint is a dict (``torch.save``): ``model``, ``optimizer``, ``scheduler``, ``scaler``
state dicts, ``epoch`` (completed epochs), ``global_step``, ``best_acc`` / ``best_epoch``,
``config``, ``rng`` (one entry per rank: python, numpy, torch CPU and CUDA generator states),
``loader_rng`` (the train DataLoader's shuffling generator) and ``world_size``. Every value is a
tensor or a plain Python type, so it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from typing import Any, Dict, Optional

import numpy as np
import torch

from .._atomic import atomic_write_bytes  # noqa: F401  (re-exported for loop.py)

FORMAT = "tssd_fast.train/1"


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    """``torch.save(state)`` to ``path`` atomically (temp file, then rename)."""
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (on CPU, ``weights_only=True``).

    Raises FileNotFoundError for a missing file and RuntimeError, in one line, for anything that
    is not such a checkpoint. torch's own message is not passed on: it suggests
    ``weights_only=False`` (running arbitrary pickled code) and filing an issue with torch.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    what = f"{path} is not a tssd_fast.train checkpoint (checkpoint_last.pt / checkpoint_best.pt of a run)"
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise RuntimeError(f"{what}: not a torch.save zip archive")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RuntimeError(f"{what}: it holds Python objects other than tensors and plain values, "
                           f"which a weights-only load refuses") from e
    except Exception as e:  # noqa: BLE001 - truncated or corrupted archive, ...
        first = re.split(r"(?<=\.)\s", " ".join(str(e).split()))[0][:200]  # torch's first sentence
        raise RuntimeError(f"{what}: torch.load failed: {first}") from e
    if not (isinstance(ckpt, dict) and "model" in ckpt and "config" in ckpt):
        raise RuntimeError(f"{what}: a torch.save file of a {type(ckpt).__name__}"
                           + (f" with keys {sorted(map(str, ckpt))[:6]}" if isinstance(ckpt, dict) else ""))
    return ckpt


def rng_state() -> Dict[str, Any]:
    """This process's RNG states: python ``random``, numpy, torch CPU and (if present) CUDA."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state(), "cuda": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def generator_state(gen: Optional[torch.Generator]) -> Optional[torch.Tensor]:
    """State of a ``torch.Generator`` (None for None)."""
    return None if gen is None else gen.get_state()
