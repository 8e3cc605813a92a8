"""Shared fixtures. Tests run on CPU with few threads; Ray is started at most once per session."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Bind every listener of the test cluster to loopback (read when Ray is first imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One private local Ray instance (2 CPUs, loopback only) shared by the whole session.

    Tests that need Ray take this fixture and are marked ``ray``; it is shut down at the end.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(
        address="local",  # never join a cluster another test (or anyone) left on this machine
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=512 * 2**20,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the session; the AWS variables point at it (and are
    restored afterwards). Yields the endpoint URL. Skips when moto is not installed."""
    pytest.importorskip("moto.server")
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the moto server; yields ``s3://<bucket>``."""
    import uuid

    import boto3

    name = f"weaksam-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(params=["local", "file", "s3"])
def storage_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty run root of each kind :mod:`weaksam.storage` takes: a local path, a
    ``file://`` URI and a fresh moto bucket (``s3://<bucket>/runs``)."""
    if request.param == "local":
        return str(tmp_path / "runs")
    if request.param == "file":
        return f"file://{tmp_path}/runs"
    return request.getfixturevalue("s3_bucket") + "/runs"


@pytest.fixture(scope="session")
def bench_script() -> Callable[[str], ModuleType]:
    """Import a script of ``bench/`` by file name (``bench`` is not a package)."""

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
