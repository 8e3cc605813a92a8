"""The CPU kernel pins (weaksam.machine) reach a job's Ray workers: a driver subprocess imports
ray_jobs (which pins), starts its private Ray instance and asks a task what it runs."""

from __future__ import annotations

import pytest

from weaksam.machine import KERNEL_PINS, cpu_model

from .conftest import driver_probe, subprocess_env

pytestmark = pytest.mark.ray

PROBE = """
import json, os, psutil, ray
import ray_jobs
from ray_jobs._ray import init_ray
init_ray(num_cpus=1)

@ray.remote(num_cpus=1)
def probe():
    import os, torch
    return torch.backends.cpu.get_cpu_capability(), {k: os.environ.get(k) for k in KEYS}

KEYS = %r
cap, env = ray.get(probe.remote())
print("PROBE " + json.dumps({"cap": cap, "env": env}), flush=True)
children = psutil.Process().children(recursive=True)
ray.shutdown()
for p in children:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass
"""


@pytest.mark.skipif("avx2" not in cpu_model()[1], reason="the pins apply to AVX2 CPUs only")
def test_workers_inherit_the_pins_and_a_users_value_wins() -> None:
    env = {k: v for k, v in subprocess_env().items() if k not in KERNEL_PINS}
    env.pop("WEAKSAM_CPU_KERNELS", None)
    env["ATEN_CPU_CAPABILITY"] = "default"  # the user's own choice: kept, and not this CPU's path
    got = driver_probe(PROBE % (list(KERNEL_PINS),), "PROBE", env)
    assert got["cap"] == "DEFAULT"  # the worker ran the driver's choice, not its CPU's widest
    assert got["env"] == {**KERNEL_PINS, "ATEN_CPU_CAPABILITY": "default"}
