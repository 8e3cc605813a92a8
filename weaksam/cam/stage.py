"""The ``classify`` and ``peaks`` pipeline stages (``Stage.run`` signature).

* ``classify``: train the CAM classifier on the training split's image-level labels under Ray
  Train (``<run>/classify/ray_train_<hash>/`` holds its checkpoints, so a rerun with the same
  config resumes), export ``<run>/classify/classifier.pt`` and measure classification mAP on
  the test split.
* ``peaks``: a Ray Data job (the manifest's ids read from storage → :class:`PeakExtractor` on
  an actor pool, which reads the rows and images itself → ``write_parquet``) writing
  ``<run>/peaks/points.parquet/`` (shards of the ``points`` table), then point precision /
  recall against GT masks (evaluation only) and ``peaks.png``.

Labels reach the actors' rows for the training split only; other rows carry ``labels = null``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from weaksam import storage
from weaksam.cam.data import label_matrix, read_label_rows
from weaksam.cam.extractor import PeakExtractor
from weaksam.cam.maps import image_probs
from weaksam.cam.metrics import mean_ap, multilabel_ap, point_hits, ratio
from weaksam.cam.models import resolve_weights
from weaksam.cam.picture import render_peaks_sheet
from weaksam.cam.training import export_classifier, load_classifier
from weaksam.config import Config, config_hash, to_dict
from weaksam.data.imageio import load_image
from weaksam.eval.table import format_table
from weaksam.io.parts import read_pool_inputs
from weaksam.io.rle import decode_masks
from weaksam.io.tables import read_classes, read_table
from weaksam.runs import classifier_path, file_digest, manifest_path, points_path, read_success
from weaksam.stage import Stage, StageContext
from weaksam.train.placement import actor_pool, decide_actor_gpus, decide_gpu, pool_cpus
from weaksam.viz.draw import save_png

log = logging.getLogger(__name__)


def _manifest(run_dir: str) -> str:
    # absolute: the location travels to Ray workers, which may run on other nodes
    return storage.absolute(manifest_path(run_dir))


def _ingest_hash(run_dir: str) -> str:
    marker = read_success(storage.parent(manifest_path(run_dir)))
    return str(marker.get("config_hash", "")) if marker else ""


def run_classify(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Train the classifier (Ray Train), export ``classifier.pt``, evaluate on the test split."""
    from weaksam.train.trainer import run_torch_trainer

    ctx.ray_init()
    manifest = _manifest(ctx.run_dir)
    classes = read_classes(manifest)
    ccfg = cfg.classifier
    train_split, test_split = cfg.data.splits[0], cfg.data.splits[-1]
    # The Ray Train run is named by the config and the data, so an identical rerun resumes from
    # its latest checkpoint and a changed one starts afresh.
    run_name = "ray_train_" + config_hash(
        {
            "classifier": to_dict(ccfg),
            "weights": file_digest(resolve_weights(ccfg)),  # `builtin` is a file that changes
            "data": _ingest_hash(ctx.run_dir),
            "split": train_split,
        }
    )
    device = decide_gpu(ccfg.use_gpu, ccfg.workers, what="classify: training workers")
    result = run_torch_trainer(
        _train_loop,
        {  # weights resolved here: the workers' working directory is not this one
            "classifier": {**to_dict(ccfg), "weights": resolve_weights(ccfg)},
            "manifest": manifest,
            "split": train_split,
            "num_classes": classes.num_classes,
        },
        name=run_name,
        storage_path=ctx.out_dir,
        num_workers=ccfg.workers,
        use_gpu=device.use_gpu,
        cpus_per_worker=ccfg.cpus_per_worker,
        max_failures=ccfg.max_failures,
    )
    if result.checkpoint is None:
        raise RuntimeError(f"classifier training produced no checkpoint ({result.error})")
    with result.checkpoint.as_directory() as d:  # a local folder (a copy for remote storage)
        state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)
    path = classifier_path(ctx.run_dir)
    export_classifier(state, path, list(classes.names))
    # scored with the peaks stage's passes: the classes it predicts for unlabelled images
    metrics = evaluate_classifier(
        path, manifest, test_split, ccfg.threads, cfg.peaks.scales, cfg.peaks.flip
    )
    history = state.get("history", [])
    metrics.update(
        train_device=device.reason,
        classifier=path,
        train_split=train_split,
        epochs=int(state["epoch"]),
        resumed_from_epoch=int(state.get("resumed_from", 0)),
        final_val_map=history[-1]["val_map"] if history else None,
        train_seconds=float(sum(h["seconds"] for h in history)),
        history=history,
    )
    log.info("classifier quality:\n%s", classify_table(metrics))
    return metrics


