"""Training the demo SAM on the class-agnostic ``blobs`` set (never the benchmark's classes).

Prompts are sampled from the ground-truth masks as SAM samples them: a point uniformly inside
an object, a jittered box, or a few points of one object; every prompt is decoded with the three
multimask tokens and only the best candidate is back-propagated
(:func:`weaksam.sam.losses.sam_loss`).

``train_loop_per_worker`` runs under Ray Train's ``TorchTrainer`` (DDP over gloo on CPU) or as
a plain function (tests); it reports a checkpoint every ``checkpoint_every`` steps and resumes
from the latest one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from weaksam.configlib import from_dict, to_dict
from weaksam.sam.losses import mask_iou, sam_loss
from weaksam.train.checkpoint import restore_training_state
from weaksam.train.distributed import prepare_ddp, unwrap, world_rank
from weaksam.train.reporting import load_resume_state, report
from weaksam.train.schedule import lr_factor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamTrainConfig:
    """Schedule and prompt mix of the demo-SAM training job.

    Attributes:
        steps: optimiser steps. images_per_step: images per worker per step.
        prompts_per_image: prompts sampled per image per step.
        p_point / p_box: probabilities of a single-point / box prompt (rest: 2–3 points).
        box_jitter: std of box-corner noise as a fraction of the box side.
        min_mask_area: objects smaller than this (pixels) are not prompted.
        lr / weight_decay / warmup_steps: AdamW with linear warm-up then cosine decay.
        checkpoint_every: steps between checkpoints (each one a ``ray.train.report``).
        val_images: fixed held-out blobs images for point mIoU.
        loss_size: side at which mask losses are computed (SAM uses the input size; a
            smaller side keeps CPU steps cheap; targets are area-averaged to soft masks).
        threads: torch threads per worker (1 is fastest on a shared, oversubscribed CPU).
        focal_weight / focal_alpha: SAM's 20:1 focal:dice ratio; ``alpha < 0`` disables the
            focal loss's class weighting (with RetinaNet's 0.25 the tiny from-scratch model
            collapsed to empty masks within a few hundred steps).
        log_every: steps between progress lines on rank 0 (reports happen at checkpoints).
    """

    steps: int = 6000
    images_per_step: int = 4
    prompts_per_image: int = 12
    p_point: float = 0.6
    p_box: float = 0.25
    box_jitter: float = 0.08
    min_mask_area: int = 30
    lr: float = 8e-4
    weight_decay: float = 0.05
    warmup_steps: int = 200
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    val_images: int = 24
    seed: int = 0
    threads: int = 1
    image_size: int = 256
    loss_size: int = 128
    focal_weight: float = 20.0
    focal_alpha: float = -1.0
    log_every: int = 50


@dataclass(frozen=True)
class PromptBatch:
    """Prompts of one image in the model's input frame.

    Attributes:
        point_coords: ``PxKx2`` float32 (x, y); rows padded with label -1.
        point_labels: ``PxK`` int (1 foreground, -1 padding).
        point_targets: ``PxHxW`` bool target masks of the point prompts.
        boxes: ``Bx4`` float32 XYXY box prompts; box_targets ``BxHxW``.
    """

    point_coords: npt.NDArray[np.float32]
    point_labels: npt.NDArray[np.int64]
    point_targets: npt.NDArray[np.bool_]
    boxes: npt.NDArray[np.float32]
    box_targets: npt.NDArray[np.bool_]


def sample_prompts(
    rng: np.random.Generator, masks: npt.NDArray[np.bool_], n: int, cfg: SamTrainConfig
) -> PromptBatch | None:
    """Sample ``n`` prompts from the ``KxHxW`` masks of one image (None if no usable mask)."""
    areas = masks.reshape(len(masks), -1).sum(1)
    usable = np.flatnonzero(areas >= cfg.min_mask_area)
    if usable.size == 0:
        return None
    h, w = masks.shape[1:]
    pts: list[npt.NDArray[np.float32]] = []
    pt_targets: list[int] = []
    boxes: list[npt.NDArray[np.float32]] = []
    box_targets: list[int] = []
    for _ in range(n):
        k = int(rng.choice(usable))
        ys, xs = np.nonzero(masks[k])
        u = rng.random()
        if u < cfg.p_box:
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            bw, bh = x2 - x1, y2 - y1
            noise = rng.normal(0, cfg.box_jitter, 4) * np.array([bw, bh, bw, bh])
            box = np.array([x1, y1, x2, y2], dtype=np.float32) + noise.astype(np.float32)
            box[0::2] = np.clip(box[0::2], 0, w)
            box[1::2] = np.clip(box[1::2], 0, h)
            boxes.append(box)
            box_targets.append(k)
        else:
            count = 1 if u < cfg.p_box + cfg.p_point else int(rng.integers(2, 4))
            pick = rng.integers(0, xs.size, size=count)
            # +0.5: the centre of the chosen pixel, as SAM's grid points are pixel centres
            pts.append(np.stack([xs[pick], ys[pick]], 1).astype(np.float32) + 0.5)
            pt_targets.append(k)
    kmax = max((len(p) for p in pts), default=1)
    coords = np.zeros((len(pts), kmax, 2), dtype=np.float32)
    labels = -np.ones((len(pts), kmax), dtype=np.int64)
    for i, p in enumerate(pts):
        coords[i, : len(p)] = p
        labels[i, : len(p)] = 1
    return PromptBatch(
        point_coords=coords,
        point_labels=labels,
        point_targets=masks[pt_targets] if pt_targets else np.zeros((0, h, w), bool),
        boxes=np.stack(boxes) if boxes else np.zeros((0, 4), np.float32),
        box_targets=masks[box_targets] if box_targets else np.zeros((0, h, w), bool),
    )


class SamTrainWrapper(nn.Module):
    """Runs SAM's encoder once per image and the decoder on that image's prompts.

    Wrapping the whole computation in one ``forward`` lets DDP synchronise every gradient.
    """

    def __init__(self, sam: nn.Module, loss_size: int | None = None) -> None:
        super().__init__()
        self.sam = sam
        self.loss_size = loss_size

    def forward(
        self, images: torch.Tensor, prompts: list[PromptBatch]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args: ``images`` Bx3xSxS uint8-range floats (not yet normalised).

        Returns: (logits ``Px3xLxL``, iou_pred ``Px3``, targets ``PxLxL`` float in [0, 1]) for
        all prompts, ``L = loss_size`` (default: the input side ``S``).
        """
        sam: Any = self.sam
        x = torch.stack([sam.preprocess(img) for img in images])
        emb = sam.image_encoder(x)
        pe = sam.prompt_encoder.get_dense_pe()
        side = self.loss_size or int(x.shape[-1])
        size = (side, side)
        out_logits, out_iou, out_t = [], [], []
        dev = x.device
        for i, pb in enumerate(prompts):
            calls: list[tuple[Any, Any, npt.NDArray[np.bool_]]] = []
            if len(pb.point_coords):
                pts = (
                    torch.as_tensor(pb.point_coords, device=dev),
                    torch.as_tensor(pb.point_labels, device=dev),
                )
                calls.append((pts, None, pb.point_targets))
            if len(pb.boxes):
                calls.append((None, torch.as_tensor(pb.boxes, device=dev), pb.box_targets))
            for points, boxes, targets in calls:
                sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
                low, iou = sam.mask_decoder(
                    image_embeddings=emb[i : i + 1],
                    image_pe=pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=True,
                )
                out_logits.append(F.interpolate(low, size, mode="bilinear", align_corners=False))
                out_iou.append(iou)
                t = torch.as_tensor(targets, device=dev, dtype=torch.float32)
                if t.shape[-2:] != size:
                    t = F.adaptive_avg_pool2d(t[:, None], size)[:, 0]
                out_t.append(t)
        return torch.cat(out_logits), torch.cat(out_iou), torch.cat(out_t)


