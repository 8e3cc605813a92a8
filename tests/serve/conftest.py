"""Fixtures of the service tests (helpers live in serve_helpers.py beside this file)."""

from __future__ import annotations

import pytest
from serve_helpers import save_random_sam, save_small_detector


@pytest.fixture(scope="session")
def sam_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_random_sam(tmp_path_factory.mktemp("sam") / "sam_demo_random.pt")


@pytest.fixture(scope="session")
def detector_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_small_detector(tmp_path_factory.mktemp("det") / "model.pt")
