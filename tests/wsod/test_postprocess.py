"""Per-RoI scores and boxes, TTA merge and per-class NMS on hand-made tensors."""

from __future__ import annotations

import torch

from weaksam.geometry.box_coder import encode_boxes
from weaksam.wsod.outputs import HeadOutputs
from weaksam.wsod.postprocess import merge_passes, roi_scores_and_boxes, select_detections

ROIS = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 70.0, 60.0]])


def test_scores_are_mean_of_branch_softmaxes_without_background() -> None:
    # branch 1: RoI 0 certain of class 0; branch 2: uniform -> mean = (1 + 1/3) / 2
    big = 50.0
    b1 = torch.tensor([[0.0, big, 0.0], [big, 0.0, 0.0], [0.0, 0.0, big]])
    b2 = torch.zeros(3, 3)
    out = HeadOutputs(None, None, torch.stack([b1, b2]), None, [3])
    scores, boxes = roi_scores_and_boxes(out, ROIS)
    torch.testing.assert_close(scores[0], torch.tensor([(1 + 1 / 3) / 2, 1 / 6]))
    torch.testing.assert_close(scores[1], torch.tensor([1 / 6, 1 / 6]))
    torch.testing.assert_close(boxes, ROIS[:, None].expand(3, 2, 4))


def test_wsddn_only_scores_are_phi() -> None:
    cls = torch.zeros(2, 2)
    det = torch.tensor([[0.0, 0.0], [torch.log(torch.tensor(3.0)), 0.0]])
    out = HeadOutputs(cls, det, torch.zeros(0, 2, 3), None, [2])
    scores, _ = roi_scores_and_boxes(out, ROIS[:2])
    torch.testing.assert_close(scores, torch.tensor([[0.125, 0.25], [0.375, 0.25]]))


def test_boxes_decode_the_mean_of_branch_deltas() -> None:
    goal = torch.tensor([[2.0, 0.0, 12.0, 10.0]])
    d = encode_boxes(goal, ROIS[:1])[0]
    deltas = torch.zeros(2, 1, 3, 4)  # K=2, R=1, C+1=3
    deltas[0, 0, 2] = 2 * d  # class 1, branch 1; branch 2 predicts 0 -> mean = d
    out = HeadOutputs(None, None, torch.zeros(2, 1, 3), deltas, [1])
    _, boxes = roi_scores_and_boxes(out, ROIS[:1])
    torch.testing.assert_close(boxes[0, 1], goal[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(boxes[0, 0], ROIS[0])  # class 0: zero deltas


def test_merge_passes_averages_per_roi() -> None:
    s, b = merge_passes(
        [torch.tensor([[0.2]]), torch.tensor([[0.6]])],
        [torch.tensor([[[0.0, 0, 10, 10]]]), torch.tensor([[[2.0, 0, 12, 10]]])],
    )
    torch.testing.assert_close(s, torch.tensor([[0.4]]))
    torch.testing.assert_close(b, torch.tensor([[[1.0, 0, 11, 10]]]))


def test_select_detections_nms_per_class_threshold_and_cap() -> None:
    scores = torch.tensor([[0.9, 0.5], [0.8, 0.0], [0.7, 0.6]])
    boxes = ROIS[:, None].expand(3, 2, 4)
    b, s, c = select_detections(scores, boxes, nms_iou=0.3)
    # class 0: RoI 1 overlaps RoI 0 (IoU .82) -> suppressed; class 1: RoI 1 has score 0 -> dropped
    torch.testing.assert_close(s, torch.tensor([0.9, 0.7, 0.6, 0.5]))
    assert c.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(b[0], ROIS[0])
    # NMS is per class: the same box survives for both classes
    _, s2, _ = select_detections(scores, boxes, nms_iou=0.3, max_detections=2)
    torch.testing.assert_close(s2, torch.tensor([0.9, 0.7]))
    # a threshold keeps scores strictly above it; clipping to the image
    _, s3, _ = select_detections(scores, boxes, score_thresh=0.6)
    torch.testing.assert_close(s3, torch.tensor([0.9, 0.7]))
    b4, _, _ = select_detections(scores[2:], boxes[2:], height=55, width=65)
    torch.testing.assert_close(b4[0], torch.tensor([50.0, 50.0, 65.0, 55.0]))
