"""RoI drop on hand-made logits and deltas."""

import math

import torch
from torchvision.models.detection.roi_heads import fastrcnn_loss

from weaksam.detection.roi_drop import fastrcnn_loss_with_drop


def _case() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    # 4 RoIs, 3 classes (0 = bg). RoI 0: fg, confidently wrong and far off -> droppable.
    # RoI 1: fg, well classified. RoI 2: bg with a high loss (never dropped). RoI 3: fg, high CE
    # but an accurate box (kept: both conditions are needed).
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0], [10.0, 0.0, 0.0]])
    deltas = torch.zeros(4, 12)
    targets = torch.tensor(
        [[3.0, 3.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0]]
    )
    labels = torch.tensor([1, 1, 0, 2])
    return logits, deltas, [labels[:2], labels[2:]], [targets[:2], targets[2:]]


def test_inactive_equals_torchvision() -> None:
    logits, deltas, labels, targets = _case()
    ours = fastrcnn_loss_with_drop(logits, deltas, labels, targets, False, 4.0, 4.0)
    ref_cls, ref_box = fastrcnn_loss(logits, deltas, labels, targets)
    torch.testing.assert_close(ours.loss_classifier, ref_cls)
    torch.testing.assert_close(ours.loss_box_reg, ref_box)
    assert ours.dropped == 0 and ours.foreground == 3


def test_active_drops_only_fg_over_both_thresholds_and_keeps_normalisation() -> None:
    logits, deltas, labels, targets = _case()
    out = fastrcnn_loss_with_drop(logits, deltas, labels, targets, True, 4.0, 4.0)
    assert out.dropped == 1
    ce = torch.nn.functional.cross_entropy(logits, torch.cat(labels), reduction="none")
    # RoI 0 contributes nothing; the mean is still over all 4 sampled RoIs
    torch.testing.assert_close(out.loss_classifier, (ce[1] + ce[2] + ce[3]) / 4)
    sl1 = torch.nn.functional.smooth_l1_loss
    kept = sl1(torch.zeros(4), targets[0][1], beta=1 / 9, reduction="sum") + sl1(
        torch.zeros(4), targets[1][1], beta=1 / 9, reduction="sum"
    )
    torch.testing.assert_close(out.loss_box_reg, kept / 4)
    # golden: RoI 0's CE is ~10 (> 4) and its L1 is 6 (> 4)
    assert ce[0] > 4 and math.isclose(float(targets[0][0].abs().sum()), 6.0)


def test_thresholds_are_strict_and_gradients_zero_for_dropped() -> None:
    logits, deltas, labels, targets = _case()
    logits.requires_grad_(True)
    deltas.requires_grad_(True)
    out = fastrcnn_loss_with_drop(logits, deltas, labels, targets, True, 4.0, 6.0)
    assert out.dropped == 0  # L1 of RoI 0 is exactly 6: not > 6
    out = fastrcnn_loss_with_drop(logits, deltas, labels, targets, True, 4.0, 4.0)
    (out.loss_classifier + out.loss_box_reg).backward()
    assert torch.all(logits.grad[0] == 0) and torch.all(deltas.grad[0] == 0)
    assert torch.any(logits.grad[2] != 0)  # background RoI still trained


def test_no_foreground() -> None:
    logits = torch.zeros(2, 3)
    out = fastrcnn_loss_with_drop(
        logits, torch.zeros(2, 12), [torch.tensor([0, 0])], [torch.zeros(2, 4)], True, 0.0, 0.0
    )
    assert out.dropped == 0 and float(out.loss_box_reg) == 0.0
    torch.testing.assert_close(out.loss_classifier, torch.tensor(math.log(3)))


def test_threshold_counts_whether_or_not_active() -> None:
    """Foreground RoIs over each threshold are counted before drop switches on too: RoI 0
    (CE ~10, L1 6) is over both, RoI 3 (CE ~10, L1 0.1) over the CE threshold only; the
    background RoI 2 is never counted."""
    logits, deltas, labels, targets = _case()
    for active in (False, True):
        out = fastrcnn_loss_with_drop(logits, deltas, labels, targets, active, 4.0, 4.0)
        assert (out.over_cls, out.over_reg, out.over_both) == (2, 1, 1)
        assert out.dropped == (1 if active else 0)
    high = fastrcnn_loss_with_drop(logits, deltas, labels, targets, True, 20.0, 4.0)
    assert (high.over_cls, high.over_reg, high.over_both, high.dropped) == (0, 1, 0, 0)


def test_roi_drop_counts_split_before_and_after_switch_on() -> None:
    from weaksam.detection.stage import roi_drop_counts

    history = [
        {"rois_foreground": 10, "rois_over_cls": 3, "rois_over_reg": 2, "rois_over_both": 1},
        {
            "rois_foreground": 8,
            "rois_over_cls": 1,
            "rois_over_reg": 4,
            "rois_over_both": 1,
            "rois_foreground_active": 5,  # the window in which drop switched on
            "rois_over_reg_active": 3,
            "rois_over_both_active": 1,
        },
    ]
    got = roi_drop_counts(history)
    assert (got["rois_foreground"], got["rois_over_cls"], got["rois_over_both"]) == (18, 4, 2)
    assert (got["rois_foreground_active"], got["rois_over_reg_active"]) == (5, 3)
    assert got["rois_over_both_active"] == 1 and got["rois_over_cls_active"] == 0
    assert roi_drop_counts([])["rois_over_both_active"] == 0
