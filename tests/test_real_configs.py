"""The real-data configs load with the project's strict loader and carry the method's settings.

``configs/voc07.yaml``, ``coco14.yaml`` and ``voc12_wsis.yaml`` name datasets and checkpoints by
placeholder paths; loading never touches them, so these tests need neither.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from weaksam.cam.config import MAP_KINDS
from weaksam.config import Config, from_dict, load_config, to_dict
from weaksam.detection.config import VOC07_TRAIN_SIDES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NAMES = ("voc07", "coco14", "voc12_wsis")


def _load(name: str, overrides: tuple[str, ...] = ()) -> Config:
    return load_config(str(CONFIGS / f"{name}.yaml"), list(overrides))


@pytest.mark.parametrize("name", NAMES)
def test_resolves_with_the_method_settings_shared_by_all(name: str) -> None:
    cfg = _load(name)
    assert cfg.name == name
    assert from_dict(to_dict(cfg), Config) == cfg
    # run root and every data/checkpoint path absolute: a job's working dir is temporary
    assert os.path.isabs(cfg.run_root) and os.path.isabs(cfg.data.root)
    for path in (
        cfg.sam.checkpoint,
        cfg.classifier.weights,
        cfg.wsod.model.weights,
        cfg.retrain.model.weights,
    ):
        assert os.path.isabs(path), path
    # SAM and the proposal engine (method §2)
    assert cfg.sam.model_type == "vit_h"
    assert cfg.sam.checkpoint.endswith("sam_vit_h_4b8939.pth")
    e = cfg.proposals.engine
    assert e.points_per_side == 32  # 1024 grid points
    assert (e.pred_iou_thresh, e.stability_score_thresh, e.box_nms_thresh) == (0.3, 0.3, 0.3)
    assert e.stability_score_offset == 1.0 and e.keep_multimask_tokens == (1, 2)
    assert (e.final_nms_thresh, e.max_proposals, e.point_pred_iou_thresh) == (0.0, 0, 0.0)
    # class-wise prompts must name the kinds the peaks stage writes, or none are made
    assert set(cfg.peaks.map_kinds) <= set(MAP_KINDS)
    assert set(cfg.peaks.map_kinds) <= set(e.classwise_kinds)
    # peak points (method §1)
    p = cfg.peaks
    assert (p.kernel, p.top_k, p.threshold, p.kernel_ref_side) == (17, 25, 0.9, 0)
    assert p.scales == (1.0, 0.8, 1.2) and p.flip
    # MIST (method §3a)
    w = cfg.wsod
    assert (w.method, w.proposals, w.model.backbone, w.model.roi_op) == (
        "mist",
        "sam",
        "vgg16",
        "pool",
    )
    assert (w.model.roi_size, w.model.hidden, w.model.refine_branches) == (7, 4096, 3)
    assert (w.train.optimizer, w.train.lr, w.train.weight_decay) == ("adam", 1e-5, 5e-4)
    assert w.train.images_per_step * w.train.num_workers == 8
    assert (w.train.mist_top_ratio, w.train.mist_iou, w.train.fg_iou) == (0.15, 0.2, 0.5)
    assert w.data.train_scales == (480, 576, 688, 864, 1000, 1200) and w.data.max_proposals == 0
    assert w.test.scales == (480, 576, 688, 800, 864, 1000, 1200) and w.test.flip
    assert (w.test.nms_iou, w.test.score_thresh, w.test.max_detections) == (0.3, 0.0, 100)


def test_voc07() -> None:
    cfg = _load("voc07")
    assert (cfg.data.format, cfg.data.splits) == ("voc", ("trainval", "test"))
    assert cfg.data.root.endswith("VOCdevkit/VOC2007")
    assert (cfg.wsod.train.steps, cfg.wsod.train.lr_steps) == (30000, (20000, 26700))
    assert (cfg.wsod.data.min_size, cfg.wsod.data.min_size_ref) == (20.0, 500.0)
    assert (cfg.pgt.mode, cfg.pgt.t_keep, cfg.pgt.t_con) == ("adaptive", 0.3, 0.85)
    assert cfg.pgt.normalization == "reference"  # method §4.1
    m = cfg.wsod.model  # wetectron's MISTPredictor
    assert (m.mil_background, m.head_init_std, cfg.wsod.train.mil_reduction) == (
        True,
        0.001,
        "mean",
    )
    assert (m.cdb, m.cdb_drop_prob, m.cdb_block_size, m.cdb_temperature) == (True, 0.3, 3, 0.01)
    assert (cfg.wsod.train.cdb_lr, cfg.wsod.train.cdb_weight) == (1e-5, 0.01)
    r = cfg.retrain
    assert r.enabled and r.model.backbone == "resnet50_fpn"
    assert r.model.min_size == VOC07_TRAIN_SIDES
    assert (r.model.max_size, r.model.test_size) == (2000, 688)
    assert (r.train.steps, r.train.lr_steps, r.train.images_per_step) == (9000, (6000, 8000), 16)
    assert (r.train.lr, r.train.warmup_steps) == (0.02, 30)
    d = r.roi_drop
    assert (d.enabled, d.thresh_cls, d.thresh_reg, d.operate_iter) == (True, 4.0, 4.0, 2000)
    assert not cfg.wsis.enabled


def test_coco14() -> None:
    cfg = _load("coco14")
    assert (cfg.data.format, cfg.data.splits) == ("coco", ("train2014", "minival2014"))
    assert "{split}" in cfg.data.annotations
    assert (cfg.wsod.train.steps, cfg.wsod.train.lr_steps) == (125000, (82500, 115000))
    assert cfg.wsod.data.min_size == 2.0 and not cfg.wsod.data.cache_images
    assert (cfg.pgt.mode, cfg.pgt.t_keep, cfg.pgt.t_con) == ("adaptive", 0.5, 0.85)
    r = cfg.retrain
    assert (r.train.steps, r.train.lr_steps) == (85000, (55000, 75000))
    assert r.model.min_size == (640, 672, 704, 736, 768, 800)
    d = r.roi_drop
    assert (d.enabled, d.thresh_cls, d.thresh_reg, d.operate_iter) == (True, 5.0, 4.0, 10000)
    assert not cfg.wsis.enabled
    # inherited from voc07.yaml, not re-stated
    assert cfg.sam == _load("voc07").sam


def test_voc12_wsis() -> None:
    cfg = _load("voc12_wsis")
    assert (cfg.data.format, cfg.data.splits) == ("coco", ("train_aug", "val"))
    assert (cfg.wsod.train.steps, cfg.wsod.train.lr_steps) == (32000, (20000, 26700))
    assert (cfg.pgt.mode, cfg.pgt.masks) == ("top1", True)
    assert cfg.pgt.mask_job.engine.box_mask == "single"
    assert not cfg.retrain.enabled
    s = cfg.wsis
    assert s.enabled and s.model.backbone == "resnet50_fpn"
    assert s.model.min_size == (640, 672, 704, 736, 768, 800) and s.model.test_size == 800
    assert (s.model.mask_head_channels, s.model.mask_head_layers) == (256, 4)
    assert (s.train.steps, s.train.lr_steps, s.train.images_per_step) == (9000, (6000, 8000), 16)
    assert not s.roi_drop.enabled


def test_paths_can_be_overridden() -> None:
    cfg = _load("voc07", ("data.root=/elsewhere/VOC2007", "sam.checkpoint=/ck/sam.pth"))
    assert (cfg.data.root, cfg.sam.checkpoint) == ("/elsewhere/VOC2007", "/ck/sam.pth")