def lr_schedule(cfg: SamTrainConfig) -> Callable[[int], float]:
    """The learning-rate multiplier of each 0-based step: linear warm-up from 0 (the first
    step at ``1 / warmup_steps``), then cosine decay to 5 % of the base rate."""
    return partial(
        lr_factor, total=cfg.steps, schedule="cosine", warmup=cfg.warmup_steps, warmup_offset=1
    )


def _render_batch(
    rng: np.random.Generator, cfg: SamTrainConfig
) -> tuple[torch.Tensor, list[PromptBatch]]:
    from weaksam.data.synth.blobs import render_blobs_image

    images: list[torch.Tensor] = []
    prompts: list[PromptBatch] = []
    while len(images) < cfg.images_per_step:
        image, masks = render_blobs_image(rng, cfg.image_size)
        pb = sample_prompts(rng, masks, cfg.prompts_per_image, cfg)
        if pb is None:
            continue
        images.append(torch.as_tensor(image).permute(2, 0, 1).float())
        prompts.append(pb)
    return torch.stack(images), prompts


@torch.inference_mode()
def evaluate_points(sam: nn.Module, cfg: SamTrainConfig, seed: int = 12345) -> dict[str, float]:
    """Point-prompt quality on fixed held-out blobs images.

    One random interior point per object; ``miou`` uses the candidate with the highest
    predicted IoU (what inference does), ``oracle_miou`` the best of the three.
    """
    from weaksam.data.synth.blobs import render_blobs_image

    rng = np.random.default_rng(seed)
    wrapper = SamTrainWrapper(sam)
    picked, oracle = [], []
    point_only = SamTrainConfig(**{**to_dict(cfg), "p_box": 0.0, "p_point": 1.0})
    for _ in range(cfg.val_images):
        image, masks = render_blobs_image(rng, cfg.image_size)
        pb = sample_prompts(rng, masks, max(1, len(masks)), point_only)
        if pb is None:
            continue
        img = torch.as_tensor(image).permute(2, 0, 1).float()[None]
        logits, iou_pred, targets = wrapper(img, [pb])
        p = logits.shape[0]
        ious = mask_iou(
            logits.reshape(p * 3, *logits.shape[-2:]),
            targets[:, None].expand(-1, 3, -1, -1).reshape(p * 3, *targets.shape[-2:]),
        ).view(p, 3)
        picked.append(ious[torch.arange(p), iou_pred.argmax(1)])
        oracle.append(ious.max(1).values)
    return {
        "val_miou": float(torch.cat(picked).mean()),
        "val_oracle_miou": float(torch.cat(oracle).mean()),
    }


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: ``config = {"train": SamTrainConfig dict, "sam": SamConfig dict}``."""
    from weaksam.sam.build import SamConfig, build_sam

    cfg = from_dict(config["train"], SamTrainConfig)
    sam_cfg = from_dict(config["sam"], SamConfig)
    torch.set_num_threads(cfg.threads)
    rank = world_rank()
    torch.manual_seed(cfg.seed)
    sam = build_sam(sam_cfg)
    model = prepare_ddp(SamTrainWrapper(sam, cfg.loss_size), find_unused_parameters=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=cfg.lr,
    )
    start = 0
    history: list[dict[str, float]] = []
    state = load_resume_state()
    if state is not None:
        start, history = restore_training_state(state, model, opt)
        log.info("resumed demo-SAM training at step %d", start)
    rng = np.random.default_rng([cfg.seed, rank, start])
    window: list[dict[str, float]] = []
    t0 = time.time()
    schedule = lr_schedule(cfg)
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = cfg.lr * schedule(step)
        images, prompts = _render_batch(rng, cfg)
        logits, iou_pred, targets = model(images, prompts)
        loss, parts = sam_loss(
            logits, iou_pred, targets, focal_weight=cfg.focal_weight, focal_alpha=cfg.focal_alpha
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        window.append({"loss": float(loss.detach()), **parts})
        done = step + 1
        if rank == 0 and done % cfg.log_every == 0:
            recent = window[-cfg.log_every :]
            log.info(
                "step %d/%d loss %.4f miou %.3f (%.2f s/step)",
                done,
                cfg.steps,
                float(np.mean([w["loss"] for w in recent])),
                float(np.mean([w["miou"] for w in recent])),
                (time.time() - t0) / len(window),
            )
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            metrics = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            metrics.update(step=done, seconds_per_step=(time.time() - t0) / len(window))
            unwrap(model).eval()
            metrics.update(evaluate_points(unwrap(model).sam, cfg))  # type: ignore[arg-type]
            unwrap(model).train()
            history.append(metrics)
            if rank == 0:
                log.info("step %d %s", done, {k: round(v, 4) for k, v in metrics.items()})
            ckpt = {
                "model": unwrap(model).state_dict(),
                "optimizer": opt.state_dict(),
                "step": done,
                "history": history,
                "train_config": to_dict(cfg),
                "sam_config": to_dict(sam_cfg),
            }
            report(metrics, ckpt)
            window, t0 = [], time.time()
