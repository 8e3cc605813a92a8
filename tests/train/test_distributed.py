"""``average_gradients`` against DDP's own gradient averaging, in two gloo processes forked
by a fresh interpreter on the loopback, and ``no_grad_sync``: a backward that leaves
parameters without gradients inside it does not break DDP's next step."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from weaksam.train.distributed import average_gradients, no_grad_sync


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 5))


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # a forked child: no intra-op pool of its own
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(100 + rank)  # each worker its own batch
        x = torch.randn(3, 3, 8, 8)
        ddp = nn.parallel.DistributedDataParallel(_net())
        ddp(x).square().sum().backward()
        first = [p.grad.clone() for p in ddp.parameters()]  # type: ignore[union-attr]
        plain = _net()
        plain(x).square().sum().backward()
        local = [p.grad.clone() for p in plain.parameters()]  # type: ignore[union-attr]
        average_gradients(plain.parameters())
        # inside no_grad_sync: a backward through the last layer only (the conv and the
        # norm get no gradient); DDP's next synchronised step must still run
        with no_grad_sync(ddp):
            ddp.module[3](torch.randn(2, 4 * 36)).sum().backward()
        ddp.zero_grad(set_to_none=True)
        ddp(x).sum().backward()
        torch.save(
            {
                "first": first,
                "ddp": [p.grad for p in ddp.parameters()],
                "averaged": [p.grad for p in plain.parameters()],
                "local": local,
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_average_gradients_equals_ddp_and_no_grad_sync_skips_a_step(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # a fresh interpreter forks the two workers: this one may hold a Ray session's threads
    cmd = [sys.executable, __file__, str(port), str(tmp_path)]
    subprocess.run(cmd, check=True, timeout=300, cwd=Path(__file__).parents[2])
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for ddp, avg, a, b in zip(r0["first"], r0["averaged"], r0["local"], r1["local"], strict=True):
        assert not torch.equal(a, b)  # the workers' own gradients differ
        assert torch.equal(avg, ddp)  # bit for bit DDP's average
        assert torch.equal(avg, a * 0.5 + b * 0.5)
    for g0, g1 in zip(r0["averaged"], r1["averaged"], strict=True):
        assert torch.equal(g0, g1)
    # DDP's synchronised step after no_grad_sync: the same gradient on both workers
    for g0, g1 in zip(r0["ddp"], r1["ddp"], strict=True):
        assert g0 is not None and torch.equal(g0, g1)


def test_outside_a_process_group_nothing_changes() -> None:
    net = _net()
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    before = [p.grad.clone() for p in net.parameters()]  # type: ignore[union-attr]
    average_gradients(net.parameters())
    with no_grad_sync(net):
        pass
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), before, strict=True))


if __name__ == "__main__":  # the two workers, forked by a fresh process (the first test)
    mp.start_processes(_worker, (int(sys.argv[1]), sys.argv[2]), nprocs=2, start_method="fork")
