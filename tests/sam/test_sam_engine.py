"""The prompting engine against segment-anything's own reference code on a tiny random SAM.

A SAM with purely random weights gives masks that are salt-and-pepper noise spanning the whole
image (random transposed convolutions tile every 4x4 block; random ViT blocks mix the whole
image), so every box is the full image and NMS keeps one. :func:`make_test_sam` keeps the
demo architecture and random weights but (a) turns the ViT blocks into identities (local
features), (b) makes the decoder's upscaling kernels constant (no checkerboard) and (c) scales
the mask and IoU heads; masks then follow the drawn shapes and several survive NMS. The
reference code runs on the same model, so the comparisons hold for any weights.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam
from torchvision.ops import nms

from weaksam.geometry.boxes import mask_to_box
from weaksam.io.rle import decode_masks
from weaksam.sam.build import SamConfig, build_sam_model
from weaksam.sam.engine import EngineConfig, SamPromptEngine
from weaksam.sam.postprocess import inclusive_to_continuous, mask_boxes
from weaksam.sam.prompts import bucket_by_size, grid_points, order_kinds


def make_test_sam(seed: int = 0) -> Sam:
    """The demo SAM, random weights, adjusted to give spatially coherent masks (see above)."""
    torch.manual_seed(seed)
    model = build_sam_model("demo")
    with torch.no_grad():
        for blk in model.image_encoder.blocks:
            for lin in (blk.attn.proj, blk.mlp.lin2):
                lin.weight.zero_()
                lin.bias.zero_()
        model.image_encoder.neck[3].weight.mul_(20.0)
        for i in (0, 3):
            w = model.mask_decoder.output_upscaling[i].weight
            w.copy_(w[..., :1, :1].expand_as(w))
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(40.0)
        head = model.mask_decoder.iou_prediction_head.layers[-1]
        head.weight.mul_(4.0)
        head.bias.add_(0.3)
    return model.eval()


def make_image(seed: int, height: int = 256, width: int = 256) -> npt.NDArray[np.uint8]:
    """A flat background with mild noise and five filled discs / rectangles."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    img = np.full((height, width, 3), rng.integers(90, 160, 3), float)
    img += rng.normal(0, 8, (height, width, 3))
    for _ in range(5):
        cx, cy = rng.integers(30, width - 30), rng.integers(30, height - 30)
        r = int(rng.integers(15, 45))
        if rng.random() < 0.5:
            sel = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        else:
            sel = (abs(xx - cx) < r) & (abs(yy - cy) < r * 0.7)
        img[sel] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sam() -> Sam:
    return make_test_sam(0)


def amg_boxes(records: list[dict]) -> npt.NDArray[np.float32]:
    """AMG's XYWH (inclusive x2 = x + w) → continuous XYXY (x2 = x + w + 1)."""
    b = np.array([r["bbox"] for r in records], dtype=np.float32).reshape(-1, 4)
    b[:, 2:] += b[:, :2] + 1
    return b


# (image seed, height, width, points_per_side, points_per_batch, pred_iou, stability, offset,
# nms, min masks). Thresholds chosen so this model keeps 5-30 masks on the square images (13,
# 14 and 13); a chunk size of 24 leaves a partial last chunk. The non-square images exercise
# the padding crop (192x256) and the second resize (300x200, with WeakSAM's 0.3 / 0.3 / 1.0 /
# 0.3, which a random model passes with few masks).
GRID_CASES = [
    (0, 256, 256, 8, 24, 0.2, 0.1, 0.5, 0.9, 5),
    (4, 256, 256, 8, 24, 0.3, 0.3, 0.2, 0.7, 5),
    (5, 256, 256, 8, 64, 0.2, 0.1, 0.5, 0.9, 5),
    (2, 192, 256, 10, 64, 0.0, 0.0, 1.0, 0.7, 1),
    (3, 300, 200, 10, 64, 0.3, 0.3, 1.0, 0.3, 1),
]


