"""What machine a run ran on: the CPU and the kernel path torch uses on it.

Trained figures depend on the CPU's kernel paths (ATen's ``DEFAULT`` / ``AVX2`` / ``AVX512``,
oneDNN's, MKL's: their floating-point sums differ in the last bits, and a long training run
carries those bits into different figures; ``bench/cpu_kernels.py`` shows it), so each run's
``results.json`` records the machine next to its figures.
"""

from __future__ import annotations

import os
import platform
from typing import Any


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
    """``cpu``, ``vector_extension``, ``aten_capability`` (torch's CPU kernel path), ``cores``,
    ``torch`` and ``gpu`` (the first CUDA device's name, or None)."""
    import torch

    name, flags = cpu_model()
    return {
        "cpu": name,
        "vector_extension": widest_extension(flags),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line for logs and tables: ``AMD EPYC (avx2; torch kernels AVX2), 2 cores``."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (
        f"{info['cpu']} ({info['vector_extension']}; torch kernels {info['aten_capability']}), "
        f"{info['cores']} cores{gpu}"
    )


__all__ = ["cpu_model", "machine_info", "machine_line", "widest_extension"]
