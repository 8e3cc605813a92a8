"""Config values are checked at load time: one-line errors naming the key, the rule, the value
and its source, before any stage touches a run folder."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from weaksam.config import Config, ConfigError, load_config
from weaksam.configlib import FieldError, from_dict, to_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SERVE_FILES = {"serve.yaml", "serve_app.yaml"}  # not pipeline configs (tested below)

# (override, dotted key the message must name, a fragment of the rule)
BAD = [
    ("proposals.batch_size=0", "proposals.batch_size", ">= 1"),
    ("proposals.num_actors=-3", "proposals.num_actors", ">= 1"),
    ("pgt.mask_job.batch_size=0", "pgt.mask_job.batch_size", ">= 1"),
    ("pgt.t_keep=1.5", "pgt.t_keep", "[0, 1]"),
    ("wsod.train.fg_iou=1.5", "wsod.train.fg_iou", "[0, 1]"),
    ("classifier.val_fraction=1.0", "classifier.val_fraction", "[0, 1)"),
    ("wsod.train.lr=.nan", "wsod.train.lr", "finite"),
    ("retrain.train.momentum=.inf", "retrain.train.momentum", "finite"),
    ("classifier.lr=0", "classifier.lr", "> 0"),
    ("wsod.method=yolo", "wsod.method", "unknown method 'yolo'"),
    ("wsod.compare=[oicr, yolo]", "wsod.compare[1]", "unknown compare method"),
    ("pgt.mode=top3", "pgt.mode", "unknown PGT mode 'top3'"),
    ("pgt.bbox_source=tight", "pgt.bbox_source", "unknown bbox source"),
    ("synth.min_instances=6", "synth.min_instances", "<= synth.max_instances (5)"),
    ("synth.max_scale=0.05", "synth.min_scale", "<= synth.max_scale"),
    ("synth.image_size=8", "synth.image_size", ">= 16"),
    ("data.format=tiff", "data.format", "unknown data format"),
    ("data.splits=[]", "data.splits", "not be empty"),
    ("evaluate.metrics=[voc, map]", "evaluate.metrics[1]", "unknown metric"),
    ("sam.model_type=vit_z", "sam.model_type", "unknown SAM model type"),
    ("sam.device=tpu", "sam.device", "unknown device"),
    ("sam_train.steps=0", "sam_train.steps", ">= 1"),
    ("sam_train.p_point=0.9", "sam_train.p_point", "<= 1"),
    ("classifier.backbone=vgg16", "classifier.backbone", "unknown classifier backbone"),
    ("classifier.pooling=median", "classifier.pooling", "unknown pooling"),
    ("classifier.scale_jitter=[-1.0, 1.2]", "classifier.scale_jitter[0]", "> 0"),
    ("peaks.kernel=4", "peaks.kernel", "odd"),
    ("peaks.threshold=2", "peaks.threshold", "[0, 1]"),
    ("peaks.bilateral.side=1", "peaks.bilateral.side", "[2, 128]"),
    ("proposals.engine.points_per_batch=0", "proposals.engine.points_per_batch", ">= 1"),
    ("proposals.engine.box_nms_thresh=1.2", "proposals.engine.box_nms_thresh", "[0, 1]"),
    ("proposals.gpus_per_actor=1.5", "proposals.gpus_per_actor", "whole number"),
    ("wsod.model.backbone=alexnet", "wsod.model.backbone", "unknown WSOD backbone"),
    ("wsod.model.dropout=1.0", "wsod.model.dropout", "[0, 1)"),
    ("wsod.data.train_scales=[256, 0]", "wsod.data.train_scales[1]", ">= 1"),
    ("wsod.test.num_actors=0", "wsod.test.num_actors", ">= 1"),
    ("wsod.train.branch_weights=[1, 2]", "wsod.train.branch_weights", "refinement branch"),
    ("retrain.model.backbone=yolo", "retrain.model.backbone", "unknown detector backbone"),
    ("retrain.train.images_per_step=3", "retrain.train.images_per_step", "multiple of"),
    ("wsis.model.box_positive_fraction=0", "wsis.model.box_positive_fraction", "(0, 1]"),
    ("wsis.test.batch_size=0", "wsis.test.batch_size", ">= 1"),
    ("retrain.roi_drop.thresh_cls=-1", "retrain.roi_drop.thresh_cls", ">= 0"),
]


def _error(path: str | None, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(path, overrides)
    return str(exc.value)


@pytest.mark.parametrize(("override", "key", "rule"), BAD, ids=[b[0] for b in BAD])
def test_bad_override_is_one_line_naming_key_rule_value_and_source(
    override: str, key: str, rule: str
) -> None:
    msg = _error(str(CONFIGS / "demo.yaml"), [override])
    assert "\n" not in msg
    assert msg.startswith(key + " ") or msg.startswith(key + ":"), msg
    assert rule in msg, msg
    assert msg.endswith(f"(from --set {override})"), msg


def test_message_format_and_value() -> None:
    msg = _error(None, ["proposals.batch_size=0"])
    assert msg == "proposals.batch_size must be >= 1, got 0 (from --set proposals.batch_size=0)"
    msg = _error(None, ["wsod.train.lr=.nan"])
    assert msg == "wsod.train.lr must be a finite number, got nan (from --set wsod.train.lr=.nan)"


def test_source_is_the_file_that_set_the_value(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"name": "b", "proposals": {"batch_size": 0}}))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"base": "base.yaml", "synth": {"num_train": 9}}))
    msg = _error(str(child), [])
    assert msg.startswith("proposals.batch_size must be >= 1, got 0 (in ")
    assert msg.endswith("base.yaml)") and "child.yaml" not in msg


def test_pair_rule_names_the_override_that_broke_it() -> None:
    # demo.yaml sets min_instances: 1; the override of max_instances is what broke the rule
    msg = _error(str(CONFIGS / "demo.yaml"), ["synth.max_instances=0"])
    assert msg == (
        "synth.min_instances must be <= synth.max_instances (0), got 1 "
        "(from --set synth.max_instances=0)"
    )


def test_a_section_given_whole_by_one_override() -> None:
    msg = _error(str(CONFIGS / "demo.yaml"), ["proposals={batch_size: 0}"])
    assert msg.endswith("(from --set proposals={batch_size: 0})")
    assert msg.startswith("proposals.batch_size must be >= 1")


def test_values_the_code_uses_still_load() -> None:
    good = [
        "synth.num_distractors=0",  # "maximum non-class blobs": none is fine
        "wsod.train.warmup_steps=0",
        "wsod.data.max_proposals=0",  # 0 = all
        "proposals.engine.points_per_side=0",  # no grid
        "proposals.engine.pred_iou_thresh=10.0",  # predicted IoU is regressed, not bounded
        "proposals.gpus_per_actor=0",
        "classifier.backbone_lr=0",  # frozen backbone
        "peaks.kernel_ref_side=0",
        "retrain.roi_drop.operate_iter=0",
        "retrain.train.lr_steps=[]",
        "sam.device=cuda:1",
        "sam_train.focal_alpha=-1",  # < 0 disables the class weighting
        "wsod.compare=[wsddn, oicr, supervised]",
        "proposals.engine.mask_threshold=-2.5",  # a logit
    ]
    cfg = load_config(str(CONFIGS / "demo.yaml"), good)
    assert cfg.proposals.engine.points_per_side == 0 and cfg.sam.device == "cuda:1"


@pytest.mark.parametrize(
    "path", sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name not in SERVE_FILES)
)
def test_every_pipeline_config_loads_and_round_trips(path: str) -> None:
    cfg = load_config(str(CONFIGS / path))
    assert from_dict(to_dict(cfg), Config) == cfg


def test_the_serve_configs_still_load() -> None:
    from serve.config import load_serve_config

    assert load_serve_config(str(CONFIGS / "serve_app.yaml")).segmenter.sam.model_type
    data = yaml.safe_load((CONFIGS / "serve.yaml").read_text())
    assert data["applications"][0]["args"]["config"] == "configs/serve_app.yaml"


def test_direct_construction_raises_field_error_naming_the_field() -> None:
    from weaksam.proposals.config import ProposalsConfig

    with pytest.raises(FieldError, match=r"^batch_size must be >= 1, got 0$"):
        ProposalsConfig(batch_size=0)
    with pytest.raises(ValueError, match="num_actors"):
        dataclasses.replace(ProposalsConfig(), num_actors=-3)


def test_name_tables_match_the_builders() -> None:
    """The torch-free config modules list the names of the torch modules' builder tables."""
    from weaksam.cam import config as cam_config
    from weaksam.cam import models as cam_models
    from weaksam.detection import backbones as det_backbones
    from weaksam.detection import config as det_config
    from weaksam.wsod import backbones as wsod_backbones
    from weaksam.wsod import config as wsod_config

    assert set(cam_config.BACKBONE_NAMES) == set(cam_models.BACKBONES)
    assert set(wsod_config.BACKBONE_NAMES) == set(wsod_backbones.BACKBONES)
    assert set(det_config.BACKBONE_NAMES) == set(det_backbones.BACKBONES)


