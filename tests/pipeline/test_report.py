"""The run report on a small fabricated run folder: no Ray, no training."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from weaksam.io.classes import ClassMap
from weaksam.io.rle import encode_mask
from weaksam.io.tables import write_table
from weaksam.pipeline.report import stage_timings, try_write_report, write_report
from weaksam.runs import manifest_path, mark_success, write_metrics
from weaksam.stage import StageReport

CLASSES = ClassMap.from_names(["disc", "square"])
H, W = 48, 64
DRAWN = ("timings", "proposals", "pgt", "detections", "pr_curves")


def _mask(box: tuple[int, int, int, int]) -> bytes:
    m = np.zeros((H, W), np.uint8)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = 1
    return encode_mask(m)


def _flat(boxes: list[tuple[int, int, int, int]]) -> list[float]:
    return [float(v) for b in boxes for v in b]


GT = {  # image_id -> (split, boxes, classes)
    "a": ("train", [(4, 4, 20, 20), (30, 10, 60, 40)], [0, 1]),
    "b": ("train", [(10, 8, 40, 30)], [1]),
    "c": ("test", [(2, 2, 22, 22), (34, 12, 58, 44)], [0, 1]),
    "d": ("test", [(20, 5, 50, 35)], [0]),
}


def _detections(image_id: str, index: int, masks: bool, table: str = "detections") -> dict:
    _, boxes, classes = GT[image_id]
    dets = [(b[0] + 1, b[1], b[2] + 1, b[3]) for b in boxes] + [(0, 0, 10, 10)]
    return {
        "image_id": image_id,
        "image_index": index,
        "height": H,
        "width": W,
        "boxes": _flat(dets),
        "scores": [0.9 - 0.1 * i for i in range(len(dets))],
        "classes": [*classes, 1],
        "masks": [_mask(b) for b in dets] if masks else None,
        "error": None,
    }


def _fabricate(run: Path) -> None:
    """ingest, proposals, pgt, retrain and wsis done; data, peaks and wsod absent."""
    rng = np.random.default_rng(0)
    rows = []
    for index, (image_id, (split, boxes, classes)) in enumerate(GT.items()):
        path = run / "images" / f"{image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
        rows.append(
            {
                "image_id": image_id,
                "image_index": index,
                "height": H,
                "width": W,
                "path": str(path),
                "split": split,
                "labels": sorted(set(classes)),
                "gt_boxes": _flat(boxes),
                "gt_classes": classes,
                "gt_difficult": [False] * len(boxes),
                "gt_masks": [_mask(b) for b in boxes],
                "error": None,
            }
        )
    write_table(rows, manifest_path(str(run)), "manifest", CLASSES)
    write_metrics(str(run / "ingest"), {"splits": {"train": {"images": 2, "errors": 0}}})
    mark_success(str(run / "ingest"), "h", seconds=0.5)

    ids = list(GT)
    props = [
        {
            "image_id": i,
            "image_index": k,
            "height": H,
            "width": W,
            "boxes": _flat([(0, 0, 30, 30), (5, 5, 60, 45)]),
            "scores": [0.8, 0.6],
            "sources": ["grid", "point:cam"],
            "class_hints": [-1, 1],
            "masks": None,
            "error": None,
        }
        for k, i in enumerate(ids)
    ]
    write_table(props, str(run / "proposals" / "shards" / "part-0.parquet"), "proposals")
    mark_success(str(run / "proposals"), "h", seconds=2.0)

    pgt = [_detections(i, k, masks=True) for k, i in enumerate(ids) if GT[i][0] == "train"]
    write_table(pgt, str(run / "pgt" / "pgt.parquet"), "pgt", CLASSES)
    mark_success(str(run / "pgt"), "h", seconds=1.0)
    for stage, masks in (("retrain", False), ("wsis", True)):
        dets = [_detections(i, k, masks) for k, i in enumerate(ids) if GT[i][0] == "test"]
        write_table(dets, str(run / stage / "detections_test.parquet"), "detections", CLASSES)
        mark_success(str(run / stage), "h", seconds=3.0)
    (run / "config.resolved.yaml").write_text("name: fake\n")


REPORTS = [
    StageReport("data", "disabled"),
    StageReport("ingest", "ran", 0.5, 100.0),
    StageReport("peaks", "ran", 1.0, 120.0),  # ran but its folder has no marker: left out
    StageReport("proposals", "skipped"),
    StageReport("wsod", "disabled"),
    StageReport("pgt", "ran", 1.0, 130.0),
    StageReport("retrain", "ran", 3.0, 140.0),
    StageReport("wsis", "ran", 3.0, 150.0),
]
RESULTS = {"retrain_ap50": 0.5, "wsis_ap50": 0.25, "cls_map": None, "total_seconds": 8.5}


def _png_ok(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_report_draws_links_and_embeds_figures(tmp_path: Path) -> None:
    run = tmp_path / "fake"
    _fabricate(run)
    paths = write_report(str(run), REPORTS, RESULTS, splits=("train", "test"))
    md = Path(paths.markdown).read_text()
    page = Path(paths.html).read_text()
    assert paths.markdown == str(run / "report.md") and paths.html == str(run / "report.html")

    for name in DRAWN:
        rel = f"report/{name}.png"
        assert f"]({rel})" in md, name
        assert rel in paths.figures
        w, h = _png_ok(run / rel)
        assert w > 50 and h > 50
    assert set(paths.figures) == {f"report/{n}.png" for n in DRAWN}

    # every figure embedded in the HTML, decodable, no relative links left
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == len(paths.figures)
    for uri in uris:
        with Image.open(io.BytesIO(base64.b64decode(uri))) as im:
            assert im.format == "PNG"
    assert 'src="report/' not in page
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")

    # the results table and the timings
    assert "| retrained Faster R-CNN AP50 (test) | 0.5000 |" in md
    assert "| Mask R-CNN mask AP50 (test) | 0.2500 |" in md
    assert "<td>retrained Faster R-CNN AP50 (test)</td>" in page
    assert "| proposals | skipped | 2.0 (earlier run) | - |" in md
    assert "| wsis | ran | 3.0 | 150 |" in md

    # stages that did not run are named, and their pictures are absent
    assert "stage `data` is disabled for this config" in md
    assert "stage `peaks` did not run" in md
    assert "stage `wsod` is disabled for this config" in md
    assert "WSOD detections: stage `wsod`" in md
    for linked in ("peaks/peaks.png", "data/contact_sheet.png", "wsod/curves.png"):
        assert linked not in md
    assert "Could not build" not in md


def test_detections_figure_has_one_column_per_detector(tmp_path: Path) -> None:
    run = tmp_path / "fake"
    _fabricate(run)
    write_report(str(run), REPORTS, RESULTS, splits=("train", "test"))
    # GT + Faster R-CNN + Mask R-CNN tiles side by side: three tile widths and four pads
    w, _ = _png_ok(run / "report" / "detections.png")
    assert w == 3 * W + 4 * 4


def test_report_of_an_empty_run_folder_says_what_is_missing(tmp_path: Path) -> None:
    run = tmp_path / "empty"
    run.mkdir()
    paths = write_report(str(run))
    md = Path(paths.markdown).read_text()
    assert paths.figures == ()
    assert "no `results.json`" in md
    assert "stage `ingest` did not run (no `ingest/_SUCCESS`)" in md
    assert "stage `retrain` did not run" in md
    assert Path(paths.html).exists() and "<img" not in Path(paths.html).read_text()


def test_a_broken_table_costs_one_section_not_the_report(tmp_path: Path) -> None:
    run = tmp_path / "fake"
    _fabricate(run)
    (run / "pgt" / "pgt.parquet").write_bytes(b"not parquet")
    paths = write_report(str(run), REPORTS, RESULTS, splits=("train", "test"))
    md = Path(paths.markdown).read_text()
    assert md.count("Could not build this part") == 1
    assert "report/pgt.png" not in paths.figures
    assert "report/detections.png" in paths.figures


def test_missing_file_of_a_finished_stage_is_reported(tmp_path: Path) -> None:
    run = tmp_path / "fake"
    _fabricate(run)
    (run / "retrain" / "detections_test.parquet").unlink()
    (run / "images" / "c.png").unlink()
    paths = write_report(str(run), REPORTS, RESULTS)  # splits from the manifest
    md = Path(paths.markdown).read_text()
    assert "`retrain/detections_test.parquet` is missing" in md
    assert "report/pr_curves.png" in paths.figures  # Mask R-CNN curves still drawn
    assert "image `c`:" in md  # an unreadable sample image is skipped and named
    w, h = _png_ok(run / "report" / "detections.png")  # image d only: GT and Mask R-CNN
    assert (w, h) == (2 * W + 3 * 4, H + 11 + 5 + 2 * 4)


def test_timings_from_results_json_and_markers(tmp_path: Path) -> None:
    run = tmp_path / "fake"
    _fabricate(run)
    results = {"stages": {"ingest": "ran", "pgt": "skipped"}, "stage_seconds": {"ingest": 0.4}}
    rows = {t.name: t for t in stage_timings(str(run), None, results)}
    assert rows["ingest"].seconds == 0.4 and rows["ingest"].action == "ran"
    assert rows["pgt"].seconds == 1.0 and rows["pgt"].action == "skipped"  # from the marker
    assert rows["retrain"].action == "earlier run"  # marked folder not named by results
    assert list(rows)[:2] == ["ingest", "pgt"]


def test_try_write_report_never_raises(tmp_path: Path) -> None:
    assert try_write_report("gs://bucket/run").startswith("not written (ValueError")
    run = tmp_path / "fake"
    _fabricate(run)
    assert try_write_report(str(run), REPORTS, RESULTS, ("train", "test")) == str(run / "report.md")


def test_report_of_a_run_folder_on_s3(s3_bucket: str, tmp_path: Path) -> None:
    """The same run folder copied to a bucket: the report, its figures and the timings from
    the markers are read and written there (sample images stay local files)."""
    import pyarrow.fs as pafs

    from weaksam import storage

    local = tmp_path / "fake"
    _fabricate(local)
    run = f"{s3_bucket}/runs/fake"
    fs, dst = storage.resolve(run)
    pafs.copy_files(str(local), dst, destination_filesystem=fs)
    rows = {t.name: t for t in stage_timings(run)}
    assert set(rows) == {"ingest", "proposals", "pgt", "retrain", "wsis"}
    assert rows["proposals"].seconds == 2.0

    paths = write_report(run, REPORTS, RESULTS, splits=("train", "test"))
    assert paths.markdown == f"{run}/report.md" and paths.html == f"{run}/report.html"
    md = storage.read_text(paths.markdown)
    assert "# weaksam run report: fake" in md
    assert "| proposals | skipped | 2.0 (earlier run) | - |" in md
    assert "Resolved config: `config.resolved.yaml`." in md
    assert set(paths.figures) == {f"report/{n}.png" for n in DRAWN}
    for rel in paths.figures:
        with Image.open(io.BytesIO(storage.read_bytes(f"{run}/{rel}"))) as im:
            assert im.format == "PNG"
    page = storage.read_text(paths.html)
    assert len(re.findall(r'src="data:image/png;base64,', page)) == len(DRAWN)
