"""A bounded in-memory cache of decoded training images (one per training worker).

Training decodes the images it draws; keeping them avoids decoding again at the next epoch,
but an unbounded cache grows with the dataset (tens of GB per worker on COCO). The cache here
holds at most ``max_mb`` MiB of tensors and drops the least recently used first, so a worker's
memory is set by configuration. The tensors it returns are the ones stored: callers must not
modify them in place.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch


class ImageCache:
    """Least-recently-used cache of tensors, bounded by their total size.

    Args:
        max_mb: the bound in MiB (0: nothing is kept). A tensor larger than the bound alone
            is returned but not kept.
    """

    def __init__(self, max_mb: float) -> None:
        if max_mb < 0:
            raise ValueError(f"max_mb must be >= 0, got {max_mb}")
        self.max_bytes = int(max_mb * 2**20)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, load: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The tensor stored under ``key``, or ``load()``'s (kept when it fits)."""
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        value = load()
        size = value.element_size() * value.nelement()
        if size <= self.max_bytes:
            self._items[key] = value
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.nbytes -= old.element_size() * old.nelement()
        return value


__all__ = ["ImageCache"]
