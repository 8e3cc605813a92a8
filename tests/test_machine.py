"""weaksam/machine.py: the CPU read from a cpuinfo file, its widest vector extension, the line."""

from __future__ import annotations

from pathlib import Path

from weaksam.machine import cpu_model, machine_info, machine_line, widest_extension

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
    assert {"cpu", "vector_extension", "aten_capability", "cores", "torch", "gpu"} <= set(info)
    assert info["aten_capability"] in {"DEFAULT", "AVX2", "AVX512", "NO AVX", "ZVECTOR", "VSX"}
    line = machine_line({**info, "cpu": "X", "vector_extension": "avx2", "aten_capability": "AVX2",
                         "cores": 2, "gpu": None})  # fmt: skip
    assert line == "X (avx2; torch kernels AVX2), 2 cores"
    assert machine_line({**info, "cpu": "X", "gpu": "H100"}).endswith(", GPU H100")
