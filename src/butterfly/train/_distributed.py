"""Training on several GPUs (or CPU processes) with torch's DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node=4 -m butterfly train ...`` (or a script that builds and fits a
:class:`~butterfly.Butterfly`) starts one process per GPU. Each reads the data and builds the same model
(same seed, same preprocessing, same validation split); :meth:`~butterfly.Butterfly.fit` then joins the
process group that ``torchrun`` describes in its environment (NCCL on GPUs, gloo on CPUs), each process
trains on its own share of every epoch's training pairs, DistributedDataParallel averages the gradients, and
every process validates on all validation cells, the losses averaged over the processes so that all of them
stop at the same epoch. A minibatch of ``batch_size`` cells runs on each process, so one step sees
``processes x batch_size`` cells. Process 0 shows the progress bars and saves the model.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the number of processes; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files and prints: process 0, or the only process (before the group is
    joined, the launcher's ``RANK`` says)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's device: under ``torchrun`` on CUDA, the GPU of its local rank (``LOCAL_RANK``), which
    ``"cuda"`` would otherwise make GPU 0 for every process."""
    if launched() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def join(device: torch.device) -> torch.device:
    """Join the process group ``torchrun`` describes (once) and return this process's device
    (:func:`local_device`)."""
    if not launched():
        return device
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(module: nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` in DistributedDataParallel when several processes train, else ``module`` itself."""
    if rank_and_size()[1] == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)


def mean_over_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each value averaged over the processes (the same numbers everywhere), or ``values`` with one process."""
    if rank_and_size()[1] == 1 or not values:
        return values
    stacked = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    stacked /= rank_and_size()[1]
    return dict(zip(values, stacked.cpu().tolist(), strict=True))


def same_buffers(module: nn.Module) -> None:
    """Give every process process 0's buffers (BatchNorm statistics), which each process's own minibatches
    moved a little since DistributedDataParallel last copied them: all processes then hold one model."""
    if rank_and_size()[1] == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


class Pass(nn.Module):
    """Runs ``function`` as the forward of a module holding ``modules`` (shared, not copied), so that
    DistributedDataParallel, which synchronises what runs through a wrapped module's forward, can wrap one
    training pass of those modules' parameters and no others."""

    def __init__(self, modules: dict[str, nn.Module], function) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.function = function

    def forward(self, *args, **kwargs):
        return self.function(*args, **kwargs)
