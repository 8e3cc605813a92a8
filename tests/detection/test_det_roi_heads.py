"""DropRoIHeads on a tiny model with hand-made features, proposals and targets."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads

from weaksam.detection.config import DetectorModelConfig, RoIDropConfig
from weaksam.detection.model import build_detector
from weaksam.detection.roi_heads import DropRoIHeads


def _heads(drop: RoIDropConfig, cfg: DetectorModelConfig) -> DropRoIHeads:
    torch.manual_seed(0)
    heads = build_detector(cfg, 2, drop=drop).roi_heads
    assert isinstance(heads, DropRoIHeads)
    return heads.train()


def _inputs() -> tuple[dict[str, torch.Tensor], list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(1)
    features = {k: torch.randn(1, 16, s, s, generator=g) for k, s in (("0", 16), ("1", 8))}
    features.update({"2": torch.randn(1, 16, 4, 4, generator=g), "3": torch.randn(1, 16, 2, 2)})
    # proposals: near the two objects (foreground) and elsewhere (background)
    proposals = [
        torch.tensor(
            [[10, 10, 30, 30], [12, 9, 31, 29], [40, 40, 60, 62], [0, 40, 15, 60], [45, 0, 63, 20]],
            dtype=torch.float32,
        )
    ]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0], [40.0, 40.0, 60.0, 60.0]]),
            "labels": torch.tensor([1, 2]),
        }
    ]
    return features, proposals, targets


def _run(heads: RoIHeads) -> dict[str, torch.Tensor]:
    features, proposals, targets = _inputs()
    torch.manual_seed(5)  # the fg/bg sampler draws from the global RNG
    _, losses = heads(features, proposals, [(64, 64)], targets)
    return losses


def test_inactive_drop_equals_torchvision_heads(tiny_model: DetectorModelConfig) -> None:
    ours = _heads(
        RoIDropConfig(enabled=True, thresh_cls=0.0, thresh_reg=0.0, operate_iter=10), tiny_model
    )
    ours.iteration = 9  # one step before operate_iter: nothing may be dropped
    plain = RoIHeads(
        ours.box_roi_pool,
        ours.box_head,
        ours.box_predictor,
        0.5,
        0.5,
        16,
        0.25,
        None,
        0.05,
        0.5,
        100,
    ).train()
    got, ref = _run(ours), _run(plain)
    assert ours.dropped == 0 and ours.foreground > 0
    for k in ("loss_classifier", "loss_box_reg"):
        torch.testing.assert_close(got[k], ref[k])


def test_dropped_rois_contribute_zero_and_normalisation_is_kept(
    tiny_model: DetectorModelConfig,
) -> None:
    # thresholds 0: every sampled foreground RoI exceeds both, so all of them are dropped
    heads = _heads(
        RoIDropConfig(enabled=True, thresh_cls=0.0, thresh_reg=0.0, operate_iter=0), tiny_model
    )
    kept: dict[str, torch.Tensor] = {}

    def grab(module: torch.nn.Module, inp: object, out: tuple[torch.Tensor, ...]) -> None:
        kept["logits"] = out[0]

    heads.box_predictor.register_forward_hook(grab)
    sampled: dict[str, list[torch.Tensor]] = {}
    original = heads.select_training_samples

    def spy(proposals, targets):  # type: ignore[no-untyped-def]
        out = original(proposals, targets)
        sampled["labels"] = out[2]
        return out

    heads.select_training_samples = spy  # type: ignore[method-assign]
    losses = _run(heads)
    labels = torch.cat(sampled["labels"])
    fg = labels > 0
    assert heads.dropped == int(fg.sum()) == heads.foreground > 0
    ce = F.cross_entropy(kept["logits"], labels, reduction="none")
    # only background RoIs remain, still divided by all R sampled RoIs
    torch.testing.assert_close(losses["loss_classifier"], ce[~fg].sum() / labels.numel())
    assert float(losses["loss_box_reg"].detach()) == 0.0
    (losses["loss_classifier"] + losses["loss_box_reg"]).backward()
    grad = heads.box_predictor.bbox_pred.weight.grad
    assert grad is not None and torch.all(grad == 0)


def test_drop_starts_at_operate_iter(tiny_model: DetectorModelConfig) -> None:
    cfg = RoIDropConfig(enabled=True, thresh_cls=0.0, thresh_reg=0.0, operate_iter=3)
    heads = _heads(cfg, tiny_model)
    seen = []
    for it in range(5):
        heads.iteration = it
        _run(heads)
        seen.append(heads.dropped > 0)
    assert seen == [False, False, False, True, True]
    off = _heads(dataclasses.replace(cfg, enabled=False), tiny_model)
    off.iteration = 100
    _run(off)
    assert off.dropped == 0


def test_eval_mode_is_the_parents(tiny_model: DetectorModelConfig) -> None:
    heads = _heads(RoIDropConfig(), tiny_model).eval()
    features, proposals, _ = _inputs()
    result, losses = heads(features, proposals, [(64, 64)])
    assert losses == {} and set(result[0]) == {"boxes", "labels", "scores"}


def test_from_heads_keeps_settings(tiny_model: DetectorModelConfig) -> None:
    heads = _heads(RoIDropConfig(), tiny_model)
    assert heads.fg_bg_sampler.batch_size_per_image == 16
    assert heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert heads.proposal_matcher.high_threshold == 0.5
    with pytest.raises(TypeError):
        DropRoIHeads(heads.box_roi_pool, heads.box_head, heads.box_predictor)  # no drop=
