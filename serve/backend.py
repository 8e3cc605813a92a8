"""Where the HTTP layer sends decoded images: the :class:`Backend` protocol, with
:class:`LocalBackend` (models in this process, worker threads; tests and tools without Ray)
and :class:`RayBackend` (Ray Serve deployment handles)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import torch

from serve.models import (
    Detections,
    Detector,
    Image,
    ModelCard,
    ProposalCall,
    SegmentCall,
    SegmentResult,
)
from serve.segmenter import Segmenter
from weaksam.sam.engine import ProposalSet

R = TypeVar("R")


def torch_executor(workers: int, torch_threads: int) -> ThreadPoolExecutor:
    """Worker threads for model calls, each limited to ``torch_threads`` intra-op threads.

    OpenMP's thread count is a per-thread setting: a thread that never calls
    ``torch.set_num_threads`` uses every core, and a few of them oversubscribe the CPU.
    """
    return ThreadPoolExecutor(
        max(1, workers),
        thread_name_prefix="model",
        initializer=torch.set_num_threads,
        initargs=(max(1, torch_threads),),
    )


async def run_in(executor: ThreadPoolExecutor, fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)`` in ``executor``, awaited from the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(fn, *args))


class Backend(Protocol):
    async def detect(
        self, image: Image, score_threshold: float, max_detections: int
    ) -> Detections: ...

    async def segment(self, image: Image, call: SegmentCall) -> SegmentResult: ...

    async def proposals(self, image: Image, call: ProposalCall) -> ProposalSet: ...

    async def cards(self) -> dict[str, ModelCard]:
        """``{"detector": card, "segmenter": card}``."""
        ...

    async def ready(self) -> dict[str, bool]:
        """Whether each model answers."""
        ...


class LocalBackend:
    """Models held in this process; calls run on ``workers`` threads of ``torch_threads``
    each (the engine and the detectors keep no per-request state)."""

    def __init__(
        self, detector: Detector, segmenter: Segmenter, workers: int = 2, torch_threads: int = 1
    ) -> None:
        self.detector = detector
        self.segmenter = segmenter
        self.executor = torch_executor(workers, torch_threads)

    async def detect(self, image: Image, score_threshold: float, max_detections: int) -> Detections:
        return await run_in(
            self.executor, self.detector.predict, image, score_threshold, max_detections
        )

    async def segment(self, image: Image, call: SegmentCall) -> SegmentResult:
        return await run_in(self.executor, self.segmenter.segment, image, call)

    async def proposals(self, image: Image, call: ProposalCall) -> ProposalSet:
        return await run_in(self.executor, self.segmenter.proposals, image, call)

    async def cards(self) -> dict[str, ModelCard]:
        return {"detector": self.detector.card, "segmenter": self.segmenter.card}

    async def ready(self) -> dict[str, bool]:
        return {"detector": True, "segmenter": True}


class RayBackend:
    """Calls the ``detector`` and ``segmenter`` deployments (see :mod:`serve.deployments`)
    through their handles; model cards are fetched once and cached."""

    def __init__(self, detector: Any, segmenter: Any, ready_timeout_s: float = 5.0) -> None:
        self.detector = detector
        self.segmenter = segmenter
        self.ready_timeout_s = ready_timeout_s
        self._cards: dict[str, ModelCard] | None = None

    async def detect(self, image: Image, score_threshold: float, max_detections: int) -> Detections:
        result: Detections = await self.detector.detect.remote(
            image, score_threshold, max_detections
        )
        return result

    async def segment(self, image: Image, call: SegmentCall) -> SegmentResult:
        result: SegmentResult = await self.segmenter.segment.remote(image, call)
        return result

    async def proposals(self, image: Image, call: ProposalCall) -> ProposalSet:
        result: ProposalSet = await self.segmenter.proposals.remote(image, call)
        return result

    async def cards(self) -> dict[str, ModelCard]:
        if self._cards is None:
            det, seg = await asyncio.gather(
                self.detector.card.remote(), self.segmenter.card.remote()
            )
            self._cards = {"detector": det, "segmenter": seg}
        return self._cards

    async def ready(self) -> dict[str, bool]:
        async def ping(handle: Any) -> bool:
            try:
                await asyncio.wait_for(handle.card.remote(), self.ready_timeout_s)
            except Exception:  # any failure or timeout means "not ready"
                return False
            return True

        det, seg = await asyncio.gather(ping(self.detector), ping(self.segmenter))
        return {"detector": det, "segmenter": seg}
