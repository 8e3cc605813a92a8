"""Golden tests of the PGT rules on hand-made detections."""

import numpy as np
import pytest

from weaksam.pgt.rules import PGTConfig, make_pgt, normalize_scores, pgt_adaptive, pgt_top1

BOXES = np.array(
    [
        [0, 0, 10, 10],  # 0 class 0, 0.9
        [1, 1, 9, 9],  # 1 class 0, 0.5: 100 % inside box 0
        [50, 50, 60, 60],  # 2 class 0, 0.7: elsewhere
        [0, 0, 10, 10],  # 3 class 1, 0.8
        [100, 100, 110, 110],  # 4 class 2, 0.95: class not in labels
        [20, 20, 30, 30],  # 5 class 0, 0.1: low score
    ],
    dtype=np.float32,
)
SCORES = np.array([0.9, 0.5, 0.7, 0.8, 0.95, 0.1], dtype=np.float32)
CLASSES = np.array([0, 0, 0, 1, 2, 0])


def test_normalize() -> None:
    np.testing.assert_allclose(normalize_scores([0.9, 0.5, 0.1]), [1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_array_equal(normalize_scores([0.3]), [1.0])
    np.testing.assert_array_equal(normalize_scores([0.4, 0.4]), [1.0, 1.0])
    assert normalize_scores([]).shape == (0,)


def test_normalize_reference_divides_by_the_range() -> None:
    """Method §4.1: ``s / (max - min + 1e-8)``, not ``(s - min) / (max - min)``."""
    np.testing.assert_allclose(
        normalize_scores([0.9, 0.5, 0.1], "reference"), [1.125, 0.625, 0.125], rtol=1e-6
    )
    assert normalize_scores([0.3], "reference")[0] > 1e6  # one entry: passes any t_keep
    with pytest.raises(ValueError, match="normalization"):
        normalize_scores([0.3], "zscore")
    with pytest.raises(ValueError, match="normalization"):
        PGTConfig(normalization="zscore")


@pytest.mark.parametrize(
    ("scores", "minmax_kept", "reference_kept"),
    [
        ([0.9, 0.85], 1, 2),  # min-max makes the second box 0: dropped
        ([0.9, 0.85, 0.01], 2, 2),  # an unrelated low box changes min-max's answer
    ],
)
def test_adaptive_normalisation_example(
    scores: list[float], minmax_kept: int, reference_kept: int
) -> None:
    """The issue's example: two disjoint boxes of one class, then a third low-scoring one."""
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    boxes = boxes[: len(scores)]
    classes = [0] * len(scores)
    for mode, want in (("minmax", minmax_kept), ("reference", reference_kept)):
        cfg = PGTConfig(normalization=mode)
        assert len(make_pgt(boxes, scores, classes, [0], cfg)) == want, mode


def test_top1_drops_unlabelled_classes() -> None:
    p = pgt_top1(BOXES, SCORES, CLASSES, labels=[0, 1])
    assert p.classes.tolist() == [0, 1]
    np.testing.assert_allclose(p.scores, [0.9, 0.8])
    np.testing.assert_array_equal(p.boxes, BOXES[[0, 3]])


def test_adaptive_keep_and_containment() -> None:
    p = pgt_adaptive(BOXES, SCORES, CLASSES, labels=[0, 1], t_keep=0.5, t_con=0.85)
    # class 0 normalised: 0.9->1, 0.7->0.75, 0.5->0.5, 0.1->0: keeps 0, 2, 1 by score;
    # box 1 lies inside box 0 (containment 1.0 >= 0.85) -> dropped. class 1: its single box.
    got = sorted((c, round(float(v), 2)) for c, v in zip(p.classes.tolist(), p.scores, strict=True))
    assert got == [
        (0, 0.7),
        (0, 0.9),
        (1, 0.8),
    ]


def test_adaptive_duplicates_keep_one_and_ties_stable() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
    p = pgt_adaptive(boxes, [0.6, 0.6], [3, 3], labels=[3])
    assert len(p) == 1  # the reference's symmetric check removed both
    np.testing.assert_array_equal(p.boxes, boxes[:1])


def test_containment_is_asymmetric() -> None:
    big, small = [0, 0, 100, 100], [10, 10, 20, 20]
    # t_keep 0 keeps both by score, so only containment decides.
    # the big box scores higher: the small one inside it goes
    p = pgt_adaptive([big, small], [0.9, 0.8], [0, 0], labels=[0], t_keep=0.0)
    assert len(p) == 1 and p.scores[0] == pytest.approx(0.9)
    # the small box scores higher: the big one is only 1 % inside the small one, both stay
    p = pgt_adaptive([big, small], [0.8, 0.9], [0, 0], labels=[0], t_keep=0.0)
    assert len(p) == 2


def test_single_detection_no_survivor_and_empty() -> None:
    p = pgt_adaptive([[0, 0, 5, 5]], [0.01], [0], labels=[0], t_keep=0.99)
    assert len(p) == 1  # the best box of a labelled class is always kept
    assert len(pgt_adaptive(BOXES, SCORES, CLASSES, labels=[7])) == 0
    assert len(pgt_top1([[0, 0, 1, 1]], [0.0], [0], labels=[0])) == 0  # top1 needs score > 0
    empty = pgt_adaptive(np.zeros((0, 4)), [], [], labels=[0, 1])
    assert empty.boxes.shape == (0, 4)


def test_make_pgt_dispatch_and_validation() -> None:
    assert len(make_pgt(BOXES, SCORES, CLASSES, [0, 1], PGTConfig(mode="top1"))) == 2
    assert len(make_pgt(BOXES, SCORES, CLASSES, [0, 1], PGTConfig())) == 3
    with pytest.raises(ValueError, match="known"):
        PGTConfig(mode="top3")
    with pytest.raises(ValueError, match="length"):
        pgt_top1(BOXES, SCORES[:2], CLASSES, [0])
