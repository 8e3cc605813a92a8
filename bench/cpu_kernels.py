"""Do this machine's CPU kernels change torch's floating-point results? Fixed ops on each path.

    python bench/cpu_kernels.py

Prints the CPU model and its widest vector extension, then, for each ATen CPU capability this
machine can run (``ATEN_CPU_CAPABILITY=default``, ``avx2``, ``avx512``), the sums of a fixed
conv2d, matmul, long sum and softmax (one thread, seed 0), and last with every pin the entry
points set (``weaksam.machine.KERNEL_PINS``: ATen, oneDNN and MKL at AVX2). Different digits
between paths mean a trained model's figures depend on the machine kind: two machines reproduce
each other's ``make demo`` / ``make bench`` figures only on the same kernel paths
(docs/benchmarks.md).
"""

from __future__ import annotations

import os
import subprocess
import sys

from weaksam.machine import KERNEL_PINS, cpu_model, widest_extension

PROBE = """
import torch
torch.manual_seed(0)
torch.set_num_threads(1)
x, w = torch.randn(8, 64, 56, 56), torch.randn(128, 64, 3, 3)
a, b = torch.randn(512, 1024), torch.randn(1024, 512)
conv = torch.nn.functional.conv2d(x, w, padding=1).double().sum().item()
mm = (a @ b).double().sum().item()
s = torch.randn(1_000_003).sum().item()
sm = torch.softmax(torch.randn(256, 1000), 1).double().pow(2).sum().item()
print(torch.backends.cpu.get_cpu_capability(), f"{conv:.6f} {mm:.6f} {s:.6f} {sm:.12f}")
"""


def main() -> int:
    name, flags = cpu_model()
    widest = widest_extension(flags)
    print(f"CPU: {name}; widest vector extension: {widest}")
    print("ATEN path  conv2d sum  matmul sum  sum  softmax^2 sum")
    base = {k: v for k, v in os.environ.items() if k not in KERNEL_PINS}
    caps = ["default", "avx2"] + (["avx512"] if widest == "avx512" else [])
    runs = [({"ATEN_CPU_CAPABILITY": cap}, "") for cap in caps]
    if widest in ("avx2", "avx512"):
        runs.append((dict(KERNEL_PINS), "  (all pins: ATen, oneDNN, MKL)"))
    for extra, label in runs:
        out = subprocess.run(
            [sys.executable, "-c", PROBE],
            env={**base, **extra},
            capture_output=True,
            text=True,
            check=True,
        )
        print(out.stdout.strip() + label)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
