"""``upstream:`` runs: stages whose key equals the upstream's are linked, never rewritten."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from weaksam.config import Config, ConfigError, load_config, save_resolved
from weaksam.pipeline.core import run_stages
from weaksam.stage import Stage, StageContext


def _stages(calls: list[str]) -> list[Stage]:
    """a → b → c; each writes ``out.txt`` holding its name and what it read from its dep."""

    def make(name: str, dep: str | None):
        def run(cfg: Config, ctx: StageContext) -> dict[str, Any]:
            calls.append(name)
            got = ""
            if dep:
                got = Path(ctx.run_dir, dep, "out.txt").read_text()
            Path(ctx.out_dir, "out.txt").write_text(f"{name}({got})")
            return {"stage": name}

        return run

    return [
        Stage("a", make("a", None), sections=("synth",)),
        Stage("b", make("b", "a"), sections=("data",), deps=("a",)),
        Stage("c", make("c", "b"), sections=("evaluate",), deps=("b",)),
    ]


def _tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links followed) and its SHA-256."""
    out = {}
    for dirpath, _, files in os.walk(root, followlinks=True):
        for f in files:
            p = Path(dirpath, f)
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    """A finished run ``up`` of the three stages (with its resolved config)."""
    cfg = load_config(None, [f"run_root={tmp_path / 'runs'}", "name=up"])
    save_resolved(cfg)
    run_stages(cfg, _stages([]))
    return Path(cfg.run_dir)


def _down(tmp_path: Path, upstream: Path, *over: str) -> Config:
    return load_config(
        None, [f"run_root={tmp_path / 'runs'}", "name=down", f"upstream={upstream}", *over]
    )


def test_equal_keys_are_linked_not_run(tmp_path: Path, upstream: Path) -> None:
    before = _tree_digest(upstream)
    cfg = _down(tmp_path, upstream)
    calls: list[str] = []
    reports = run_stages(cfg, _stages(calls))
    assert calls == []
    assert [r.action for r in reports] == ["upstream"] * 3
    assert [r.source for r in reports] == [str(upstream / n) for n in "abc"]
    assert reports[2].metrics["stage"] == "c"
    down = Path(cfg.run_dir)
    for name in "abc":
        assert (down / name).is_symlink()
        assert os.path.realpath(down / name) == str(upstream / name)
    assert (down / "c" / "out.txt").read_text() == "c(b(a()))"
    # a second call: fresh through the links, still reported as the upstream's
    reports = run_stages(cfg, _stages(calls))
    assert calls == [] and [r.action for r in reports] == ["upstream"] * 3
    assert _tree_digest(upstream) == before


