"""Device choice and torchrun/DDP set-up. Every process runs the same code; only rank 0 writes."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from cnnkit.errors import CnnkitError


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def select_device(name: str) -> torch.device:
    """auto -> CUDA (this process's local rank under torchrun), then Apple MPS, then CPU."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnnkitError(f"unknown device '{name}'", "use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CnnkitError(f"--device {name}: CUDA is not available on this machine", "use --device cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CnnkitError(f"--device {name}: Apple MPS is not available", "use --device cpu or auto")
    return device


def global_batch(batch: int, world: int) -> int:
    """Images per optimizer step over all processes: each takes ``batch // world`` (at least one) of --batch."""
    return max(1, batch // world) * world


def setup(device: torch.device) -> None:
    """Join the process group when started by torchrun (NCCL on CUDA, gloo otherwise)."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    store, process_rank, world = next(dist.rendezvous("env://"))
    # torchrun's agent keeps one key-value store for the whole job, so after an elastic restart the keys the dead
    # group wrote (each rank's gloo address) are still there: a fresh rank that reads one before its peer rewrites
    # it dials a port that no longer listens. A prefix per restart keeps every attempt's keys apart.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend=backend, store=dist.PrefixStore(f"cnnkit/attempt_{attempt}", store),
                            rank=process_rank, world_size=world)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def gather(obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank (a list of one without DDP)."""
    if world_size() == 1:
        return [obj]
    objects: list[Any] = [None] * world_size()
    dist.all_gather_object(objects, obj)
    return objects


def broadcast(obj: Any) -> Any:
    """Rank 0's object on every rank."""
    if world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
