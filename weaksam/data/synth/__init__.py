"""Synthetic data: the ``shapes`` detection benchmark and the class-agnostic ``blobs`` set.

``shapes``: six classes whose identity is the shape (:data:`SHAPE_CLASSES`), random fills,
cluttered backgrounds, distractor blobs, occlusion; exact visible masks and boxes; COCO json,
VOC xml and a folder labels CSV. ``blobs``: smooth random objects for pre-training a tiny SAM
that never sees the benchmark's classes. Everything is deterministic per seed.
"""

from weaksam.data.synth.blobs import render_blobs_image
from weaksam.data.synth.export import (
    generate_blobs_dataset,
    generate_shapes_dataset,
    iter_blobs,
    load_blobs,
)
from weaksam.data.synth.scene import (
    MIN_VISIBLE,
    SyntheticImage,
    image_rng,
    render_shapes_image,
)
from weaksam.data.synth.shapes import SHAPE_CLASSES

__all__ = [
    "MIN_VISIBLE",
    "SHAPE_CLASSES",
    "SyntheticImage",
    "generate_blobs_dataset",
    "generate_shapes_dataset",
    "image_rng",
    "iter_blobs",
    "load_blobs",
    "render_blobs_image",
    "render_shapes_image",
]