def _train_loop(config: dict[str, Any]) -> None:
    from weaksam.cam.training import train_loop_per_worker

    train_loop_per_worker(config)


def evaluate_classifier(
    checkpoint: str,
    manifest: str,
    split: str,
    threads: int = 1,
    scales: tuple[float, ...] = (1.0,),
    flip: bool = False,
) -> dict[str, Any]:
    """Classification AP per class and mAP on ``split``, each image scored as the peaks stage
    scores an unlabelled image: logits averaged over ``scales`` (x ``input_size``), plain and
    (``flip``) flipped, then the sigmoid (:func:`weaksam.cam.maps.image_probs`)."""
    torch.set_num_threads(max(1, threads))
    model, ccfg, names = load_classifier(checkpoint)
    rows = read_label_rows(manifest, split)
    probs = np.zeros((len(rows), len(names)), dtype=np.float32)
    for i, r in enumerate(rows):
        probs[i] = image_probs(model, load_image(str(r["path"])), ccfg.input_size, scales, flip)
    targets = label_matrix([r["labels"] for r in rows], len(names)).numpy()
    ap = multilabel_ap(probs, targets) if rows else np.full(len(names), np.nan)
    return {
        "cls_map": mean_ap(ap),
        "cls_ap": {n: (None if np.isnan(a) else float(a)) for n, a in zip(names, ap, strict=True)},
        "test_split": split,
        "test_images": len(rows),
        "test_passes": {"scales": list(scales), "flip": flip},
    }


def classify_table(metrics: dict[str, Any]) -> str:
    """Per-class AP and mAP as a printable table."""
    rows: list[list[object]] = [[n, a] for n, a in metrics["cls_ap"].items()]
    rows.append(["mAP", metrics["cls_map"]])
    title = f"classification AP ({metrics['test_split']}, {metrics['test_images']} images)"
    return format_table(rows, ["class", "AP"], title=title)


