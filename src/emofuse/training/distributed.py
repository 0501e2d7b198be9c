"""Several training processes (torchrun): DistributedDataParallel over one run.

`torchrun --nproc-per-node N -m emofuse train ...` starts N processes with WORLD_SIZE, RANK and
LOCAL_RANK set; `process_group()` joins them (gloo on CPU, NCCL on CUDA) and the Trainer wraps
its model in DistributedDataParallel.

How the work is shared (so that N processes compute what one process would):
- --batch-size stays the *global* batch. Every process builds the same epoch order from
  (seed, epoch) -- shuffled or length-bucketed -- cuts it into the same global batches, and
  takes every N-th example of each one (`shard`). The batches a single process would see are
  therefore exactly the union of the N processes' batches.
- Each process weights its mean loss by its share of the global batch (`share`), so the
  gradient DDP averages is the gradient of the global batch's mean loss even when a batch does
  not split evenly. A process left without an example (a last batch smaller than N) runs one
  example with weight 0: every process must take part in every gradient all-reduce.
- This is why the sampler is not torch's DistributedSampler: it shards the dataset before
  batching, which cannot keep length buckets together and pads the epoch with repeated examples.

Only rank 0 evaluates, writes the run folder and prints; the validation loss it computes is
broadcast so that every process takes the same early-stopping decision.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from emofuse.errors import MissingDependency, OptionError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank 0 of 1 when not started by torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True inside a process torchrun started with more than one process in the job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def context() -> DistContext:
    """This process's place in the process group (a single process when none is joined)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def backend_for(device: str) -> str:
    """NCCL when the run trains on CUDA, gloo otherwise (CPU, or CUDA missing)."""
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if wants_cuda and dist.is_nccl_available() else "gloo"


@contextlib.contextmanager
def process_group(device: str = "auto", timeout_s: float = 1800) -> Iterator[DistContext]:
    """Join torchrun's process group for the duration of the block (nothing without torchrun).

    On CUDA each process takes GPU LOCAL_RANK. The group is destroyed on the way out, also when
    the block raises, so a failing process does not leave its peers waiting for it.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield context()
        return
    if not dist.is_available():
        raise MissingDependency(
            "this torch build has no torch.distributed: run a single process instead of torchrun"
        )
    backend = backend_for(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise OptionError(
                f"process {local_rank} on this node has no GPU: --nproc-per-node must not exceed "
                f"the {torch.cuda.device_count()} GPUs here"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield context()
    finally:
        dist.destroy_process_group()


def device_for(device: torch.device, ctx: DistContext) -> torch.device:
    """A process's own GPU: `cuda` (or `auto` on a GPU machine) means cuda:LOCAL_RANK under torchrun."""
    if ctx.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def check_batch_size(batch_size: int, ctx: DistContext) -> None:
    if ctx.active and batch_size < ctx.world:
        raise OptionError(f"--batch-size {batch_size} is the global batch, shared by {ctx.world} processes: "
                          f"give at least {ctx.world}")


def shard(indices: torch.Tensor, ctx: DistContext) -> tuple[torch.Tensor, float]:
    """This process's part of one global batch and the weight of its mean loss.

    The weight (local size / global size * world) makes DDP's gradient average equal to the
    gradient of the global batch's mean loss; an empty part becomes one example of weight 0.
    """
    if not ctx.active:
        return indices, 1.0
    local = indices[ctx.rank :: ctx.world]
    if len(local) == 0:
        return indices[:1], 0.0
    return local, len(local) / len(indices) * ctx.world


def broadcast(obj: Any, ctx: DistContext) -> Any:
    """rank 0's `obj` on every process (pickled; fine for a float or a checkpoint)."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's `obj`, in rank order, on every process."""
    if not ctx.active:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def all_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Element-wise sum of `values` over all processes (float64)."""
    if not ctx.active:
        return values
    # NCCL only reduces tensors on the process's GPU
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()
