"""The bounded image cache: hits, least-recently-used eviction by bytes, nothing kept at 0."""

from __future__ import annotations

import pytest
import torch

from weaksam.train.cache import ImageCache


def _loader(calls: list[str], key: str, kib: int = 1):
    def load() -> torch.Tensor:
        calls.append(key)
        return torch.zeros(kib * 1024, dtype=torch.uint8)

    return load


def test_hits_and_lru_eviction_by_size() -> None:
    cache = ImageCache(max_mb=3 / 1024)  # room for three 1 KiB tensors
    calls: list[str] = []
    for k in ("a", "b", "c"):
        cache.get(k, _loader(calls, k))
    first = cache.get("a", _loader(calls, "a"))  # a hit: "a" is now the most recent
    assert calls == ["a", "b", "c"] and cache.hits == 1 and cache.misses == 3
    cache.get("d", _loader(calls, "d"))  # evicts "b", the least recently used
    assert len(cache) == 3 and cache.nbytes == 3 * 1024
    assert cache.get("a", _loader(calls, "a")) is first
    cache.get("b", _loader(calls, "b"))
    assert calls == ["a", "b", "c", "d", "b"]


def test_zero_keeps_nothing_and_oversized_values_pass_through() -> None:
    calls: list[str] = []
    off = ImageCache(0)
    off.get("a", _loader(calls, "a"))
    off.get("a", _loader(calls, "a"))
    assert calls == ["a", "a"] and len(off) == 0 and off.nbytes == 0
    small = ImageCache(max_mb=1 / 1024)
    big = small.get("big", _loader(calls, "big", kib=2))
    assert big.nelement() == 2048 and len(small) == 0
    with pytest.raises(ValueError, match=">= 0"):
        ImageCache(-1)
