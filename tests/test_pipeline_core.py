"""Stage orchestration: fresh stages skip, stale ones and their dependants rerun."""

import os
from typing import Any

import pytest

from weaksam.config import Config, load_config
from weaksam.pipeline.core import Stage, StageContext, run_stages


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


def test_skip_rerun_and_dependants(tmp_path) -> None:
    root = ["run_root=" + str(tmp_path)]
    calls: list[str] = []
    reports = run_stages(load_config(None, root), _stages(calls))
    assert calls == ["a", "b", "c"]
    assert [r.action for r in reports] == ["ran", "ran", "ran", "disabled"]
    assert reports[0].metrics == {"stage": "a"} and reports[0].seconds >= 0

    calls.clear()
    reports = run_stages(load_config(None, root), _stages(calls))
    assert calls == [] and [r.action for r in reports[:3]] == ["skipped"] * 3
    assert reports[1].metrics == {"stage": "b"}

    # a change in b's section reruns b and c, not a
    calls.clear()
    run_stages(load_config(None, [*root, "data.max_pixels=5"]), _stages(calls))
    assert calls == ["b", "c"]

    # a change in a's section reruns everything downstream
    calls.clear()
    run_stages(load_config(None, [*root, "data.max_pixels=5", "synth.seed=3"]), _stages(calls))
    assert calls == ["a", "b", "c"]


def test_from_and_only(tmp_path) -> None:
    cfg = load_config(None, ["run_root=" + str(tmp_path)])
    calls: list[str] = []
    run_stages(cfg, _stages(calls))
    calls.clear()
    run_stages(cfg, _stages(calls), from_stage="b")
    assert calls == ["b", "c"]
    calls.clear()
    run_stages(cfg, _stages(calls), only="b")
    assert calls == ["b"]
    with pytest.raises(ValueError, match="unknown stage"):
        run_stages(cfg, _stages(calls), only="zzz")


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
    run_stages(cfg, [Stage("p", flaky(False), sections=("synth",))], only="p")
    assert seen[-2:] == [True, False]
