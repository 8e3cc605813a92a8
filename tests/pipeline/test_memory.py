"""Per-stage memory accounting: worker kinds from process titles, peaks per process and kind,
and a sampler that sees a (fake) Ray worker among the driver's descendants."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from weaksam.pipeline.memory import MemoryWatch, NodeSampler, WorkerPeaks, worker_kind


@pytest.mark.parametrize(
    ("title", "kind"),
    [
        ("ray::RayTrainWorker.run_train_fn", "RayTrainWorker"),
        (
            "ray::MapWorker(MapBatches(ProposalGenerator)).submit",
            "MapWorker(MapBatches(ProposalGenerator))",
        ),
        (
            "ray::MapWorker(MapBatches(ProposalGenerator)).__init__",
            "MapWorker(MapBatches(ProposalGenerator))",
        ),
        ("ray::IDLE", "IDLE"),
        ("ray::ReadRange->MapBatches(decode_images) 12", "ReadRange->MapBatches(decode_images)"),
        ("ray::", None),
        ("/usr/bin/python -m ray_jobs.pipeline", None),
        ("", None),
    ],
)
def test_worker_kind(title: str, kind: str | None) -> None:
    assert worker_kind(title) == kind


def test_peaks_per_process_then_per_kind() -> None:
    peaks = WorkerPeaks()
    peaks.add("n1", 10, "RayTrainWorker", 300)
    peaks.add("n1", 10, "IDLE", 500)  # went idle: keeps its kind, and the larger peak
    peaks.add("n1", 11, "RayTrainWorker", 400)
    peaks.add("n2", 10, "MapWorker(MapBatches(X))", 200)  # same pid, another node
    peaks.add("n2", 12, "IDLE", 900)  # never did anything
    peaks.add("n2", 13, "NodeSampler", 950)  # the samplers themselves
    assert peaks.by_kind() == {"RayTrainWorker": 500, "MapWorker(MapBatches(X))": 200}
    again = WorkerPeaks.from_json(peaks.to_json())
    assert again.processes == peaks.processes
    other = WorkerPeaks()
    other.add("n1", 11, "RayTrainWorker", 700)
    again.merge(other)
    assert again.by_kind()["RayTrainWorker"] == 700


def _fake_worker(kind: str = "FakeWorker") -> subprocess.Popen[bytes]:
    """A child process titled like a Ray worker (``ray::<kind>.run``), holding ~64 MiB.

    Returns once the title is visible: until ``exec`` runs, the child is still ``bash -c ...``
    and a snapshot taken then would not know it as a worker."""
    code = "import time; x = bytearray(64 << 20); time.sleep(30)"
    proc = subprocess.Popen(
        ["bash", "-c", f'exec -a "ray::{kind}.run" {sys.executable} -c "{code}"'],
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if worker_kind(" ".join(psutil.Process(proc.pid).cmdline())) == kind:
                return proc
        except psutil.Error:
            pass
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the fake worker never showed the title ray::{kind}.run")


def test_before_the_stage_processes_count_only_once_they_change() -> None:
    peaks = WorkerPeaks()
    peaks.existed("n", 1, "WSODBatchPredictor")  # an earlier stage's actor, lingering
    peaks.existed("n", 2, "IDLE")  # a pool worker
    peaks.add("n", 1, "WSODBatchPredictor", 900)
    peaks.add("n", 2, "MapBatches(decode_images)", 300)  # picked up this stage's work
    assert peaks.by_kind() == {"MapBatches(decode_images)": 300}


def test_watch_sees_a_descendant_worker_and_the_driver() -> None:
    lingering = _fake_worker("Lingering")
    try:
        with MemoryWatch(interval=0.1) as watch:
            proc = _fake_worker()
            try:
                time.sleep(1.5)
            finally:
                proc.kill()
                proc.wait()
    finally:
        lingering.kill()
        lingering.wait()
    mem = watch.result
    assert "Lingering" not in mem.workers.by_kind()  # it was there before the stage
    assert mem.driver_bytes > 10 << 20
    assert mem.largest_worker is not None
    kind, rss = mem.largest_worker
    assert kind == "FakeWorker" and rss > 64 << 20
    assert mem.metrics()["worker_peak_rss_mb"]["FakeWorker"] > 64


def test_node_sampler_as_a_plain_object() -> None:
    sampler = NodeSampler(interval=0.1)
    proc = _fake_worker()
    try:
        time.sleep(1.5)
        peaks = WorkerPeaks.from_json(sampler.stop())
    finally:
        proc.kill()
        proc.wait()
    assert peaks.by_kind().get("FakeWorker", 0) > 64 << 20