@pytest.mark.parametrize(
    ("seed", "h", "w", "pps", "ppb", "t_iou", "t_stab", "off", "nms", "min_n"), GRID_CASES
)
def test_grid_equals_automatic_mask_generator(
    sam: Sam,
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
    image = make_image(seed, h, w)
    amg = SamAutomaticMaskGenerator(
        sam,
        points_per_side=pps,
        points_per_batch=ppb,
        pred_iou_thresh=t_iou,
        stability_score_thresh=t_stab,
        stability_score_offset=off,
        box_nms_thresh=nms,
        crop_n_layers=0,
    )
    ref = amg.generate(image)
    cfg = EngineConfig(
        points_per_side=pps,
        points_per_batch=ppb,
        pred_iou_thresh=t_iou,
        stability_score_thresh=t_stab,
        stability_score_offset=off,
        box_nms_thresh=nms,
        return_masks=seed == 0,
    )
    engine = SamPromptEngine(sam, cfg)
    out = engine.generate_grid(engine.embed_image(image))
    assert len(out) == len(ref) >= min_n
    np.testing.assert_allclose(out.boxes, amg_boxes(ref), atol=1.0)
    np.testing.assert_allclose(out.scores, [r["predicted_iou"] for r in ref], rtol=1e-5)
    np.testing.assert_allclose(out.stability, [r["stability_score"] for r in ref], rtol=1e-5)
    pts = grid_points(pps, h, w)[out.prompt_index]
    np.testing.assert_allclose(pts, [r["point_coords"][0] for r in ref], rtol=1e-6)
    if out.masks is not None:
        masks = decode_masks(out.masks, h, w)
        for mine, r in zip(masks, ref, strict=True):
            assert np.array_equal(mine, r["segmentation"])


def test_grid_filters_and_returns_nothing_when_everything_fails(sam: Sam) -> None:
    cfg = EngineConfig(points_per_side=4, pred_iou_thresh=10.0, return_masks=True)
    engine = SamPromptEngine(sam, cfg)
    out = engine.generate_grid(engine.embed_image(make_image(0)))
    assert len(out) == 0 and out.boxes.shape == (0, 4) and out.masks == []


def test_points_equal_predictor(sam: Sam) -> None:
    image = make_image(1)
    points = np.array([[40.0, 50.0], [128.5, 128.5], [200.0, 30.0], [10.0, 240.0], [255, 255]])
    engine = SamPromptEngine(sam, EngineConfig(points_per_batch=2, return_masks=True))
    out = engine.predict_points(engine.embed_image(image), points)
    assert len(out) == 2 * len(points)
    assert out.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert out.token.tolist() == [1, 2] * len(points)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    masks = decode_masks(out.masks or [], *image.shape[:2])
    for i, p in enumerate(points):
        ref_masks, ref_iou, _ = predictor.predict(p[None], np.array([1]), multimask_output=True)
        for j, tok in enumerate((1, 2)):
            row = 2 * i + j
            assert np.array_equal(masks[row], ref_masks[tok])
            ys, xs = np.nonzero(ref_masks[tok])
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if xs.size else [0, 0, 0, 0]
            np.testing.assert_array_equal(out.boxes[row], box)
            assert out.scores[row] == pytest.approx(ref_iou[tok], rel=1e-5)


def test_empty_points(sam: Sam) -> None:
    engine = SamPromptEngine(sam, EngineConfig(points_per_side=0))
    emb = engine.embed_image(make_image(0))
    out = engine.predict_points(emb, np.zeros((0, 2)))
    assert len(out) == 0 and out.boxes.shape == (0, 4)
    assert len(engine.predict_multipoint(emb, [])) == 0
    assert len(engine.predict_boxes(emb, np.zeros((0, 4)))) == 0
    props = engine.generate(make_image(0))
    assert len(props) == 0 and props.sources == [] and props.class_hints.dtype == np.int32
    with pytest.raises(ValueError, match="Px2"):
        engine.predict_points(emb, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no points"):
        engine.predict_multipoint(emb, [(np.zeros((0, 2)), None)])


def test_multipoint_batched_equals_unbatched(sam: Sam) -> None:
    image = make_image(2)
    rng = np.random.default_rng(0)
    sizes = [1, 3, 2, 3, 2, 1]
    groups: list[tuple[np.ndarray, np.ndarray | None]] = [
        (rng.uniform(0, 255, (k, 2)), None) for k in sizes
    ]
    groups[2] = (groups[2][0], np.array([1, 0]))  # a background point
    batched = SamPromptEngine(sam, EngineConfig(points_per_batch=64))
    emb = batched.embed_image(image)
    out = batched.predict_multipoint(emb, groups)
    assert out.prompt_index.tolist() == [i for i in range(len(sizes)) for _ in (1, 2)]
    single = SamPromptEngine(sam, EngineConfig(points_per_batch=1))
    for i, g in enumerate(groups):
        one = single.predict_multipoint(emb, [g])
        np.testing.assert_allclose(out.boxes[2 * i : 2 * i + 2], one.boxes, atol=1.0)
        np.testing.assert_allclose(out.scores[2 * i : 2 * i + 2], one.scores, atol=1e-4)
    # and the same as SamPredictor with all points in one prompt
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    for i, (pts, labels) in enumerate(groups):
        lab = np.ones(len(pts), dtype=int) if labels is None else labels
        _, ref_iou, _ = predictor.predict(pts, lab, multimask_output=True)
        np.testing.assert_allclose(out.scores[2 * i : 2 * i + 2], ref_iou[1:], rtol=1e-4)


def test_padding_with_not_a_point_changes_masks(sam: Sam) -> None:
    """Why multi-point prompts are bucketed by size rather than padded with label -1."""
    predictor = SamPredictor(sam)
    predictor.set_image(make_image(0))
    pts = np.array([[50.0, 60.0], [120.0, 130.0]])
    _, iou, _ = predictor.predict(pts, np.array([1, 1]))
    padded = np.concatenate([pts, [[0.0, 0.0]]])
    _, iou_pad, _ = predictor.predict(padded, np.array([1, 1, -1]))
    assert not np.allclose(iou, iou_pad, atol=1e-3)


def test_bucket_by_size() -> None:
    batches = [b.tolist() for b in bucket_by_size([2, 1, 2, 2, 1], batch=2)]
    assert batches == [[1, 4], [0, 2], [3]]


@pytest.mark.parametrize(
    ("choice", "token"), [("best_iou", 0), ("token", 0), ("token", 2), ("single", 0)]
)
def test_boxes_equal_predictor(sam: Sam, choice: str, token: int) -> None:
    image = make_image(1, 256, 200)
    boxes = np.array([[20, 30, 120, 140], [100.5, 100, 190, 250], [0, 0, 200, 256]], np.float32)
    cfg = EngineConfig(box_mask=choice, box_mask_token=token, points_per_batch=2)
    engine = SamPromptEngine(sam, cfg)
    out = engine.predict_boxes(engine.embed_image(image), boxes)
    assert len(out) == 3 and out.masks is not None
    masks = decode_masks(out.masks, 256, 200)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    for i, b in enumerate(boxes):
        if choice == "single":  # SAM's own box-prompt use: the single-mask output
            ref_masks, ref_iou, _ = predictor.predict(box=b, multimask_output=False)
            k, want_token = 0, -1
        else:
            ref_masks, ref_iou, _ = predictor.predict(box=b, multimask_output=True)
            k = int(np.argmax(ref_iou)) if choice == "best_iou" else token
            want_token = k
        assert out.token[i] == want_token
        assert np.array_equal(masks[i], ref_masks[k])
        assert out.scores[i] == pytest.approx(float(ref_iou[k]), abs=1e-5)
        ys, xs = np.nonzero(ref_masks[k])
        if xs.size:
            np.testing.assert_array_equal(
                out.boxes[i], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            )


def test_box_mask_choices_are_checked() -> None:
    with pytest.raises(ValueError, match="box_mask"):
        EngineConfig(box_mask="largest")
    with pytest.raises(ValueError, match="box_mask_token"):
        EngineConfig(box_mask="token", box_mask_token=-1)


def test_generate_order_sources_and_hints(sam: Sam) -> None:
    image = make_image(0)
    points = np.array([[40, 40], [200, 60], [128, 200], [60, 180], [220, 220]], np.float32)
    classes = np.array([0, 1, 0, 0, 2])
    kinds = ["fine", "coarse", "cross", "fine", "coarse"]
    cfg = EngineConfig(
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=0.7,
        keep_empty=True,
    )
    engine = SamPromptEngine(sam, cfg)
    props = engine.generate(image, points, classes, kinds)
    emb = engine.embed_image(image)
    n_grid = len(engine.generate_grid(emb))
    expected = (
        ["grid"] * n_grid
        + ["point:coarse"] * 4  # points 1, 4
        + ["class:coarse"] * 4  # classes 1, 2
        + ["point:fine"] * 4  # points 0, 3
        + ["class:fine"] * 2  # class 0 (both points)
        + ["point:cross"] * 2  # no class-wise prompts for cross
    )
    assert props.sources == expected
    assert props.class_hints.tolist() == (
        [-1] * n_grid + [1, 1, 2, 2] + [1, 1, 2, 2] + [0] * 4 + [0, 0] + [0, 0]
    )
    assert props.boxes.dtype == np.float32 and props.boxes.shape == (len(expected), 4)
    assert props.masks is None and props.image_size == (256, 256)
    # the class-wise "fine" prompt is both fine points of class 0 in one prompt
    ref = engine.predict_multipoint(emb, [(points[[0, 3]], None)])
    np.testing.assert_allclose(props.boxes[-4:-2], ref.boxes)
    # single points equal predict_points
    singles = engine.predict_points(emb, points)
    np.testing.assert_allclose(props.boxes[n_grid : n_grid + 2], singles.boxes[2:4])


def test_generate_without_classes_and_custom_kind_order(sam: Sam) -> None:
    cfg = EngineConfig(points_per_side=0, keep_empty=True, kind_order=("b", "a"))
    engine = SamPromptEngine(sam, cfg)
    props = engine.generate(make_image(1), [[10, 10], [100, 100], [30, 200]], None, ["a", "b", "z"])
    assert props.sources == ["point:b"] * 2 + ["point:a"] * 2 + ["point:z"] * 2
    assert (props.class_hints == -1).all()
    assert order_kinds(["x", "cross", "fine", "x"], ("coarse", "fine", "cross")) == [
        "fine",
        "cross",
        "x",
    ]


def test_empty_masks_are_flagged_and_dropped(sam: Sam) -> None:
    cfg = EngineConfig(points_per_side=0, mask_threshold=1e6)  # nothing passes the threshold
    engine = SamPromptEngine(sam, cfg)
    image = make_image(0)
    out = engine.predict_points(engine.embed_image(image), [[50, 50]])
    assert not out.nonempty.any()
    np.testing.assert_array_equal(out.boxes, np.zeros((2, 4)))
    assert len(engine.generate(image, [[50, 50]])) == 0
    keep = SamPromptEngine(
        sam, EngineConfig(points_per_side=0, mask_threshold=1e6, keep_empty=True)
    )
    assert len(keep.generate(image, [[50, 50]])) == 2


def test_final_nms_cap_and_min_size(sam: Sam) -> None:
    image = make_image(1)
    pts = np.array([[60, 60], [62, 61], [180, 190], [100, 30]], np.float32)
    base = EngineConfig(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.9
    )
    full = SamPromptEngine(sam, base).generate(image, pts)
    assert len(full) > 5
    capped = SamPromptEngine(sam, replace(base, max_proposals=5)).generate(image, pts)
    top = np.sort(np.argsort(-full.scores, kind="stable")[:5])
    np.testing.assert_array_equal(capped.boxes, full.boxes[top])
    assert capped.sources == [full.sources[i] for i in top]
    reduced = SamPromptEngine(sam, replace(base, final_nms_thresh=0.5)).generate(image, pts)
    keep = np.sort(nms(torch.as_tensor(full.boxes), torch.as_tensor(full.scores), 0.5).numpy())
    assert 0 < len(keep) < len(full)
    np.testing.assert_array_equal(reduced.boxes, full.boxes[keep])  # input order kept
    assert reduced.sources == [full.sources[i] for i in keep]
    big = SamPromptEngine(sam, replace(base, min_box_size=64.0)).generate(image, pts)
    wide = ((full.boxes[:, 2:] - full.boxes[:, :2]) >= 64).all(axis=1)
    np.testing.assert_array_equal(big.boxes, full.boxes[wide])


def test_threads_share_one_engine(sam: Sam) -> None:
    engine = SamPromptEngine(
        sam, EngineConfig(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    )
    images = [make_image(s) for s in (0, 1, 2)]
    pts = [[50.0, 50.0], [150.0, 120.0]]
    expected = [engine.generate(im, pts) for im in images]
    results: dict[int, object] = {}

    def work(i: int) -> None:
        results[i] = engine.generate(images[i], pts)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, exp in enumerate(expected):
        got = results[i]
        assert isinstance(got, type(exp))
        np.testing.assert_allclose(got.boxes, exp.boxes, atol=1.0)
        assert got.sources == exp.sources


def test_random_demo_model_and_bad_inputs() -> None:
    torch.manual_seed(0)
    engine = SamPromptEngine.from_config(
        SamConfig(model_type="demo", device="cpu"), EngineConfig(points_per_side=8, keep_empty=True)
    )
    gray = make_image(0)[..., 0]
    props = engine.generate(gray, [[20, 20]], [3])
    # a random model's predicted IoU is ~0, so WeakSAM's grid thresholds keep nothing
    assert props.sources == ["point:peak"] * 2 + ["class:peak"] * 2
    assert props.class_hints.tolist() == [3, 3, 3, 3]
    rgba = np.dstack([make_image(0), np.full((256, 256), 255, np.uint8)])
    assert len(engine.generate(rgba, [[20, 20]])) == 2
    with pytest.raises(ValueError, match="uint8"):
        engine.generate(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        engine.generate(np.zeros((32, 32, 2), np.uint8))
    with pytest.raises(ValueError, match="point_classes"):
        engine.generate(make_image(0), [[1, 1]], [1, 2])
    with pytest.raises(ValueError, match="keep_multimask_tokens"):
        EngineConfig(keep_multimask_tokens=(1, 3))


def test_mask_boxes_conventions() -> None:
    masks = torch.zeros(3, 5, 6, dtype=torch.bool)
    masks[0, 0, 0] = True  # one pixel at the origin: inclusive box [0, 0, 0, 0], not empty
    masks[1, 1:3, 2:5] = True
    boxes, nonempty = mask_boxes(masks)
    assert nonempty.tolist() == [True, True, False]
    out = inclusive_to_continuous(boxes, nonempty)
    assert out.tolist() == [[0, 0, 1, 1], [2, 1, 5, 3], [0, 0, 0, 0]]
    for m, b in zip(masks.numpy(), out, strict=True):
        np.testing.assert_array_equal(mask_to_box(m), b)