def test_every_section_checks_its_values() -> None:
    """Each dataclass reachable from Config rejects a bad value of its own (so none is left
    without a __post_init__ or registered check)."""
    seen: set[type] = set()

    def walk(cls: Any) -> None:
        if cls in seen:
            return
        seen.add(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if callable(f.default_factory) else None
            if dataclasses.is_dataclass(default):
                walk(type(default))

    walk(Config)
    from weaksam.configlib import _EXTRA_CHECKS

    def has_values(cls: Any) -> bool:  # a field that is neither a switch nor a section
        obj = cls()
        return any(
            not isinstance(v, bool) and not dataclasses.is_dataclass(v)
            for v in (getattr(obj, f.name) for f in dataclasses.fields(cls))
        )

    unchecked = [
        c.__name__
        for c in seen
        if c is not Config
        and has_values(c)
        and "__post_init__" not in dir(c)
        and c not in _EXTRA_CHECKS
    ]
    assert not unchecked
    assert len(seen) >= 20


def test_cli_fails_before_writing(tmp_path: Path) -> None:
    """`ray_jobs.pipeline` exits 2 with one `config error:` line and writes nothing."""
    cwd = tmp_path / "work"
    (cwd / "configs").mkdir(parents=True)
    (cwd / "configs" / "tiny.yaml").write_text((CONFIGS / "tiny.yaml").read_text())
    (cwd / "configs" / "demo.yaml").write_text((CONFIGS / "demo.yaml").read_text())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ray_jobs.pipeline",
            "--config",
            "configs/tiny.yaml",
            "--set",
            "proposals.batch_size=0",
        ],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # `<prog>: config error: ...`
    assert lines[0].endswith(
        "config error: proposals.batch_size must be >= 1, got 0 (from --set proposals.batch_size=0)"
    )
    assert sorted(p.name for p in cwd.iterdir()) == ["configs"]  # no runs/ folder
