"""Stage orchestration: fresh stages skip, stale ones and their dependants rerun."""

import os
from typing import Any

import pytest

from weaksam.config import Config, load_config
from weaksam.pipeline.core import run_stages
from weaksam.stage import Stage, StageContext


def _stages(calls: list[str]) -> list[Stage]:
    def make(name: str):
        def run(cfg: Config, ctx: StageContext) -> dict[str, Any]:
            calls.append(name)
            return {"stage": name}

        return run

    return [
        Stage("a", make("a"), sections=("synth",)),
        Stage("b", make("b"), sections=("data",), deps=("a",)),
        Stage("c", make("c"), sections=("evaluate",), deps=("b",)),
        Stage("off", make("off"), enabled=lambda cfg: False),
    ]


def _stage_metrics(metrics: dict) -> dict:
    """What the stage returned: the metrics without the runner's ``memory`` entry."""
    return {k: v for k, v in metrics.items() if k != "memory"}


def test_skip_rerun_and_dependants(tmp_path) -> None:
    root = ["run_root=" + str(tmp_path)]
    calls: list[str] = []
    reports = run_stages(load_config(None, root), _stages(calls))
    assert calls == ["a", "b", "c"]
    assert [r.action for r in reports] == ["ran", "ran", "ran", "disabled"]
    assert _stage_metrics(reports[0].metrics) == {"stage": "a"} and reports[0].seconds >= 0
    memory = reports[0].metrics["memory"]  # the runner's own: the driver's peak RSS
    assert memory["driver_peak_rss_mb"] > 10 and reports[0].peak_rss_mb > 10

    calls.clear()
    reports = run_stages(load_config(None, root), _stages(calls))
    assert calls == [] and [r.action for r in reports[:3]] == ["skipped"] * 3
    assert _stage_metrics(reports[1].metrics) == {"stage": "b"}

    # a change in b's section reruns b and c, not a
    calls.clear()
    run_stages(load_config(None, [*root, "data.max_pixels=5"]), _stages(calls))
    assert calls == ["b", "c"]

    # a change in a's section reruns everything downstream
    calls.clear()
    run_stages(load_config(None, [*root, "data.max_pixels=5", "synth.seed=3"]), _stages(calls))
    assert calls == ["a", "b", "c"]


def test_from_and_only_resume_unless_forced(tmp_path) -> None:
    cfg = load_config(None, ["run_root=" + str(tmp_path)])
    calls: list[str] = []
    run_stages(cfg, _stages(calls))
    calls.clear()
    # selecting stages does not discard fresh outputs ...
    reports = run_stages(cfg, _stages(calls), from_stage="b")
    assert calls == [] and [r.name for r in reports] == ["b", "c", "off"]
    assert [r.action for r in reports] == ["skipped", "skipped", "disabled"]
    run_stages(cfg, _stages(calls), only="b")
    assert calls == []
    # ... only --force does
    run_stages(cfg, _stages(calls), from_stage="b", force=True)
    assert calls == ["b", "c"]
    calls.clear()
    run_stages(cfg, _stages(calls), only=["a", "c"], force=True)
    assert calls == ["a", "c"]
    with pytest.raises(ValueError, match="unknown stage"):
        run_stages(cfg, _stages(calls), only="zzz")


def test_a_rebuilt_input_makes_its_dependants_stale(tmp_path) -> None:
    """Same config, but ``b`` was rebuilt by a forced single-stage run: ``c`` read the old
    outputs, so the next pipeline run reruns ``c`` (and only ``c``)."""
    cfg = load_config(None, ["run_root=" + str(tmp_path)])
    calls: list[str] = []
    run_stages(cfg, _stages(calls))
    calls.clear()
    run_stages(cfg, _stages(calls), only="b", force=True)
    assert calls == ["b"]
    calls.clear()
    run_stages(cfg, _stages(calls))
    assert calls == ["c"]
    calls.clear()
    run_stages(cfg, _stages(calls))
    assert calls == []


def test_failed_stage_leaves_no_marker(tmp_path) -> None:
    cfg = load_config(None, ["run_root=" + str(tmp_path)])

    def boom(cfg: Config, ctx: StageContext) -> dict[str, Any]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_stages(cfg, [Stage("x", boom)])
    assert not (tmp_path / "demo" / "x" / "_SUCCESS").exists()


