"""Training the multi-label CAM classifier on image-level labels (BCE), under Ray Train or not.

:func:`train_loop_per_worker` runs inside Ray Train's ``TorchTrainer`` (DDP: gloo on CPU, nccl
on GPU) or as a plain function. Each worker loads the training split's images once (label
columns only, never ``gt_*``), holds out ``val_fraction`` of them for validation mAP, and
takes its ``1/world`` share of a per-epoch permutation. Rank 0 logs every epoch; a checkpoint
(:func:`weaksam.train.reporting.report`) is written every ``checkpoint_every`` epochs and at
the end; a rerun resumes from the latest one. The trained weights go to ``classifier.pt``
with :func:`export_classifier`; :func:`load_classifier` rebuilds the model from that file.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from weaksam.cam.config import ClassifierConfig
from weaksam.cam.data import (
    ImageSet,
    LazyImages,
    augment_batch,
    holdout_split,
    load_image_set,
    normalize,
    read_label_rows,
)
from weaksam.cam.metrics import mean_ap, multilabel_ap
from weaksam.cam.models import CAMClassifier, build_classifier
from weaksam.configlib import from_dict, to_dict
from weaksam.train.checkpoint import atomic_torch_save, restore_training_state, torch_load
from weaksam.train.distributed import prepare_ddp, unwrap, world_rank, world_size
from weaksam.train.reporting import load_resume_state, report
from weaksam.train.schedule import lr_factor

log = logging.getLogger(__name__)


def lr_schedule(cfg: ClassifierConfig) -> Callable[[float], float]:
    """The learning-rate multiplier at an epoch progress (``epoch + step / steps_per_epoch``):
    linear warm-up over ``warmup_epochs`` (from ``1e-3 / warmup_epochs``, never 0), then
    cosine decay to 5 % at ``epochs``."""
    return partial(
        lr_factor,
        total=cfg.epochs,
        schedule="cosine",
        warmup=cfg.warmup_epochs,
        warmup_offset=1e-3,
    )


def param_groups(model: CAMClassifier, cfg: ClassifierConfig) -> list[dict[str, Any]]:
    """AdamW groups: head and backbone (at ``lr`` and ``lr * backbone_lr``), each split into
    weights with ``weight_decay`` and biases / norm parameters without. Frozen parameters and
    empty groups are left out; every group carries its ``base_lr`` for the schedule."""
    groups: list[dict[str, Any]] = []
    for part, lr in ((model.head, cfg.lr), (model.backbone, cfg.lr * cfg.backbone_lr)):
        params = [p for p in part.parameters() if p.requires_grad]
        for decay, sel in ((cfg.weight_decay, [p for p in params if p.ndim >= 2]),
                           (0.0, [p for p in params if p.ndim < 2])):  # fmt: skip
            if sel and lr > 0:
                groups.append({"params": sel, "weight_decay": decay, "lr": lr, "base_lr": lr})
    return groups


@torch.inference_mode()
def predict_probs(
    model: nn.Module, images: torch.Tensor | LazyImages, input_size: int, batch_size: int = 32
) -> torch.Tensor:
    """Class probabilities ``NxC`` of uint8 ``Nx3xSxS`` images at ``input_size`` (one pass)."""
    model.eval()
    out = []
    device = next(model.parameters()).device
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float()
        if x.shape[-1] != input_size or x.shape[-2] != input_size:
            x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True)
        out.append(torch.sigmoid(model(normalize(x))).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def validation_map(model: nn.Module, val: ImageSet, input_size: int) -> float:
    """Mean AP of ``model`` on a held-out set (NaN when empty)."""
    if len(val.ids) == 0:
        return float("nan")
    probs = predict_probs(model, val.images, input_size)
    return mean_ap(multilabel_ap(probs.numpy(), val.targets.numpy()))


def _device(cfg: ClassifierConfig) -> torch.device:
    try:
        import ray.train.torch

        return ray.train.torch.get_device()
    except Exception:  # plain Python
        wanted = cfg.use_gpu != "false"
        return torch.device("cuda" if torch.cuda.is_available() and wanted else "cpu")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: :func:`train_classifier` (its return value is not needed there)."""
    train_classifier(config)


