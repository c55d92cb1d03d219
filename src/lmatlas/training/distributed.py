"""Scaling out on ``torch.distributed``: the same training under ``torchrun --nproc_per_node N``.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; ``setup`` joins the process group (gloo on
CPU, NCCL on GPUs) and ``wrap`` puts the model in DistributedDataParallel, or
FullyShardedDataParallel for a model that does not fit one device. Without torchrun everything
here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: str | None = None) -> Context:
    """Join the process group when launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Context(rank=rank, world=world, local_rank=local, device=dev)


def main_process() -> bool:
    """Whether this is the main process of a ``torchrun`` launch (rank 0), or the only one."""
    return int(os.environ.get("RANK", "0")) == 0


def teardown(synchronise: bool = True) -> None:
    """Leave the process group. ``synchronise`` (a run that ended well, in every process): wait
    for the others first, since a process that destroys its group while another still talks to
    it can abort in gloo's threads at exit. After an error no wait: the others may never come."""
    if dist.is_initialized():
        if synchronise:
            dist.barrier()
        dist.destroy_process_group()


def wrap(module: nn.Module, ctx: Context, fsdp: bool = False) -> nn.Module:
    """DDP (a replica per process, gradients averaged), or with ``fsdp`` FSDP2: each
    transformer layer's parameters, gradients and optimizer state sharded across processes
    and gathered layer by layer for the forward and backward passes."""
    if not ctx.distributed:
        return module
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for name, sub in module.named_modules():
            if name.endswith("backbone.layers") or name == "layers":
                for layer in sub:
                    fully_shard(layer)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


def full_state(module: nn.Module, optimizer=None, fsdp: bool = False):
    """The whole model's (and optimizer's) state on the main process, gathered from the shards
    under FSDP (a collective: every process calls it); as is otherwise."""
    if not fsdp:
        return module.state_dict(), optimizer.state_dict() if optimizer is not None else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(module, options=options)
    optim_state = get_optimizer_state_dict(module, optimizer, options=options) if optimizer is not None else None
    return model_state, optim_state


def load_optimizer_state(module: nn.Module, optimizer, state, fsdp: bool = False) -> None:
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))


def all_reduce_sum(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast(obj: Any, ctx: Context) -> Any:
    """The main process's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


__all__ = ["Context", "all_reduce_sum", "barrier", "broadcast", "full_state", "load_optimizer_state", "main_process",
           "setup", "teardown", "unwrap", "wrap"]
