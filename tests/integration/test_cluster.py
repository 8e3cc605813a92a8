"""The tiny pipeline on a simulated 3-node cluster: object storage, fake GPUs, lost nodes.

The cluster (``ray.cluster_utils.Cluster``: a head and two worker nodes) runs in its own
process (``cluster_ctl.py``) and the pipeline's driver in another (``RAY_ADDRESS`` set), as
``ray job submit`` would run it. S3 is moto's server on 127.0.0.1 (``s3_endpoint``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from weaksam import storage
from weaksam.io.tables import read_table
from weaksam.runs import manifest_path, proposals_path, read_metrics

from .conftest import CONFIG, REPO, TinyRun, kill_tree, subprocess_env

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.cluster]

CTL = str(Path(__file__).with_name("cluster_ctl.py"))
STAGES = ("data", "ingest", "baseline", "classify", "peaks", "proposals", "wsod", "pgt")


class SimCluster:
    """A handle on ``cluster_ctl.py``: its address and nodes; remove or add worker nodes."""

    def __init__(self, **args: float) -> None:
        self._tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Unix socket paths
        cmd = [sys.executable, CTL, "--temp-dir", self._tmp]
        for k, v in args.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        info = self._expect("READY")
        self.address: str = info["address"]
        self.nodes: list[dict[str, Any]] = info["nodes"]

    def _expect(self, word: str) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith(word), f"cluster_ctl said {line!r}"
        return json.loads(line.split(" ", 1)[1]) if " " in line else None

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    @property
    def workers(self) -> list[dict[str, Any]]:
        return [n for n in self.nodes if not n["head"]]

    def remove(self, node_id: str) -> None:
        self._send(f"remove {node_id}")
        self._expect("REMOVED")
        self.nodes = [n for n in self.nodes if n["id"] != node_id]

    def add(self) -> dict[str, Any]:
        self._send("add")
        node: dict[str, Any] = self._expect("ADDED")
        self.nodes.append(node)
        return node

    def hosting(self, text: str) -> list[str]:
        """Ids of the worker nodes running a Ray worker process whose title contains ``text``
        (actor processes are titled ``ray::<class or repr>``)."""
        found = []
        for node in self.workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(node["raylet_pid"]).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if text in " ".join(child.cmdline()):
                            found.append(node["id"])
                            break
        return found

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._send("quit")
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc)  # type: ignore[arg-type]


@contextlib.contextmanager
def sim_cluster(**args: float) -> Iterator[SimCluster]:
    cluster = SimCluster(**args)
    try:
        yield cluster
    finally:
        cluster.stop()


def driver(
    cluster: SimCluster,
    module: str,
    args: Sequence[str],
    cwd: Path,
    watch: Callable[[], None] | None = None,
    timeout: float = 900.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` connected to ``cluster`` from ``cwd``; call ``watch()``
    every 0.2 s while it runs (its exceptions fail the test after the driver is stopped)."""
    env = subprocess_env()
    env.update(RAY_ADDRESS=cluster.address, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: dict[str, str] = {}
    reader = threading.Thread(
        target=lambda: out.update(
            zip(("out", "err"), proc.communicate(timeout=timeout), strict=True)
        )
    )
    reader.start()
    try:
        while reader.is_alive():
            if watch is not None:
                watch()
            reader.join(0.2)
    finally:
        if proc.poll() is None:
            kill_tree(proc)  # type: ignore[arg-type]
        reader.join(60)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, out.get("out", ""), out.get("err", "")
    )


