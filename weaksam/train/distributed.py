"""Which worker this is, and the DDP wrapper: the same answers inside Ray Train or outside it.

Outside a Ray Train worker (tests, notebooks, a plain function call) there is one worker of
rank 0 and models are not wrapped, so every training loop also runs as plain Python.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch


def in_ray_train() -> bool:
    """Whether this code runs inside a Ray Train worker."""
    try:
        import ray.train

        ray.train.get_context()
        return True
    except Exception:
        return False


def world_rank() -> int:
    """This worker's rank, or 0 outside Ray Train."""
    try:
        import ray.train

        return int(ray.train.get_context().get_world_rank())
    except Exception:  # not inside a Ray Train worker
        return 0


def world_size() -> int:
    """The number of workers, or 1 outside Ray Train."""
    try:
        import ray.train

        return int(ray.train.get_context().get_world_size())
    except Exception:  # not inside a Ray Train worker
        return 1


def prepare_ddp(model: torch.nn.Module, *, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``model`` moved to this worker's device and wrapped in DDP inside Ray Train; the model
    itself, unchanged, outside it.

    ``find_unused_parameters``: for models whose step may leave parameters without gradients
    (a Mask R-CNN batch without foreground RoIs; SAM's unused prompt paths).
    """
    if not in_ray_train():
        return model
    import ray.train.torch

    kwargs = {"find_unused_parameters": True} if find_unused_parameters else None
    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, torch.nn.Module):
        raise TypeError(f"{type(model).__name__}.module is not a torch.nn.Module")
    return inner


def no_grad_sync(model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """DDP's ``no_sync`` (a backward that reduces no gradient and expects none of every
    parameter) for a DDP-wrapped ``model``; nothing for an unwrapped one."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the workers in place, as DDP does: each
    worker's scaled by ``1 / world`` and summed in one all-reduce (a missing gradient counts
    as zeros). Nothing outside a process group of more than one worker."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(1.0 / dist.get_world_size())
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
