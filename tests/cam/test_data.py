"""Hold-out split, label targets and augmentation."""

from __future__ import annotations

import torch

from weaksam.cam.config import ClassifierConfig
from weaksam.cam.data import augment_batch, holdout_split, jitter_size, label_matrix, normalize


def test_holdout_is_deterministic_disjoint_and_order_free() -> None:
    ids = [f"im{i}" for i in range(20)]
    tr, va = holdout_split(ids, 0.25, seed=3)
    assert len(va) == 5 and len(tr) == 15 and not set(tr) & set(va)
    assert holdout_split(ids, 0.25, seed=3) == (tr, va)
    shuffled = ids[::-1]
    _, va2 = holdout_split(shuffled, 0.25, seed=3)
    assert {shuffled[i] for i in va2} == {ids[i] for i in va}
    assert holdout_split(["a"], 0.5, 0) == ([0], [])  # never hold out everything
    assert holdout_split(ids, 0.0, 0)[1] == []


def test_label_matrix() -> None:
    m = label_matrix([[0, 2], [], None, [1]], 3)
    torch.testing.assert_close(m, torch.tensor([[1.0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 1, 0]]))


def test_augment_shapes_ranges_and_determinism() -> None:
    cfg = ClassifierConfig(input_size=32, scale_jitter=(0.5, 1.5), color_jitter=0.4)
    imgs = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    a = augment_batch(imgs, cfg, 8, torch.Generator().manual_seed(1))
    b = augment_batch(imgs, cfg, 8, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert a.shape[:2] == (3, 3) and a.shape[-1] % 8 == 0 and 16 <= a.shape[-1] <= 48
    lo, hi = normalize(torch.zeros(1, 3, 1, 1)), normalize(torch.full((1, 3, 1, 1), 255.0))
    assert torch.all(a >= lo - 1e-5) and torch.all(a <= hi + 1e-5)
    sides = {jitter_size(cfg, 8, torch.Generator().manual_seed(s)) for s in range(20)}
    assert len(sides) > 1 and all(s % 8 == 0 for s in sides)


def test_no_augmentation_is_a_plain_resize() -> None:
    cfg = ClassifierConfig(input_size=32, scale_jitter=(1.0, 1.0), color_jitter=0.0, hflip=False)
    imgs = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = augment_batch(imgs, cfg, 8, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, normalize(imgs))
