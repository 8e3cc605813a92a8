"""The SAM 2.1 engine against the ``sam2`` package's own reference code on a tiny random model
(``sam2_testing.make_test_sam2``): ``SAM2AutomaticMaskGenerator`` for the grid,
``SAM2ImagePredictor.predict`` for point, multi-point and box prompts."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from sam2.modeling.sam2_base import SAM2Base
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2_testing import make_sam2_image, make_test_sam2, sam2_amg, sam2_predictor

from weaksam.io.rle import decode_masks
from weaksam.sam.engine import EngineConfig
from weaksam.sam.prompts import grid_points
from weaksam.sam.sam2_engine import Sam2PromptEngine


@pytest.fixture(scope="module")
def sam2_model() -> SAM2Base:
    return make_test_sam2(0)


def amg_boxes(records: list[dict]) -> npt.NDArray[np.float32]:
    """AMG's XYWH (inclusive x2 = x + w) → continuous XYXY (x2 = x + w + 1)."""
    b = np.array([r["bbox"] for r in records], dtype=np.float32).reshape(-1, 4)
    b[:, 2:] += b[:, :2] + 1
    return b


def tight_box(mask: npt.NDArray[np.bool_]) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if xs.size else [0, 0, 0, 0]


# (image seed, height, width, points_per_side, points_per_batch, pred_iou, stability, offset,
# nms, min masks). The first case keeps everything (chunks of 10 leave a partial last one) and
# compares the masks too; the second filters on both scores over a non-square image.
GRID_CASES = [
    (0, 256, 256, 5, 10, 0.0, 0.0, 1.0, 0.7, 4),
    (1, 300, 200, 6, 64, 0.55, 0.5, 1.0, 0.9, 2),
]


