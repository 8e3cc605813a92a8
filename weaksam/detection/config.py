"""Settings of the retraining stages (a light module: no torch import).

Two pipeline sections use these classes:

* ``retrain`` (:class:`RetrainConfig`): Faster R-CNN with FPN on the pseudo ground truth, with
  RoI drop (WeakSAM sections 5 and 6). Defaults are the method's VOC07 settings: SGD lr 0.02,
  16 images per step, 9000 steps with decays at 6000 and 8000, warm-up 30 steps, short side
  drawn from 480..1216 (step 32) capped at 2000, test side 688, 512 RoIs per image, RoI drop
  4.0 / 4.0 from step 2000. COCO14: ``roi_drop.thresh_cls 5.0, operate_iter 10000``,
  ``train.steps 85000, lr_steps [55000, 75000]``, train sides 640..800.
* ``wsis`` (:class:`WSISConfig`): Mask R-CNN with FPN on the PGT masks (the instance
  segmentation extension). Defaults are the method's VOC12 settings: the same schedule, train
  sides 640..800, test 800, no RoI drop (VOC12 ships ``ISON False``).

The CPU configs (``configs/demo.yaml``, ``tiny.yaml``, ``bench.yaml``) override these with a
small backbone, 256-px images and a short schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from weaksam.configlib import (
    FieldError,
    check_at_least,
    check_choice,
    check_fraction,
    check_gpu_policy,
    check_nonempty,
    check_positive,
    check_range,
)

BOX_SOURCES = ("pgt", "gt")
# Detector families: torchvision's R-CNNs, transformers' RT-DETR (boxes; a ``retrain`` choice)
# and Mask2Former (masks; a ``wsis`` choice).
FAMILIES = ("rcnn", "rt_detr", "mask2former")
RETRAIN_FAMILIES = ("rcnn", "rt_detr")
WSIS_FAMILIES = ("rcnn", "mask2former")
# Trunks of the transformer families (torchvision ResNets, or the demo CAM backbone).
TRUNKS = ("resnet50", "resnet18", "plainconv")
OPTIMIZERS = ("sgd", "adamw")
# The names of weaksam.detection.backbones.BACKBONES (a torch module; tests keep them in step).
BACKBONE_NAMES = ("plainconv_fpn", "resnet50_fpn", "resnet18_fpn", "small_fpn")
VOC07_TRAIN_SIDES = tuple(range(480, 1217, 32))


@dataclass(frozen=True)
class RoIDropConfig:
    """RoI drop: ``enabled``; absolute thresholds on a sampled foreground RoI's CE and L1 box
    loss (it is dropped when both are exceeded); first active iteration."""

    enabled: bool = True
    thresh_cls: float = 4.0
    thresh_reg: float = 4.0
    operate_iter: int = 2000

    def __post_init__(self) -> None:
        check_at_least(self, 0, "thresh_cls", "thresh_reg", "operate_iter")


@dataclass(frozen=True)
class WSISRoIDropConfig(RoIDropConfig):
    """RoI drop for Mask R-CNN: off unless enabled (the method's VOC12 config: ``ISON False``)."""

    enabled: bool = False


@dataclass(frozen=True)
class RTDetrConfig:
    """RT-DETR (transformers' ``RTDetrForObjectDetection``, random init) for ``family: rt_detr``.

    Defaults are RT-DETR-R50's (the paper's and transformers' ``RTDetrConfig`` defaults).
    ``DetectorModelConfig``'s shared fields also apply: ``min_size``/``max_size``/``test_size``
    (resizing), ``weights`` (the trunk's ImageNet / CAM weights), ``trainable_layers``,
    ``width`` (the ``plainconv`` width), ``score_thresh``, ``detections_per_img``.

    Attributes:
        trunk: ``resnet50`` / ``resnet18`` (torchvision ResNets; strides 8, 16, 32 from
            ``layer2..4``) or ``plainconv`` (the demo CAM trunk + two new stages, as
            ``plainconv_fpn``), swapped in for transformers' own backbone.
        detector_weights: optional COCO-pretrained RT-DETR state dict of this wrapper
            (``weights_only=True``; every key but the class-dependent heads must fit; those
            are re-initialised and logged); ``""`` = none.
        d_model / encoder_hidden_dim: decoder and hybrid-encoder widths (256).
        encoder_layers / encoder_ffn_dim / encoder_attention_heads: the AIFI transformer layer
            on the stride-32 map (1, 1024, 8).
        hidden_expansion: CCFM (CSP-RepVGG) block expansion (1.0 for R50).
        decoder_layers / decoder_ffn_dim / decoder_attention_heads / decoder_n_points: the
            deformable decoder (6, 1024, 8, 4 sampling points per level and head).
        num_queries: object queries taken from the encoder's top-scoring positions (300).
        num_denoising / label_noise_ratio / box_noise_scale: contrastive denoising (100 noised
            queries in groups, 0.5 of labels flipped, box noise x1.0); ``num_denoising 0``
            turns it off.
        learn_initial_query: learned decoder content queries (DINO's mixed query selection);
            must stay ``False`` (RT-DETR's default: content taken from the encoder):
            transformers 5.23 crashes with ``True`` (docs/real_datasets.md "RT-DETR vs DINO").
        dropout: transformer dropout (0.0).
        weight_loss_vfl / weight_loss_bbox / weight_loss_giou: loss weights (1, 5, 2).
        matcher_class_cost / matcher_bbox_cost / matcher_giou_cost: Hungarian costs (2, 5, 2).
        focal_loss_alpha / focal_loss_gamma: varifocal loss (0.75, 2.0).
        auxiliary_loss: losses on every decoder layer and the encoder's top-k (on).
        size_divisor: batches are padded to a multiple of this (32, the coarsest stride).
    """

    trunk: str = "resnet50"
    detector_weights: str = ""
    d_model: int = 256
    encoder_hidden_dim: int = 256
    encoder_layers: int = 1
    encoder_ffn_dim: int = 1024
    encoder_attention_heads: int = 8
    hidden_expansion: float = 1.0
    decoder_layers: int = 6
    decoder_ffn_dim: int = 1024
    decoder_attention_heads: int = 8
    decoder_n_points: int = 4
    num_queries: int = 300
    num_denoising: int = 100
    label_noise_ratio: float = 0.5
    box_noise_scale: float = 1.0
    learn_initial_query: bool = False
    dropout: float = 0.0
    weight_loss_vfl: float = 1.0
    weight_loss_bbox: float = 5.0
    weight_loss_giou: float = 2.0
    matcher_class_cost: float = 2.0
    matcher_bbox_cost: float = 5.0
    matcher_giou_cost: float = 2.0
    focal_loss_alpha: float = 0.75
    focal_loss_gamma: float = 2.0
    auxiliary_loss: bool = True
    size_divisor: int = 32

    def __post_init__(self) -> None:
        check_choice(self, "trunk", TRUNKS, "RT-DETR trunk")
        check_at_least(
            self,
            1,
            "d_model",
            "encoder_hidden_dim",
            "encoder_layers",
            "encoder_ffn_dim",
            "encoder_attention_heads",
            "decoder_layers",
            "decoder_ffn_dim",
            "decoder_attention_heads",
            "decoder_n_points",
            "num_queries",
            "size_divisor",
        )
        check_at_least(self, 0, "num_denoising", "box_noise_scale")
        check_at_least(self, 0, "weight_loss_vfl", "weight_loss_bbox", "weight_loss_giou")
        check_at_least(self, 0, "matcher_class_cost", "matcher_bbox_cost", "matcher_giou_cost")
        check_at_least(self, 0, "focal_loss_gamma")
        check_positive(self, "hidden_expansion")
        check_fraction(self, "label_noise_ratio", "dropout", "focal_loss_alpha")
        if self.learn_initial_query:
            raise FieldError(
                "learn_initial_query",
                "{learn_initial_query} must be false: transformers 5.23's RTDetrModel crashes "
                "with learned initial queries ('Embedding' object has no attribute 'tile'), "
                "got {value}",
                self.learn_initial_query,
            )
        for name, heads in (
            ("d_model", "decoder_attention_heads"),
            ("encoder_hidden_dim", "encoder_attention_heads"),
        ):
            if getattr(self, name) % getattr(self, heads):
                raise FieldError(
                    (name, heads),
                    "{" + name + "} must be a multiple of {" + heads + "}, got {value}",
                    getattr(self, name),
                )


@dataclass(frozen=True)
class Mask2FormerConfig:
    """Mask2Former (transformers' ``Mask2FormerForUniversalSegmentation``, instance mode):
    the settings of ``family: mask2former``. Defaults are Mask2Former-R50's COCO instance
    settings (Cheng et al. 2022, ``maskformer2_R50_bs16_50ep``).

    Attributes:
        trunk: ``resnet50``, ``resnet18`` (torchvision ResNets; ImageNet weights from the
            model's ``weights`` file) or ``plainconv`` (the CAM trunk of ``plainconv_fpn``,
            ``weights: builtin`` = the committed demo backbone); its strides-4..32 maps feed
            the pixel decoder.
        detector_weights: optional local state dict of a whole Mask2Former in this wrapper's
            key layout (e.g. a COCO-trained one), ``weights_only=True``; every key must fit
            except the class-dependent ones (class head, no-object weight), which are
            re-initialised and logged. ``""``: none.
        hidden_dim: width of the pixel decoder, its mask features and the transformer decoder
            (256; a multiple of 32: GroupNorm(32)).
        num_queries: object queries (100); also the most masks an image can yield.
        num_heads: attention heads in the pixel-decoder encoder and the transformer decoder.
        encoder_layers / encoder_ffn_dim: the pixel decoder's multi-scale deformable
            attention layers (6) and their feed-forward width (1024).
        decoder_layers / decoder_ffn_dim: masked-attention decoder layers (9 = 3 rounds over
            the 3 feature levels) and their feed-forward width (2048).
        dropout: in both transformers (0.0).
        class_weight / mask_weight / dice_weight: loss (and matching cost) weights (2, 5, 5).
        no_object_weight: the "no object" class weight in the classification loss (0.1).
        train_num_points: points sampled per mask for the mask losses (112 x 112 = 12544).
        oversample_ratio / importance_sample_ratio: PointRend-style point sampling (3.0,
            0.75).
        size_divisibility: padded input sides are multiples of this (32: the trunk's stride).
    """

    trunk: str = "resnet50"
    detector_weights: str = ""
    hidden_dim: int = 256
    num_queries: int = 100
    num_heads: int = 8
    encoder_layers: int = 6
    encoder_ffn_dim: int = 1024
    decoder_layers: int = 9
    decoder_ffn_dim: int = 2048
    dropout: float = 0.0
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    size_divisibility: int = 32

    def __post_init__(self) -> None:
        check_choice(self, "trunk", TRUNKS, "Mask2Former trunk")
        check_at_least(
            self,
            1,
            "hidden_dim",
            "num_queries",
            "num_heads",
            "encoder_layers",
            "encoder_ffn_dim",
            "decoder_layers",
            "decoder_ffn_dim",
            "train_num_points",
            "size_divisibility",
        )
        if self.hidden_dim % 32 or self.hidden_dim % self.num_heads:
            raise FieldError(
                "hidden_dim",
                "{hidden_dim} must be a multiple of 32 (GroupNorm) and of num_heads, got {value}",
                self.hidden_dim,
            )
        check_at_least(self, 0, "class_weight", "mask_weight", "dice_weight")
        check_at_least(self, 1, "oversample_ratio")
        check_fraction(self, "dropout", "no_object_weight", "importance_sample_ratio")
        if self.size_divisibility % 32:
            raise FieldError(
                "size_divisibility",
                "{size_divisibility} must be a multiple of 32 (the trunk's stride), got {value}",
                self.size_divisibility,
            )


@dataclass(frozen=True)
class DetectorModelConfig:
    """The detector: backbone, FPN and the heads' sizes (torchvision's Faster/Mask R-CNN), or a
    transformer family's settings.

    Attributes:
        family: ``rcnn`` (torchvision's Faster/Mask R-CNN; the fields below), ``rt_detr``
            (:class:`RTDetrConfig` in ``rt_detr``) or ``mask2former``.
        rt_detr: RT-DETR's settings (read when ``family`` is ``rt_detr``).
        mask2former: Mask2Former's settings (:class:`Mask2FormerConfig`; read when
            ``family`` is ``mask2former``).
        backbone: a name of :data:`weaksam.detection.backbones.BACKBONES` (``resnet50_fpn``,
            ``resnet18_fpn``, ``small_fpn``, ``plainconv_fpn``).
        weights: optional local ImageNet weights file (a torchvision classification state dict)
            for the ResNet trunk, or a CAM backbone file for ``plainconv_fpn`` (``builtin``:
            the committed demo backbone); ``""`` = random init (``weights_only=True``).
        trainable_layers: stages trained (0..5), counted from the top, when ``weights`` is
            given (torchvision's 3 for the ResNets; ``plainconv_fpn``: its two new stages
            always train, 3 adds the pre-trained ``layer2``, 4 ``layer1``); with random init
            everything trains.
        width: channel width of the ``small_fpn`` trunk's first stage (doubles per stage), or
            the ``plainconv`` width of ``plainconv_fpn`` (that of its weights file).
        fpn_channels: FPN output channels (256 for the ResNets in the method).
        min_size: training short sides; one is drawn per image (torchvision's transform).
        max_size: cap on the long side.
        test_size: short side at inference.
        rpn_pre_nms_train / rpn_post_nms_train / rpn_pre_nms_test / rpn_post_nms_test:
            proposals kept per image (per level before NMS, in total after).
        rpn_batch_size: anchors sampled per image for the RPN loss.
        anchor_sizes: one anchor size (pixels, at the network's input scale) per FPN level,
            strides 4 to 64, each with aspect ratios 0.5, 1, 2 (torchvision's 32..512; halved
            for the 256-px demo images, whose objects are 18..115 px, they scored worse:
            docs/benchmarks_history.md, "Retraining schedule").
        box_batch_size: RoIs sampled per image for the box head (the method: 512, 25 % fg).
        box_positive_fraction: foreground share of those RoIs.
        box_head_dim: width of the two-layer box head (1024 in torchvision).
        roi_sampling_ratio: RoIAlign samples per bin side for the box and mask heads
            (torchvision's 2; 1 makes the RoIAlign backward, slow on CPUs, ~4x cheaper).
        mask_head_channels / mask_head_layers: width and depth of the mask head (256 x 4).
        score_thresh / nms_thresh / detections_per_img: inference (detectron2's 0.05, 0.5,
            100).
    """

    family: str = "rcnn"
    rt_detr: RTDetrConfig = field(default_factory=RTDetrConfig)
    mask2former: Mask2FormerConfig = field(default_factory=Mask2FormerConfig)
    backbone: str = "resnet50_fpn"
    weights: str = ""
    trainable_layers: int = 3
    width: int = 16
    fpn_channels: int = 256
    min_size: tuple[int, ...] = VOC07_TRAIN_SIDES
    max_size: int = 2000
    test_size: int = 688
    rpn_pre_nms_train: int = 2000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_test: int = 1000
    rpn_batch_size: int = 256
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    box_batch_size: int = 512
    box_positive_fraction: float = 0.25
    box_head_dim: int = 1024
    roi_sampling_ratio: int = 2
    mask_head_channels: int = 256
    mask_head_layers: int = 4
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100

    def __post_init__(self) -> None:
        check_choice(self, "family", FAMILIES, "detector family")
        check_choice(self, "backbone", BACKBONE_NAMES, "detector backbone")
        check_range(self, 0, 5, "trainable_layers")
        check_nonempty(self, "min_size")
        if len(self.anchor_sizes) != 5:
            raise FieldError(
                "anchor_sizes",
                "{anchor_sizes} must give 5 sizes (one per FPN level), got {value}",
                self.anchor_sizes,
            )
        check_at_least(
            self,
            1,
            "width",
            "fpn_channels",
            "min_size",
            "max_size",
            "test_size",
            "rpn_pre_nms_train",
            "rpn_post_nms_train",
            "rpn_pre_nms_test",
            "rpn_post_nms_test",
            "rpn_batch_size",
            "anchor_sizes",
            "box_batch_size",
            "box_head_dim",
            "mask_head_channels",
            "mask_head_layers",
            "detections_per_img",
        )
        check_at_least(self, 0, "roi_sampling_ratio")  # 0: adaptive (torchvision)
        check_range(self, 0.0, 1.0, "box_positive_fraction", low_open=True)
        check_fraction(self, "score_thresh", "nms_thresh")


@dataclass(frozen=True)
class MaskModelConfig(DetectorModelConfig):
    """Mask R-CNN defaults of the method (VOC12): train sides 640..800, test 800, max 1333."""

    min_size: tuple[int, ...] = (640, 672, 704, 736, 768, 800)
    max_size: int = 1333
    test_size: int = 800


@dataclass(frozen=True)
class DetectorTrainConfig:
    """Optimisation (SGD, momentum 0.9, or AdamW) and Ray Train settings.

    Attributes:
        steps: optimiser steps. images_per_step: images per step over all workers (split
            evenly; the method: 16).
        optimizer: ``sgd`` (momentum; the R-CNN recipe) or ``adamw`` (the DETR recipe: lr
            1e-4, weight decay 1e-4, ``trunk_lr_factor`` 0.1, ``grad_clip`` 0.1).
        lr / momentum / weight_decay: SGD (0.02, 0.9, 1e-4); AdamW uses lr and weight decay
            (betas 0.9, 0.999).
        trunk_lr_factor: lr multiplier for the trunk's parameters (the model's ``trunk``;
            an R-CNN's ``backbone.body``).
        warmup_steps / warmup_factor: linear warm-up from ``warmup_factor`` x lr (30, 1e-3).
        lr_steps / gamma: step decay.
        grad_clip: max gradient norm (0 = off).
        hflip: random horizontal flips (p = 0.5).
        checkpoint_every: steps between checkpoints (each a ``ray.train.report``, ~1.5 s).
        keep_checkpoints: how many of the latest checkpoints Ray Train keeps (0 = all of
            them: ``bench/learning_curve.py`` scores each on the test split).
        log_every: steps between loss-curve points (no Ray call).
        num_workers / cpus_per_worker / threads: Ray Train workers (DDP), their CPUs and torch
            threads.
        use_gpu: ``auto``, ``true`` or ``false`` (:mod:`weaksam.train.placement`).
        max_failures: Ray Train restarts after a lost worker or node, from the last
            checkpoint.
        seed: initial weights and each step's images and flips derive from (seed, rank, step),
            so a resumed run repeats the uninterrupted one's data.
        cache_images / cache_mb: keep decoded training images in each worker's memory, at
            most ``cache_mb`` MiB (least recently used out;
            :class:`weaksam.train.cache.ImageCache`).
            Off by default: memory then does not depend on the dataset.
    """

    steps: int = 9000
    images_per_step: int = 16
    optimizer: str = "sgd"
    lr: float = 0.02
    trunk_lr_factor: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    warmup_factor: float = 1e-3
    lr_steps: tuple[int, ...] = (6000, 8000)
    gamma: float = 0.1
    grad_clip: float = 0.0
    hflip: bool = True
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 20
    num_workers: int = 4
    cpus_per_worker: float = 1.0
    threads: int = 1
    use_gpu: str = "auto"
    max_failures: int = 2
    seed: int = 0
    cache_images: bool = False
    cache_mb: float = 2048.0

    def __post_init__(self) -> None:
        check_at_least(
            self,
            1,
            "steps",
            "images_per_step",
            "num_workers",
            "checkpoint_every",
            "log_every",
            "threads",
        )
        check_at_least(self, 0, "keep_checkpoints")
        if self.images_per_step % self.num_workers:
            raise FieldError(
                ("images_per_step", "num_workers"),
                "{images_per_step} must be a multiple of {num_workers} ("
                + str(self.num_workers)
                + "), got {value}",
                self.images_per_step,
            )
        check_choice(self, "optimizer", OPTIMIZERS, "optimizer")
        check_positive(self, "lr", "gamma", "trunk_lr_factor")
        check_range(self, 0.0, 1.0, "momentum", high_open=True)
        check_at_least(self, 0, "weight_decay", "warmup_steps", "lr_steps", "grad_clip")
        check_at_least(self, 0, "cpus_per_worker", "max_failures", "cache_mb")
        check_fraction(self, "warmup_factor")
        check_gpu_policy(self, "use_gpu")


@dataclass(frozen=True)
class DetectorTestConfig:
    """Batch inference over the test split (a Ray Data actor pool).

    Attributes:
        num_actors / max_actors: the actor pool's minimum (and starting) and maximum size
            (0 = grow with the cluster on GPUs, fixed on CPU;
            :func:`weaksam.train.placement.pool_sizes`).
        cpus_per_actor / batch_size: CPUs reserved per actor; images per batch.
        use_gpu: one GPU per actor (``auto``, ``true`` or ``false``,
            :func:`weaksam.train.placement.decide_actor_gpus`).
        mask_threshold: mask probability threshold for the RLE masks (Mask R-CNN: 0.5).
    """

    num_actors: int = 1
    max_actors: int = 0
    cpus_per_actor: float = 1.0
    batch_size: int = 4
    use_gpu: str = "auto"
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        check_gpu_policy(self, "use_gpu")
        check_at_least(self, 1, "num_actors", "batch_size")
        check_at_least(self, 0, "cpus_per_actor", "max_actors")
        check_fraction(self, "mask_threshold")


@dataclass(frozen=True)
class RetrainConfig:
    """The ``retrain`` stage: Faster R-CNN on PGT with RoI drop.

    Attributes:
        enabled: run the stage at all.
        compare_no_drop: also train the same detector without RoI drop (bench).
        upper_bound: also train it on the ground-truth boxes (bench; the only place GT trains
            anything; reported as ``upper_bound_ap50``).
    """

    enabled: bool = True
    compare_no_drop: bool = False
    upper_bound: bool = False
    model: DetectorModelConfig = field(default_factory=DetectorModelConfig)
    train: DetectorTrainConfig = field(default_factory=DetectorTrainConfig)
    roi_drop: RoIDropConfig = field(default_factory=RoIDropConfig)
    test: DetectorTestConfig = field(default_factory=DetectorTestConfig)

    def __post_init__(self) -> None:
        check_family(self, RETRAIN_FAMILIES, "retrain")
        if self.model.family != "rcnn" and self.compare_no_drop:
            raise FieldError(
                ("compare_no_drop", "model.family"),
                "{compare_no_drop} compares R-CNNs with and without RoI drop; it must be false "
                "for {model.family} " + repr(self.model.family) + ", got {value}",
                self.compare_no_drop,
            )


def check_family(section: RetrainConfig | WSISConfig, families: tuple[str, ...], name: str) -> None:
    """``section.model.family`` must be one of ``families``; RoI drop (a rule of the R-CNN box
    head's sampled RoIs) must be disabled for the other families."""
    family = section.model.family
    if family not in families:
        raise FieldError(
            "model.family",
            "{model.family} must be one of " + ", ".join(families) + f" for {name}, got {{value}}",
            family,
        )
    if family != "rcnn" and section.roi_drop.enabled:
        raise FieldError(
            ("roi_drop.enabled", "model.family"),
            "{roi_drop.enabled} must be false for {model.family} "
            + repr(family)
            + ": RoI drop acts on the R-CNN box head's sampled RoIs, got {value}",
            True,
        )


@dataclass(frozen=True)
class WSISConfig:
    """The ``wsis`` stage: Mask R-CNN on the PGT masks (weakly-supervised instance
    segmentation); ``upper_bound`` also trains it on the ground-truth masks (bench)."""

    enabled: bool = True
    upper_bound: bool = False
    model: MaskModelConfig = field(default_factory=MaskModelConfig)
    train: DetectorTrainConfig = field(default_factory=DetectorTrainConfig)
    roi_drop: WSISRoIDropConfig = field(default_factory=WSISRoIDropConfig)
    test: DetectorTestConfig = field(default_factory=DetectorTestConfig)

    def __post_init__(self) -> None:
        check_family(self, WSIS_FAMILIES, "wsis")
