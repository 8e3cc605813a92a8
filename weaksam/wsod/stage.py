"""The ``wsod`` pipeline stage: train each method under Ray Train, infer with Ray Data,
evaluate, and write ``<run>/wsod/``.

Layout (``M`` = ``wsod.method``, the detector whose detections feed PGT)::

    <run>/wsod/
      model.pt  curves.png  detections_<split>.parquet  coco_results_<split>.json   (M)
      compare/<method>/...                          the same for each ``wsod.compare`` method
      ray_train/<method>-<hash>/                    Ray Train runs and checkpoints
      metrics.json                                  written by the pipeline from the return value

A Ray Train run is named by the method and a hash of everything that defines it (the
``wsod`` model, data and train settings, the proposal source, the seed, the input tables'
sizes and times), so rerunning after a kill resumes the same run from its latest checkpoint
(test-time settings can change in between), and a changed input starts a new one.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa

from weaksam import storage
from weaksam.config import Config, config_hash, to_dict
from weaksam.eval import detections_to_coco_results, evaluate, load_manifest_gt, to_jsonable
from weaksam.eval.formats import load_detections_table
from weaksam.io.classes import ClassMap
from weaksam.io.parts import read_pool_inputs, write_and_read_parts
from weaksam.io.schemas import error_row
from weaksam.io.tables import read_classes, read_table, write_table
from weaksam.runs import (
    detection_parts,
    detections_file,
    detections_path,
    manifest_path,
    model_file,
)
from weaksam.runs import proposals_path as run_proposals_path
from weaksam.stage import Stage, StageContext
from weaksam.train.placement import actor_pool, decide_actor_gpus, decide_gpu, pool_cpus
from weaksam.train.reporting import STATE_FILE
from weaksam.train.trainer import input_fingerprint
from weaksam.wsod.config import WSODConfig
from weaksam.wsod.data import PROPOSAL_COLUMNS, read_weak_manifest, usable_proposals
from weaksam.wsod.inference import WSODBatchPredictor, export_checkpoint
from weaksam.wsod.summary import comparison_table, plot_curves
from weaksam.wsod.training import TrainJob, train_loop_per_worker

log = logging.getLogger(__name__)


def proposals_path(run_dir: str, cfg: WSODConfig) -> str:
    """The proposals table of the run (``""`` for the plumbing grid)."""
    if cfg.proposals == "grid":
        return ""
    path = run_proposals_path(run_dir)
    if storage.list_files(path, ".parquet"):
        return path
    raise FileNotFoundError(
        f"no proposals under {run_dir}/proposals (run the proposals stage, or set "
        "wsod.proposals: grid for plumbing)"
    )


def run_name(cfg: Config, method: str, inputs: Sequence[str]) -> str:
    """``<method>-<hash>`` of what defines the training run (see the module docstring)."""
    w = cfg.wsod
    key = {  # inference settings (test, method, compare) do not change a training run
        "wsod": {k: to_dict(getattr(w, k)) for k in ("model", "data", "train")},
        "proposals": w.proposals,
        "seed": cfg.seed,
        "method": method,
        "inputs": input_fingerprint(inputs),
    }
    return f"{method}-{config_hash(key)}"


def train_method(
    cfg: Config, job: TrainJob, storage_path: str, name: str, use_gpu: bool = False
) -> dict[str, Any]:
    """Train (or resume) ``job.method`` under Ray Train (on GPUs when ``use_gpu``, as decided by
    :func:`weaksam.train.placement.decide_gpu`) with its checkpoints under the location
    ``storage_path``; return the final checkpoint state."""
    import torch

    # ray_jobs._ray is the project's one TorchTrainer wrapper (DDP: gloo on CPU, nccl on GPU);
    # imported here, at call time, so weaksam.wsod imports without the entry points.
    from weaksam.train.trainer import run_torch_trainer

    tc = cfg.wsod.train
    result = run_torch_trainer(
        train_loop_per_worker,
        {"wsod": to_dict(cfg.wsod), "job": {**job.__dict__, "class_names": list(job.class_names)}},
        name=name,
        storage_path=storage_path,
        num_workers=tc.num_workers,
        use_gpu=use_gpu,
        cpus_per_worker=tc.cpus_per_worker,
        max_failures=tc.max_failures,
    )
    if result.checkpoint is None:
        raise RuntimeError(f"{job.method} training produced no checkpoint")
    with result.checkpoint.as_directory() as d:  # a local folder (a copy for remote storage)
        state: dict[str, Any] = torch.load(
            os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True
        )
    return state


def predict_with_ray_data(
    proposals: str,
    manifest: str,
    splits: Sequence[str],
    num_images: int,
    checkpoint: str,
    cfg: WSODConfig,
    use_gpu: bool,
    parts_dir: str,
    classes: ClassMap | None = None,
) -> pa.Table:
    """Run :class:`WSODBatchPredictor` on an actor pool over the ``proposals`` table as Ray
    Data reads it from storage (``""``: the manifest's ids, with the plumbing window grid);
    the actors read the manifest rows of ``splits`` themselves and write the detections into
    ``parts_dir`` (emptied first: :func:`weaksam.io.parts.write_parts`), read back from there
    as one table. Neither the proposals nor the detections pass through the driver.

    ``num_images`` (the images of ``splits``) sizes the blocks
    (:func:`weaksam.io.parts.read_pool_inputs`)."""
    test = cfg.test
    source, columns = (proposals, PROPOSAL_COLUMNS) if proposals else (manifest, ("image_id",))
    ds = read_pool_inputs(source, columns, num_images, test.batch_size, test.num_actors)
    ds = ds.map_batches(
        WSODBatchPredictor,
        fn_constructor_kwargs={
            "checkpoint": storage.absolute(checkpoint),
            "test": to_dict(test),
            "data": to_dict(cfg.data),
            "manifest": storage.absolute(manifest),
            "splits": list(splits),
            "grid": not proposals,
            "device": "auto" if use_gpu else "cpu",  # GPU slots without CUDA: CPU
            "threads": max(1, int(test.cpus_per_actor)),
        },
        compute=actor_pool(test.num_actors, test.max_actors, use_gpu),
        batch_size=test.batch_size,
        batch_format="pyarrow",  # keeps nulls (numpy batches turn a null string into NaN)
        num_cpus=pool_cpus(test.cpus_per_actor, test.num_actors, use_gpu),
        num_gpus=1 if use_gpu else 0,
    )
    return write_and_read_parts(ds, parts_dir, "detections", classes)


def missing_reasons(
    manifest_rows: Sequence[dict[str, Any]], proposals: str, cfg: WSODConfig
) -> dict[str, str]:
    """Why each manifest row without a ``proposals`` row gets no detections (``image_id →
    reason``; the actors give the reasons of the rows they see). Reads the ids only."""
    if not proposals:
        return {}
    have = set(read_table(proposals, columns=["image_id"]).column("image_id").to_pylist())
    out = {}
    for r in manifest_rows:
        if r["image_id"] not in have:
            _, reason = usable_proposals(r, None, cfg.data)
            out[str(r["image_id"])] = str(reason)
    return out


def write_split_outputs(
    dets: pa.Table,
    skipped: dict[str, str],
    manifest_rows: Sequence[dict[str, Any]],
    split: str,
    out_dir: str,
    classes: ClassMap,
) -> str:
    """``detections_<split>.parquet`` (every manifest row of the split: detections or an error
    row) and ``coco_results_<split>.json`` in the location ``out_dir``; returns the Parquet
    path."""
    ids = {str(r["image_id"]) for r in manifest_rows if r["split"] == split}
    by_id = {r["image_id"]: r for r in dets.to_pylist() if r["image_id"] in ids}
    rows = []
    for r in manifest_rows:
        if r["split"] != split:
            continue
        image_id = str(r["image_id"])
        if image_id in by_id:
            rows.append(by_id[image_id])
        else:
            reason = skipped.get(image_id, "not processed")
            rows.append(
                error_row(
                    "detections",
                    image_id,
                    r["image_index"],
                    reason,
                    height=r["height"],
                    width=r["width"],
                )
            )
    path = detections_file(out_dir, split)
    write_table(rows, path, "detections", classes)
    coco = detections_to_coco_results(load_detections_table(path).records, classes)
    storage.write_json(storage.join(out_dir, f"coco_results_{split}.json"), coco, indent=None)
    return path


def evaluate_method(
    manifest: str, out_dir: str, train_split: str, test_split: str
) -> dict[str, Any]:
    """VOC07 and all-point AP50 on the test split, CorLoc on the training split."""
    out: dict[str, Any] = {}
    for split, metrics in ((test_split, ("voc07", "voc")), (train_split, ("corloc",))):
        path = detections_file(out_dir, split)
        if not storage.exists(path):
            continue
        gt = load_manifest_gt(manifest, split=split)
        res = evaluate(gt.records, load_detections_table(path).records, metrics, gt.classes)
        out.update(to_jsonable(res))
    return out


def inference_summary(dets: pa.Table, skipped: dict[str, str], num_images: int) -> dict[str, Any]:
    """``images`` (predicted without an error) and ``skipped`` (reason → count) of the
    predicted splits: the actors' error rows and the rows that had no proposals row."""
    errors = [e for e in dets.column("error").to_pylist() if e]
    reasons = Counter(errors) + Counter(skipped.values())
    return {"images": num_images - sum(reasons.values()), "skipped": dict(reasons)}


def run_wsod(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Train, infer and evaluate every method of ``cfg.wsod.methods`` (see the module doc)."""
    wcfg = cfg.wsod
    manifest = manifest_path(ctx.run_dir)
    proposals = proposals_path(ctx.run_dir, wcfg)
    classes = read_classes(manifest)
    train_split, test_split = cfg.data.splits[0], cfg.data.splits[-1]
    splits = list(wcfg.test.splits or cfg.data.splits)
    manifest_rows = read_weak_manifest(manifest)  # metadata only: no proposals here
    rows = [r for r in manifest_rows if r["split"] in splits]
    skipped = missing_reasons(rows, proposals, wcfg)
    metrics: dict[str, Any] = {
        "method": wcfg.method,
        "proposal_source": wcfg.proposals if proposals else "grid (plumbing)",
        "methods": {},
    }
    ctx.ray_init()
    tc = wcfg.train
    train = decide_gpu(tc.use_gpu, tc.num_workers, what="wsod: training workers")
    infer = decide_actor_gpus(
        wcfg.test.use_gpu, wcfg.test.num_actors, what="wsod: inference actors"
    )
    use_gpu = infer.use_gpu
    metrics.update(train_device=train.reason, inference_device=infer.reason)
    ray_train = storage.join(ctx.out_dir, "ray_train")
    for method in wcfg.methods:
        out_dir = (
            ctx.out_dir if method == wcfg.method else storage.join(ctx.out_dir, "compare", method)
        )
        storage.makedirs(out_dir)
        job = TrainJob(  # absolute locations: the workers may run on other nodes
            method,
            classes.num_classes,
            tuple(classes.names),
            storage.absolute(manifest),
            storage.absolute(proposals) if proposals else "",
            train_split,
        )
        t0 = time.time()
        mcfg = replace(cfg, wsod=wcfg.for_method(method))  # the method's own settings
        name = run_name(mcfg, method, [manifest, proposals])
        state = train_method(mcfg, job, ray_train, name, use_gpu=train.use_gpu)
        train_s = time.time() - t0
        ckpt = export_checkpoint(state, model_file(out_dir))
        plot_curves(
            state["history"], storage.join(out_dir, "curves.png"), f"{method} on {train_split}"
        )
        t0 = time.time()
        parts = detection_parts(out_dir)
        dets = predict_with_ray_data(
            proposals, manifest, splits, len(rows), ckpt, mcfg.wsod, use_gpu, parts, classes
        )
        for split in splits:
            write_split_outputs(dets, skipped, rows, split, out_dir, classes)
        storage.remove_tree(parts)  # every split's table is written from them
        infer_s = time.time() - t0
        if method == wcfg.method:
            metrics.update(inference_summary(dets, skipped, len(rows)))
            metrics["train_data"] = state.get("data", {})
        res = evaluate_method(manifest, out_dir, train_split, test_split)
        last = state["history"][-1] if state["history"] else {}
        metrics["methods"][method] = {
            "ap50_voc07": res.get("voc07", {}).get("overall", {}).get("mAP"),
            "ap50_voc": res.get("voc", {}).get("overall", {}).get("mAP"),
            "corloc": res.get("corloc", {}).get("overall", {}).get("CorLoc"),
            "train_seconds": round(train_s, 1),
            "infer_seconds": round(infer_s, 1),
            "steps": int(state["step"]),
            "resumed_from_step": int(state.get("resumed_from", 0)),
            "final_loss": last.get("loss"),
            "history": state["history"],
            "per_class": {k: v.get("per_class") for k, v in res.items()},
        }
    ub = metrics["methods"].get("supervised", {}).get("ap50_voc07")
    for m in metrics["methods"].values():
        if ub and m.get("ap50_voc07") is not None:
            m["ratio_to_upper_bound"] = m["ap50_voc07"] / ub
    title = f"WSOD on {cfg.name} ({metrics['proposal_source']} proposals)"
    metrics["table"] = comparison_table(metrics["methods"], title, train_split, test_split)
    log.info("\n%s", metrics["table"])
    return metrics


def _wsod_tables(cfg: Config, run_dir: str) -> list[tuple[str, tuple[str, ...]]]:
    splits = list(cfg.wsod.test.splits or cfg.data.splits)
    return [(detections_path(run_dir, "wsod", s), (s,)) for s in dict.fromkeys(splits)]


WSOD_STAGE = Stage(
    "wsod", run_wsod, sections=("wsod",), deps=("ingest", "proposals"), covers=_wsod_tables
)
