"""Tiny random-init configs of the transformer families, shared by the detection and service
tests (``tests/`` is on ``sys.path``: its ``conftest.py`` is not in a package). Tests that need
another size derive theirs with :func:`dataclasses.replace`."""

from __future__ import annotations

from weaksam.detection.config import DetectorModelConfig, Mask2FormerConfig, RTDetrConfig

# RT-DETR: width-4 plainconv trunk, d_model 32, 2 decoder layers, 20 queries, 10 denoising.
TINY_DETR = DetectorModelConfig(
    family="rt_detr",
    rt_detr=RTDetrConfig(
        trunk="plainconv",
        d_model=32,
        encoder_hidden_dim=32,
        encoder_ffn_dim=32,
        encoder_attention_heads=4,
        decoder_layers=2,
        decoder_ffn_dim=32,
        decoder_attention_heads=4,
        num_queries=20,
        num_denoising=10,
    ),
    width=4,
    min_size=(64, 80),
    max_size=96,
    test_size=64,
)

# Mask2Former: width-8 plainconv trunk, hidden 32, 8 queries, 64 sampled points.
TINY_M2F = DetectorModelConfig(
    family="mask2former",
    width=8,
    min_size=(64, 96),
    max_size=128,
    test_size=64,
    score_thresh=0.0,
    detections_per_img=5,
    mask2former=Mask2FormerConfig(
        trunk="plainconv",
        hidden_dim=32,
        num_queries=8,
        num_heads=4,
        encoder_layers=1,
        encoder_ffn_dim=32,
        decoder_layers=2,
        decoder_ffn_dim=32,
        train_num_points=64,
    ),
)
