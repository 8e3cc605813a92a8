"""The entry points' shared runner and the `weaksam` command, without Ray."""

from __future__ import annotations

import pytest

from ray_jobs import cli
from ray_jobs._stage import UsageError, check_inputs
from weaksam.config import load_run_config
from weaksam.pipeline.stages import STAGE_NAMES, STAGES
from weaksam.runs import mark_success


def test_weaksam_lists_and_dispatches(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in ("run", *STAGE_NAMES, "serve", "evaluate"))
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    assert cli.main([]) == 2
    # a stage command without a config is refused in one line, by the shared runner
    assert cli.main(["proposals"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("weaksam proposals: config error: name") and err.count("\n") == 1


def test_check_inputs_needs_completed_dependencies_and_weight_files(tmp_path) -> None:
    cfg = load_run_config(None, ["name=t", f"run_root={tmp_path}"])
    with pytest.raises(UsageError, match="reads the outputs of 'ingest'"):
        check_inputs(cfg, STAGES, ["proposals"])
    for dep in ("ingest", "peaks"):
        (tmp_path / "t" / dep).mkdir(parents=True)
        mark_success(str(tmp_path / "t" / dep), "h")
    check_inputs(cfg, STAGES, ["proposals"])
    check_inputs(cfg, STAGES, ["data", "ingest", "classify"])  # run together: fine

    missing = load_run_config(None, ["name=t", f"run_root={tmp_path}", "sam.checkpoint=/no.pt"])
    with pytest.raises(UsageError, match=r"sam.checkpoint: no such file: /no.pt"):
        check_inputs(missing, STAGES, ["proposals"])
    coco = load_run_config(
        None, ["name=t", f"run_root={tmp_path}", "data.format=coco", f"data.root={tmp_path}"]
    )
    with pytest.raises(UsageError, match=r"needs data\.annotations"):
        check_inputs(coco, STAGES, ["ingest"])


def test_gpu_requests_name_every_use_gpu_true_of_the_selected_stages(tmp_path) -> None:
    from ray_jobs._stage import gpu_requests

    over = ["name=t", f"run_root={tmp_path}"]
    cfg = load_run_config(None, over)
    assert gpu_requests(cfg, STAGES, list(STAGE_NAMES)) == []  # auto everywhere by default
    cfg = load_run_config(
        None,
        [
            *over,
            "proposals.use_gpu=true",
            "proposals.num_actors=3",
            "proposals.gpus_per_actor=0.5",
            "wsod.train.use_gpu=true",
            "wsod.train.num_workers=2",
            "classifier.use_gpu=True",  # a YAML boolean is the policy's name
        ],
    )
    assert cfg.classifier.use_gpu == "true"
    assert gpu_requests(cfg, STAGES, ["proposals", "wsod"]) == [
        ("proposals.use_gpu", 1.5),
        ("wsod.train.use_gpu", 2.0),
    ]
    assert gpu_requests(cfg, STAGES, ["classify"]) == [("classifier.use_gpu", 2.0)]
    with pytest.raises(Exception, match=r"use_gpu: must be one of \['auto', 'true', 'false'\]"):
        load_run_config(None, [*over, "peaks.use_gpu=sometimes"])
