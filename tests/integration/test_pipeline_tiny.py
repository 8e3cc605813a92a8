"""The pipeline end to end on the tiny config: outputs, results.json; a rerun, a moved run
folder and a forced stage skip what is fresh; a changed setting reruns what depends on it."""

import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

from ray_jobs.cli import main as weaksam
from ray_jobs.pipeline import main
from weaksam.io.tables import read_table
from weaksam.runs import manifest_path, read_success

from .conftest import CONFIG, TinyRun


def _stages(run_dir: str) -> dict[str, str]:
    with open(os.path.join(run_dir, "results.json")) as fh:
        return json.load(fh)["stages"]


def test_tiny_pipeline_ran_every_stage(tiny_run: TinyRun) -> None:
    run = tiny_run.run_dir
    assert set(_stages(str(run)).values()) == {"ran"}
    manifest = read_table(manifest_path(str(run)), "manifest")
    assert manifest.num_rows == 12 + 8
    assert (run / "data" / "contact_sheet.png").exists()
    assert (run / "config.resolved.yaml").exists()
    with open(run / "results.json") as fh:
        results = json.load(fh)
    assert results["baseline_ap50"] is not None and 0.0 <= results["baseline_ap50"] <= 1.0
    from weaksam.pipeline.results import RESULT_KEYS, family_keys

    # every stage ran: each key of the run's families (the R-CNNs) has a value in [0, 1]
    # except the comparisons the tiny config leaves out (OICR, WSDDN, the no-drop variant and
    # the upper bounds); the other families' keys are null
    absent = {
        "wsod_ap50_wsddn",
        "wsod_ap50_oicr",
        "retrain_ap50_no_drop",
        "upper_bound_ap50",
        "upper_bound_mask_ap50",
        "weak_full_ratio",
        "weak_full_mask_ratio",
    }
    assert results["families"] == {"retrain": "rcnn", "wsis": "rcnn"}
    assert all(results[k] is None for k in set(RESULT_KEYS) - set(family_keys(results)))
    for key in family_keys(results):
        if key in absent:
            assert results[key] is None, key
        elif key != "proposals_per_image":
            assert results[key] is not None and 0.0 <= results[key] <= 1.0, key
    assert results["proposals_per_image"] > 0
    assert set(results["stage_seconds"]) == set(_stages(str(run)))
    assert "weaksam results" in tiny_run.printed and "results.json" in tiny_run.printed
    # the synthetic images live in the run folder: the manifest stores them relative to it
    raw = read_table(manifest_path(str(run)), columns=["path"]).schema.metadata
    assert raw is not None and raw[b"weaksam.path_base"] == b".."
    paths = manifest.column("path").to_pylist()
    assert all(p.startswith(str(run / "data")) and os.path.exists(p) for p in paths)


def test_moved_run_skips_forced_stage_reruns_dependants(tiny_run: TinyRun, tmp_path) -> None:
    copy = tiny_run.copy_to(tmp_path / "a")
    moved_root = tmp_path / "moved"
    shutil.move(str(copy), str(moved_root / "tiny"))  # the run folder, somewhere else
    run = moved_root / "tiny"
    root = f"run_root={moved_root}"

    assert main(["--config", CONFIG, "--set", root]) == 0
    assert set(_stages(str(run)).values()) == {"skipped"}
    paths = read_table(manifest_path(str(run)), "manifest").column("path").to_pylist()
    assert all(p.startswith(str(run / "data")) and os.path.exists(p) for p in paths)

    # --force discards one stage's outputs; the next pipeline call reruns its dependants only
    before = read_success(str(run / "baseline"))
    assert weaksam(["baseline", "--config", CONFIG, "--set", root, "--force"]) == 0
    after = read_success(str(run / "baseline"))
    assert before and after and before["run_id"] != after["run_id"]
    assert main(["--config", CONFIG, "--set", root]) == 0
    stages = _stages(str(run))
    assert {k for k, v in stages.items() if v == "ran"} == {"evaluate"}

    # a PGT setting reruns PGT and the detectors trained on it, nothing before
    assert main(["--config", CONFIG, "--set", root, "--set", "pgt.t_keep=0.6"]) == 0
    stages = _stages(str(run))
    rerun = {"pgt", "retrain", "wsis"}
    assert {k for k, v in stages.items() if v == "ran"} == rerun
    assert all(v == "skipped" for k, v in stages.items() if k not in rerun)


def _digests(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_upstream_run_links_every_unchanged_stage(tiny_run: TinyRun, tmp_path: Path) -> None:
    """A run naming the tiny run as ``upstream`` links each stage whose key is the tiny run's
    and runs only the changed one (retrain); the stages read their inputs through the links;
    the upstream's files stay as they were; its figures are kept and tabled beside ours."""
    upstream = tiny_run.copy_to(tmp_path / "up")
    before = _digests(upstream)
    over = [
        f"run_root={tmp_path / 'runs'}",
        "name=tiny_up",
        f"upstream={upstream}",
        "retrain.train.steps=3",
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--config", CONFIG, *(a for o in over for a in ("--set", o))])
    assert code == 0, out.getvalue()[-2000:]
    run = tmp_path / "runs" / "tiny_up"
    stages = _stages(str(run))
    assert {k for k, v in stages.items() if v == "ran"} == {"retrain"}
    assert all(v == "upstream" for k, v in stages.items() if k != "retrain")
    assert (run / "pgt").is_symlink() and not (run / "retrain").is_symlink()
    assert (run / "retrain" / "_SUCCESS").exists()
    with open(run / "results.json") as fh:
        results = json.load(fh)
    assert results["upstream"]["run"] == str(upstream) and results["upstream"]["same_pgt"]
    assert results["upstream"]["results"]["wsis_ap50"] == results["wsis_ap50"]  # linked wsis
    assert results["retrain_ap50"] is not None and results["pgt_precision"] is not None
    printed = out.getvalue()
    assert "upstream: linked to" in printed and "from the same PGT" in printed
    assert (run / "report.md").exists() and "Beside the upstream run" in (
        run / "report.md"
    ).read_text()
    assert _digests(upstream) == before
