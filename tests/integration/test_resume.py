"""Single-stage commands resume after a SIGKILL, and refuse bad input before touching a run.

Each test works on a copy of the session's tiny run. The killed commands are real
subprocesses (``python -m ray_jobs.<stage>``) with their own local Ray instance, killed with
SIGKILL together with every process they started.
"""

from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path

import pytest

from ray_jobs.generate_proposals import main as generate_proposals
from weaksam.io.tables import read_table
from weaksam.runs import manifest_path, proposals_path, read_metrics

from .conftest import CONFIG, TinyRun, kill_when, module_cmd, run_cmd

pytestmark = pytest.mark.slow


def _summary(stdout: str) -> dict[str, object]:
    """The JSON object a stage command prints after its ``stage ...`` line."""
    start = stdout.index("{", stdout.index("stage "))
    return dict(json.loads(stdout[start : stdout.index("\n}", start) + 2]))


def test_sigkill_proposals_then_rerun_resumes(tiny_run: TinyRun, tmp_path: Path) -> None:
    run = tiny_run.copy_to(tmp_path)
    # one image per block and per file (shards are rows_per_file rows, 500 by default: one
    # file for the whole tiny run) and a denser grid, so the job still runs after its first part
    cmd = module_cmd(
        "ray_jobs.generate_proposals",
        *("--config", CONFIG, "--set", f"run_root={tmp_path}"),
        *("--set", "proposals.batch_size=1", "--set", "proposals.engine.points_per_side=24"),
        *("--set", "proposals.rows_per_file=1"),
    )
    shards = proposals_path(str(run))

    def some_written() -> bool:  # the copy's old shards are gone (new settings) and new ones came
        started = (run / "proposals" / "_STARTED").exists()
        finished = (run / "proposals" / "_SUCCESS").exists()
        return started and not finished and len(glob.glob(os.path.join(shards, "*.parquet"))) >= 2

    assert kill_when(cmd, some_written, tmp_path / "killed.log"), "finished before the kill"
    assert not (run / "proposals" / "_SUCCESS").exists()

    done = run_cmd(cmd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stage proposals: resumed an interrupted run" in done.stdout
    summary = _summary(done.stdout)
    assert int(summary["images_resumed"]) >= 1  # type: ignore[call-overload]
    assert int(summary["images_resumed"]) + int(summary["images_processed"]) == 20  # type: ignore[call-overload]
    ids = read_table(shards, "proposals").column("image_id").to_pylist()
    want = read_table(manifest_path(str(run)), "manifest").column("image_id").to_pylist()
    assert sorted(ids) == sorted(want) and len(set(ids)) == len(ids)

    again = run_cmd(cmd)  # fresh now: skipped, nothing rewritten
    assert again.returncode == 0 and "stage proposals: fresh, skipped" in again.stdout


def test_sigkill_wsod_training_then_rerun_resumes_from_checkpoint(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    run = tiny_run.copy_to(tmp_path)
    cmd = module_cmd(
        "ray_jobs.train_wsod",
        *("--config", CONFIG, "--set", f"run_root={tmp_path}"),
        *("--set", "wsod.train.steps=24", "--set", "wsod.train.checkpoint_every=3"),
        *("--set", "wsod.train.lr_steps=[20]"),
    )

    def checkpointed() -> bool:  # the copy's old run is gone (new settings) and Ray Train has
        # recorded a checkpoint of the new one in its manager's snapshot (what a restart reads)
        if (run / "wsod" / "_SUCCESS").exists() or not (run / "wsod" / "_STARTED").exists():
            return False
        for path in glob.glob(str(run / "wsod" / "ray_train" / "*" / "*snapshot.json")):
            try:
                with open(path) as fh:
                    if json.load(fh).get("latest_checkpoint_result"):
                        return True
            except (OSError, ValueError):  # being written
                continue
        return False

    assert kill_when(cmd, checkpointed, tmp_path / "killed.log"), "finished before the kill"
    done = run_cmd(cmd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stage wsod: resumed an interrupted run" in done.stdout
    method = read_metrics(str(run / "wsod"))["methods"]["mist"]
    assert method["steps"] == 24
    assert method["resumed_from_step"] >= 3  # from the checkpoint, not from step 0


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "{empty}"],
        ["--config", "{unnamed}"],
        [],
        ["--config", CONFIG, "--set", "run_root={root}", "--set", "name=../x"],
        ["--config", CONFIG, "--set", "run_root={root}", "--set", "proposals.batch_size=0"],
        ["--config", CONFIG, "--set", "run_root={root}", "--set", "proposals.num_actors=-3"],
        ["--config", CONFIG, "--set", "run_root={root}", "--set", "sam.checkpoint=/nope.pt"],
        ["--config", CONFIG, "--set", "run_root={root}", "--set", "proposals.use_gpu=true"],
    ],
    ids=[
        "empty-config",
        "no-name",
        "no-config",
        "name-escapes",
        "batch-0",
        "actors-neg",
        "ckpt",
        "gpu-true-without-gpus",
    ],
)
def test_bad_input_exits_2_and_leaves_the_run_untouched(
    tiny_run: TinyRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
) -> None:
    root = tmp_path / "runs"
    run = tiny_run.copy_to(root)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a command that fell back to `runs/demo` would write here
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "unnamed.yaml").write_text(f"run_root: {root}\n")  # no `name:`
    words = [
        a.format(empty=tmp_path / "empty.yaml", unnamed=tmp_path / "unnamed.yaml", root=root)
        for a in ["--force", *args]
    ]
    before = _snapshot(root)
    capsys.readouterr()
    assert generate_proposals(words) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(r"python -m ray_jobs.generate_proposals: ", err), err
    assert _snapshot(root) == before
    assert list(cwd.iterdir()) == []
    assert run.exists()
