"""A pipeline job submitted with ``ray job submit`` to a private, loopback-only head node.

The job is the tiny pipeline with the session's finished tiny run as its ``upstream`` and one
retraining setting changed, so that only ``retrain`` (a Ray Train stage) runs inside the job:
submission, the working-dir upload, the driver joining the job's cluster and a training stage
on it are what this test is for; every stage on a joined cluster is
``test_cluster.py::test_tiny_pipeline_on_s3_with_fake_gpus``'s.

The head runs as a ``ray start --head --block`` subprocess on free ports with its own temp dir and
auth token, so it never meets another cluster on this machine; it is always stopped by its PID
(never ``ray stop``, which ends everyone's Ray processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import TinyRun

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # the venv's bin: its `ray` and `python`
RAY = str(VENV_BIN / "ray") if (VENV_BIN / "ray").exists() else (shutil.which("ray") or "ray")
# Kept out of the working-dir upload on top of what .gitignore already excludes.
EXCLUDES = [
    ".git",
    ".venv",
    "runs",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".whl",
    "*.egg-info",
    "__pycache__",
]
HEAD_READY_S = 120
# The whole tiny pipeline as a job took ~140 s on an idle 2-core machine (~290 s with a load
# average of ~15); the job here runs one of its stages.
JOB_TIMEOUT_S = 300


@dataclass
class Head:
    url: str  # the dashboard's HTTP address, where the job API lives
    env: dict[str, str]  # the environment a client needs (auth token, PATH)
    temp_dir: str
    log: Path


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on loopback right now (sockets held until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _api(head: Head, path: str, timeout: float = 10.0) -> object:
    req = urllib.request.Request(
        head.url + path, headers={"Authorization": f"Bearer {head.env['RAY_AUTH_TOKEN']}"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _ours(p, pgid: int, token: str) -> bool:
    """Started by this head: in its process group, or carrying its private auth token (workers
    and the job's driver, which the job supervisor puts in a session of its own)."""
    with contextlib.suppress(Exception):
        if os.getpgid(p.pid) == pgid:
            return True
    with contextlib.suppress(Exception):
        return p.pid != os.getpid() and p.environ().get("RAY_AUTH_TOKEN") == token
    return False


def _stop(proc: subprocess.Popen, token: str) -> None:
    """SIGTERM the ``ray start --block`` process, then SIGKILL whatever of its cluster is left."""
    import psutil

    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
    exited = proc.poll() is not None
    left = [p for p in psutil.process_iter() if _ours(p, proc.pid, token)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    names = []
    for p in left:
        with contextlib.suppress(psutil.Error):
            names.append(p.name())
            p.kill()
    print(
        f"\nray head stopped: SIGTERM {'ended' if exited else 'did not end'} it in "
        f"{time.monotonic() - t0:.1f} s; leftover processes killed: {names}"
    )


@pytest.fixture
def ray_head() -> Iterator[Head]:
    """A loopback-only head node (2 CPUs) on free ports, stopped by PID at the end."""
    # Short path: Ray's unix sockets live under the temp dir (108-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="rjs", dir="/tmp")
    gcs, dash, client, agent = _free_ports(4)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        # A private token: neither read from nor written to ~/.ray/auth_token.
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_USAGE_STATS_ENABLED="0",
        OMP_NUM_THREADS="1",
        # On SIGTERM Ray 2.60 first drains the node, for up to 30 s by default: skip it.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
    )
    cmd = [
        RAY,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--port={gcs}",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--temp-dir={temp_dir}",
        "--num-cpus=2",
        "--num-gpus=0",
        f"--object-store-memory={512 * 2**20}",
        "--disable-usage-stats",
    ]
    log = Path(temp_dir) / "head.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    head = Head(url=f"http://127.0.0.1:{dash}", env=env, temp_dir=temp_dir, log=log)
    t0 = time.monotonic()
    try:
        deadline = t0 + HEAD_READY_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}:\n{_tail(log)}")
            try:
                _api(head, "/api/jobs/", timeout=5)
                break
            except (OSError, ValueError):  # refused, reset, 5xx while the agent starts
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"job API not up after {HEAD_READY_S} s:\n{_tail(log)}")
            time.sleep(1)
        print(f"\nray head: job API up in {time.monotonic() - t0:.1f} s")
        yield head
    finally:
        _stop(proc, env["RAY_AUTH_TOKEN"])
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.ray
def test_pipeline_job_via_ray_job_submit(tiny_run: TinyRun, ray_head: Head, tmp_path: Path) -> None:
    upstream = tiny_run.copy_to(tmp_path / "up")
    t0 = time.monotonic()
    job_id = f"weaksam-tiny-{secrets.token_hex(4)}"
    submit = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            f"--address={ray_head.url}",
            f"--submission-id={job_id}",
            f"--working-dir={REPO}",
            f"--runtime-env-json={json.dumps({'excludes': EXCLUDES})}",
            "--no-wait",
            "--",
            "python",
            "-m",
            "ray_jobs.pipeline",
            "--config",
            "configs/tiny.yaml",
            "--set",
            f"run_root={tmp_path / 'runs'}",
            "--set",
            "name=tiny_job",
            "--set",
            f"upstream={upstream}",
            "--set",
            "retrain.train.steps=3",
        ],
        env=ray_head.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submit.returncode == 0, f"{submit.stdout}\n{submit.stderr}"
    for line in (submit.stdout + submit.stderr).splitlines():
        if "package" in line.lower():
            print(line)

    deadline = time.monotonic() + JOB_TIMEOUT_S
    status = "PENDING"
    while status not in ("SUCCEEDED", "FAILED", "STOPPED"):
        if time.monotonic() > deadline:
            break
        time.sleep(3)
        info = _api(ray_head, f"/api/jobs/{job_id}")
        assert isinstance(info, dict)
        status = info["status"]
    print(f"\njob {job_id}: {status} after {time.monotonic() - t0:.1f} s")
    logs = _api(ray_head, f"/api/jobs/{job_id}/logs")
    text = logs["logs"] if isinstance(logs, dict) else str(logs)
    assert status == "SUCCEEDED", f"job {job_id}: {status}\n{text[-6000:]}"

    # init_ray joined the job's cluster (RAY_ADDRESS set by the job supervisor), no new instance
    assert "Connecting to existing Ray cluster" in text, text[-4000:]
    assert "Started a local Ray instance" not in text, text[-4000:]
    print(next(ln for ln in text.splitlines() if "Connecting to existing Ray cluster" in ln))

    with open(tmp_path / "runs" / "tiny_job" / "results.json") as fh:
        results = json.load(fh)
    stages = results["stages"]
    assert stages.pop("retrain") == "ran" and set(stages.values()) == {"upstream"}, stages
    assert results["upstream"]["run"] == str(upstream) and results["upstream"]["same_pgt"]
    # the job's retrained detector (3 steps), not the upstream's (2 steps)
    assert not (tmp_path / "runs" / "tiny_job" / "retrain").is_symlink()
    ours = json.loads((tmp_path / "runs" / "tiny_job" / "retrain" / "metrics.json").read_text())
    assert 0.0 <= ours["ap50_voc07"] <= 1.0 and results["retrain_ap50"] == ours["ap50_voc07"]
    assert results["wsis_ap50"] == results["upstream"]["results"]["wsis_ap50"]  # linked wsis
    print("stage seconds:", {k: round(v) for k, v in results["stage_seconds"].items()})
