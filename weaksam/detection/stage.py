"""The ``retrain`` and ``wsis`` pipeline stages: train on PGT under Ray Train, detect on the
test split with Ray Data, evaluate.

``retrain`` (Faster R-CNN) trains the variant ``drop`` (RoI drop as configured; ``pgt`` for
RT-DETR, which has no RoI drop) and, when asked, ``no_drop`` (the same without RoI drop) and
``upper_bound`` (ground-truth boxes, no drop). ``wsis`` (Mask R-CNN or Mask2Former) trains
``pgt`` (PGT boxes and SAM masks) and, when asked, ``upper_bound`` (ground-truth masks).
Layout::

    <run>/<stage>/
      model.pt  detections_<test>.parquet  coco_results_<test>.json   the main variant
      compare/<variant>/...                                         the others
      ray_train/<variant>-<hash>/                                   Ray Train runs, checkpoints

A Ray Train run is named by its variant and a hash of everything that defines it (the stage
section, the seed, the input tables' sizes and times), so rerunning after a kill resumes it
from its latest checkpoint and a changed input starts a new one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from weaksam import storage
from weaksam.config import Config, config_hash, to_dict
from weaksam.detection.config import DetectorTestConfig, RetrainConfig, RoIDropConfig, WSISConfig
from weaksam.detection.data import nonempty_masks
from weaksam.detection.family_names import display_name, section_family
from weaksam.detection.inference import (
    export_checkpoint,
    predict_with_ray_data,
)
from weaksam.detection.summary import quality_summary, quality_table
from weaksam.detection.training import TrainJob, loop_config, train_loop_per_worker
from weaksam.eval import detections_to_coco_results, evaluate, load_manifest_gt, to_jsonable
from weaksam.eval.formats import load_detections_table
from weaksam.eval.table import format_table
from weaksam.io.classes import ClassMap
from weaksam.io.schemas import error_row
from weaksam.io.tables import iter_batches, read_classes, read_table, write_table
from weaksam.runs import detection_parts, detections_file, manifest_path, model_file, pgt_path
from weaksam.stage import Stage, StageContext
from weaksam.train.placement import decide_actor_gpus, decide_gpu
from weaksam.train.reporting import STATE_FILE
from weaksam.train.trainer import input_fingerprint

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image_id", "image_index", "height", "width", "path", "split", "error")


@dataclass(frozen=True)
class Variant:
    """One detector to train: ``source`` ``pgt`` or ``gt``; its RoI drop settings."""

    name: str
    source: str
    drop: RoIDropConfig


def train_variant(
    section: RetrainConfig | WSISConfig,
    variant: Variant,
    job: TrainJob,
    storage_path: str,
    run_name: str,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """Train (or resume) one variant under Ray Train (on GPUs when ``use_gpu``, as decided by
    :func:`weaksam.train.placement.decide_gpu`) with its checkpoints under the location
    ``storage_path``; the final checkpoint state."""
    import torch

    # ray_jobs._ray is the project's one TorchTrainer wrapper (DDP: gloo on CPU, nccl on GPU);
    # imported at call time so weaksam.detection imports without the entry points.
    from weaksam.train.trainer import run_torch_trainer

    tc = section.train
    result = run_torch_trainer(
        train_loop_per_worker,
        loop_config(section.model, tc, variant.drop, job),
        name=run_name,
        storage_path=storage_path,
        num_workers=tc.num_workers,
        use_gpu=use_gpu,
        cpus_per_worker=tc.cpus_per_worker,
        num_to_keep=tc.keep_checkpoints or None,
        max_failures=tc.max_failures,
    )
    if result.checkpoint is None:
        raise RuntimeError(f"{variant.name} training produced no checkpoint")
    with result.checkpoint.as_directory() as d:  # a local folder (a copy for remote storage)
        state: dict[str, Any] = torch.load(
            os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True
        )
    return state


def detect_split(
    checkpoint: str,
    manifest: str,
    rows: Sequence[dict[str, Any]],
    test: DetectorTestConfig,
    use_gpu: bool,
    out_dir: str,
    split: str,
    classes: ClassMap,
) -> str:
    """Detections of the ``split`` images of ``manifest`` (its rows: ``rows``) into
    ``detections_<split>.parquet`` (every row: detections or an error row) and
    ``coco_results_<split>.json`` in the location ``out_dir``. The actors read the images'
    rows from the manifest themselves (:func:`predict_with_ray_data`)."""
    dets: pa.Table = predict_with_ray_data(
        manifest,
        split,
        len(rows),
        checkpoint,
        num_actors=test.num_actors,
        max_actors=test.max_actors,
        cpus_per_actor=test.cpus_per_actor,
        batch_size=test.batch_size,
        mask_threshold=test.mask_threshold,
        use_gpu=use_gpu,
        parts_dir=detection_parts(out_dir),
        classes=classes,
    )
    by_id = {r["image_id"]: r for r in dets.to_pylist()}
    out = [
        by_id.get(str(r["image_id"]))
        or error_row(
            "detections",
            str(r["image_id"]),
            int(r["image_index"]),
            "not processed",
            height=r["height"],
            width=r["width"],
        )
        for r in rows
    ]
    path = detections_file(out_dir, split)
    write_table(out, path, "detections", classes)
    storage.remove_tree(detection_parts(out_dir))  # the table above holds every part's rows
    coco = detections_to_coco_results(load_detections_table(path).records, classes)
    storage.write_json(storage.join(out_dir, f"coco_results_{split}.json"), coco, indent=None)
    return path


def evaluate_detections(manifest: str, path: str, split: str, masks: bool) -> dict[str, Any]:
    """Box AP50 (VOC07 11-point and all-point); with masks also mask AP25/50/70/75 and COCO
    segm AP. Flat keys: ``ap50_voc07``, ``ap50_voc``, ``mask_ap25`` ..., ``segm_ap``, ..."""
    gt = load_manifest_gt(manifest, split=split)
    names = ("voc07", "voc", "mask_ap", "segm") if masks else ("voc07", "voc")
    res = to_jsonable(evaluate(gt.records, load_detections_table(path).records, names, gt.classes))
    out: dict[str, Any] = {
        "ap50_voc07": res["voc07"]["overall"]["mAP"],
        "ap50_voc": res["voc"]["overall"]["mAP"],
    }
    if masks:
        for k, v in res["mask_ap"]["overall"].items():
            out[f"mask_{k.lower()}"] = v
        out["segm_ap"] = res["segm"]["overall"]["AP"]
        out["segm_ap50"] = res["segm"]["overall"]["AP50"]
    out["per_class"] = {k: v.get("per_class") for k, v in res.items()}
    return out


def roi_drop_counts(history: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Sums over a training history of the foreground RoIs seen, those over each RoI-drop
    threshold and over both, in all steps and in the steps with drop switched on
    (``*_active``, counted per step): whether drop can act at all on this data, and why not
    (thresholds against the losses' scale, or the switch-on step against the schedule)."""
    out = dict.fromkeys(
        (
            f"rois_{k}{w}"
            for w in ("", "_active")
            for k in ("foreground", "over_cls", "over_reg", "over_both")
        ),
        0,
    )
    for h in history:
        for key in out:
            out[key] += int(h.get(key, 0))
    return out


