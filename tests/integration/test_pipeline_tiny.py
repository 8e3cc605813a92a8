"""The pipeline end to end on the tiny config: outputs, results.json, skip and partial rerun."""

import json
import os

from ray_jobs.pipeline import main
from weaksam.io.tables import read_table

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.yaml")


def _stages(run_dir: str) -> dict[str, str]:
    with open(os.path.join(run_dir, "results.json")) as fh:
        return json.load(fh)["stages"]


def test_tiny_pipeline_runs_then_skips_then_reruns_changed(tmp_path, capsys) -> None:
    root = f"run_root={tmp_path}"
    assert main(["--config", CONFIG, "--set", root]) == 0
    run = tmp_path / "tiny"
    assert set(_stages(str(run)).values()) == {"ran"}
    manifest = read_table(str(run / "ingest" / "manifest.parquet"), "manifest")
    assert manifest.num_rows == 12 + 8
    assert (run / "data" / "contact_sheet.png").exists()
    assert (run / "config.resolved.yaml").exists()
    with open(run / "results.json") as fh:
        results = json.load(fh)
    assert results["baseline_ap50"] is not None and 0.0 <= results["baseline_ap50"] <= 1.0
    assert results["wsod_ap50_mist"] is None  # a stage that did not run
    out = capsys.readouterr().out
    assert "weaksam results" in out and "results.json" in out

    assert main(["--config", CONFIG, "--set", root]) == 0
    assert set(_stages(str(run)).values()) == {"skipped"}

    assert main(["--config", CONFIG, "--set", root, "--set", "evaluate.metrics=[voc07]"]) == 0
    stages = _stages(str(run))
    assert stages["evaluate"] == "ran"
    assert all(v == "skipped" for k, v in stages.items() if k != "evaluate")
