"""VOC AP: the devkit's voc_ap and eval_detection_voc on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from weaksam.eval import Detections, GroundTruth, eval_detection_voc, voc_ap
from weaksam.geometry.boxes import box_iou


def _gt(image_id: str, boxes, classes, difficult=None) -> GroundTruth:
    n = len(classes)
    return GroundTruth(
        image_id=image_id,
        image_index=sum(map(ord, image_id)),
        height=100,
        width=100,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        classes=np.asarray(classes),
        difficult=np.zeros(n, bool) if difficult is None else np.asarray(difficult),
    )


def _det(image_id: str, boxes, scores, classes) -> Detections:
    return Detections(
        image_id=image_id,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.asarray(scores),
        classes=np.asarray(classes),
    )


@pytest.mark.parametrize(
    ("rec", "prec", "ap07", "ap_all"),
    [
        ([0.5, 1.0], [1.0, 0.5], 8.5 / 11, 0.75),
        ([0.25, 0.25, 0.5, 0.75], [1.0, 0.5, 2 / 3, 0.75], 6.75 / 11, 0.625),
        ([1.0], [1.0], 1.0, 1.0),
        ([], [], 0.0, 0.0),
    ],
)
def test_voc_ap_known_curves(rec, prec, ap07, ap_all) -> None:
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(ap07)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(ap_all)


def test_voc_ap_length_mismatch() -> None:
    with pytest.raises(ValueError):
        voc_ap([0.5], [1.0, 0.5])


def _hand_case() -> tuple[list[GroundTruth], list[Detections]]:
    # classes: 0 cat, 1 dog (in GT, never predicted), 2 bird (predicted, absent from GT)
    box = [0, 0, 10, 10]
    gts = [
        _gt("a", [box, [20, 20, 30, 30], [40, 40, 50, 50]], [0, 0, 1], [False, True, False]),
        _gt("b", [box], [0]),
        _gt("c", [], []),
    ]
    dets = [
        # 0.9 TP, 0.8 duplicate -> FP, 0.7 on the difficult cat -> ignored
        _det("a", [box, box, [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0]),
        _det("c", [box], [0.6], [0]),  # image without GT -> FP
        _det("b", [box, [0, 0, 5, 5]], [0.5, 0.95], [0, 2]),  # TP; a bird
    ]
    return gts, dets


def test_eval_detection_voc_hand_case() -> None:
    gts, dets = _hand_case()
    r07 = eval_detection_voc(gts, dets, num_classes=3, use_07_metric=True)
    # cat, ignored detection dropped: TP FP FP TP over npos 2
    np.testing.assert_allclose(r07.recall[0], [0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(r07.precision[0], [1.0, 0.5, 1 / 3, 0.5])
    assert r07.npos.tolist() == [2, 1, 0]
    assert r07.ap[0] == pytest.approx(8.5 / 11)
    assert r07.ap[1] == 0.0  # never predicted
    assert np.isnan(r07.ap[2])  # absent from the GT: excluded from the mean
    assert r07.map == pytest.approx((8.5 / 11) / 2)
    rall = eval_detection_voc(gts, dets, num_classes=3, use_07_metric=False)
    assert rall.ap[0] == pytest.approx(0.75)
    assert rall.map == pytest.approx(0.375)


def test_best_gt_already_matched_is_fp_as_devkit() -> None:
    # det 2's best GT (IoU 1) is taken; the devkit does not fall back to g2 (IoU 0.9)
    gts = [_gt("a", [[0, 0, 10, 10], [0, 0, 10, 9]], [0, 0])]
    dets = [_det("a", [[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])]
    r = eval_detection_voc(gts, dets, num_classes=1, use_07_metric=False)
    np.testing.assert_allclose(r.recall[0], [0.5, 0.5])
    np.testing.assert_allclose(r.precision[0], [1.0, 0.5])


def test_iou_exactly_half_misses() -> None:
    gts = [_gt("a", [[0, 0, 10, 10]], [0])]
    half = [_det("a", [[0, 0, 10, 5]], [0.9], [0])]  # IoU 50/100 = 0.5
    assert eval_detection_voc(gts, half, 1).map == 0.0
    assert eval_detection_voc(gts, half, 1, iou_thresh=0.49).map == pytest.approx(1.0)
    above = [_det("a", [[0, 0, 10, 5.5]], [0.9], [0])]  # IoU 0.55
    assert eval_detection_voc(gts, above, 1).map == pytest.approx(1.0)


def test_empty_detections_give_zero() -> None:
    gts, _ = _hand_case()
    r = eval_detection_voc(gts, [], num_classes=3)
    assert r.map == 0.0
    assert r.ap[:2].tolist() == [0.0, 0.0] and np.isnan(r.ap[2])
    assert all(p.size == 0 for p in r.precision)


def test_stable_sort_on_ties() -> None:
    # equal scores: image order decides (a before b); a's is a FP, b's a TP
    gts = [_gt("a", [], []), _gt("b", [[0, 0, 10, 10]], [0])]
    dets = [_det("a", [[0, 0, 10, 10]], [0.5], [0]), _det("b", [[0, 0, 10, 10]], [0.5], [0])]
    r = eval_detection_voc(gts, dets, 1)
    np.testing.assert_allclose(r.precision[0], [0.0, 0.5])


def _devkit_loop_ap(gts, dets, c, thresh, use_07):
    """The devkit's voc_eval loop, written plainly, for one class."""
    recs = {
        g.image_id: {
            "bbox": g.boxes[g.classes == c],
            "difficult": g.difficult[g.classes == c],
            "det": [False] * int((g.classes == c).sum()),
        }
        for g in gts
    }
    npos = sum(int((~r["difficult"]).sum()) for r in recs.values())
    items = [
        (float(d.scores[k]), d.image_id, d.boxes[k])
        for d in dets
        for k in range(len(d))
        if d.classes[k] == c
    ]
    order = np.argsort(-np.array([s for s, _, _ in items]), kind="stable")
    tp, fp = [], []
    for k in order:
        _, image_id, bb = items[k]
        r = recs[image_id]
        ovmax = -np.inf
        if len(r["bbox"]):
            ov = box_iou(bb[None], r["bbox"])[0]
            ovmax, jmax = ov.max(), int(ov.argmax())
        if ovmax > np.float32(thresh):
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    r["det"][jmax] = True
                    tp.append(1)
                    fp.append(0)
                else:
                    tp.append(0)
                    fp.append(1)
            else:
                tp.append(0)
                fp.append(0)
        else:
            tp.append(0)
            fp.append(1)
    tpc, fpc = np.cumsum(tp), np.cumsum(fp)
    rec = tpc / max(npos, 1)
    prec = tpc / np.maximum(tpc + fpc, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07) if npos else float("nan")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_plain_devkit_loop_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)

    def boxes(n: int) -> np.ndarray:
        xy = rng.integers(0, 60, size=(n, 2))
        wh = rng.integers(5, 40, size=(n, 2))
        return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)

    gts, dets = [], []
    for i in range(12):
        n = int(rng.integers(0, 5))
        g_boxes = boxes(n)
        gts.append(_gt(str(i), g_boxes, rng.integers(0, 3, n), rng.random(n) < 0.2))
        m = int(rng.integers(0, 8))
        jitter = g_boxes[rng.integers(0, max(n, 1), m)] if n else boxes(m)
        d_boxes = jitter + rng.normal(0, 3, size=(m, 4)).astype(np.float32)
        scores = np.round(rng.random(m), 1)  # ties happen
        dets.append(_det(str(i), d_boxes, scores, rng.integers(0, 3, m)))
    for use_07 in (True, False):
        r = eval_detection_voc(gts, dets, 3, use_07_metric=use_07)
        expected = [_devkit_loop_ap(gts, dets, c, 0.5, use_07) for c in range(3)]
        np.testing.assert_allclose(r.ap, expected, equal_nan=True)
        assert 0 < r.map < 1  # a non-trivial case