def count_empty_masks(pgt: str) -> tuple[int, int]:
    """``(empty, rows with masks)`` of a ``pgt`` table: how many SAM masks are empty (their
    boxes are left out of Mask R-CNN's targets) and how many rows have masks at all. Reads a
    record batch at a time."""
    empty = with_masks = 0
    for batch in iter_batches(pgt, ["masks", "height", "width"]):
        for r in batch.to_pylist():
            if r["masks"]:
                with_masks += 1
                empty += int((~nonempty_masks(r["masks"], r["height"], r["width"])).sum())
    return empty, with_masks


def run_detector_stage(
    cfg: Config,
    ctx: StageContext,
    section: RetrainConfig | WSISConfig,
    variants: Sequence[Variant],
    masks: bool,
) -> dict[str, Any]:
    """Train, detect and evaluate each variant; the first is the main one (stage folder)."""
    manifest = manifest_path(ctx.run_dir)
    pgt = pgt_path(ctx.run_dir)
    if any(v.source == "pgt" for v in variants) and not storage.exists(pgt):
        raise FileNotFoundError(f"no pseudo ground truth at {pgt} (run the pgt stage)")
    empty_masks = 0
    if masks and any(v.source == "pgt" for v in variants):
        empty_masks, with_masks = count_empty_masks(pgt)
        if not with_masks:
            raise ValueError(f"{pgt} has no masks (set pgt.masks: true) for Mask R-CNN")
    classes = read_classes(manifest)
    train_split, test_split = cfg.data.splits[0], cfg.data.splits[-1]
    test_rows = [
        r
        for r in read_table(manifest, "manifest", columns=IMAGE_COLUMNS).to_pylist()
        if r["split"] == test_split
    ]
    ctx.ray_init()
    stage = storage.basename(ctx.out_dir)
    tc = section.train
    train = decide_gpu(tc.use_gpu, tc.num_workers, what=f"{stage}: training workers")
    infer = decide_actor_gpus(
        section.test.use_gpu, section.test.num_actors, what=f"{stage}: inference actors"
    )
    use_gpu = infer.use_gpu
    ray_train = storage.join(ctx.out_dir, "ray_train")
    metrics: dict[str, Any] = {
        "variants": {},
        "train_device": train.reason,
        "inference_device": infer.reason,
    }
    if masks:  # PGT boxes whose SAM mask is empty: not Mask R-CNN targets
        metrics["empty_masks_dropped"] = empty_masks
    for k, v in enumerate(variants):
        out_dir = variant_dir(ctx.out_dir, k, v)
        storage.makedirs(out_dir)
        job = TrainJob(  # absolute locations: the workers may run on other nodes
            v.name,
            masks,
            classes.num_classes,
            tuple(classes.names),
            storage.absolute(manifest),
            storage.absolute(pgt) if v.source == "pgt" else "",
            v.source,
            train_split,
        )
        inputs = [manifest, pgt] if v.source == "pgt" else [manifest]
        key = {"section": to_dict(section), "roi_drop": to_dict(v.drop), "seed": cfg.seed}
        name = f"{v.name}-{config_hash({**key, 'inputs': input_fingerprint(inputs)})}"
        t0 = time.time()
        state = train_variant(section, v, job, ray_train, name, use_gpu=train.use_gpu)
        train_s = time.time() - t0
        ckpt = export_checkpoint(state, model_file(out_dir))
        t0 = time.time()
        path = detect_split(
            ckpt, manifest, test_rows, section.test, use_gpu, out_dir, test_split, classes
        )
        infer_s = time.time() - t0
        history = state["history"]
        metrics["variants"][v.name] = {
            **evaluate_detections(manifest, path, test_split, masks),
            "source": v.source,
            "roi_drop": to_dict(v.drop),
            "rois_dropped": int(sum(h.get("rois_dropped", 0) for h in history)),
            **roi_drop_counts(history),
            "train_seconds": round(train_s, 1),
            "infer_seconds": round(infer_s, 1),
            "ray_train_run": name,  # its checkpoints: ray_train/<name>/ (bench/learning_curve.py)
            "steps": int(state["step"]),
            "resumed_from_step": int(state.get("resumed_from", 0)),
            "final_loss": history[-1].get("loss") if history else None,
            "history": history,
        }
    return metrics


