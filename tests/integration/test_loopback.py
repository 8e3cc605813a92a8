"""What a local Ray instance started by the jobs or by the service listens on: loopback only.

Each check runs in its own driver subprocess (a private Ray instance), lists the TCP listening
sockets of that process and every process it started, and stops them all by PID.
"""

from __future__ import annotations

import pytest

from .conftest import driver_probe

pytestmark = pytest.mark.ray

PROBE = """
import json, sys, psutil
{start}
me = psutil.Process()
procs = [me, *me.children(recursive=True)]
pids = {{p.pid for p in procs}}
addrs = sorted({{
    f"{{c.laddr.ip}}:{{c.laddr.port}}"
    for c in psutil.net_connections(kind="inet")
    if c.status == psutil.CONN_LISTEN and c.pid in pids
}})
print("LISTEN " + json.dumps(addrs), flush=True)
for p in procs[1:]:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass
"""

STARTS = {
    "jobs": "from ray_jobs._ray import init_ray\ninit_ray(num_cpus=1)",
    "serve": (
        "from serve.__main__ import start_ray\nstart_ray(num_cpus=1)\n"
        "from ray import serve\nserve.start(http_options={'host': '127.0.0.1', 'port': 0})"
    ),
}


@pytest.mark.parametrize("who", sorted(STARTS))
def test_a_local_instance_listens_on_loopback_only(who: str) -> None:
    addrs = driver_probe(PROBE.format(start=STARTS[who]), "LISTEN")
    assert len(addrs) >= 3, addrs  # GCS, raylet, object manager at least
    loopback = ("127.", "::1:", "::ffff:127.")  # IPv4, IPv6 and IPv4-mapped loopback
    exposed = [a for a in addrs if not a.startswith(loopback)]
    assert not exposed, f"{who}: listening beyond loopback: {exposed} (all: {addrs})"
