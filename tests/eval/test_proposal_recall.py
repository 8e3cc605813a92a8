"""Class-agnostic proposal recall with greedy one-to-one matching."""

from __future__ import annotations

import numpy as np
import pytest

from weaksam.eval import Detections, GroundTruth, eval_recall, greedy_match_ious

G1, G2 = [0, 0, 10, 10], [0, 0, 10, 8]
P1, P2 = [0, 0, 10, 10], [0, 0, 10, 7]  # P1: IoU 1.0 with G1, 0.8 with G2; P2: 0.7, 0.875


def _gt(difficult=(False, False)) -> GroundTruth:
    return GroundTruth(
        image_id="a",
        image_index=0,
        height=20,
        width=20,
        boxes=np.array([G1, G2], np.float32),
        classes=np.array([0, 1]),
        difficult=np.array(difficult),
    )


def _props(*boxes) -> Detections:
    n = len(boxes)
    return Detections(
        image_id="a",
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.linspace(1, 0.5, n),
        classes=np.full(n, -1),
    )


def test_one_proposal_two_gts_is_one_to_one() -> None:
    r = eval_recall([_gt()], [_props(P1)])
    assert r.recall_at == {0.5: 0.5, 0.7: 0.5, 0.9: 0.5}
    assert r.num_gt == 2 and r.proposals_per_image == 1.0


def test_greedy_matching_and_ar_curve() -> None:
    r = eval_recall([_gt()], [_props(P1, P2)], budgets=(1, None))
    assert r.recall_at == {0.5: 1.0, 0.7: 1.0, 0.9: 0.5}
    # N=1: G1 at 1.0 only -> 0.5 at every threshold; all: G2 at 0.875 counts up to t=0.85
    assert r.ar_curve[0] == (1, pytest.approx(0.5))
    assert r.ar_curve[1] == (None, pytest.approx(0.9))


def test_stored_order_decides_the_budget() -> None:
    r = eval_recall([_gt()], [_props(P2, P1)], budgets=(1,))
    assert r.ar_curve == [(1, pytest.approx(0.4))]  # only P2 -> G2 at 0.875


def test_difficult_exclusion_and_empty() -> None:
    gt = _gt(difficult=(False, True))
    assert eval_recall([gt], [_props(P2)], include_difficult=False).num_gt == 1
    assert eval_recall([gt], [_props(P2)]).num_gt == 2
    r = eval_recall([gt], [])
    assert r.recall_at[0.5] == 0.0 and r.proposals_per_image == 0.0


def test_greedy_match_ious() -> None:
    iou = np.array([[0.9, 0.6], [0.8, 0.1]])
    # naive per-GT max would give [0.9, 0.8]; one-to-one gives [0.9, 0.1]
    np.testing.assert_allclose(greedy_match_ious(iou), [0.9, 0.1])
    np.testing.assert_allclose(greedy_match_ious(np.zeros((2, 0))), [0.0, 0.0])