def run_peaks(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Peak points of every manifest image with Ray Data; quality metrics and ``peaks.png``."""

    ctx.ray_init()
    manifest = _manifest(ctx.run_dir)
    checkpoint = storage.absolute(classifier_path(ctx.run_dir))
    classes = read_classes(manifest)
    train_split = cfg.data.splits[0]
    pcfg = cfg.peaks
    num_images = read_table(manifest, columns=["image_id"]).num_rows
    out = points_path(ctx.run_dir)
    if storage.is_dir(out):
        storage.remove_tree(out)
    else:
        storage.remove(out)
    device = decide_actor_gpus(pcfg.use_gpu, pcfg.actors, what="peaks: actors")
    # The actors read the manifest rows (and images) from storage; Ray Data reads the ids.
    ds = read_pool_inputs(manifest, ("image_id",), num_images, pcfg.batch_size, pcfg.actors)
    ds = ds.map_batches(
        PeakExtractor,
        fn_constructor_kwargs={
            "checkpoint": checkpoint,
            "peaks": to_dict(pcfg),
            "label_splits": [train_split],
            "classes": classes.to_json(),
            "threads": max(1, int(pcfg.actor_cpus)),
            "manifest": storage.absolute(manifest),
        },
        compute=actor_pool(pcfg.actors, pcfg.max_actors, device.use_gpu),
        batch_size=pcfg.batch_size,
        batch_format="pyarrow",  # keeps nulls (numpy batches turn a null string into NaN)
        num_gpus=1 if device.use_gpu else 0,
        num_cpus=pool_cpus(pcfg.actor_cpus, pcfg.actors, device.use_gpu),
    )
    # min and max: shards of rows_per_file rows, not one small file per batch
    n = pcfg.rows_per_file
    fs, fs_path = storage.resolve(out)  # the run's filesystem (s3:// through its settings)
    ds.write_parquet(fs_path, filesystem=fs, min_rows_per_file=n, max_rows_per_file=n)
    points = read_table(out, "points")
    if points.num_rows != num_images:
        raise RuntimeError(f"points table has {points.num_rows} rows for {num_images} images")
    metrics = evaluate_points(points.to_pylist(), manifest, pcfg.map_kinds)
    metrics["points"] = out
    metrics["device"] = device.reason
    try:
        sheet = render_peaks_sheet(checkpoint, manifest, pcfg, cfg.data.splits[-1])
        metrics["picture"] = save_png(storage.join(ctx.out_dir, "peaks.png"), sheet)
    except Exception as exc:  # the picture is a convenience; never fail the stage for it
        log.warning("peaks.png not drawn: %s", exc)
    log.info("peak-point quality:\n%s", peaks_table(metrics))
    return metrics


def evaluate_points(
    points: list[dict[str, Any]], manifest: str, kinds: tuple[str, ...]
) -> dict[str, Any]:
    """Point precision and GT-object recall per split and map kind, and precision per class
    (reads GT masks: evaluation only). The headline ``point_precision`` / ``point_recall``
    pool every split and kind."""
    gt = {
        r["image_id"]: r for r in read_table(manifest, "manifest").to_pylist() if r["error"] is None
    }
    names = read_classes(manifest).names
    by_class: dict[int, list[Any]] = {}
    by_key: dict[tuple[str, str], tuple[list[Any], list[Any]]] = {}
    counts: dict[str, list[int]] = {}
    errors = 0
    for row in points:
        if row["error"] is not None:
            errors += 1
            continue
        g = gt.get(row["image_id"])
        if g is None:
            continue
        split = g["split"]
        masks = decode_masks(g["gt_masks"] or [], int(g["height"]), int(g["width"]))
        pts = np.asarray(row["points"], dtype=np.float32).reshape(-1, 2)
        pcls = np.asarray(row["point_classes"], dtype=np.int64)
        pkind = np.asarray(row["point_kinds"], dtype=object)
        counts.setdefault(split, []).append(len(pts))
        for kind in kinds:
            sel = pkind == kind
            prec, rec = point_hits(pts[sel], pcls[sel], masks, g["gt_classes"] or [])
            for key in ((split, kind), (split, "all"), ("all", kind), ("all", "all")):
                by_key.setdefault(key, ([], []))
            for key in ((split, kind), ("all", kind)):
                by_key[key][0].append(prec)
                by_key[key][1].append(rec)
            # "all" kinds: a point counts once per kind; an object is found by any kind
            by_key[(split, "all")][0].append(prec)
            by_key[("all", "all")][0].append(prec)
        hits, any_kind = point_hits(pts, pcls, masks, g["gt_classes"] or [])
        for c in np.unique(pcls).tolist():
            by_class.setdefault(int(c), []).append(hits[pcls == c])
        by_key[(split, "all")][1].append(any_kind)
        by_key[("all", "all")][1].append(any_kind)
    table = {
        f"{s}/{k}": {"precision": ratio(v[0]), "recall": ratio(v[1])}
        for (s, k), v in sorted(by_key.items())
    }
    overall = table.get("all/all", {"precision": float("nan"), "recall": float("nan")})
    return {
        "point_precision": overall["precision"],
        "point_recall": overall["recall"],
        "point_precision_by_split": {
            key.split("/")[0]: v["precision"]
            for key, v in table.items()
            if key.endswith("/all") and not key.startswith("all/")
        },
        "by_split_kind": table,
        "point_precision_by_class": {
            (names[c] if 0 <= c < len(names) else str(c)): ratio(v)
            for c, v in sorted(by_class.items())
        },
        "points_per_image": {s: float(np.mean(c)) for s, c in counts.items()},
        "error_rows": errors,
    }


def peaks_table(metrics: dict[str, Any]) -> str:
    """Point precision and recall per split and kind as a printable table."""
    rows: list[list[object]] = [
        [key, v["precision"], v["recall"]] for key, v in metrics["by_split_kind"].items()
    ]
    rows += [
        [f"class {name}", p, "-"] for name, p in metrics.get("point_precision_by_class", {}).items()
    ]
    return format_table(rows, ["split/kind", "precision", "recall"], title="peak points")


CLASSIFY_STAGE = Stage("classify", run_classify, sections=("classifier",), deps=("ingest",))


def _points_table(cfg: Config, run_dir: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(points_path(run_dir), ())]  # one row per manifest image, every split


PEAKS_STAGE = Stage(
    "peaks", run_peaks, sections=("peaks",), deps=("classify",), covers=_points_table
)
