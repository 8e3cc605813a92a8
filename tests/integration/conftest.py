"""One tiny pipeline run per session, shared by the integration tests (each works on a copy).

Also: run a command as a subprocess and SIGKILL it with every process it started (its own
local Ray instance included) once a condition on its outputs holds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "tiny.yaml")


@dataclass(frozen=True)
class TinyRun:
    """The finished tiny run (``root/tiny``) and what its first pipeline call printed."""

    root: Path
    printed: str

    @property
    def run_dir(self) -> Path:
        return self.root / "tiny"

    def copy_to(self, root: Path) -> Path:
        """A copy of the run folder under ``root`` (timestamps kept); returns its run folder."""
        shutil.copytree(self.run_dir, root / "tiny", symlinks=True)
        return root / "tiny"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    from ray_jobs.pipeline import main

    root = tmp_path_factory.mktemp("tiny_runs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--config", CONFIG, "--set", f"run_root={root}"])
    assert code == 0, out.getvalue()[-2000:]
    return TinyRun(root, out.getvalue())


def subprocess_env() -> dict[str, str]:
    """The environment of a driver subprocess: its own local Ray instance, on loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def driver_probe(code: str, tag: str, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` as a driver subprocess in the repository (``env``: default
    :func:`subprocess_env`) and return the JSON of the last stdout line that starts with
    ``"<tag> "``; fails with the output's tail when there is none."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=subprocess_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"{tag} ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len(tag) + 1 :])


def module_cmd(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` and every process it started (snapshot taken just before)."""
    try:
        parent = psutil.Process(proc.pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=30)
    proc.wait(timeout=30)


def kill_when(
    cmd: Sequence[str], ready: Callable[[], bool], log: Path, timeout: float = 300.0
) -> bool:
    """Start ``cmd`` and SIGKILL it (and its children) as soon as ``ready()`` holds.

    Returns False when the command ended (or timed out) before that happened.
    """
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            list(cmd), cwd=REPO, env=subprocess_env(), stdout=fh, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return False
                if ready():
                    kill_tree(proc)
                    return True
                time.sleep(0.1)
            return False
        finally:
            if proc.poll() is None:
                kill_tree(proc)


def run_cmd(cmd: Sequence[str], timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd),
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