@pytest.mark.parametrize(
    ("seed", "h", "w", "pps", "ppb", "t_iou", "t_stab", "off", "nms", "min_n"), GRID_CASES
)
def test_grid_equals_sam2_automatic_mask_generator(
    sam2_model: SAM2Base,
    seed: int,
    h: int,
    w: int,
    pps: int,
    ppb: int,
    t_iou: float,
    t_stab: float,
    off: float,
    nms: float,
    min_n: int,
) -> None:
    image = make_sam2_image(seed, h, w)
    settings = {
        "points_per_side": pps,
        "points_per_batch": ppb,
        "pred_iou_thresh": t_iou,
        "stability_score_thresh": t_stab,
        "stability_score_offset": off,
        "box_nms_thresh": nms,
    }
    ref = sam2_amg(sam2_model, **settings).generate(image)
    engine = Sam2PromptEngine(sam2_model, EngineConfig(**settings, return_masks=seed == 0))
    out = engine.generate_grid(engine.embed_image(image))
    assert len(out) == len(ref) >= min_n
    np.testing.assert_array_equal(out.boxes, amg_boxes(ref))
    np.testing.assert_array_equal(out.scores, np.float32([r["predicted_iou"] for r in ref]))
    np.testing.assert_array_equal(out.stability, np.float32([r["stability_score"] for r in ref]))
    pts = grid_points(pps, h, w).astype(np.float32)[out.prompt_index]
    np.testing.assert_array_equal(pts, [r["point_coords"][0] for r in ref])
    if out.masks is not None:
        for mine, r in zip(decode_masks(out.masks, h, w), ref, strict=True):
            assert np.array_equal(mine, r["segmentation"])
    if t_iou > 0:  # the filters did filter
        off = {**settings, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
        unfiltered = Sam2PromptEngine(sam2_model, EngineConfig(**off))
        assert len(unfiltered.generate_grid(engine.embed_image(image))) > len(out)


def check_rows(
    out_masks: list[npt.NDArray[np.bool_]],
    out_boxes: npt.NDArray[np.float32],
    out_scores: npt.NDArray[np.float32],
    rows: list[int],
    ref_masks: npt.NDArray[np.float32],
    ref_iou: npt.NDArray[np.float32],
    cols: list[int],
) -> None:
    for row, k in zip(rows, cols, strict=True):
        ref = ref_masks[k] > 0
        assert np.array_equal(out_masks[row], ref)
        np.testing.assert_array_equal(out_boxes[row], tight_box(ref))
        # the same up to float rounding: the predictor decodes one prompt per call
        assert out_scores[row] == pytest.approx(ref_iou[k], rel=1e-5)


def test_points_equal_predictor(sam2_model: SAM2Base) -> None:
    image = make_sam2_image(2, 240, 256)
    points = np.array([[40.0, 50.0], [128.5, 128.5], [200.0, 30.0], [10.0, 230.0], [255, 239]])
    cfg = EngineConfig(points_per_batch=2, return_masks=True)
    engine = Sam2PromptEngine(sam2_model, cfg)
    out = engine.predict_points(engine.embed_image(image), points)
    assert out.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert out.token.tolist() == [1, 2] * len(points)
    masks = decode_masks(out.masks or [], 240, 256)
    predictor = sam2_predictor(sam2_model)
    predictor.set_image(image)
    for i, p in enumerate(points):
        ref_masks, ref_iou, _ = predictor.predict(p[None], np.array([1]), multimask_output=True)
        check_rows(masks, out.boxes, out.scores, [2 * i, 2 * i + 1], ref_masks, ref_iou, [1, 2])


def test_multipoint_equals_predictor(sam2_model: SAM2Base) -> None:
    image = make_sam2_image(3)
    rng = np.random.default_rng(0)
    sizes = [1, 3, 2, 3, 2]
    groups: list[tuple[np.ndarray, np.ndarray | None]] = [
        (rng.uniform(0, 255, (k, 2)), None) for k in sizes
    ]
    groups[2] = (groups[2][0], np.array([1, 0]))  # a background point
    cfg = EngineConfig(keep_multimask_tokens=(0, 1, 2), return_masks=True)
    engine = Sam2PromptEngine(sam2_model, cfg)
    out = engine.predict_multipoint(engine.embed_image(image), groups)
    assert out.prompt_index.tolist() == [i for i in range(len(sizes)) for _ in range(3)]
    masks = decode_masks(out.masks or [], 256, 256)
    predictor = sam2_predictor(sam2_model)
    predictor.set_image(image)
    for i, (pts, labels) in enumerate(groups):
        lab = np.ones(len(pts), dtype=int) if labels is None else labels
        ref_masks, ref_iou, _ = predictor.predict(pts, lab, multimask_output=True)
        check_rows(
            masks,
            out.boxes,
            out.scores,
            [3 * i, 3 * i + 1, 3 * i + 2],
            ref_masks,
            ref_iou,
            [0, 1, 2],
        )


@pytest.mark.parametrize(("choice", "token"), [("single", 0), ("best_iou", 0), ("token", 2)])
def test_boxes_equal_predictor(sam2_model: SAM2Base, choice: str, token: int) -> None:
    image = make_sam2_image(1, 256, 200)
    boxes = np.array(
        [[20, 30, 120, 140], [100.5, 100, 190, 250], [0, 0, 200, 256], [60, 10, 70, 20]],
        np.float32,
    )
    cfg = EngineConfig(box_mask=choice, box_mask_token=token, points_per_batch=3)
    engine = Sam2PromptEngine(sam2_model, cfg)
    out = engine.predict_boxes(engine.embed_image(image), boxes)
    assert len(out) == 4 and out.masks is not None
    masks = decode_masks(out.masks, 256, 200)
    predictor = sam2_predictor(sam2_model)
    predictor.set_image(image)
    fallbacks = 0
    for i, b in enumerate(boxes):
        if choice == "single":  # with SAM 2's fall-back to the best multimask output
            ref_masks, ref_iou, _ = predictor.predict(box=b, multimask_output=False)
            check_rows(masks, out.boxes, out.scores, [i], ref_masks, ref_iou, [0])
            _, multi_iou, _ = predictor.predict(box=b, multimask_output=True)
            if out.token[i] >= 0:  # a fall-back row names the multimask output it took
                fallbacks += 1
                assert out.token[i] == int(np.argmax(multi_iou))
                assert out.scores[i] == pytest.approx(multi_iou[out.token[i]], rel=1e-5)
            continue
        ref_masks, ref_iou, _ = predictor.predict(box=b, multimask_output=True)
        k = int(np.argmax(ref_iou)) if choice == "best_iou" else token
        assert out.token[i] == k
        check_rows(masks, out.boxes, out.scores, [i], ref_masks, ref_iou, [k])
    if choice == "single":
        assert fallbacks > 0  # the random model's single masks are unstable


def test_generate_end_to_end(sam2_model: SAM2Base) -> None:
    image = make_sam2_image(0)
    points = np.array([[40, 40], [200, 60], [128, 200], [60, 180]], np.float32)
    classes = np.array([0, 1, 0, 0])
    kinds = ["fine", "coarse", "fine", "cross"]
    cfg = EngineConfig(
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=0.7,
        keep_empty=True,
    )
    engine = Sam2PromptEngine(sam2_model, cfg)
    props = engine.generate(image, points, classes, kinds)
    emb = engine.embed_image(image)
    grid = engine.generate_grid(emb)
    n = len(grid)
    assert n > 0
    assert props.sources == (
        ["grid"] * n
        + ["point:coarse"] * 2
        + ["class:coarse"] * 2
        + ["point:fine"] * 4
        + ["class:fine"] * 2
        + ["point:cross"] * 2
    )
    assert props.class_hints.tolist() == [-1] * n + [1] * 4 + [0] * 4 + [0, 0] + [0, 0]
    assert props.image_size == (256, 256) and props.masks is None
    np.testing.assert_array_equal(props.boxes[:n], grid.boxes)
    singles = engine.predict_points(emb, points)
    np.testing.assert_array_equal(props.boxes[n : n + 2], singles.boxes[2:4])
    fine = engine.predict_multipoint(emb, [(points[[0, 2]], None)])
    np.testing.assert_array_equal(props.boxes[n + 8 : n + 10], fine.boxes)
    # empty inputs and bad ones, as the SAM engine
    assert len(engine.predict_points(emb, np.zeros((0, 2)))) == 0
    assert len(engine.predict_boxes(emb, np.zeros((0, 4)))) == 0
    with pytest.raises(ValueError, match="Px2"):
        engine.predict_points(emb, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="uint8"):
        engine.generate(np.zeros((32, 32, 3), np.float32))


def test_published_input_size_with_the_unmodified_predictor() -> None:
    """At 1024 px (the published models' input) the stock ``SAM2ImagePredictor`` runs as is."""
    model = make_test_sam2(1, image_size=1024)
    image = make_sam2_image(4, 200, 160)
    points = np.array([[30.0, 40.0], [100.0, 150.0]])
    engine = Sam2PromptEngine(
        model, EngineConfig(return_masks=True, keep_multimask_tokens=(0, 1, 2))
    )
    out = engine.predict_points(engine.embed_image(image), points)
    masks = decode_masks(out.masks or [], 200, 160)
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(image)
    for i, p in enumerate(points):
        ref_masks, ref_iou, _ = predictor.predict(p[None], np.array([1]), multimask_output=True)
        check_rows(
            masks,
            out.boxes,
            out.scores,
            [3 * i, 3 * i + 1, 3 * i + 2],
            ref_masks,
            ref_iou,
            [0, 1, 2],
        )


def test_batched_encoder_equals_one_by_one(sam2_model: SAM2Base) -> None:
    # precision: fast batches images through Hiera (SAM2ImagePredictor.set_image_batch's way)
    cfg = EngineConfig(points_per_side=4, precision="fast", encoder_batch=3)
    engine = Sam2PromptEngine(sam2_model, cfg)
    images = [make_sam2_image(s, 256, 180 + 30 * s) for s in range(3)]
    batched = engine.embed_images(images)
    exact = Sam2PromptEngine(sam2_model, EngineConfig(points_per_side=4))
    for img, emb in zip(images, batched, strict=True):
        one = exact.embed_image(img)
        assert emb.original_size == one.original_size
        for got, want in zip(
            [emb.features, *emb.high_res], [one.features, *one.high_res], strict=True
        ):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(
            engine.generate_grid(emb).boxes, exact.generate_grid(one).boxes, atol=1.0
        )
