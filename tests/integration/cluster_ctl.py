"""A simulated multi-node Ray cluster in its own process, driven through stdin (tests only).

``ray.cluster_utils.Cluster`` keeps global state in the process that creates it, so the tests
run it here, apart from the pytest process (which may hold its own local Ray instance).

Started as ``python cluster_ctl.py --workers 2 --worker-cpus 1 [--worker-gpus 1]
[--head-cpus 1] --temp-dir DIR``; prints ``READY <json>`` (address, nodes) and then answers
one line per command read from stdin:

* ``remove <node_id>``: SIGKILL-like removal of a worker node → ``REMOVED <json>``
* ``add``: one more worker node like the first ones → ``ADDED <json>``
* ``quit`` (or end of input): every node's processes stopped by PID → ``BYE``
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _node(node: Any) -> dict[str, Any]:
    raylet = node.all_processes["raylet"][0].process.pid
    return {"id": node.node_id, "raylet_pid": raylet, "head": bool(node.head)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--head-cpus", type=float, default=1)
    p.add_argument("--worker-cpus", type=float, default=1)
    p.add_argument("--worker-gpus", type=float, default=0)
    p.add_argument("--temp-dir", required=True)
    args = p.parse_args()

    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": args.head_cpus,
            "temp_dir": args.temp_dir,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
        },
    )
    worker_args = {"num_cpus": args.worker_cpus, "num_gpus": args.worker_gpus}
    try:
        for _ in range(args.workers):
            cluster.add_node(**worker_args)
        cluster.wait_for_nodes()
        nodes = [_node(n) for n in cluster.list_all_nodes()]
        print("READY " + json.dumps({"address": cluster.address, "nodes": nodes}), flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            if cmd[0] == "remove":
                node = next(n for n in cluster.worker_nodes if n.node_id == cmd[1])
                cluster.remove_node(node, allow_graceful=False)
                print("REMOVED " + json.dumps({"id": cmd[1]}), flush=True)
            elif cmd[0] == "add":
                node = cluster.add_node(**worker_args)
                cluster.wait_for_nodes()
                print("ADDED " + json.dumps(_node(node)), flush=True)
    finally:
        cluster.shutdown()
        print("BYE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
