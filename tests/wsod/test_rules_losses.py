"""Golden tests of the WSOD rules and losses on tiny hand-made tensors."""

import math

import pytest
import torch

from weaksam.geometry.box_coder import decode_boxes, encode_boxes
from weaksam.wsod.losses import mil_loss, refinement_loss, regression_loss, wsddn_scores
from weaksam.wsod.rules import assign_rois, mist_pseudo_boxes, oicr_pseudo_boxes

BOXES = torch.tensor(
    [
        [0.0, 0.0, 10.0, 10.0],  # 0
        [1.0, 0.0, 11.0, 10.0],  # 1: IoU with 0 = 90/110
        [50.0, 50.0, 60.0, 60.0],  # 2
        [0.0, 0.0, 10.0, 20.0],  # 3: IoU with 0 = 0.5
    ]
)


def test_wsddn_and_mil_golden() -> None:
    cls = torch.zeros(2, 2)
    det = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    phi, s = wsddn_scores(cls, det)
    # class softmax = 0.5 everywhere; RoI softmax of class 0 = (0.25, 0.75), class 1 = (0.5, 0.5)
    torch.testing.assert_close(phi, torch.tensor([[0.125, 0.25], [0.375, 0.25]]))
    torch.testing.assert_close(s, torch.tensor([0.5, 0.5]))
    loss = mil_loss(s, torch.tensor([1, 0]))
    assert abs(float(loss) - math.log(2)) < 1e-6  # mean of -log(0.5) and -log(1 - 0.5)
    # the clamp keeps the loss finite when a score saturates
    _, s1 = wsddn_scores(torch.tensor([[100.0, -100.0]]), torch.zeros(1, 2))
    assert torch.isfinite(mil_loss(s1, torch.tensor([0, 1])))


def test_oicr_ratio_and_nms() -> None:
    scores = torch.tensor([[0.9, 0.0], [0.85, 0.0], [0.5, 0.0], [0.1, 0.95]])
    pb = oicr_pseudo_boxes(BOXES, scores, torch.tensor([0, 1]))
    # class 0: RoIs with p >= 0.81 are 0 and 1; NMS 0.5 drops 1 (IoU 0.82 with 0).
    # class 1: RoI 3 (IoU 0.5 with RoI 0: not > 0.5, kept by NMS).
    order = pb.classes.argsort()
    assert pb.classes[order].tolist() == [0, 1]
    torch.testing.assert_close(pb.scores[order], torch.tensor([0.9, 0.95]))
    torch.testing.assert_close(pb.boxes[order], BOXES[[0, 3]])
    t = assign_rois(BOXES, pb)
    # RoI 0 -> pseudo box 0 (IoU 1), RoI 1 -> box 0 (0.82), RoI 2 -> bg, RoI 3 -> class 1 (IoU 1)
    assert t.labels.tolist() == [1, 1, 0, 2]
    torch.testing.assert_close(t.weights[[0, 1, 3]], torch.tensor([0.9, 0.9, 0.95]))


def test_mist_topk_and_iou_rule() -> None:
    # 20 RoIs -> k = int(0.15 * 20) = 3
    boxes = torch.cat([BOXES, torch.tensor([[100.0, 100.0, 101.0, 101.0]]).repeat(16, 1)])
    scores = torch.zeros(20, 1)
    scores[0, 0], scores[1, 0], scores[2, 0] = 0.9, 0.8, 0.7
    pb = mist_pseudo_boxes(boxes, scores, torch.tensor([0]))
    # top-3 = RoIs 0, 1, 2; RoI 1 overlaps RoI 0 (IoU .82 >= .2): dropped; RoI 2 kept
    torch.testing.assert_close(pb.boxes, BOXES[[0, 2]])
    torch.testing.assert_close(pb.scores, torch.tensor([0.9, 0.7]))
    # fewer than 10 RoIs -> k = 1
    small = mist_pseudo_boxes(BOXES, torch.tensor([[0.1], [0.2], [0.9], [0.3]]), torch.tensor([0]))
    torch.testing.assert_close(small.boxes, BOXES[[2]])


def test_mist_compares_with_all_higher_ranked_not_only_kept() -> None:
    # A (kept) ; B overlaps A (dropped) ; C overlaps B but not A -> still dropped (B ranks higher)
    boxes = torch.tensor([[0.0, 0, 10, 10], [6.0, 0, 16, 10], [12.0, 0, 22, 10]])
    boxes = torch.cat([boxes, torch.tensor([[200.0, 200, 201, 201]]).repeat(17, 1)])
    scores = torch.zeros(20, 1)
    scores[:3, 0] = torch.tensor([0.9, 0.8, 0.7])
    pb = mist_pseudo_boxes(boxes, scores, torch.tensor([0]))
    assert pb.boxes.shape[0] == 1


