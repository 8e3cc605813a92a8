"""The Ray Serve deployments: the FastAPI ingress and the two model deployments.

Each takes the :class:`~serve.config.ServeConfig` as a plain dict (what Ray can ship) and
rebuilds the dataclass first thing. Model work runs in worker threads so a replica's event
loop keeps accepting requests (and, for the detector, filling the next batch).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI
from ray import serve

from serve.api import create_api
from serve.backend import RayBackend, run_in, torch_executor
from serve.config import ServeConfig
from serve.detectors import load_detector
from serve.models import Detections, Image, ModelCard, ProposalCall, SegmentCall, SegmentResult
from serve.segmenter import Segmenter
from serve.validation import read_api_key
from weaksam.configlib import from_dict
from weaksam.sam.engine import ProposalSet


@dataclass(frozen=True)
class DetectJob:
    """One image of a batch, with its request's threshold and cap."""

    image: Image
    score_threshold: float
    max_detections: int


@serve.deployment(name="detector")
class DetectorDeployment:
    """The detector; ``detect`` calls are grouped by ``@serve.batch`` into one forward pass
    (``detector.batching``: ``max_batch_size``, ``batch_wait_timeout_s``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        cfg = from_dict(config, ServeConfig)
        torch.set_num_threads(cfg.torch_threads)
        self.detector = load_detector(cfg)
        self.executor = torch_executor(1, cfg.torch_threads)  # one batch at a time
        self.batch_sizes: Counter[int] = Counter()
        batcher: Any = self._forward  # serve.batch's wrapper has the setters
        batcher.set_max_batch_size(cfg.detector.batching.max_batch_size)
        batcher.set_batch_wait_timeout_s(cfg.detector.batching.batch_wait_timeout_s)

    def card(self) -> ModelCard:
        return self.detector.card

    def batch_stats(self) -> dict[int, int]:
        """How many forward passes ran with each batch size (for benchmarks)."""
        return dict(self.batch_sizes)

    async def detect(self, image: Image, score_threshold: float, max_detections: int) -> Detections:
        result: Detections = await self._forward(DetectJob(image, score_threshold, max_detections))
        return result

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def _forward(self, jobs: list[DetectJob]) -> list[Detections]:
        self.batch_sizes[len(jobs)] += 1
        return await run_in(
            self.executor,
            self.detector.predict_batch,
            [j.image for j in jobs],
            [j.score_threshold for j in jobs],
            [j.max_detections for j in jobs],
        )


@serve.deployment(name="segmenter")
class SegmenterDeployment:
    """SAM: prompted masks and proposals (the engine is safe to share across threads)."""

    def __init__(self, config: dict[str, Any]) -> None:
        cfg = from_dict(config, ServeConfig)
        torch.set_num_threads(cfg.torch_threads)
        self.segmenter = Segmenter.from_config(cfg.segmenter)
        workers = max(1, round(cfg.segmenter.deployment.num_cpus / cfg.torch_threads))
        self.executor = torch_executor(workers, cfg.torch_threads)

    def card(self) -> ModelCard:
        return self.segmenter.card

    async def segment(self, image: Image, call: SegmentCall) -> SegmentResult:
        return await run_in(self.executor, self.segmenter.segment, image, call)

    async def proposals(self, image: Image, call: ProposalCall) -> ProposalSet:
        return await run_in(self.executor, self.segmenter.proposals, image, call)


@serve.deployment(name="ingress")
@serve.ingress()
class Ingress:
    """The HTTP entry: validates requests and calls the model deployments' handles.

    The API key is read here, in the replica, from the environment variable the config
    names (never shipped in deployment arguments); a replica configured for a key that
    cannot find it fails to start.
    """

    def __init__(self, config: dict[str, Any], detector: Any, segmenter: Any) -> None:
        self.cfg = from_dict(config, ServeConfig)
        self.api_key = read_api_key(self.cfg.auth)
        self.backend = RayBackend(detector, segmenter)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self.cfg, self.backend, self.api_key)
