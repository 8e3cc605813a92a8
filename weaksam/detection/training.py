"""Training the retrained detectors: one loop that runs under Ray Train or as plain Python.

:func:`train_loop_per_worker` is the ``TorchTrainer`` entry (DDP: gloo on CPU, nccl on GPU).
It rebuilds the configs from its dict, reads this worker's share of the training samples
(PGT, or the ground truth for the upper bound only) and calls :func:`fit`, which:

* sets ``roi_heads.iteration`` before every step (R-CNNs), so RoI drop starts at
  ``operate_iter`` (the other families have no RoI heads: their RoI counters stay 0);
* draws each step's images and flips from ``(seed, rank, step)`` (a resumed run sees the
  uninterrupted run's batches);
* uses SGD (momentum) or AdamW with weight decay on weights only, the trunk at
  ``trunk_lr_factor`` x lr, linear warm-up, step decay;
* logs mean losses, seconds per step and the RoIs dropped (of the foreground RoIs sampled, on
  rank 0) every ``log_every`` steps, without any Ray call;
* every ``checkpoint_every`` steps and at the end, saves ``{model, optimizer, step, history,
  ...}`` through :func:`weaksam.train.reporting.report` (rank 0's state; each call ~1.5 s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from weaksam.configlib import from_dict, to_dict
from weaksam.detection.config import DetectorModelConfig, DetectorTrainConfig, RoIDropConfig
from weaksam.detection.data import DetectionSample, Sampler, read_pgt_samples, to_model_inputs
from weaksam.detection.model import build_detector, trunk_module
from weaksam.detection.roi_heads import DropRoIHeads
from weaksam.train.cache import ImageCache
from weaksam.train.checkpoint import restore_training_state
from weaksam.train.distributed import prepare_ddp, unwrap, world_rank, world_size
from weaksam.train.reporting import load_resume_state, report
from weaksam.train.schedule import step_decay_schedule

log = logging.getLogger(__name__)

Reporter = Callable[[dict[str, Any], dict[str, Any] | None], None]
SOURCES = ("pgt", "gt")


@dataclass(frozen=True)
class TrainJob:
    """What one training run needs besides the configs (all JSON-able).

    Attributes:
        name: the variant (``drop``, ``no_drop``, ``upper_bound``, ...), for logs.
        masks: Mask R-CNN (else Faster R-CNN).
        num_classes: ``C`` foreground classes. class_names: for the checkpoint.
        manifest: manifest path (image paths; ``gt_*`` only when ``source`` is ``gt``).
        targets: ``pgt`` table path (``source`` ``pgt``).
        source: ``pgt``, or ``gt`` for the fully supervised upper bound.
        split: the training split.
    """

    name: str
    masks: bool
    num_classes: int
    class_names: tuple[str, ...]
    manifest: str
    targets: str
    source: str
    split: str

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown training source {self.source!r}; known: {list(SOURCES)}")


def build_optimizer(model: nn.Module, cfg: DetectorTrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum, or AdamW (``cfg.optimizer``); weight decay on weights (ndim > 1)
    only; the trunk's parameters (:func:`~weaksam.detection.model.trunk_module`) at
    ``trunk_lr_factor`` x lr (each group's ``lr_factor``, applied by :func:`fit`); frozen
    parameters left out. With ``trunk_lr_factor`` 1 the groups are the R-CNN's two."""
    trunk = trunk_module(unwrap(model)) if cfg.trunk_lr_factor != 1.0 else None
    in_trunk = {id(p) for p in trunk.parameters()} if trunk is not None else set()
    groups: list[dict[str, Any]] = []
    for part_of_trunk in (False, True) if in_trunk else (False,):
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in model.parameters():
            if p.requires_grad and (id(p) in in_trunk) == part_of_trunk:
                (decay if p.ndim > 1 else no_decay).append(p)
        factor = {"lr_factor": cfg.trunk_lr_factor} if part_of_trunk else {}
        groups += [
            {"params": decay, "weight_decay": cfg.weight_decay, **factor},
            {"params": no_decay, "weight_decay": 0.0, **factor},
        ]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def load_samples(job: TrainJob) -> list[DetectionSample]:
    """The training samples of ``job`` (PGT, or GT for the upper bound)."""
    if job.source == "gt":
        from weaksam.detection.upper_bound import read_gt_samples

        samples, left_out = read_gt_samples(job.manifest, job.split, with_masks=job.masks)
    else:
        samples, left_out = read_pgt_samples(
            job.manifest, job.targets, job.split, with_masks=job.masks
        )
    if left_out and world_rank() == 0:
        log.info("%s: %d training images left out (no usable targets)", job.name, left_out)
    if not samples:
        raise ValueError(f"{job.name}: no training images with targets in split {job.split!r}")
    return samples