def test_assign_threshold_and_empty() -> None:
    pb = oicr_pseudo_boxes(BOXES, torch.tensor([[0.9], [0.0], [0.0], [0.0]]), torch.tensor([0]))
    t = assign_rois(BOXES, pb)
    assert t.labels.tolist() == [1, 1, 0, 1]  # IoU exactly 0.5 is foreground (>= 0.5)
    empty = oicr_pseudo_boxes(BOXES, torch.zeros(4, 1), torch.tensor([], dtype=torch.long))
    t0 = assign_rois(BOXES, empty)
    assert t0.labels.tolist() == [0, 0, 0, 0] and float(t0.weights.sum()) == 0.0


def test_refinement_and_regression_losses() -> None:
    pb = oicr_pseudo_boxes(BOXES, torch.tensor([[0.8], [0.0], [0.0], [0.0]]), torch.tensor([0]))
    t = assign_rois(BOXES, pb)
    logits = torch.zeros(4, 2)  # uniform over {bg, class 0}: -log(0.5) each
    loss = refinement_loss(logits, t)
    torch.testing.assert_close(loss, torch.tensor(0.8 * math.log(2)))
    deltas = torch.zeros(4, 2, 4)
    # RoI 0 equals its pseudo box -> zero loss; RoI 1 shifted by 1 px; RoI 3 taller
    goal1 = encode_boxes(BOXES[[0]], BOXES[[1]])
    goal3 = encode_boxes(BOXES[[0]], BOXES[[3]])
    sl1 = torch.nn.functional.smooth_l1_loss
    expected = (
        0.8
        * (
            sl1(torch.zeros(4), goal1[0], reduction="sum")
            + sl1(torch.zeros(4), goal3[0], reduction="sum")
        )
        / 4
    )
    torch.testing.assert_close(regression_loss(deltas, BOXES, t), expected)
    deltas[1, 1] = goal1[0]
    deltas[3, 1] = goal3[0]
    torch.testing.assert_close(regression_loss(deltas, BOXES, t), torch.tensor(0.0))


def test_box_coder_round_trip() -> None:
    rois = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 7.0, 9.0]])
    gt = torch.tensor([[1.0, 2.0, 12.0, 18.0], [4.0, 4.0, 9.0, 9.0]])
    d = encode_boxes(gt, rois)
    torch.testing.assert_close(decode_boxes(d, rois), gt)
    # golden: centre shift of 1 px on a 10-px box with weight 10 -> dx = 1
    d0 = encode_boxes(torch.tensor([[1.0, 0, 11, 10]]), torch.tensor([[0.0, 0, 10, 10]]))
    torch.testing.assert_close(d0, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_mil_reduction_sum_and_mean_golden() -> None:
    """WSOD2's OICR sums the BCE over classes, wetectron's MIST averages: ``C`` times apart,
    which the per-RoI-mean refinement losses do not follow."""
    s, y = torch.tensor([0.8, 0.3]), torch.tensor([1, 0])
    terms = [-math.log(0.8), -math.log(1 - 0.3)]
    assert abs(float(mil_loss(s, y, "sum")) - sum(terms)) < 1e-6
    assert abs(float(mil_loss(s, y, "mean")) - sum(terms) / 2) < 1e-6
    with pytest.raises(ValueError, match="MIL reduction"):
        mil_loss(s, y, "max")


def test_mil_with_background_column_golden() -> None:
    """wetectron's MISTPredictor: C + 1 WSDDN columns, background label 0. Uniform class
    logits and RoI logits (0, ln 3): phi = [[1, 1, 1] / 12, [1, 1, 1] / 4], image scores 1/3
    each; with the label on class 0 (column 1) the mean BCE is (2 ln 1.5 + ln 3) / 3, not the
    C-column loss ln 2: the background column is no constant."""
    from weaksam.wsod.config import WSODTrainConfig
    from weaksam.wsod.objective import ImageTargets, image_loss
    from weaksam.wsod.outputs import HeadOutputs

    boxes = BOXES[:2]
    cfg = WSODTrainConfig()
    target = ImageTargets(torch.tensor([0]))
    det_bg = torch.tensor([[0.0] * 3, [math.log(3)] * 3])
    with_bg = HeadOutputs(
        torch.zeros(2, 3), det_bg, torch.zeros(0, 2, 3), None, [2], mil_background=True
    )
    want = (2 * math.log(1.5) + math.log(3)) / 3
    assert abs(float(image_loss("wsddn", with_bg, 0, boxes, target, cfg)["mil"]) - want) < 1e-6
    plain = HeadOutputs(torch.zeros(2, 2), det_bg[:, :2], torch.zeros(0, 2, 3), None, [2])
    assert abs(float(image_loss("wsddn", plain, 0, boxes, target, cfg)["mil"]) - math.log(2)) < 1e-6
    phi, _ = wsddn_scores(with_bg.cls_logits, with_bg.det_logits)
    torch.testing.assert_close(phi, torch.tensor([[1 / 12] * 3, [1 / 4] * 3]))
