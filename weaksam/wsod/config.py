"""The WSOD stage's configuration (a light module: no torch import).

Defaults are the method's real-data settings (VGG16 stride 8, 4096-unit fc layers, Adam 1e-5,
the six training scales and the 14 test passes; ``docs/method.md`` section 3); the CPU
configs (``configs/demo.yaml``, ``tiny.yaml``, ``bench.yaml``) override them with a small
backbone, 256-px images and short schedules.

Methods (``WSODConfig.method`` and ``compare``):

========== =========================================================================
wsddn      WSDDN alone: MIL loss only; test score ``phi``
oicr       WSDDN + K refinement branches, WSOD2's OICR pseudo boxes, no regression
mist       WSDDN + K branches, MIST pseudo boxes, class-specific box regression
supervised Fast R-CNN on the same proposals with ground-truth boxes (upper bound only)
========== =========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from weaksam.configlib import (
    ConfigError,
    FieldError,
    check_at_least,
    check_choice,
    check_fraction,
    check_gpu_policy,
    check_nonempty,
    check_positive,
    check_range,
    from_dict,
    parse_override,
    to_dict,
)
from weaksam.wsod.losses import MIL_REDUCTIONS

METHODS = ("wsddn", "oicr", "mist", "supervised")
WEAK_METHODS = ("wsddn", "oicr", "mist")
PROPOSAL_SOURCES = ("sam", "grid")
CAP_ORDERS = ("stored", "score")
ROI_OPS = ("pool", "align")
OPTIMIZERS = ("adam", "sgd")
# The names of weaksam.wsod.backbones.BACKBONES (a torch module; tests keep the two in step).
BACKBONE_NAMES = ("vgg16", "plainconv", "resnet18", "small", "sam_demo")


def branch_count(method: str, refine_branches: int) -> int:
    """Refinement branches of ``method``'s detector: none for ``wsddn``, one for
    ``supervised`` (its Fast R-CNN head), else ``refine_branches``."""
    return {"wsddn": 0, "supervised": 1}.get(method, refine_branches)


@dataclass(frozen=True)
class WSODModelConfig:
    """Backbone and RoI head.

    Attributes:
        backbone: a name of :data:`weaksam.wsod.backbones.BACKBONES` (``vgg16``: the method's
            stride-8 VGG16; ``resnet18``: stride 8 up to layer3; ``small``: a plain-conv
            stride-8 net for CPUs; ``sam_demo``: the demo SAM's image encoder, stride 16).
        weights: optional local ImageNet weights file (torchvision state dict) for the
            backbone (and fc6/fc7 for ``vgg16`` when ``hidden`` is 4096); for ``sam_demo`` a
            SAM checkpoint (``builtin`` = the committed demo SAM); ``""`` = random init.
        freeze_backbone: train the RoI head and heads only (the backbone in eval mode).
        width: channel multiplier of the ``small`` backbone (ignored by the others).
        roi_op: ``pool`` (RoIPool, the method's) or ``align`` (RoIAlign, sampling ratio 2).
        roi_size: pooled side (7).
        hidden: units of fc6 and fc7 (4096 in the method).
        dropout: after fc6 and fc7.
        refine_branches: K refinement branches for ``oicr``/``mist`` (3).
        mil_background: WSDDN heads with ``C + 1`` columns, the background at 0 with image
            label 0 (wetectron's ``MISTPredictor``, method §3a); false: ``C`` columns
            (WSOD2's OICR and this project's default so far).
        head_init_std: N(0, std) initialisation of the output layers (wetectron 0.001,
            WSOD2's OICR 0.01).
        cdb: Concrete DropBlock on the pooled RoI features, ``mist`` only
            (:mod:`weaksam.wsod.cdb`; part of MIST in the method, off in the CPU configs).
        cdb_drop_prob / cdb_block_size / cdb_temperature: its budget (0.3), block side (3)
            and Concrete temperature (0.01).
    """

    backbone: str = "vgg16"
    weights: str = ""
    freeze_backbone: bool = False
    width: int = 32
    roi_op: str = "pool"
    roi_size: int = 7
    hidden: int = 4096
    dropout: float = 0.5
    refine_branches: int = 3
    mil_background: bool = False
    head_init_std: float = 0.001
    cdb: bool = False
    cdb_drop_prob: float = 0.3
    cdb_block_size: int = 3
    cdb_temperature: float = 0.01

    def __post_init__(self) -> None:
        check_choice(self, "backbone", BACKBONE_NAMES, "WSOD backbone")
        check_range(self, 0.0, 1.0, "head_init_std", low_open=True)
        check_range(self, 0.0, 1.0, "cdb_drop_prob")
        check_at_least(self, 1, "cdb_block_size")
        check_range(self, 0.0, 10.0, "cdb_temperature", low_open=True)
        check_choice(self, "roi_op", ROI_OPS)
        check_at_least(self, 1, "width", "roi_size", "hidden")
        check_at_least(self, 1, "refine_branches")  # method: wsddn for none
        check_range(self, 0.0, 1.0, "dropout", high_open=True)


@dataclass(frozen=True)
class WSODDataConfig:
    """Proposal filtering and training augmentation.

    Attributes:
        min_size: proposals narrower or shorter than ``min_size * max(H, W) / min_size_ref``
            pixels (original image) are dropped (the method: 20 px at VOC's ~500 px).
        min_size_ref: the image side at which ``min_size`` and ``dedup_grid`` apply.
        dedup_grid: 0 drops exact duplicate proposals; ``g > 0`` also those equal after
            ``round(box / g')``, ``g' = g * max(H, W) / min_size_ref`` (WSOD2's OICR: 8 px on
            VOC, its ``LoadProposals`` hash).
        max_proposals: keep at most this many per image after filtering (0 = all, the
            method's setting).
        cap_order: which to keep under the cap: ``stored`` (first N in the table's order) or
            ``score`` (highest SAM predicted IoU first; stored order breaks ties).
        train_scales: shorter side of the training image, one drawn per step.
        max_side: the longer side is capped at this (scale reduced to fit).
        flip: random horizontal flips (p = 0.5) in training.
        color_jitter: photometric jitter in training: brightness and contrast factors drawn
            in ``[1 - j, 1 + j]`` per image (0 = off; the method's MIST uses PCA lighting).
        channel_shuffle: random RGB channel order per training image (for data whose classes
            do not depend on colour, such as ``shapes``).
        cache_images / cache_mb: keep decoded training images in each worker's memory, at
            most ``cache_mb`` MiB (least recently used out;
            :class:`weaksam.train.cache.ImageCache`).
            Off by default: memory then does not depend on the dataset.
    """

    min_size: float = 20.0
    min_size_ref: float = 500.0
    dedup_grid: float = 0.0
    max_proposals: int = 0
    cap_order: str = "stored"
    train_scales: tuple[int, ...] = (480, 576, 688, 864, 1000, 1200)
    max_side: int = 2000
    flip: bool = True
    color_jitter: float = 0.0
    channel_shuffle: bool = False
    cache_images: bool = False
    cache_mb: float = 2048.0

    def __post_init__(self) -> None:
        check_choice(self, "cap_order", CAP_ORDERS)
        check_at_least(self, 0, "cache_mb")
        check_nonempty(self, "train_scales")
        check_at_least(self, 1, "train_scales", "max_side")
        check_at_least(self, 0, "min_size", "max_proposals", "dedup_grid")  # 0: keep all
        check_positive(self, "min_size_ref")
        check_fraction(self, "color_jitter")  # factors in [1 - j, 1 + j] stay >= 0


@dataclass(frozen=True)
class WSODTrainConfig:
    """Optimisation and pseudo-labelling.

    Attributes:
        steps: optimiser steps. images_per_step: images per worker per step.
        optimizer: ``adam`` (the method's) or ``sgd`` (momentum 0.9).
        lr / weight_decay: base rate and L2 decay; biases get ``bias_lr_factor`` x the rate
            and no decay (the method: x2, 0).
        warmup_steps / warmup_factor: linear warm-up from ``warmup_factor`` x the rate.
        lr_steps / gamma: step decay (multiply by ``gamma`` at each step in ``lr_steps``).
        refine_lr_factor: learning-rate factor of the refinement layers (WSOD2's OICR: 10).
        mil_reduction: ``mean`` over the image-score columns (wetectron's MIST) or ``sum``
            (WSOD2's OICR) of the MIL BCE (:func:`weaksam.wsod.losses.mil_loss`).
        cdb_lr / cdb_weight_decay / cdb_weight: the Concrete DropBlock's own Adam (1e-5,
            5e-4, constant rate) and the weight of its adversarial loss ``-weight * L``.
        branch_weights: loss weight per refinement branch; ``()`` = the method's (MIST 3, 1,
            1, ...; OICR all 1).
        oicr_ratio / oicr_nms: WSOD2's OICR rule (``p >= ratio * max p``, class-agnostic NMS).
        mist_top_ratio / mist_iou: MIST's rule (top 15 %, IoU < 0.2 with higher-ranked).
        fg_iou: a RoI is foreground for its best pseudo box at IoU ``>=`` this.
        supervised_rois / supervised_fg_fraction: Fast R-CNN's RoI sample per image for the
            ``supervised`` upper bound (128, 25 % foreground at most).
        grad_clip: max gradient norm (0 = off).
        checkpoint_every: steps between checkpoints (each one a ``ray.train.report``, ~1.5 s).
        log_every: steps between loss-curve points (no Ray call).
        num_workers / cpus_per_worker / threads: Ray Train workers (DDP), their CPUs and
            torch threads.
        use_gpu: ``auto``, ``true`` or ``false`` (:mod:`weaksam.train.placement`).
        max_failures: Ray Train restarts after a lost worker or node, from the last
            checkpoint.
        seed: sampling, augmentation and dropout derive from (seed, rank, step), so a resumed
            run repeats the uninterrupted one.
    """

    steps: int = 30000
    images_per_step: int = 2
    optimizer: str = "adam"
    lr: float = 1e-5
    weight_decay: float = 5e-4
    bias_lr_factor: float = 2.0
    refine_lr_factor: float = 1.0
    mil_reduction: str = "mean"
    cdb_lr: float = 1e-5
    cdb_weight_decay: float = 5e-4
    cdb_weight: float = 0.01
    warmup_steps: int = 200
    warmup_factor: float = 1.0 / 3
    lr_steps: tuple[int, ...] = (20000, 26700)
    gamma: float = 0.1
    branch_weights: tuple[float, ...] = ()
    oicr_ratio: float = 0.9
    oicr_nms: float = 0.5
    mist_top_ratio: float = 0.15
    mist_iou: float = 0.2
    fg_iou: float = 0.5
    supervised_rois: int = 128
    supervised_fg_fraction: float = 0.25
    grad_clip: float = 0.0
    checkpoint_every: int = 2000
    log_every: int = 20
    num_workers: int = 4
    cpus_per_worker: float = 1.0
    threads: int = 1
    use_gpu: str = "auto"
    max_failures: int = 2
    seed: int = 42

    def __post_init__(self) -> None:
        check_choice(self, "optimizer", OPTIMIZERS)
        check_choice(self, "mil_reduction", MIL_REDUCTIONS, "MIL reduction")
        check_at_least(
            self,
            1,
            "steps",
            "images_per_step",
            "checkpoint_every",
            "log_every",
            "num_workers",
            "threads",
            "supervised_rois",
        )
        check_positive(self, "lr", "gamma")
        check_at_least(self, 0, "weight_decay", "bias_lr_factor", "warmup_steps", "lr_steps")
        check_at_least(self, 0, "branch_weights", "grad_clip", "cpus_per_worker", "max_failures")
        check_gpu_policy(self, "use_gpu")
        check_fraction(self, "warmup_factor", "oicr_ratio", "oicr_nms", "mist_top_ratio")
        check_fraction(self, "mist_iou", "fg_iou", "supervised_fg_fraction")


@dataclass(frozen=True)
class WSODTestConfig:
    """Inference: test-time augmentation, post-processing and the Ray Data pool.

    Attributes:
        scales: shorter sides of the test passes. flip: also run each scale flipped.
            Scores and boxes are averaged per RoI over all passes (the method: 7 x 2 = 14).
        nms_iou / score_thresh / max_detections: per-class NMS, keep scores ``> thresh``,
            top detections per image.
        splits: manifest splits to run on (``()`` = every split of ``data.splits``).
        batch_size: images per Ray Data batch. num_actors / max_actors: the predictor pool's
            minimum (and starting) and maximum size (0 = grow with the cluster on GPUs, fixed
            on CPU; :func:`weaksam.train.placement.pool_sizes`). cpus_per_actor: CPUs
            reserved per actor. use_gpu: one GPU per actor (``auto``, ``true`` or ``false``,
            :func:`weaksam.train.placement.decide_actor_gpus`).
    """

    scales: tuple[int, ...] = (480, 576, 688, 800, 864, 1000, 1200)
    flip: bool = True
    nms_iou: float = 0.3
    score_thresh: float = 0.0
    max_detections: int = 100
    splits: tuple[str, ...] = ()
    batch_size: int = 8
    num_actors: int = 1
    max_actors: int = 0
    cpus_per_actor: float = 1.0
    use_gpu: str = "auto"

    def __post_init__(self) -> None:
        check_gpu_policy(self, "use_gpu")
        check_nonempty(self, "scales")
        check_at_least(self, 1, "scales", "max_detections", "batch_size", "num_actors")
        check_fraction(self, "nms_iou", "score_thresh")
        check_at_least(self, 0, "cpus_per_actor", "max_actors")


@dataclass(frozen=True)
class WSODConfig:
    """The ``wsod`` section.

    Attributes:
        method: the detector whose detections feed PGT: ``mist``, ``oicr`` or ``wsddn``.
        compare: more methods trained and evaluated for the comparison table (``bench``),
            e.g. ``[wsddn, oicr, supervised]``; ``supervised`` is the ground-truth upper bound.
        proposals: ``sam`` reads ``<run>/proposals`` (the proposals stage); ``grid`` uses a
            fixed multi-scale window grid, for plumbing only (no learning signal about
            objects, no ground truth).
        method_overrides: settings of one method only, ``"<method>:<key.path>=<value>"``
            (``key.path`` inside this section), so that each method of a comparison runs as
            published, e.g. WSOD2's OICR: ``oicr:train.mil_reduction=sum``,
            ``oicr:train.refine_lr_factor=10``, ``oicr:model.head_init_std=0.01``,
            ``oicr:test.flip=false`` (:meth:`for_method`).
    """

    method: str = "mist"
    compare: tuple[str, ...] = ()
    proposals: str = "sam"
    model: WSODModelConfig = field(default_factory=WSODModelConfig)
    data: WSODDataConfig = field(default_factory=WSODDataConfig)
    train: WSODTrainConfig = field(default_factory=WSODTrainConfig)
    test: WSODTestConfig = field(default_factory=WSODTestConfig)
    method_overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for text in self.method_overrides:
            method, _, rest = text.partition(":")
            if method not in METHODS or not rest:
                raise FieldError(
                    "method_overrides",
                    "{method_overrides} items must look like <method>:<key.path>=<value> with "
                    f"a method of {list(METHODS)}, got {{value}}",
                    text,
                )
        for method in {t.partition(":")[0] for t in self.method_overrides}:
            try:
                self.for_method(method)
            except (ConfigError, ValueError) as exc:
                why = str(exc).replace("{", "{{").replace("}", "}}")
                raise FieldError(
                    "method_overrides", f"{{method_overrides}} for {method}: {why}", ""
                ) from None
        check_choice(self, "method", WEAK_METHODS)
        check_choice(self, "compare", METHODS, "compare method")
        check_choice(self, "proposals", PROPOSAL_SOURCES)
        weights = self.train.branch_weights
        for method in self.methods if weights else ():
            k = branch_count(method, self.model.refine_branches)
            if len(weights) != k:
                raise FieldError(
                    ("train.branch_weights", "model.refine_branches"),
                    "{train.branch_weights} must give one weight per refinement branch of "
                    f"every method ({k} for {method}; oicr/mist: {{model.refine_branches}}), "
                    "got {value}",
                    weights,
                )

    def for_method(self, method: str) -> WSODConfig:
        """This section with ``method``'s :attr:`method_overrides` applied (and none left)."""
        mine = [t.partition(":")[2] for t in self.method_overrides if t.startswith(f"{method}:")]
        if not mine:
            return replace(self, method_overrides=())
        data = to_dict(replace(self, method_overrides=()))
        for text in mine:
            keys, value = parse_override(text)
            node = data
            for k in keys[:-1]:
                if not isinstance(node.get(k), dict):
                    raise ConfigError(f"{text!r}: {'.'.join(keys[:-1])} is not a section")
                node = node[k]
            if keys[-1] not in node:
                raise ConfigError(f"{text!r}: no setting {'.'.join(keys)}")
            node[keys[-1]] = value
        return from_dict(data, WSODConfig)

    @property
    def methods(self) -> tuple[str, ...]:
        """``method`` first, then the other ``compare`` methods, without repeats."""
        out = [self.method]
        out += [m for m in self.compare if m not in out]
        return tuple(out)
