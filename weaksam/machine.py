"""What machine a run ran on: the CPU and the kernel path torch uses on it.

Trained figures depend on the CPU's kernel paths (ATen's ``DEFAULT`` / ``AVX2`` / ``AVX512``,
oneDNN's, MKL's: their floating-point sums differ in the last bits, and a long training run
carries those bits into different figures; ``bench/cpu_kernels.py`` shows it), so each run's
``results.json`` records the machine next to its figures, and the entry points pin the kernel
paths to AVX2 (:func:`pin_cpu_kernels`, called by ``ray_jobs/__init__.py`` before torch's first
operation) so that an AVX-512 machine runs the same kernels as an AVX2-only one. Pinning is one
half of reproducing a figure across machines; the other is the thread count (2 cores here, one
thread per Ray worker): a reduction split over more threads sums in another order.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, MutableMapping
from typing import Any

# The variables that choose torch's CPU kernels: ATen's own (vectorised elementwise, reductions,
# softmax), oneDNN's (convolutions) and MKL's (matmul; CBWR = conditional numerical
# reproducibility). Each is read when its library first runs, so setting them after
# `import torch` but before the first operation still takes effect.
KERNEL_PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
}
KERNELS_ENV = "WEAKSAM_CPU_KERNELS"  # "avx2" (the default) or "native" (each library's widest)


def pin_cpu_kernels(
    environ: MutableMapping[str, str] | None = None, flags: set[str] | None = None
) -> dict[str, str]:
    """Set :data:`KERNEL_PINS` in ``environ`` (default ``os.environ``) and return the pins in
    effect afterwards. Nothing is set when ``WEAKSAM_CPU_KERNELS=native``, or when the CPU
    (``flags``, default read from ``/proc/cpuinfo``) has no AVX2 (an AVX2 kernel would be an
    illegal instruction there); a variable the user already set keeps its value. Call it before
    torch runs its first operation (Ray workers started afterwards inherit the environment)."""
    env = os.environ if environ is None else environ
    if env.get(KERNELS_ENV, "avx2").lower() != "native":
        if flags is None:
            flags = cpu_model()[1]
        if "avx2" in flags:
            for key, value in KERNEL_PINS.items():
                env.setdefault(key, value)
    return kernel_pins_set(env)


def kernel_pins_set(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The :data:`KERNEL_PINS` variables set (non-empty) in ``environ`` (default
    ``os.environ``), with their values."""
    env = os.environ if environ is None else environ
    return {k: env[k] for k in KERNEL_PINS if env.get(k)}


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """The CPU's model name and flags (Linux ``/proc/cpuinfo``; the platform's processor
    name and no flags elsewhere)."""
    name, flags = platform.processor() or "unknown", set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    return name, flags


def widest_extension(flags: set[str]) -> str:
    """``avx512``, ``avx2`` or ``below avx2`` (x86 flags; ``unknown`` without flags)."""
    if not flags:
        return "unknown"
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "below avx2"


def machine_info() -> dict[str, Any]:
    """``cpu``, ``vector_extension``, ``aten_capability`` (torch's CPU kernel path),
    ``kernel_pins`` (the :data:`KERNEL_PINS` variables set in this process), ``cores``, ``torch``
    and ``gpu`` (the first CUDA device's name, or None)."""
    import torch

    name, flags = cpu_model()
    return {
        "cpu": name,
        "vector_extension": widest_extension(flags),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_pins": kernel_pins_set(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line for logs and tables: ``AMD EPYC (avx2; torch kernels AVX2, pinned), 2 cores``
    (``pinned``: all of :data:`KERNEL_PINS` were set; records written before the pins have no
    ``kernel_pins`` and read unpinned)."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    pinned = ", pinned" if set(info.get("kernel_pins") or {}) >= set(KERNEL_PINS) else ""
    return (
        f"{info['cpu']} ({info['vector_extension']}; torch kernels {info['aten_capability']}"
        f"{pinned}), "
        f"{info['cores']} cores{gpu}"
    )


__all__ = [
    "KERNELS_ENV",
    "KERNEL_PINS",
    "cpu_model",
    "kernel_pins_set",
    "machine_info",
    "machine_line",
    "pin_cpu_kernels",
    "widest_extension",
]
