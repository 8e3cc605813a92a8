"""Training the WSOD detector: one loop that runs under Ray Train or as plain Python.

:func:`train_loop_per_worker` is the ``TorchTrainer`` entry (DDP over gloo on CPU, nccl on
GPU): it rebuilds the configs from the dict it is given, reads this worker's shard of the
training images (image-level labels only), and calls :func:`fit`. Every
``checkpoint_every`` steps (and at the end) rank 0 saves ``{model, optimizer, step, history,
...}`` through :func:`weaksam.train.reporting.report`; a rerun of the same Ray Train run
resumes from the latest checkpoint and repeats the uninterrupted run exactly, since each
step's sampling, augmentation and dropout are seeded by ``(seed, rank, step)``.

Optimiser (the method's): Adam (or SGD with momentum 0.9) with L2 weight decay on weights,
biases at ``bias_lr_factor`` x the rate without decay, normalisation parameters without
decay; linear warm-up from ``warmup_factor`` x the rate, then x ``gamma`` at each of
``lr_steps``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from weaksam.configlib import from_dict, to_dict
from weaksam.train.checkpoint import restore_training_state
from weaksam.train.distributed import (
    average_gradients,
    no_grad_sync,
    prepare_ddp,
    unwrap,
    world_rank,
    world_size,
)
from weaksam.train.reporting import load_resume_state, report
from weaksam.train.schedule import step_decay_schedule
from weaksam.wsod.cdb import ConcreteDropBlock
from weaksam.wsod.config import WSODConfig, WSODTrainConfig
from weaksam.wsod.data import TrainSampler, join_proposals, read_weak_manifest
from weaksam.wsod.model import WSODModel, build_wsod_model
from weaksam.wsod.objective import ImageTargets, batch_loss

log = logging.getLogger(__name__)

LOSS_KEYS = ("loss", "mil", "cls", "reg")
Reporter = Callable[[dict[str, Any], dict[str, Any] | None], None]


@dataclass(frozen=True)
class TrainJob:
    """What one training run needs besides the ``wsod`` config (all JSON-able).

    Attributes:
        method: ``wsddn``, ``oicr``, ``mist`` or ``supervised``.
        num_classes: ``C``. class_names: for the checkpoint.
        manifest: manifest table path. proposals: proposals table path, or ``""`` for the
            plumbing window grid. split: the training split.
    """

    method: str
    num_classes: int
    class_names: tuple[str, ...]
    manifest: str
    proposals: str
    split: str


def build_optimizer(model: nn.Module, cfg: WSODTrainConfig) -> torch.optim.Optimizer:
    """Three groups: weights (decay), biases (``bias_lr_factor`` x lr, no decay), other 1-D
    parameters such as BatchNorm scales (no decay); with ``refine_lr_factor`` the refinement
    layers' weights and biases in two more groups at that factor. Frozen parameters and the
    Concrete DropBlock's (:func:`build_cdb_optimizer`) are left out."""
    weights, biases, norms = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or _is_cdb(name):
            continue
        if name.endswith(".bias"):
            biases.append(p)
        elif p.ndim <= 1:
            norms.append(p)
        else:
            weights.append(p)
    groups: list[dict[str, Any]] = [
        {"params": weights, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": biases, "weight_decay": 0.0, "lr_scale": cfg.bias_lr_factor},
        {"params": norms, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if cfg.refine_lr_factor != 1.0:  # WSOD2's OICR: refine* layers at 10x, in groups of their own
        refine = {id(p) for n, p in model.named_parameters() if ".refine." in f".{n}"}
        for g in list(groups):
            mine = [p for p in g["params"] if id(p) in refine]
            if mine:
                g["params"] = [p for p in g["params"] if id(p) not in refine]
                scale = g["lr_scale"] * cfg.refine_lr_factor
                groups.append({**g, "params": mine, "lr_scale": scale})
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
    return torch.optim.Adam(groups, lr=cfg.lr)


def _is_cdb(name: str) -> bool:
    return name.startswith(("cdb.", "module.cdb."))


def build_cdb_optimizer(cdb: ConcreteDropBlock, cfg: WSODTrainConfig) -> torch.optim.Optimizer:
    """The Concrete DropBlock's own Adam (``cdb_lr``, ``cdb_weight_decay``, constant rate)."""
    return torch.optim.Adam(cdb.parameters(), lr=cfg.cdb_lr, weight_decay=cfg.cdb_weight_decay)


def _targets(
    job: TrainJob,
    labels: list[torch.Tensor],
    ids: list[str],
    gt: dict[str, tuple[torch.Tensor, torch.Tensor]] | None,
    device: torch.device,
) -> list[ImageTargets]:
    if gt is None:
        return [ImageTargets(lab) for lab in labels]
    return [
        ImageTargets(lab, gt[i][0].to(device), gt[i][1].to(device))
        for lab, i in zip(labels, ids, strict=True)
    ]


def fit(
    model: nn.Module,
    sampler: TrainSampler,
    cfg: WSODConfig,
    job: TrainJob,
    *,
    resume: dict[str, Any] | None = None,
    reporter: Reporter = report,
    gt: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` (maybe DDP-wrapped) from ``resume`` (a checkpoint state) or scratch.

    Args:
        gt: ``image_id → (gt boxes, gt classes)``, only for the ``supervised`` upper bound.
        stop_after: stop after this step (tests: simulate a killed run).

    Returns the last checkpoint state (``model``, ``optimizer``, ``step``, ``history``, ...).
    A state's tensors are the live parameters: ``report`` saves them at once; a ``reporter``
    that keeps states in memory must copy them.
    """
    tc = cfg.train
    opt = build_optimizer(model, tc)
    core = unwrap(model)
    if not isinstance(core, WSODModel):
        raise TypeError(f"fit trains a WSODModel (maybe DDP-wrapped), not {type(core).__name__}")
    cdb = core.cdb
    cdb_opt = build_cdb_optimizer(cdb, tc) if cdb is not None else None
    frozen = core.backbone.frozen  # a frozen backbone's features do not change with a step
    schedule = step_decay_schedule(tc)
    start = 0
    history: list[dict[str, Any]] = []
    if resume is not None:
        start, history = restore_training_state(resume, model, opt)
        if cdb_opt is not None and "cdb_optimizer" in resume:
            cdb_opt.load_state_dict(resume["cdb_optimizer"])
        log.info("resuming %s training at step %d", job.method, start)
    rank = world_rank()
    window: dict[str, list[float]] = {k: [] for k in LOSS_KEYS}
    state: dict[str, Any] = {}
    t0 = time.time()
    device = next(unwrap(model).parameters()).device
    model.train()
    for step in range(start, tc.steps):
        torch.manual_seed(tc.seed * 1_000_003 + rank * 10_007 + step)  # dropout
        for g in opt.param_groups:
            g["lr"] = tc.lr * g["lr_scale"] * schedule(step)
        batch = sampler.batch(step).to(device)
        view = (batch.images, batch.proposals, batch.scale, cfg.data.max_side, batch.flips)
        pooled = None
        if cdb is not None and frozen:  # the adversarial pass below sees the same features
            pooled = core.pool_rois(*view)
        out = model(*view, pooled=pooled)
        targets = _targets(job, batch.labels, batch.image_ids, gt, device)
        terms = batch_loss(job.method, out, batch.proposals, targets, tc)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if tc.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        for k in LOSS_KEYS:
            window[k].append(float(terms[k].detach()))
        if cdb is not None and cdb_opt is not None:
            # the adversary: a second pass, the CDB block alone steps on -weight * L. Only the
            # CDB's gradients are used, so the pass starts at the pooled features (those of
            # the first pass when the backbone is frozen, else recomputed without a graph) and
            # only the CDB's gradients are averaged over the workers
            window.setdefault("cdb_dropped", []).append(cdb.last_dropped)
            if pooled is None:
                with torch.no_grad():
                    pooled = core.pool_rois(*view)
            cdb_opt.zero_grad(set_to_none=True)
            with no_grad_sync(model):
                out = model(*view, pooled=pooled)
                adv = batch_loss(job.method, out, batch.proposals, targets, tc)["loss"]
                (-tc.cdb_weight * adv).backward()
            average_gradients(cdb.parameters())
            cdb_opt.step()
            window.setdefault("cdb_loss", []).append(float(adv.detach()))
        done = step + 1
        if done % tc.log_every == 0 or done == tc.steps:
            point = {k: float(np.mean(v)) for k, v in window.items() if v}
            point.update(step=done, lr=tc.lr * schedule(step))
            point["seconds_per_step"] = (time.time() - t0) / len(window["loss"])
            history.append(point)
            window, t0 = {k: [] for k in LOSS_KEYS}, time.time()
            if rank == 0:
                log.info("%s step %d loss %.4f", job.method, done, point["loss"])
        if done % tc.checkpoint_every == 0 or done == tc.steps:
            state = {
                "model": unwrap(model).state_dict(),
                "optimizer": opt.state_dict(),
                "step": done,
                "history": list(history),
                "resumed_from": start,  # the step this process started at (0: from scratch)
                "method": job.method,
                "num_classes": job.num_classes,
                "class_names": list(job.class_names),
                "model_config": to_dict(cfg.model),
                "data": dict(sampler.stats),  # the training split's usable images
            }
            if cdb is not None and cdb_opt is not None:
                state["cdb_optimizer"] = cdb_opt.state_dict()
            last = history[-1] if history else {}
            reporter({"step": done, **{k: last.get(k, 0.0) for k in LOSS_KEYS}}, state)
        if stop_after is not None and done >= stop_after:
            break
    return state


def build_sampler(cfg: WSODConfig, job: TrainJob, rank: int = 0, world: int = 1) -> TrainSampler:
    """The training images of ``job.split`` (labels only) as this worker's sampler; the
    worker holds the proposals of its own share of the images only."""
    rows = read_weak_manifest(job.manifest, job.split)
    data = join_proposals(
        rows, job.proposals or None, cfg.data, require_labels=True, shard=(rank, world)
    )
    if data.skipped and rank == 0:
        log.info("training skips %d images: %s", len(data.skipped), data.skip_counts())
    sampler = TrainSampler(
        data.images,
        cfg.data,
        cfg.train.images_per_step,
        cfg.train.seed,
        rank,
        world,
        sharded=True,
    )
    sampler.stats = {
        "images": len(data.proposal_counts),
        "proposals_per_image": data.proposals_per_image(),
        "skipped": data.skip_counts(),
    }
    return sampler


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: ``config = {"wsod": WSODConfig dict, "job": TrainJob dict}``."""
    run_worker(config)


def run_worker(config: dict[str, Any], reporter: Reporter = report) -> dict[str, Any]:
    """One worker's training (see :func:`train_loop_per_worker`), reporting through
    ``reporter``; resumes from the run's latest checkpoint inside Ray Train."""
    cfg = from_dict(config["wsod"], WSODConfig)
    job = TrainJob(**{**config["job"], "class_names": tuple(config["job"]["class_names"])})
    torch.set_num_threads(cfg.train.threads)
    rank, world = world_rank(), world_size()
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = prepare_ddp(build_wsod_model(cfg.model, job.num_classes, job.method))
    sampler = build_sampler(cfg, job, rank, world)
    gt = None
    if job.method == "supervised":
        from weaksam.wsod.supervised import load_gt_for_upper_bound

        gt = load_gt_for_upper_bound(job.manifest, job.split)
    return fit(model, sampler, cfg, job, resume=load_resume_state(), reporter=reporter, gt=gt)