def train_classifier(config: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) the classifier; return the final checkpoint state.

    ``config``: ``classifier`` (:class:`ClassifierConfig` dict), ``manifest`` (path),
    ``split`` (the training split), ``num_classes``. The state holds ``model``, ``optimizer``,
    ``epoch``, ``history``, ``classifier_config`` and ``num_classes``.
    """
    cfg = from_dict(config["classifier"], ClassifierConfig)
    num_classes = int(config["num_classes"])
    torch.set_num_threads(cfg.threads)
    rank = world_rank()
    world = world_size()
    torch.manual_seed(cfg.seed)
    rows = read_label_rows(config["manifest"], config["split"])
    if not rows:
        raise ValueError(f"no usable {config['split']!r} images in {config['manifest']}")
    train_idx, val_idx = holdout_split([r["image_id"] for r in rows], cfg.val_fraction, cfg.seed)
    cache_side = round(cfg.input_size * cfg.scale_jitter[1])
    keep = cfg.cache_mb if cfg.cache_images else 0
    train = load_image_set([rows[i] for i in train_idx], cache_side, num_classes, keep)
    val = load_image_set([rows[i] for i in val_idx], cfg.input_size, num_classes, keep)
    device = _device(cfg)
    net = build_classifier(cfg, num_classes).to(device)
    stride = net.stride
    frozen = cfg.backbone_lr == 0
    if frozen:  # before DDP wraps the model: DDP only syncs parameters that need gradients
        net.backbone.requires_grad_(False)
    model = prepare_ddp(net)
    opt = torch.optim.AdamW(param_groups(net, cfg), lr=cfg.lr)
    start = 0
    history: list[dict[str, float]] = []
    ckpt: dict[str, Any] = {}
    state = load_resume_state()
    if state is not None:
        start, history = restore_training_state(state, model, opt, counter="epoch")
        if rank == 0:
            log.info("resumed classifier training after epoch %d", start)
    n = len(train.ids)
    per_worker = max(1, n // world)
    steps_per_epoch = max(1, math.ceil(per_worker / cfg.batch_size))
    if rank == 0:
        log.info(
            "classifier %s: %d train / %d val images, %d workers, %d steps/epoch",
            cfg.backbone, n, len(val.ids), world, steps_per_epoch,
        )  # fmt: skip
    schedule = lr_schedule(cfg)
    for epoch in range(start, cfg.epochs):
        model.train()
        if frozen:
            net.backbone.eval()  # frozen batch-norm statistics too
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        mine = perm[rank::world][:per_worker]  # same count on every rank: DDP needs equal steps
        aug_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 1000 + rank + 1)
        t0, losses = time.time(), []
        for i in range(steps_per_epoch):
            idx = mine[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * schedule(epoch + i / steps_per_epoch)
            x = augment_batch(train.images[idx], cfg, stride, aug_gen).to(device)
            y = train.targets[idx].to(device)
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        done = epoch + 1
        metrics = {
            "epoch": done,
            "loss": float(np.mean(losses)),
            "val_map": validation_map(unwrap(model), val, cfg.input_size),
            "seconds": time.time() - t0,  # the epoch's training steps (not validation)
        }
        history.append(metrics)
        if rank == 0:
            log.info(
                "epoch %d/%d loss %.4f val mAP %.4f (%.1f s)",
                done, cfg.epochs, metrics["loss"], metrics["val_map"], metrics["seconds"],
            )  # fmt: skip
        if done % cfg.checkpoint_every == 0 or done == cfg.epochs:
            ckpt = _state(model, opt, done, history, cfg, num_classes, start)
            report(metrics, ckpt)
    return ckpt or _state(model, opt, cfg.epochs, history, cfg, num_classes, start)


def _state(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    epoch: int,
    history: list[dict[str, float]],
    cfg: ClassifierConfig,
    num_classes: int,
    resumed_from: int = 0,
) -> dict[str, Any]:
    return {
        "model": unwrap(model).state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "resumed_from": resumed_from,  # the epoch this process started after (0: from scratch)
        "history": history,
        "classifier_config": to_dict(cfg),
        "num_classes": num_classes,
    }


CHECKPOINT_FILE = "state.pt"


def export_classifier(state: dict[str, Any], path: str, class_names: list[str]) -> dict[str, Any]:
    """Write the inference checkpoint ``{model, config, num_classes, class_names, history}``.

    ``state`` is a training checkpoint (as reported by :func:`train_loop_per_worker`).
    The file loads with ``torch.load(weights_only=True)``. Returns what was written.
    """
    out = {
        "model": state["model"],
        "config": state["classifier_config"],
        "num_classes": int(state["num_classes"]),
        "class_names": list(class_names),
        "epoch": int(state["epoch"]),
        "history": state.get("history", []),
    }
    atomic_torch_save(out, path)
    return out


def load_classifier(
    path: str, device: str | torch.device = "cpu"
) -> tuple[CAMClassifier, ClassifierConfig, list[str]]:
    """The eval-mode classifier, its config and class names from :func:`export_classifier`'s
    file (``weights_only=True``, strict keys). The config's ``weights`` path is not reloaded."""
    blob = torch_load(path)  # a local path, file:// or s3://
    cfg = from_dict(blob["config"], ClassifierConfig)
    model = build_classifier(from_dict({**blob["config"], "weights": ""}, ClassifierConfig),
                             int(blob["num_classes"]))  # fmt: skip
    model.load_state_dict(blob["model"], strict=True)
    return model.to(device).eval(), cfg, list(blob["class_names"])