def _roi_heads(model: nn.Module) -> DropRoIHeads | None:
    """The R-CNN's RoI heads (RoI drop and its counters); ``None`` for the families without
    them (their RoI counters stay 0)."""
    heads = getattr(unwrap(model), "roi_heads", None)
    if heads is None:
        return None
    if not isinstance(heads, DropRoIHeads):
        raise TypeError("the detector's roi_heads must be DropRoIHeads")
    return heads


def fit(
    model: nn.Module,
    sampler: Sampler,
    cfg: DetectorTrainConfig,
    job: TrainJob,
    *,
    resume: dict[str, Any] | None = None,
    reporter: Reporter = report,
    extra_state: dict[str, Any] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` (maybe DDP-wrapped) from ``resume`` or from scratch.

    Args:
        extra_state: JSON-able values stored in every checkpoint (model config, classes).
        stop_after: stop after this step (tests: simulate a killed run).

    Returns the last checkpoint state. Its tensors are the live parameters: ``report`` saves
    them at once; a ``reporter`` that keeps states must copy them.
    """
    opt = build_optimizer(model, cfg)
    schedule = step_decay_schedule(cfg)
    start = 0
    history: list[dict[str, Any]] = []
    if resume is not None:
        start, history = restore_training_state(resume, model, opt)
        log.info("%s: resuming at step %d", job.name, start)
    heads, rank = _roi_heads(model), world_rank()
    window: dict[str, list[float]] = {}
    dropped = foreground = 0
    over = np.zeros(3, dtype=np.int64)  # foreground RoIs over thresh_cls, thresh_reg, both
    over_active = np.zeros(4, dtype=np.int64)  # foreground and the same, while drop is on
    cache = ImageCache(cfg.cache_mb if cfg.cache_images else 0)
    state: dict[str, Any] = {}
    t0 = time.time()
    model.train()
    for step in range(start, cfg.steps):
        # RoI/anchor sampling uses torch's global RNG: seed it per step so a resumed run
        # repeats the uninterrupted one
        torch.manual_seed(cfg.seed * 1_000_003 + rank * 10_007 + step)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * schedule(step) * g.get("lr_factor", 1.0)
        if heads is not None:
            heads.iteration = step
        images, targets = to_model_inputs(sampler.draw(step), job.masks, cache)
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        for k, v in {"loss": loss, **losses}.items():
            window.setdefault(k, []).append(float(v.detach()))
        if heads is not None:
            dropped, foreground = dropped + heads.dropped, foreground + heads.foreground
            over += heads.over
            if heads.drop_active:
                over_active += (heads.foreground, *heads.over)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            point: dict[str, Any] = {k: float(np.mean(v)) for k, v in window.items()}
            point.update(
                step=done,
                lr=cfg.lr * schedule(step),
                seconds_per_step=(time.time() - t0) / len(window["loss"]),
                rois_dropped=dropped,
                rois_foreground=foreground,
                rois_over_cls=int(over[0]),
                rois_over_reg=int(over[1]),
                rois_over_both=int(over[2]),
                rois_foreground_active=int(over_active[0]),
                rois_over_cls_active=int(over_active[1]),
                rois_over_reg_active=int(over_active[2]),
                rois_over_both_active=int(over_active[3]),
            )
            history.append(point)
            if rank == 0 and heads is None:  # no RoI heads: nothing is dropped
                log.info("%s step %d loss %.4f", job.name, done, point["loss"])
            elif rank == 0:
                log.info(
                    "%s step %d loss %.4f, RoIs dropped %d of %d fg (over cls %d, reg %d, both %d)",
                    job.name,
                    done,
                    point["loss"],
                    dropped,
                    foreground,
                    *over,
                )
            window, dropped, foreground, t0 = {}, 0, 0, time.time()
            over[:] = 0
            over_active[:] = 0
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            state = {
                "model": unwrap(model).state_dict(),
                "optimizer": opt.state_dict(),
                "step": done,
                "history": list(history),
                "resumed_from": start,  # the step this process started at (0: from scratch)
                **(extra_state or {}),
            }
            last = history[-1] if history else {}
            reporter({"step": done, "loss": last.get("loss", 0.0)}, state)
        if stop_after is not None and done >= stop_after:
            break
    return state


def checkpoint_meta(
    job: TrainJob, model_cfg: DetectorModelConfig, drop: RoIDropConfig
) -> dict[str, Any]:
    """The JSON-able part of every checkpoint: enough to rebuild the model."""
    return {
        "model_config": to_dict(model_cfg),
        "roi_drop": to_dict(drop),
        "masks": job.masks,
        "num_classes": job.num_classes,
        "class_names": list(job.class_names),
        "variant": job.name,
    }


def loop_config(
    model_cfg: DetectorModelConfig,
    train_cfg: DetectorTrainConfig,
    drop: RoIDropConfig,
    job: TrainJob,
) -> dict[str, Any]:
    """The ``train_loop_config`` dict of :func:`train_loop_per_worker`."""
    return {
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "roi_drop": to_dict(drop),
        "job": {**asdict(job), "class_names": list(job.class_names)},
    }


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry (see :func:`loop_config`)."""
    model_cfg = from_dict(config["model"], DetectorModelConfig)
    train_cfg = from_dict(config["train"], DetectorTrainConfig)
    drop = from_dict(config["roi_drop"], RoIDropConfig)
    job = TrainJob(**{**config["job"], "class_names": tuple(config["job"]["class_names"])})
    run_training(model_cfg, train_cfg, drop, job, rank=world_rank(), world=world_size())


def run_training(
    model_cfg: DetectorModelConfig,
    train_cfg: DetectorTrainConfig,
    drop: RoIDropConfig,
    job: TrainJob,
    *,
    rank: int = 0,
    world: int = 1,
    reporter: Reporter = report,
    stop_after: int | None = None,
    samples: Sequence[DetectionSample] | None = None,
) -> dict[str, Any]:
    """Build the model and sampler of this worker and :func:`fit` (resuming under Ray Train)."""
    torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)  # identical initial weights on every rank
    # unused parameters allowed: a Mask R-CNN batch without foreground RoIs leaves the mask
    # head without gradients, an RT-DETR batch without boxes its denoising class embedding
    detector = build_detector(model_cfg, job.num_classes, masks=job.masks, drop=drop)
    model = prepare_ddp(detector, find_unused_parameters=True)
    sampler = Sampler(
        samples if samples is not None else load_samples(job),
        train_cfg.images_per_step // world,
        train_cfg.seed,
        rank,
        world,
        train_cfg.hflip,
    )
    return fit(
        model,
        sampler,
        train_cfg,
        job,
        resume=load_resume_state(),
        reporter=reporter,
        extra_state=checkpoint_meta(job, model_cfg, drop),
        stop_after=stop_after,
    )