def _explain(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def test_tiny_pipeline_on_s3_with_fake_gpus(s3_bucket: str, tmp_path: Path) -> None:
    """On s3, with one fake GPU per worker node: SAM actors one per GPU, training on CPU,
    everything in the bucket, nothing in the working directory; a rerun skips every stage."""
    root = f"{s3_bucket}/runs"
    run = storage.join(root, "tiny")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    args = ["--config", CONFIG, "--set", f"run_root={root}", "--set", "proposals.num_actors=2"]
    sam_nodes: set[str] = set()
    with sim_cluster(workers=2, worker_cpus=1, worker_gpus=1, head_cpus=1) as cluster:
        first = driver(
            cluster,
            "ray_jobs.pipeline",
            args,
            workdir,
            watch=lambda: sam_nodes.update(cluster.hosting("ProposalGenerator")),
        )
        assert first.returncode == 0, _explain(first)
        worker_ids = {n["id"] for n in cluster.workers}
        second = driver(cluster, "ray_jobs.pipeline", args, workdir)
        assert second.returncode == 0, _explain(second)

    # SAM actors: one per fake GPU, i.e. on both worker nodes (the head has no GPU)
    assert sam_nodes == worker_ids, (sam_nodes, worker_ids)
    proposals = read_metrics(storage.join(run, "proposals"))
    assert "placed one per GPU slot" in proposals["device"], proposals["device"]
    classify = read_metrics(storage.join(run, "classify"))
    assert "CPU" in str(classify.get("train_device")), classify
    # memory of the workers on the other nodes, sampled there (weaksam.pipeline.memory)
    assert classify["memory"]["worker_peak_rss_mb"].get("RayTrainWorker", 0) > 100, classify
    sam_peaks = proposals["memory"]["worker_peak_rss_mb"]
    assert any("ProposalGenerator" in k and v > 100 for k, v in sam_peaks.items()), sam_peaks
    # every stage's outputs and marker are in the bucket
    for stage in STAGES:
        assert storage.is_file(storage.join(run, stage, "_SUCCESS")), stage
    ids = read_table(proposals_path(run), "proposals").column("image_id").to_pylist()
    want = read_table(manifest_path(run), "manifest").column("image_id").to_pylist()
    assert sorted(ids) == sorted(want) and len(ids) == len(set(ids)) == 20
    assert storage.is_file(storage.join(run, "config.resolved.yaml"))
    stored = storage.list_files(storage.join(run, "classify"), recursive=True)
    assert any("/ray_train" in f and "/checkpoint_" in f for f in stored), stored[:20]
    # nothing under the working directory
    assert sorted(os.listdir(workdir)) == []
    # the second run skipped every stage
    for stage in STAGES:
        assert re.search(rf"^{stage}\s+skipped\b", second.stdout, re.M), second.stdout[-3000:]
    assert not re.search(r"^\w+\s+ran\b", second.stdout, re.M), second.stdout[-3000:]


def test_lost_worker_nodes_during_training_and_proposals(tiny_run: TinyRun, tmp_path: Path) -> None:
    """A worker node removed while the classifier trains (Ray Train) and another while SAM
    runs (Ray Data): both stages finish, training resumed from a checkpoint, every image has
    exactly one proposals row. The run folder is on a disk all nodes share (one machine)."""
    run = tiny_run.copy_to(tmp_path)
    base = ["--config", CONFIG, "--set", f"run_root={tmp_path}"]
    removed: list[str] = []

    def kill_once(cluster: SimCluster, ready: Callable[[], bool], title: str) -> Callable[[], None]:
        def watch() -> None:
            if removed or not ready():
                return
            hosts = cluster.hosting(title)
            if hosts:
                cluster.remove(hosts[0])
                removed.append(hosts[0])
                cluster.add()  # the replacement a cluster manager would bring up

        return watch

    with sim_cluster(workers=2, worker_cpus=2, head_cpus=0) as cluster:
        # Ray Train: kill the node of the training worker once the controller has registered a
        # checkpoint (its snapshot file is written on registration; a checkpoint folder alone
        # may still be uploading, and a restart would then begin at epoch 0)
        snapshot = str(run / "classify" / "ray_train_*" / "checkpoint_manager_snapshot.json")
        epochs = 300
        longer = ["--set", f"classifier.epochs={epochs}", "--set", "classifier.checkpoint_every=5"]
        train = driver(
            cluster,
            "ray_jobs.train_classifier",
            [*base, *longer],
            tmp_path,
            watch=kill_once(cluster, lambda: bool(glob.glob(snapshot)), "RayTrainWorker"),
        )
        assert train.returncode == 0, _explain(train)
        assert removed, "the training worker's node was never removed"
        classify = read_metrics(str(run / "classify"))
        assert classify["epochs"] == epochs, classify
        # the worker that finished started from a checkpoint, not from scratch
        resumed = classify["resumed_from_epoch"]
        assert resumed >= 5, (resumed, _explain(train))

        # Ray Data: kill the node of a SAM actor once some shards are written (one image per
        # file here, so shards appear while the job runs)
        removed.clear()
        shards = proposals_path(str(run))

        def some_written() -> bool:
            return len(glob.glob(os.path.join(shards, "*.parquet"))) >= 1

        props = driver(
            cluster,
            "ray_jobs.generate_proposals",
            [
                *base,
                "--set",
                "proposals.batch_size=1",
                "--set",
                "proposals.engine.points_per_side=16",
                "--set",
                "proposals.rows_per_file=1",
            ],
            tmp_path,
            watch=kill_once(cluster, some_written, "ProposalGenerator"),
        )
        assert props.returncode == 0, _explain(props)
        assert removed, "no SAM actor's node was removed"
    ids = read_table(shards, "proposals").column("image_id").to_pylist()
    want = read_table(manifest_path(str(run)), "manifest").column("image_id").to_pylist()
    assert sorted(ids) == sorted(want) and len(set(ids)) == len(ids)


def test_refusals_on_a_cluster_fail_fast_in_one_line(tiny_run: TinyRun, tmp_path: Path) -> None:
    """``use_gpu: true`` on a cluster without GPUs, and a relative ``run_root`` on several
    nodes: exit status 2, one line, nothing written."""
    tiny_run.copy_to(tmp_path)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    with sim_cluster(workers=2, worker_cpus=1, head_cpus=1) as cluster:
        t0 = time.monotonic()
        gpu = driver(
            cluster,
            "ray_jobs.generate_proposals",
            [
                "--config",
                CONFIG,
                "--set",
                f"run_root={tmp_path}",
                "--set",
                "proposals.use_gpu=true",
            ],
            workdir,
        )
        seconds = time.monotonic() - t0
        relative = driver(
            cluster, "ray_jobs.pipeline", ["--config", CONFIG, "--set", "run_root=runs"], workdir
        )
    assert gpu.returncode == 2, _explain(gpu)
    lines = [ln for ln in gpu.stderr.splitlines() if "use_gpu: true" in ln]
    assert len(lines) == 1 and "0 GPUs" in lines[0] and "CPU=" in lines[0], gpu.stderr[-2000:]
    assert seconds < 120
    assert relative.returncode == 2, _explain(relative)
    lines = [ln for ln in relative.stderr.splitlines() if "relative path" in ln]
    assert len(lines) == 1 and "3 nodes" in lines[0], relative.stderr[-2000:]
    assert sorted(os.listdir(workdir)) == []  # the relative run folder was never made
