"""Load test of the HTTP service: latency percentiles, throughput and errors of ``/v1/detect``
at several client concurrencies, with ``@serve.batch`` off (max batch size 1) and on.

    .venv/bin/python -m bench.serve_load [--duration 8] [--clients 1,4,16] [--batch 1,8]

Starts a private local Ray instance and Ray Serve on 127.0.0.1 (a free port), deploys the
service from ``--config`` once per batch size (its detector: the demo run's, so run
``make demo`` first, or pass ``--set detector.kind=untrained`` for random weights), and
drives it with closed-loop async clients (``httpx``): each client posts the same PNG
(multipart), waits for the answer, and posts again, for ``--duration`` seconds per level
(after ``--warmup`` seconds); a request counts when it starts and ends inside the window.
Prints a table (``mean batch``: images per detector forward pass, from the deployment's
counters); ``--json`` writes the figures. Everything it starts is shut down at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from weaksam.eval.table import format_table


@dataclass(frozen=True)
class LevelResult:
    max_batch_size: int
    clients: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float


def make_png(size: int, seed: int = 0) -> bytes:
    """A ``size x size`` PNG: textured background and a few flat shapes."""
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 140, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(4):
        cy, cx = rng.integers(size // 8, size - size // 8, 2).tolist()
        r = size // 10
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


async def drive(
    url: str,
    png: bytes,
    fields: dict[str, str],
    clients: int,
    duration: float,
    warmup: float,
) -> tuple[list[float], int, float]:
    """Closed-loop clients; returns (latencies of requests finished in the window, errors,
    window seconds)."""
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    errors = 0
    t0 = time.perf_counter()
    start, stop = t0 + warmup, t0 + warmup + duration
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    r = await client.post(
                        "/v1/detect",
                        files={"image": ("b.png", png, "image/png")},
                        data=fields,
                    )
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                done = time.perf_counter()
                if start <= t and done <= stop:
                    if ok:
                        latencies.append(done - t)
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors, duration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _batch_total(stats: dict[int, int]) -> tuple[int, int]:
    return sum(stats.values()), sum(k * v for k, v in stats.items())


def run(args: argparse.Namespace) -> list[LevelResult]:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import serve

    from serve.app import build_app
    from serve.config import load_serve_config

    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    png = make_png(args.image_size)
    results: list[LevelResult] = []
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for batch in args.batch:
            cfg = load_serve_config(
                args.config,
                [
                    f"detector.batching.max_batch_size={batch}",
                    f"detector.batching.batch_wait_timeout_s={args.batch_wait}",
                    "auth.api_key_env=''",
                    *args.set,
                ],
            )
            t = time.perf_counter()
            serve.run(build_app(cfg), name="bench", route_prefix="/")
            print(f"deployed max_batch_size={batch} in {time.perf_counter() - t:.1f} s", flush=True)
            handle = serve.get_deployment_handle("detector", app_name="bench")
            for clients in args.clients:
                before = _batch_total(handle.batch_stats.remote().result())
                fields = {
                    "score_threshold": str(args.score_threshold),
                    "max_detections": str(args.max_detections),
                    "masks": "rle",
                }
                lat, errors, seconds = asyncio.run(
                    drive(url, png, fields, clients, args.duration, args.warmup)
                )
                after = _batch_total(handle.batch_stats.remote().result())
                calls, images = after[0] - before[0], after[1] - before[1]
                ms = np.asarray(lat) * 1000 if lat else np.asarray([np.nan])
                res = LevelResult(
                    max_batch_size=batch,
                    clients=clients,
                    requests=len(lat),
                    errors=errors,
                    seconds=seconds,
                    rps=len(lat) / seconds,
                    p50_ms=float(np.percentile(ms, 50)),
                    p95_ms=float(np.percentile(ms, 95)),
                    p99_ms=float(np.percentile(ms, 99)),
                    mean_batch=images / calls if calls else float("nan"),
                )
                results.append(res)
                print(
                    f"  batch {batch} clients {clients}: {res.rps:.1f} req/s, "
                    f"p50 {res.p50_ms:.0f} ms, errors {errors}",
                    flush=True,
                )
            serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(v) for v in text.split(",") if v]

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/serve_app.yaml")
    p.add_argument("--set", action="append", default=[], help="config override a.b=value")
    p.add_argument("--clients", type=ints, default=[1, 4, 16])
    p.add_argument("--batch", type=ints, default=[1, 8], help="max_batch_size values")
    p.add_argument("--batch-wait", type=float, default=0.01, help="batch_wait_timeout_s")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per level")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.1,
        help="request threshold (0.1: an untrained model's scores lie near 0.15)",
    )
    p.add_argument("--max-detections", type=int, default=10, help="detections (with masks)")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--json", default="", help="write the results here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = run(args)
    rows: list[list[Any]] = [
        [r.max_batch_size, r.clients, r.requests, r.rps, r.p50_ms, r.p95_ms, r.p99_ms,
         r.errors, r.mean_batch]
        for r in results
    ]  # fmt: skip
    headers = ["max_batch", "clients", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms"]
    print(
        format_table(
            rows,
            [*headers, "errors", "mean batch"],
            title=f"POST /v1/detect, {args.image_size}x{args.image_size} PNG, "
            f"{args.max_detections} detections with RLE masks, {args.duration:g} s per level",
            decimals=1,
        )
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump([asdict(r) for r in results], fh, indent=1)


if __name__ == "__main__":
    main()
