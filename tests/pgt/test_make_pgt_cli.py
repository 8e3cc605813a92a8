"""The make_pgt CLI on tiny files; the PGT step never reads ground truth."""

from __future__ import annotations

import json
import os
from typing import Any

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from ray_jobs.make_pgt import main
from weaksam.io.tables import read_classes, read_table


def _run(inputs: dict[str, str], out: str, *extra: str) -> int:
    args = ["--detections", inputs["detections"], "--labels", inputs["manifest"], "--out", out]
    return main([*args, *extra])


def test_cli_writes_pgt_table_coco_json_and_quality(
    pgt_inputs: dict[str, str], tmp_path, capsys
) -> None:
    out = str(tmp_path / "pgt")
    code = _run(pgt_inputs, out, "--mode", "adaptive", "--split", "train")
    code2 = main(
        [
            "--detections",
            pgt_inputs["detections"],
            "--labels",
            pgt_inputs["manifest"],
            "--out",
            str(tmp_path / "q"),
            "--split",
            "train",
            "--gt",
            pgt_inputs["manifest"],
        ]
    )
    assert code == code2 == 0
    tbl = read_table(os.path.join(out, "pgt.parquet"), "pgt")
    assert tbl.num_rows == 4 and read_classes(tbl).source_ids == (11, 12, 13)
    with open(os.path.join(out, "pgt_coco.json")) as fh:
        coco = json.load(fh)
    assert sorted(i["id"] for i in coco["images"]) == [1, 2]
    assert {a["category_id"] for a in coco["annotations"]} == {11, 12, 13}
    assert coco["images"][0]["file_name"].endswith("i0.png")
    with open(tmp_path / "q" / "metrics.json") as fh:
        q = json.load(fh)["quality"]
    # PGT: i0 a (hit), a (miss), b (hit); i1 c (hit). GT: 2 + 1 + i3's 1 (no PGT) = 4
    assert q["precision"] == pytest.approx(0.75) and q["recall"] == pytest.approx(0.75)
    assert "precision" in capsys.readouterr().out


def test_pgt_never_reads_ground_truth(pgt_inputs: dict[str, str], tmp_path, monkeypatch) -> None:
    reads: list[tuple[str, Any]] = []
    real_table, real_dataset = pq.read_table, pads.dataset

    def table_spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append((str(path), kwargs.get("columns")))
        return real_table(path, *args, **kwargs)

    def dataset_spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append((str(path), "dataset"))
        return real_dataset(path, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", table_spy)
    monkeypatch.setattr(pads, "dataset", dataset_spy)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert _run(pgt_inputs, a, "--split", "train") == 0
    manifest_reads = [cols for path, cols in reads if path.endswith("manifest.parquet")]
    assert manifest_reads, "the labels must come from the manifest"
    for cols in manifest_reads:
        assert cols not in (None, "dataset") and not any(c.startswith("gt_") for c in cols)
    # the same labels with different ground truth give byte-identical outputs
    other = {**pgt_inputs, "manifest": pgt_inputs["manifest_other_gt"]}
    assert _run(other, b, "--split", "train") == 0
    assert read_table(os.path.join(a, "pgt.parquet")).equals(
        read_table(os.path.join(b, "pgt.parquet"))
    )
    with open(os.path.join(a, "pgt_coco.json")) as fa, open(os.path.join(b, "pgt_coco.json")) as fb:
        ja, jb = json.load(fa), json.load(fb)
    for img in (*ja["images"], *jb["images"]):
        img.pop("file_name")  # the two manifests point at the same images
    assert ja == jb


def test_cli_errors(pgt_inputs: dict[str, str], tmp_path, capsys) -> None:
    assert main(["--detections", "nope.parquet", "--labels", "x", "--out", "o"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--detections", pgt_inputs["detections"]]) == 2
    bad = tmp_path / "res.json"
    bad.write_text(json.dumps([{"image_id": 42, "category_id": 11, "bbox": [0, 0, 2, 2]}]))
    code = main(["--detections", str(bad), "--labels", pgt_inputs["manifest"], "--out", "o"])
    assert code == 2 and "unknown" in capsys.readouterr().err
    out = str(tmp_path / "never")
    args = ["--detections", pgt_inputs["detections"], "--labels", pgt_inputs["manifest"]]
    assert main([*args, "--out", out, "--mode", "adaptive", "--t-keep", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "t_keep" in err and err.count("\n") == 1 and not os.path.exists(out)
