"""weaksam/machine.py: the CPU read from a cpuinfo file, its widest vector extension, the line."""

from __future__ import annotations

from pathlib import Path

from weaksam.machine import (
    KERNEL_PINS,
    cpu_model,
    machine_info,
    machine_line,
    pin_cpu_kernels,
    widest_extension,
)

CPUINFO = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_cpu_model_and_extension(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO)
    name, flags = cpu_model(str(f))
    assert name == "AMD EPYC" and {"avx2", "fma"} <= flags
    assert widest_extension(flags) == "avx2"
    assert widest_extension(flags | {"avx512f"}) == "avx512"
    assert widest_extension({"sse2"}) == "below avx2"
    assert widest_extension(set()) == "unknown"
    assert cpu_model(str(tmp_path / "none"))[1] == set()  # not Linux: no flags, no error


def test_machine_info_and_line() -> None:
    info = machine_info()
    assert {
        "cpu",
        "vector_extension",
        "aten_capability",
        "kernel_pins",
        "cores",
        "torch",
        "gpu",
    } <= set(info)
    assert info["aten_capability"] in {"DEFAULT", "AVX2", "AVX512", "NO AVX", "ZVECTOR", "VSX"}
    line = machine_line({**info, "cpu": "X", "vector_extension": "avx2", "aten_capability": "AVX2",
                         "cores": 2, "gpu": None, "kernel_pins": {}})  # fmt: skip
    assert line == "X (avx2; torch kernels AVX2), 2 cores"
    assert machine_line({**info, "cpu": "X", "gpu": "H100"}).endswith(", GPU H100")


def test_pin_cpu_kernels_sets_only_where_it_may() -> None:
    env: dict[str, str] = {}
    assert pin_cpu_kernels(env, flags={"avx2"}) == KERNEL_PINS and env == KERNEL_PINS
    env = {"MKL_CBWR": "COMPATIBLE"}  # the user's value is kept
    assert pin_cpu_kernels(env, flags={"avx2", "avx512f"})["MKL_CBWR"] == "COMPATIBLE"
    env = {"WEAKSAM_CPU_KERNELS": "native"}
    assert pin_cpu_kernels(env, flags={"avx2"}) == {} and set(env) == {"WEAKSAM_CPU_KERNELS"}
    env = {}
    assert pin_cpu_kernels(env, flags={"sse2"}) == {} and env == {}  # no AVX2: nothing to pin
    assert pin_cpu_kernels({}, flags=set()) == {}  # not x86 / no flags


def test_machine_line_says_pinned() -> None:
    info = {"cpu": "X", "vector_extension": "avx512", "aten_capability": "AVX2", "cores": 2,
            "gpu": None, "kernel_pins": dict(KERNEL_PINS)}  # fmt: skip
    assert machine_line(info) == "X (avx512; torch kernels AVX2, pinned), 2 cores"
    assert "pinned" not in machine_line({**info, "kernel_pins": {"MKL_CBWR": "AVX2"}})