def test_a_changed_section_runs_here_from_that_stage_on(
    tmp_path: Path, upstream: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = _tree_digest(upstream)
    cfg = _down(tmp_path, upstream, "data.max_pixels=5")
    calls: list[str] = []
    with caplog.at_level(logging.INFO, logger="weaksam.pipeline.core"):
        reports = run_stages(cfg, _stages(calls))
    assert calls == ["b", "c"]
    assert [r.action for r in reports] == ["upstream", "ran", "ran"]
    down = Path(cfg.run_dir)
    assert (down / "a").is_symlink()
    assert not (down / "b").is_symlink() and not (down / "c").is_symlink()
    assert (down / "c" / "out.txt").read_text() == "c(b(a()))"
    text = caplog.text
    assert "keys data.max_pixels differ" in text  # b: its own section
    assert "the hash of its dependency b differs" in text  # c: its dependency changed
    assert _tree_digest(upstream) == before
    assert (upstream / "b" / "_SUCCESS").exists()


def test_a_stage_linked_earlier_runs_here_when_its_key_changes(
    tmp_path: Path, upstream: Path
) -> None:
    before = _tree_digest(upstream)
    calls: list[str] = []
    run_stages(_down(tmp_path, upstream), _stages(calls))
    cfg = _down(tmp_path, upstream, "evaluate.iou_threshold=0.7")
    reports = run_stages(cfg, _stages(calls))
    assert calls == ["c"] and [r.action for r in reports] == ["upstream", "upstream", "ran"]
    assert not Path(cfg.run_dir, "c").is_symlink()
    assert _tree_digest(upstream) == before
    # back to the upstream's config: c here is stale, the upstream's c matches again
    reports = run_stages(_down(tmp_path, upstream), _stages(calls))
    assert calls == ["c"] and [r.action for r in reports] == ["upstream"] * 3
    assert Path(cfg.run_dir, "c").is_symlink()
    assert _tree_digest(upstream) == before


def test_only_links_the_selected_stages_inputs_from_the_upstream(
    tmp_path: Path, upstream: Path
) -> None:
    """``only`` on a derived run: the inputs it reads are linked (never run), the stage runs
    here and reads them through the links; the stages nobody selected or reads stay absent."""
    before = _tree_digest(upstream)
    calls: list[str] = []
    cfg = _down(tmp_path, upstream, "data.max_pixels=1000")
    reports = run_stages(cfg, _stages(calls), only="b")
    assert calls == ["b"]
    assert [(r.name, r.action) for r in reports] == [("a", "upstream"), ("b", "ran")]
    down = Path(cfg.run_dir)
    assert (down / "a").is_symlink() and not (down / "b").is_symlink()
    assert (down / "b" / "out.txt").read_text() == "b(a())"
    assert not (down / "c").exists()
    # the next call's input is fresh here through its link: nothing more to report for it
    reports = run_stages(cfg, _stages(calls), only="b")
    assert calls == ["b"] and [(r.name, r.action) for r in reports] == [("b", "skipped")]
    assert _tree_digest(upstream) == before


def test_force_on_a_linked_stage_removes_the_link_only(
    tmp_path: Path, upstream: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = _tree_digest(upstream)
    cfg = _down(tmp_path, upstream)
    calls: list[str] = []
    run_stages(cfg, _stages(calls))
    reports = run_stages(cfg, _stages(calls), only="b", force=True)
    assert calls == ["b"] and reports[0].action == "ran"
    down = Path(cfg.run_dir)
    assert not (down / "b").is_symlink() and (down / "b" / "_SUCCESS").exists()
    assert _tree_digest(upstream) == before
    # c read the upstream's b; b was rebuilt here, so c runs here too; a stays linked
    calls.clear()
    with caplog.at_level(logging.INFO, logger="weaksam.pipeline.core"):
        reports = run_stages(cfg, _stages(calls))
    assert "same stage hash, but its inputs b are not the upstream's" in caplog.text
    assert calls == ["c"] and [r.action for r in reports] == ["upstream", "skipped", "ran"]
    assert (down / "a").is_symlink()
    assert _tree_digest(upstream) == before


def test_missing_upstream_folder_is_a_clear_error(tmp_path: Path) -> None:
    cfg = _down(tmp_path, tmp_path / "runs" / "nothing")
    with pytest.raises(FileNotFoundError, match=r"upstream: no run folder at .*nothing"):
        run_stages(cfg, _stages([]))
    assert not Path(cfg.run_dir).exists()


def test_upstream_is_not_the_run_itself(tmp_path: Path, upstream: Path) -> None:
    cfg = load_config(None, [f"run_root={tmp_path / 'runs'}", "name=up", f"upstream={upstream}"])
    with pytest.raises(ValueError, match="this run's own folder"):
        run_stages(cfg, _stages([]))


def test_upstream_needs_local_storage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs local storage"):
        load_config(None, ["upstream=s3://bucket/runs/bench"])
    with pytest.raises(ConfigError, match="needs local storage"):
        load_config(None, ["run_root=s3://bucket/runs", f"upstream={tmp_path}"])


def test_relative_upstream_resolves_as_run_root_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["upstream=runs/bench"])
    assert cfg.upstream_dir == str(tmp_path / "runs" / "bench")
    assert load_config(None, []).upstream_dir == ""


def test_tables_and_report_name_the_upstream(tmp_path: Path, upstream: Path) -> None:
    from ray_jobs._stage import report_line
    from weaksam.pipeline.report import stage_timings
    from weaksam.pipeline.results import collect_results, stage_table

    cfg = _down(tmp_path, upstream, "evaluate.iou_threshold=0.7")
    reports = run_stages(cfg, _stages([]))
    assert f"upstream: linked to {upstream}" in stage_table(reports)
    assert report_line(reports[0]) == f"stage a: reused from the upstream run ({upstream / 'a'})"
    res = collect_results(reports, 1.0)
    assert res["stages"] == {"a": "upstream", "b": "upstream", "c": "ran"}
    timings = stage_timings(cfg.run_dir, reports)
    assert [t.action for t in timings] == ["upstream", "upstream", "ran"]
    assert timings[0].seconds is not None  # the upstream marker's, read through the link


def test_bench_transformers_reuses_every_bench_stage_but_the_detectors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From the repository root, ``configs/bench_transformers.yaml``'s upstream is where
    ``make bench`` writes, and only ``retrain`` and ``wsis`` have other keys than bench's
    (``baseline`` and ``evaluate`` included: nothing expensive reruns)."""
    from weaksam.pipeline.core import stage_hashes
    from weaksam.pipeline.stages import STAGES

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    bench = load_config("configs/bench.yaml")
    cfg = load_config("configs/bench_transformers.yaml")
    assert cfg.upstream_dir == bench.run_dir == str(root / "runs" / "bench")
    assert cfg.run_dir == str(root / "runs" / "bench_transformers")
    assert cfg.retrain.model.family == "rt_detr" and cfg.wsis.model.family == "mask2former"
    assert not cfg.retrain.roi_drop.enabled and not cfg.retrain.compare_no_drop
    assert cfg.retrain.upper_bound and cfg.wsis.upper_bound
    ours, theirs = stage_hashes(cfg, STAGES), stage_hashes(bench, STAGES)
    assert [n for n in ours if ours[n] != theirs[n]] == ["retrain", "wsis"]


def test_the_command_refuses_a_missing_upstream_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ray_jobs.pipeline import main

    over = [f"run_root={tmp_path / 'runs'}", "name=x", f"upstream={tmp_path / 'nothing'}"]
    tiny = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    code = main(["--config", tiny, *(a for o in over for a in ("--set", o))])
    err = capsys.readouterr().err
    assert code == 2 and "upstream: no run folder at" in err and "make bench" in err
    assert not (tmp_path / "runs" / "x").exists()  # refused before anything was written


def test_real_stages_read_their_inputs_through_the_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny config's stages that need no Ray: the upstream ran data and ingest; a run
    naming it links both and runs baseline and evaluate here, reading the manifest (and the
    synthetic images its paths name) through the links; the upstream is left as it was."""
    from weaksam.io.tables import read_table
    from weaksam.pipeline.stages import STAGES
    from weaksam.runs import manifest_path

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # ingest decodes on the driver

    def no_ray() -> None:
        raise AssertionError("these stages need no Ray")

    tiny = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    root = f"run_root={tmp_path / 'runs'}"
    up = load_config(tiny, [root, "name=up", "synth.num_train=4", "synth.num_test=3"])
    run_stages(up, STAGES, ray_init=no_ray, only=["data", "ingest"])
    before = _tree_digest(Path(up.run_dir))
    cfg = load_config(
        tiny, [root, "name=down", "synth.num_train=4", "synth.num_test=3", f"upstream={up.run_dir}"]
    )
    only = ["data", "ingest", "baseline", "evaluate"]
    reports = run_stages(cfg, STAGES, ray_init=no_ray, only=only)
    assert [(r.name, r.action) for r in reports] == [
        ("data", "upstream"),
        ("ingest", "upstream"),
        ("baseline", "ran"),
        ("evaluate", "ran"),
    ]
    down = Path(cfg.run_dir)
    assert (down / "ingest").is_symlink() and (down / "baseline" / "_SUCCESS").exists()
    paths = read_table(manifest_path(cfg.run_dir), "manifest").column("path").to_pylist()
    assert len(paths) == 7 and all(os.path.exists(p) for p in paths)
    # evaluate read the GT through the linked manifest: the same figure as the baseline's
    # detections scored against the upstream's own manifest file
    from weaksam.eval import evaluate, load_manifest_gt
    from weaksam.eval.formats import load_detections_table

    test = cfg.data.splits[-1]
    gt = load_manifest_gt(manifest_path(up.run_dir), split=test)
    dets = load_detections_table(str(down / "baseline" / f"detections_{test}.parquet"))
    direct = evaluate(gt.records, dets.records, ("voc07",), gt.classes)
    assert reports[3].metrics["baseline"]["voc07"]["overall"]["mAP"] == pytest.approx(
        direct["voc07"]["overall"]["mAP"]
    )
    assert _tree_digest(Path(up.run_dir)) == before
    assert not (Path(up.run_dir) / "baseline").exists()