def _table(metrics: dict[str, Any], keys: Sequence[str], title: str) -> str:
    rows = [
        [name, *(m.get(k) for k in keys), m.get("train_seconds")]
        for name, m in metrics["variants"].items()
    ]
    return format_table(rows, ["variant", *keys, "train s"], title=title)


def retrain_variants(cfg: Config) -> list[Variant]:
    """The ``retrain`` stage's models: the PGT-trained detector (its main output: ``drop``, with
    RoI drop as configured, for an R-CNN; ``pgt`` for a family without RoI drop), then the
    no-drop and GT upper-bound comparisons when asked."""
    rc = cfg.retrain
    variants = [Variant(main_retrain_variant(cfg), "pgt", rc.roi_drop)]
    if rc.compare_no_drop:
        variants.append(Variant("no_drop", "pgt", replace(rc.roi_drop, enabled=False)))
    if rc.upper_bound:
        variants.append(Variant("upper_bound", "gt", replace(rc.roi_drop, enabled=False)))
    return variants


def main_retrain_variant(cfg: Config) -> str:
    """The name of the ``retrain`` stage's main variant: ``drop`` for an R-CNN (RoI drop as
    configured, on or off), ``pgt`` for the other families (no RoI drop to name)."""
    return "drop" if cfg.retrain.model.family == "rcnn" else "pgt"


