"""The synthetic ``shapes`` benchmark and ``blobs`` set: geometry, determinism and exports."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from ray_jobs.synth_data import main as synth_main
from weaksam.config import Config, SynthConfig, load_config
from weaksam.data.synth import (
    SHAPE_CLASSES,
    generate_blobs_dataset,
    generate_shapes_dataset,
    image_rng,
    load_blobs,
    render_blobs_image,
    render_shapes_image,
)
from weaksam.data.synth.compose import Canvas
from weaksam.data.synth.export import CONTACT_SHEET
from weaksam.data.synth.scene import keep_visible
from weaksam.data.synth.shapes import (
    Placement,
    Stamp,
    rasterize,
    sample_shape,
    stamp_to_mask,
)
from weaksam.geometry.boxes import mask_to_box, voc_to_xyxy, xywh_to_xyxy
from weaksam.io.rle import from_json_rle, rle_area
from weaksam.viz.draw import FONT_SIZE

SMALL = SynthConfig(image_size=96, num_train=14, num_test=4, seed=7)


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.asarray((np.abs(u) <= 0.5) & (np.abs(v) <= 0.5))


# --------------------------------------------------------------------------- rasterisers


def test_class_order_is_the_contract() -> None:
    assert SHAPE_CLASSES == ("star", "cross", "ring", "heart", "crescent", "arrow")
    with pytest.raises(ValueError, match="known"):
        sample_shape("circle", np.random.default_rng(0))


def test_rasterize_pixel_centres_golden() -> None:
    # Pixel centres x + 0.5 with |x + 0.5 - 50| <= 10: columns 40..59, a box [40, 60).
    stamp = rasterize(_square, Placement(cx=50, cy=50, radius=20), 100, 100)
    mask = stamp_to_mask(stamp, 100, 100)
    assert stamp.full_area == stamp.area == 400
    assert mask_to_box(mask).tolist() == [40, 40, 60, 60]
    # 90 degrees and aspect 4: u is stretched by 2, v shrunk by 2, then u turned onto y.
    tall = rasterize(
        _square, Placement(cx=50, cy=50, radius=20, angle=np.pi / 2, aspect=4), 100, 100
    )
    assert mask_to_box(stamp_to_mask(tall, 100, 100)).tolist() == [45, 30, 55, 70]
    # Truncated at the left border: the full area is still known.
    cut = rasterize(_square, Placement(cx=5, cy=50, radius=20), 100, 100)
    assert cut.full_area == 400 and cut.area == 15 * 20
    assert mask_to_box(stamp_to_mask(cut, 100, 100)).tolist() == [0, 40, 15, 60]


@pytest.mark.parametrize("name", SHAPE_CLASSES)
def test_every_class_renders_inside_its_disc(name: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        stamp = rasterize(
            sample_shape(name, rng), Placement(64, 64, 40, rng.uniform(0, 6)), 128, 128
        )
        mask = stamp_to_mask(stamp, 128, 128)
        ys, xs = np.nonzero(mask)
        assert stamp.area == stamp.full_area > 0.1 * np.pi * 40**2
        assert np.hypot(xs + 0.5 - 64, ys + 0.5 - 64).max() <= 40 * 1.01
        assert stamp.area < 0.9 * np.pi * 40**2  # none is a plain disc


def test_ring_and_star_areas_match_geometry() -> None:
    r = 60.0
    # Replay each sampler's draws to know its parameters.
    ring = rasterize(sample_shape("ring", np.random.default_rng(1)), Placement(70, 70, r), 140, 140)
    inner = np.random.default_rng(1).uniform(0.45, 0.68)
    assert ring.area == pytest.approx(np.pi * r * r * (1 - inner**2), rel=0.02)
    star = rasterize(sample_shape("star", np.random.default_rng(2)), Placement(70, 70, r), 140, 140)
    g = np.random.default_rng(2)
    n, inner = int(g.integers(5, 7)), g.uniform(0.38, 0.52)
    assert star.area == pytest.approx(n * inner * np.sin(np.pi / n) * r * r, rel=0.02)


# --------------------------------------------------------------------------- composition


def test_canvas_occlusion_rule() -> None:
    a = Stamp(np.ones((20, 20), bool), 0, 0, 400)
    b = Stamp(np.ones((20, 20), bool), 0, 10, 400)
    canvas = Canvas(np.zeros((30, 40, 3), np.float32))
    assert canvas.can_place(a, 0.5)
    canvas.place(a)
    assert canvas.can_place(b, 0.5)  # leaves a exactly half visible
    assert not canvas.can_place(b, 0.6)
    assert not canvas.can_place(b, 0.1, allow_overlap=False)
    canvas.place(b)
    assert canvas.visible == [200, 400]
    assert canvas.visible_fraction(0) == 0.5
    assert canvas.visible_mask(0)[:20, :10].all() and canvas.visible_mask(0).sum() == 200
    truncated = Stamp(np.ones((5, 5), bool), 25, 35, 100)  # a quarter of it in the image
    assert not canvas.can_place(truncated, 0.4)


def test_keep_visible_rule() -> None:
    assert keep_visible([10, 3, 0, 40], [20, 10, 0, 100], 0.4) == [0, 3]


def test_render_is_deterministic_and_seeded() -> None:
    a = render_shapes_image(image_rng(0, "train", 3), SMALL)
    b = render_shapes_image(image_rng(0, "train", 3), SMALL)
    c = render_shapes_image(image_rng(0, "test", 3), SMALL)
    assert a.image.tobytes() == b.image.tobytes()
    assert (a.masks == b.masks).all() and (a.classes == b.classes).all()
    assert a.image.tobytes() != c.image.tobytes()


@pytest.mark.parametrize(
    "bad",
    [
        {"min_instances": 0},
        {"min_instances": 3, "max_instances": 2},
        {"min_scale": 0.5, "max_scale": 0.2},
    ],
)
def test_render_rejects_bad_config(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        render_shapes_image(np.random.default_rng(0), dataclasses.replace(SMALL, **bad))


def test_render_ground_truth_is_exact() -> None:
    seen: set[int] = set()
    for i in range(24):
        s = render_shapes_image(image_rng(1, "train", i), SMALL)
        n = len(s)
        assert 1 <= n <= 5
        assert s.image.shape == (96, 96, 3) and s.image.dtype == np.uint8
        assert s.boxes.shape == (n, 4) and s.boxes.dtype == np.float32
        assert s.classes.dtype == np.int64 and s.masks.shape == (n, 96, 96)
        assert s.masks.reshape(n, -1).any(1).all()
        assert s.masks.sum(0).max() <= 1  # visible masks are disjoint
        assert s.visible.shape == (n,) and (s.visible >= 0.4).all() and (s.visible <= 1).all()
        for box, mask in zip(s.boxes, s.masks, strict=True):
            assert (box == mask_to_box(mask)).all()
        assert (s.boxes >= 0).all() and (s.boxes <= 96).all()
        seen.update(s.classes.tolist())
    assert seen == set(range(len(SHAPE_CLASSES)))


def test_occlusion_happens_and_can_be_switched_off() -> None:
    crowded = dataclasses.replace(
        SMALL, min_instances=5, max_instances=5, min_scale=0.4, max_scale=0.6
    )
    overlaps = 0
    for i in range(6):
        s = render_shapes_image(image_rng(0, "train", i), crowded)
        for j in range(len(s)):
            box = s.boxes[j].astype(int)
            # Pixels in an object's box that another (on top) owns.
            others = np.delete(s.masks, j, 0)[:, box[1] : box[3], box[0] : box[2]]
            overlaps += int(others.any())
    assert overlaps > 0
    apart = dataclasses.replace(crowded, occlusion=False)
    for i in range(4):
        s = render_shapes_image(image_rng(0, "train", i), apart)
        inner = ((s.boxes[:, :2] > 0) & (s.boxes[:, 2:] < 96)).all(1)
        # Without occlusion only the image border can hide part of a shape.
        assert (s.visible[inner] == 1).all()
        assert (s.visible >= 0.4).all()


# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("shapes"))
    return out, generate_shapes_dataset(SMALL, out, progress=False)


def test_summary_and_layout(shapes_dir: tuple[str, dict]) -> None:
    out, summary = shapes_dir
    assert summary["images"] == {"train": 14, "test": 4}
    assert summary["bytes"] > 0 and summary["classes"] == list(SHAPE_CLASSES)
    assert sum(summary["instances_per_class"].values()) == sum(summary["instances"].values())
    assert os.path.exists(os.path.join(out, "images", "train", "train_00013.png"))
    with open(os.path.join(out, "voc", "ImageSets", "Main", "test.txt")) as fh:
        assert fh.read().split() == [f"test_{i:05d}" for i in range(4)]


def test_coco_json_matches_rendering(shapes_dir: tuple[str, dict]) -> None:
    out, summary = shapes_dir
    ids: list[int] = []
    for split in ("train", "test"):
        coco = COCO(os.path.join(out, "annotations", f"instances_{split}.json"))
        cats = coco.loadCats(coco.getCatIds())
        assert [(c["id"], c["name"]) for c in cats] == list(enumerate(SHAPE_CLASSES, 1))
        assert len(coco.getAnnIds()) == summary["instances"][split]
        for index, img in enumerate(coco.loadImgs(sorted(coco.getImgIds()))):
            ids.append(img["id"])
            assert img["file_name"] == f"{split}/{split}_{index:05d}.png"
            ref = render_shapes_image(image_rng(SMALL.seed, split, index), SMALL)
            with Image.open(os.path.join(out, "images", img["file_name"])) as pil:
                assert (np.asarray(pil) == ref.image).all()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert [a["category_id"] - 1 for a in anns] == ref.classes.tolist()
            for ann, mask, box in zip(anns, ref.masks, ref.boxes, strict=True):
                assert (coco.annToMask(ann).astype(bool) == mask).all()
                counts, h, w = from_json_rle(ann["segmentation"])
                assert rle_area([counts], h, w)[0] == ann["area"] == mask.sum()
                assert xywh_to_xyxy([ann["bbox"]])[0].tolist() == box.tolist()
                assert ann["iscrowd"] == 0 and ann["difficult"] == 0
    assert sorted(ids) == list(range(1, 19))


def test_voc_xml_round_trip(shapes_dir: tuple[str, dict]) -> None:
    out, _ = shapes_dir
    coco = COCO(os.path.join(out, "annotations", "instances_train.json"))
    for img in coco.loadImgs(coco.getImgIds()):
        stem = os.path.splitext(os.path.basename(img["file_name"]))[0]
        root = ET.parse(os.path.join(out, "voc", "Annotations", f"{stem}.xml")).getroot()
        assert root.findtext("filename") == f"{stem}.png"
        assert root.findtext("size/width") == "96" and root.findtext("size/height") == "96"
        objs = root.findall("object")
        voc = [
            [int(o.findtext(f"bndbox/{k}") or 0) for k in ("xmin", "ymin", "xmax", "ymax")]
            for o in objs
        ]
        assert all(o.findtext("difficult") == "0" for o in objs)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        names = [SHAPE_CLASSES[a["category_id"] - 1] for a in anns]
        assert [o.findtext("name") for o in objs] == names
        expected = np.round(xywh_to_xyxy([a["bbox"] for a in anns]))
        assert (voc_to_xyxy(voc) == expected).all()
        jpeg = os.path.join(out, "voc", "JPEGImages", f"{stem}.png")
        with open(jpeg, "rb") as a, open(os.path.join(out, "images", img["file_name"]), "rb") as b:
            assert a.read() == b.read()


def test_labels_csv_matches_coco(shapes_dir: tuple[str, dict]) -> None:
    out, _ = shapes_dir
    for split in ("train", "test"):
        coco = COCO(os.path.join(out, "annotations", f"instances_{split}.json"))
        with open(os.path.join(out, f"labels_{split}.csv"), newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ["file", "labels"]
        by_file = {img["file_name"]: img["id"] for img in coco.loadImgs(coco.getImgIds())}
        assert [r["file"] for r in rows] == sorted(by_file)
        for row in rows:
            anns = coco.loadAnns(coco.getAnnIds(imgIds=by_file[row["file"]]))
            cats = sorted({a["category_id"] for a in anns})
            assert row["labels"].split(";") == [SHAPE_CLASSES[c - 1] for c in cats]


def test_contact_sheet_png(shapes_dir: tuple[str, dict]) -> None:
    out, summary = shapes_dir
    assert summary["contact_sheet"] == os.path.join(out, CONTACT_SHEET)
    with Image.open(summary["contact_sheet"]) as pil:
        assert pil.format == "PNG" and pil.mode == "RGB"
        # 12 images of 96 px in 4 columns, 4 px padding, a title strip per row.
        assert pil.size == (4 * 96 + 5 * 4, 3 * (96 + FONT_SIZE + 5) + 4 * 4)


def test_prefix_property(tmp_path: Path) -> None:
    small = dataclasses.replace(SMALL, num_train=2, num_test=1, export_voc=False)
    larger = dataclasses.replace(small, num_train=4)
    generate_shapes_dataset(small, str(tmp_path / "a"), progress=False)
    generate_shapes_dataset(larger, str(tmp_path / "b"), progress=False)
    for rel in ("train/train_00000.png", "train/train_00001.png", "test/test_00000.png"):
        with (
            open(tmp_path / "a" / "images" / rel, "rb") as fa,
            open(tmp_path / "b" / "images" / rel, "rb") as fb,
        ):
            assert fa.read() == fb.read()
    assert not (tmp_path / "a" / "voc").exists()


# --------------------------------------------------------------------------- blobs


def test_blobs_render_and_round_trip(tmp_path: Path) -> None:
    image, masks = render_blobs_image(image_rng(0, "blobs", 0), 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert 1 <= masks.shape[0] <= 8 and masks.dtype == bool
    assert masks.reshape(masks.shape[0], -1).sum(1).min() >= 16
    assert masks.sum(0).max() <= 1
    summary = generate_blobs_dataset(str(tmp_path), num_images=3, size=64, seed=0, progress=False)
    assert summary["images"] == 3
    loaded = load_blobs(str(tmp_path))
    assert len(loaded) == 3
    assert (loaded[0][0] == image).all() and (loaded[0][1] == masks).all()
    assert summary["masks"] == sum(m.shape[0] for _, m in loaded)


# --------------------------------------------------------------------------- entry point


def test_entry_point_is_the_data_stage_and_skips_when_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from weaksam.pipeline.core import run_stages
    from weaksam.pipeline.stages import STAGES

    overrides = [
        "name=t",
        f"run_root={tmp_path}",
        "synth.num_train=2",
        "synth.num_test=1",
        "synth.image_size=64",
        "synth.export_voc=false",
    ]
    argv = [a for o in overrides for a in ("--set", o)] + ["--no-progress"]
    assert synth_main(argv) == 0
    assert "stage data: ran" in capsys.readouterr().out
    cfg: Config = load_config(None, overrides)
    data = os.path.join(cfg.run_dir, "data")
    with open(os.path.join(data, "metrics.json")) as fh:
        assert json.load(fh)["images"] == {"train": 2, "test": 1}
    assert os.path.exists(os.path.join(data, "contact_sheet.png"))
    assert synth_main(argv) == 0
    assert "stage data: fresh, skipped" in capsys.readouterr().out
    # the pipeline's runner reads the same marker
    reports = run_stages(cfg, [s for s in STAGES if s.name == "data"])
    assert [r.action for r in reports] == ["skipped"]
    # a run needs a name: without one nothing is written
    assert synth_main(argv[2:]) == 2
    assert "the run needs a name" in capsys.readouterr().err
    # a one-off folder (--out) needs no run and keeps its own marker
    blobs = tmp_path / "blobs"
    assert synth_main([*argv, "--dataset", "blobs", "--num-images", "2", "--out", str(blobs)]) == 0
    assert len(load_blobs(str(blobs))) == 2 and (blobs / "_SUCCESS").exists()
