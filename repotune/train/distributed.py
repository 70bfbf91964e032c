"""Multi-process (DDP) helpers for the trainer; each is a no-op in a single process.

``accelerate launch`` (:mod:`repotune.train.launch`) starts one process per GPU with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set; the trainer joins that process group here.
"""

import contextlib
import os
from typing import Any

import torch
import torch.distributed as dist


def local_rank() -> int:
    """This process's GPU index on its machine (0 without a launcher)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def init(num_gpus: int) -> tuple[int, int]:
    """Join the process group ``accelerate launch`` (torchrun) set up, if any: (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and num_gpus != 0 else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend)
    return dist.get_rank(), world


def wrap(model: torch.nn.Module, world: int, device: torch.device) -> torch.nn.Module:
    """The model in DDP when there is more than one process."""
    if world <= 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (itself otherwise)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def no_sync(model: torch.nn.Module, skip: bool) -> contextlib.AbstractContextManager[Any]:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
    if skip and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def all_reduce_sum(value: float, world: int, device: torch.device) -> float:
    """The sum of ``value`` over all processes."""
    if world <= 1:
        return value
    tensor = torch.tensor([float(value)], device=device, dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item())


def barrier(world: int) -> None:
    """Wait for every process."""
    if world > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()