def wsis_variants(cfg: Config) -> list[Variant]:
    """The ``wsis`` stage's models: Mask R-CNN on the PGT masks, then the GT-mask upper bound
    when asked."""
    wc = cfg.wsis
    variants = [Variant("pgt", "pgt", wc.roi_drop)]
    if wc.upper_bound:
        variants.append(Variant("upper_bound", "gt", replace(wc.roi_drop, enabled=False)))
    return variants


def variant_dir(out_dir: str, index: int, variant: Variant) -> str:
    """Where variant ``index`` of a detector stage writes: the stage folder for the first (the
    stage's result), ``compare/<name>`` for the comparisons."""
    return out_dir if index == 0 else storage.join(out_dir, "compare", variant.name)


def _variant_tables(
    stage: str, variants: Callable[[Config], list[Variant]]
) -> Callable[[Config, str], list[tuple[str, tuple[str, ...]]]]:
    """``Stage.covers`` of a detector stage: every variant's test-split detections."""

    def covers(cfg: Config, run_dir: str) -> list[tuple[str, tuple[str, ...]]]:
        test_split = cfg.data.splits[-1]
        out_dir = storage.join(run_dir, stage)
        return [
            (detections_file(variant_dir(out_dir, k, v), test_split), (test_split,))
            for k, v in enumerate(variants(cfg))
        ]

    return covers


def run_retrain(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """The retrained detector on the PGT (Faster R-CNN with RoI drop, or RT-DETR) + no-drop and
    GT upper bound when asked."""
    metrics = run_detector_stage(cfg, ctx, cfg.retrain, retrain_variants(cfg), masks=False)
    metrics["family"] = section_family(cfg.retrain)
    v = metrics["variants"]
    metrics["ap50_voc07"] = v[main_retrain_variant(cfg)]["ap50_voc07"]
    metrics["ap50_no_drop"] = v.get("no_drop", {}).get("ap50_voc07")
    metrics["upper_bound_ap50"] = v.get("upper_bound", {}).get("ap50_voc07")
    if metrics["upper_bound_ap50"]:
        metrics["ratio_to_upper_bound"] = metrics["ap50_voc07"] / metrics["upper_bound_ap50"]
    keys = ("ap50_voc07", "ap50_voc", "rois_dropped", "rois_over_cls", "rois_over_reg")
    metrics["table"] = _table(metrics, keys, f"retrain ({display_name(metrics['family'])})")
    log.info("\n%s", metrics["table"])
    return metrics


def run_wsis(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Mask R-CNN on the PGT masks (+ the GT-mask upper bound when asked)."""
    metrics = run_detector_stage(cfg, ctx, cfg.wsis, wsis_variants(cfg), masks=True)
    metrics["family"] = section_family(cfg.wsis)
    main = metrics["variants"]["pgt"]
    for k in ("mask_ap25", "mask_ap50", "mask_ap70", "mask_ap75", "segm_ap", "segm_ap50"):
        metrics[k] = main.get(k)
    metrics["upper_bound_mask_ap50"] = metrics["variants"].get("upper_bound", {}).get("mask_ap50")
    keys = ("mask_ap25", "mask_ap50", "mask_ap70", "mask_ap75", "segm_ap", "ap50_voc07")
    name = display_name(metrics["family"], masks=True)
    title = f"wsis ({name}; {metrics.get('empty_masks_dropped', 0)} empty PGT masks left out)"
    metrics["table"] = _table(metrics, keys, title)
    log.info("\n%s", metrics["table"])
    # the run's weak-vs-full table (wsod, pgt, retrain and this stage), in the paper's style
    metrics["quality"] = quality_summary(ctx.run_dir, {"wsis": metrics})
    title = f"{cfg.name}: weak vs full supervision"
    splits = cfg.data.splits
    log.info("\n%s", quality_table(metrics["quality"], title, splits[0], splits[-1]))
    return metrics


def _enabled(section: str) -> Any:
    return lambda cfg: bool(getattr(cfg, section).enabled)


RETRAIN_STAGE = Stage(
    "retrain",
    run_retrain,
    sections=("retrain",),
    deps=("ingest", "pgt"),
    enabled=_enabled("retrain"),
    covers=_variant_tables("retrain", retrain_variants),
)
WSIS_STAGE = Stage(
    "wsis",
    run_wsis,
    sections=("wsis",),
    deps=("ingest", "pgt"),
    enabled=_enabled("wsis"),
    covers=_variant_tables("wsis", wsis_variants),
)