def test_partial_outputs_resume_only_the_same_config(tmp_path) -> None:
    """An interrupted run resumes from its partial outputs; another config starts clean."""
    seen: list[bool] = []

    def flaky(fail: bool):
        def run(cfg: Config, ctx: StageContext) -> dict[str, Any]:
            shard = os.path.join(ctx.out_dir, "shard-0.parquet")
            seen.append(os.path.exists(shard))
            with open(shard, "w") as fh:
                fh.write("partial")
            if fail:
                raise RuntimeError("interrupted")
            return {}

        return run

    root = ["run_root=" + str(tmp_path)]
    with pytest.raises(RuntimeError):
        run_stages(load_config(None, root), [Stage("p", flaky(True), sections=("synth",))])
    run_stages(load_config(None, root), [Stage("p", flaky(False), sections=("synth",))])
    assert seen == [False, True]  # the same config resumed from the shard written before

    # a changed setting: the old shard must not be taken for the new config's output
    with pytest.raises(RuntimeError):
        cfg = load_config(None, [*root, "synth.seed=5"])
        run_stages(cfg, [Stage("p", flaky(True), sections=("synth",))])
    assert seen[-1] is False
    # a forced rerun of a finished stage starts clean too
    run_stages(cfg, [Stage("p", flaky(False), sections=("synth",))])
    run_stages(cfg, [Stage("p", flaky(False), sections=("synth",))], only="p", force=True)
    assert seen[-2:] == [True, False]


def test_changed_weight_file_reruns_its_stage_and_dependants(tmp_path) -> None:
    """Same config, same path, new bytes: the stage loading the file reruns (and what follows)."""
    weights = tmp_path / "backbone.pt"
    weights.write_bytes(b"first")
    calls: list[str] = []

    def make(name: str):
        def run(cfg: Config, ctx: StageContext) -> dict[str, Any]:
            calls.append(name)
            return {}

        return run

    stages = [
        Stage("a", make("a"), sections=("synth",)),
        Stage("cls", make("cls"), sections=("classifier",), deps=("a",)),
        Stage("c", make("c"), sections=("evaluate",), deps=("cls",)),
    ]
    over = ["run_root=" + str(tmp_path / "runs"), f"classifier.weights={weights}"]
    run_stages(load_config(None, over), stages)
    assert calls == ["a", "cls", "c"]
    calls.clear()
    run_stages(load_config(None, over), stages)
    assert calls == []
    weights.write_bytes(b"second")
    run_stages(load_config(None, over), stages)
    assert calls == ["cls", "c"]


def test_weight_files_finds_paths_and_builtin_assets(tmp_path) -> None:
    from weaksam.runs import ASSETS_DIR, file_digest, weight_files

    f = tmp_path / "w.pt"
    f.write_bytes(b"x")
    section = {
        "classifier": {"weights": str(f), "width": 8},
        "sam": {"checkpoint": "builtin"},
        "wsod": {"model": {"weights": "s3://bucket/w.pt"}},  # a URI: not read
        "retrain": {"model": {"weights": ""}},
    }
    found = weight_files(section)
    assert str(f) in found
    assert os.path.join(ASSETS_DIR, "demo_sam.pt") in found
    assert all(p.endswith(".pt") and os.path.isfile(p) for p in found)
    assert weight_files({"classifier": {"weights": ""}}) == []
    assert file_digest(str(f)) == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"


def test_runner_on_s3(s3_bucket: str) -> None:
    """With ``run_root`` in a bucket the runner writes its markers and metrics there, skips
    the fresh stages on a second call, resumes partial outputs of the same key and
    discards them when forced."""
    from weaksam import storage
    from weaksam.runs import read_metrics, read_success, started_key

    cfg = load_config(None, [f"run_root={s3_bucket}/runs", "name=t"])
    assert cfg.run_dir == f"{s3_bucket}/runs/t"
    calls: list[str] = []
    reports = run_stages(cfg, _stages(calls))
    assert calls == ["a", "b", "c"]
    assert [r.action for r in reports] == ["ran", "ran", "ran", "disabled"]
    for name in ("a", "b", "c"):
        out = f"{cfg.run_dir}/{name}"
        marker = read_success(out)
        assert marker and marker["key"] and started_key(out) == marker["key"]
        assert _stage_metrics(read_metrics(out)) == {"stage": name}
    assert not storage.exists(f"{cfg.run_dir}/off")

    calls.clear()
    reports = run_stages(cfg, _stages(calls))
    assert calls == [] and [r.action for r in reports[:3]] == ["skipped"] * 3
    assert _stage_metrics(reports[2].metrics) == {"stage": "c"}

    seen: list[bool] = []

    def writes(fail: bool):
        def run(cfg: Config, ctx: StageContext) -> dict[str, Any]:
            assert ctx.out_dir == f"{cfg.run_dir}/p"
            shard = storage.join(ctx.out_dir, "shard-0.parquet")
            seen.append(storage.exists(shard))
            storage.write_bytes(shard, b"partial")
            if fail:
                raise RuntimeError("interrupted")
            return {}

        return run

    with pytest.raises(RuntimeError):
        run_stages(cfg, [Stage("p", writes(True))])
    assert read_success(f"{cfg.run_dir}/p") is None
    run_stages(cfg, [Stage("p", writes(False))])
    run_stages(cfg, [Stage("p", writes(False))], force=True)
    assert seen == [False, True, False]  # resumed the same key; a forced run starts empty
