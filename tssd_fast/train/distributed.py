"""Multi-process training with PyTorch DDP under ``torchrun`` (nothing home-made).

``torchrun --nproc_per_node N -m tssd_fast.train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU), picks
the device ``cuda:LOCAL_RANK`` and the data layer shards the data with a ``DistributedSampler``.
Only rank 0 logs and writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process stands: ``rank``, ``world_size``, ``local_rank``, ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""
    owns_group: bool = False  # setup() created the process group (cleanup() destroys it)

    @property
    def distributed(self) -> bool:
        """True inside a process group of more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes files."""
        return self.rank == 0


def env_world() -> tuple:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` outside it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``'auto'`` -> ``cuda:LOCAL_RANK`` when CUDA is available else ``cpu``; ``'cuda'`` gets the local index."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"CUDA is not available (torch {torch.__version__}, CUDA build: "
                               f"{torch.version.cuda or 'no'}): use --device cpu, or auto")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return dev


def setup(device: str = "auto", backend: str = "auto") -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` and pick this process's device.

    ``backend='auto'`` uses NCCL for CUDA devices and gloo otherwise. On CPU with several
    processes and no ``OMP_NUM_THREADS``, torch's threads are split between the local processes.
    """
    rank, world, local = env_world()
    dev = resolve_device(device, local)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, "")
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    owns = not dist.is_initialized()
    if owns:
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dev, backend, owns)


def cleanup(info: DistInfo) -> None:
    """Leave the process group if :func:`setup` created it."""
    if info.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` in a process group, else ``model`` unchanged.

    The model must use all its parameters in every step (the training loop builds the weak head
    only for the methods that use it), so ``find_unused_parameters`` stays off.
    """
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return model.module if isinstance(model, DDP) else model


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over the ranks in place (no-op in a single process); returns ``t``."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process)."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed:
        dist.barrier()
