"""Config sections of the classification-clue stages: the CAM classifier and its peak points.

Kept free of torch and Ray imports so :mod:`weaksam.config` can compose them cheaply.
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

MAP_KINDS: tuple[str, ...] = ("cam", "refined")
# The names of weaksam.cam.models.BACKBONES (a torch module; tests keep the two in step).
BACKBONE_NAMES: tuple[str, ...] = (
    "plainconv",
    "plainconv16",
    "resnet18",
    "resnet50",
    "vit_micro",
    "deit_tiny",
    "vit_b_16",
)
POOLINGS: tuple[str, ...] = ("avg", "max", "lse")


@dataclass(frozen=True)
class ClassifierConfig:
    """The multi-label CAM classifier and its training schedule (section ``classifier``).

    Attributes:
        backbone: a name of :data:`weaksam.cam.models.BACKBONES` (``plainconv`` for the CPU
            demo, ``resnet18``/``resnet50``, ``vit_micro``/``deit_tiny``/``vit_b_16``).
        weights: backbone weights to start from (loaded with ``weights_only=True``, strict
            keys except the classifier head, which is always new): a local ImageNet weights
            file of the torchvision backbone, a file written by
            :func:`weaksam.cam.pretrain.export_backbone`, or ``builtin`` for the committed demo
            ``plainconv`` (``weaksam/assets/demo_backbone.pt``, pre-trained with image-level
            labels on synthetic ``shapes`` images of a seed no dataset config uses); empty =
            random init.
        width: base channel width of ``plainconv`` (ignored by the torchvision backbones).
        pooling / lse_r: how class maps become logits: ``avg`` (CAM's global average),
            ``max`` or ``lse`` (log-sum-exp with sharpness ``lse_r``); see
            :class:`weaksam.cam.models.CAMClassifier`.
        input_size: images are resized to ``input_size`` square for training and for the
            scale-1.0 pass of inference; maps are upsampled back to the original ``HxW``.
        epochs / batch_size: schedule; ``batch_size`` is per worker.
        lr / weight_decay / warmup_epochs: AdamW, linear warm-up then cosine decay to 5 %.
        backbone_lr: the backbone's learning rate as a multiple of ``lr`` (the class head
            always gets ``lr``). ``0`` freezes the backbone, batch-norm statistics included,
            and trains the head alone (a linear probe of pre-trained ``weights``).
        val_fraction: share of the training split held out for validation mAP (never the
            test split); chosen deterministically from ``seed``.
        hflip / scale_jitter / color_jitter: augmentation: random horizontal flip, a random
            square size in ``input_size * [lo, hi]`` per batch, and brightness/contrast/
            saturation factors in ``[1 - j, 1 + j]`` plus a random channel order (``shapes``
            classes are defined by shape, never colour).
        workers / cpus_per_worker: Ray Train workers and their CPUs. threads: torch threads
            per worker.
        use_gpu: ``auto`` (GPUs when the cluster has one per worker and CUDA works there),
            ``true`` (fail fast without them) or ``false`` (:mod:`weaksam.train.placement`).
        max_failures: Ray Train restarts after a lost worker or node, from the last
            checkpoint.
        checkpoint_every: epochs between checkpoints (each one a ``ray.train.report``).
        seed: initialisation, split and augmentation seed.
        cache_images / cache_mb: keep the decoded, resized images in each worker's memory, at
            most ``cache_mb`` MiB (least recently used out;
            :class:`weaksam.train.cache.ImageCache`). Off by default: every batch is decoded
            again and memory does not depend on the dataset.
    """

    backbone: str = "resnet18"
    weights: str = ""
    width: int = 32
    pooling: str = "avg"
    lse_r: float = 5.0
    input_size: int = 448
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    backbone_lr: float = 1.0
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    val_fraction: float = 0.15
    hflip: bool = True
    scale_jitter: tuple[float, ...] = (0.8, 1.2)  # (lo, hi)
    color_jitter: float = 0.3
    workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: str = "auto"
    max_failures: int = 2
    threads: int = 1
    checkpoint_every: int = 5
    seed: int = 0
    cache_images: bool = False
    cache_mb: float = 2048.0

    def __post_init__(self) -> None:
        check_choice(self, "backbone", BACKBONE_NAMES, "classifier backbone")
        check_choice(self, "pooling", POOLINGS)
        check_positive(self, "lse_r", "lr")
        check_at_least(self, 16, "input_size")
        check_at_least(
            self, 1, "width", "epochs", "batch_size", "workers", "threads", "checkpoint_every"
        )
        check_at_least(self, 0, "backbone_lr", "weight_decay", "warmup_epochs", "cpus_per_worker")
        check_at_least(self, 0, "max_failures", "cache_mb")
        check_gpu_policy(self, "use_gpu")
        check_range(self, 0.0, 1.0, "val_fraction", high_open=True)
        if len(self.scale_jitter) != 2 or not self.scale_jitter[0] <= self.scale_jitter[1]:
            raise FieldError(
                "scale_jitter",
                "{scale_jitter} must be [lo, hi] with lo <= hi, got {value}",
                self.scale_jitter,
            )
        check_positive(self, "scale_jitter")
        check_fraction(self, "color_jitter")  # factors in [1 - j, 1 + j] stay >= 0


@dataclass(frozen=True)
class BilateralConfig:
    """The appearance refinement of the ``peaks`` stage (section ``peaks.bilateral``).

    Attributes:
        enabled: refine every map kind before peak extraction (off in the method).
        side: cells of the kernel's grid along the image's long side (``side²`` cells at most,
            a ``side² x side²`` kernel: 64 → 4096 cells, 64 MiB of float32).
        sigma_color: colour bandwidth, RGB in ``[0, 1]``.
        sigma_space: spatial bandwidth as a fraction of the image's long side.
        power: exponent of the appearance term (``m ⊙ (K·m)^power``).

    The defaults were chosen with ``bench/tune_bilateral.py`` on 240 images of the demo
    backbone's pre-training pool, which no dataset config uses (docs/benchmarks_history.md,
    "Peaks off the hole"): point precision 0.60 without, 0.81-0.86 for colour 0.03-0.1 and
    power 3-12.
    """

    enabled: bool = False
    side: int = 64
    sigma_color: float = 0.07
    sigma_space: float = 1.0
    power: float = 8.0

    def __post_init__(self) -> None:
        check_positive(self, "power")
        check_range(self, 2, 128, "side")
        for name in ("sigma_color", "sigma_space"):
            value = getattr(self, name)
            if not value > 0:  # NaN too
                raise FieldError(
                    name, "{" + name + "} must be > 0 (bilateral sigmas), got {value}", value
                )


@dataclass(frozen=True)
class PeakStageConfig:
    """Maps and peak points of the ``peaks`` stage (section ``peaks``).

    Attributes:
        scales: inference scales relative to ``classifier.input_size``; each is run plain and
            flipped (WeakSAM: 1.0, 0.8, 1.2 — the first must be 1.0).
        flip: add the horizontally flipped pass of every scale.
        map_kinds: which maps give points: ``cam`` (ReLU class activation) and ``refined``
            (the CAM propagated by feature or attention affinity).
        refine_iters / refine_temperature: affinity propagation steps and the softmax
            temperature of the cosine feature affinity (CNNs; ViTs use their attention).
        bilateral: the appearance refinement of every kind before peak extraction
            (:class:`BilateralConfig`; off in the method, on in the ``shapes`` configs, where
            it moves ring and crescent peaks out of the hole).
        kernel / top_k / threshold: :class:`weaksam.cam.peaks.PeakConfig` (WeakSAM: 17, 25, 0.9).
        kernel_ref_side: 0 keeps ``kernel`` fixed (WeakSAM). Otherwise the kernel is scaled by
            ``max(H, W) / kernel_ref_side`` per image (rounded to an odd size >= 3): WeakSAM's
            17 px was chosen for ~500-px VOC images, so ``kernel_ref_side: 500`` gives 17 on
            VOC and 9 on 256-px demo images.
        class_threshold: on non-training splits the classes come from the classifier: those
            with probability >= this, and always the top-1 class (never from labels or GT).
            The probabilities are those of the logits averaged over ``scales`` x ``flip``, as
            the ``classify`` stage's test mAP is measured.
        actors / batch_size / actor_cpus: the Ray Data actor pool's minimum (and starting)
            size, images per batch and CPUs reserved per actor. max_actors: the pool's maximum
            (0 = grow with the cluster on GPUs, a fixed pool of ``actors`` on CPU;
            :func:`weaksam.train.placement.pool_sizes`). use_gpu: one GPU per actor
            (``auto``/``true``/``false``, :func:`weaksam.train.placement.decide_actor_gpus`).
        rows_per_file: rows per Parquet shard (the last one may hold fewer).
        picture_images: test images drawn in ``peaks.png``.
    """

    scales: tuple[float, ...] = (1.0, 0.8, 1.2)
    flip: bool = True
    map_kinds: tuple[str, ...] = MAP_KINDS
    refine_iters: int = 2
    refine_temperature: float = 0.1
    bilateral: BilateralConfig = field(default_factory=BilateralConfig)
    kernel: int = 17
    top_k: int = 25
    threshold: float = 0.9
    kernel_ref_side: int = 0
    class_threshold: float = 0.5
    actors: int = 1
    max_actors: int = 0
    batch_size: int = 8
    actor_cpus: float = 1.0
    use_gpu: str = "auto"
    rows_per_file: int = 5000
    picture_images: int = 6

    def __post_init__(self) -> None:
        check_gpu_policy(self, "use_gpu")
        if not self.scales or self.scales[0] != 1.0:
            raise FieldError("scales", "{scales} must start with 1.0, got {value}", self.scales)
        check_positive(self, "scales", "refine_temperature")
        check_nonempty(self, "map_kinds")
        check_choice(self, "map_kinds", MAP_KINDS, "map kind")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise FieldError("kernel", "{kernel} must be odd and >= 1, got {value}", self.kernel)
        check_at_least(self, 1, "top_k", "actors", "batch_size", "rows_per_file")
        check_at_least(self, 0, "max_actors")
        check_at_least(self, 0, "refine_iters", "kernel_ref_side", "actor_cpus", "picture_images")
        check_fraction(self, "threshold")  # above 1 no peak passes
        check_at_least(self, 0, "class_threshold")  # above 1: the top-1 class only

    def kernel_for(self, height: int, width: int) -> int:
        """The peak kernel for an ``height x width`` image (see ``kernel_ref_side``)."""
        if self.kernel_ref_side <= 0:
            return self.kernel
        k = round(self.kernel * max(height, width) / self.kernel_ref_side)
        k = max(3, k)
        return k if k % 2 == 1 else k + 1
