"""The training loop in plain Python: objectives per method, schedule, exact resume."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
import torch

from weaksam.configlib import load_into
from weaksam.train.schedule import step_decay_schedule
from weaksam.wsod.config import WSODConfig, WSODTrainConfig
from weaksam.wsod.model import build_wsod_model
from weaksam.wsod.objective import ImageTargets, batch_loss, branch_weights
from weaksam.wsod.outputs import HeadOutputs
from weaksam.wsod.stage import proposals_path
from weaksam.wsod.training import (
    TrainJob,
    build_optimizer,
    build_sampler,
    fit,
)


def _job(run: str, method: str, cfg: WSODConfig) -> TrainJob:
    manifest = os.path.join(run, "ingest", "manifest.parquet")
    return TrainJob(method, 6, tuple("abcdef"), manifest, proposals_path(run, cfg), "train")


def test_lr_schedule_and_param_groups() -> None:
    tc = WSODTrainConfig(lr=1.0, warmup_steps=10, warmup_factor=1 / 3, lr_steps=(20, 30))
    lr_factor = step_decay_schedule(tc)
    assert lr_factor(0) == pytest.approx(1 / 3)
    assert lr_factor(5) == pytest.approx(1 / 3 + 0.5 * 2 / 3)
    assert lr_factor(10) == 1.0 and lr_factor(20) == pytest.approx(0.1)
    assert lr_factor(35) == pytest.approx(0.01)
    model = build_wsod_model(load_into(WSODConfig, None, ["model.backbone=small"]).model, 3, "mist")
    opt = build_optimizer(model, tc)
    wd = [g["weight_decay"] for g in opt.param_groups]
    scales = [g["lr_scale"] for g in opt.param_groups]
    assert wd == [tc.weight_decay, 0.0, 0.0] and scales == [1.0, tc.bias_lr_factor, 1.0]
    n_bias = sum(1 for n, _ in model.named_parameters() if n.endswith(".bias"))
    assert len(opt.param_groups[1]["params"]) == n_bias


def test_refine_layers_get_their_own_lr_factor() -> None:
    """WSOD2's OICR: refine* layers at 10x the rate (their biases at 10x the bias rate)."""
    tc = WSODTrainConfig(lr=1.0, refine_lr_factor=10.0)
    model = build_wsod_model(load_into(WSODConfig, None, ["model.backbone=small"]).model, 3, "oicr")
    opt = build_optimizer(model, tc)
    refine = {id(p) for n, p in model.named_parameters() if n.startswith("heads.refine.")}
    by_scale: dict[float, set[int]] = {}
    for g in opt.param_groups:
        by_scale.setdefault(g["lr_scale"], set()).update(id(p) for p in g["params"])
    assert by_scale[10.0] | by_scale[20.0] == refine
    assert not refine & (by_scale[1.0] | by_scale[2.0])
    n = sum(len(g["params"]) for g in opt.param_groups)
    assert n == sum(1 for p in model.parameters() if p.requires_grad)


def test_branch_weights() -> None:
    assert branch_weights("mist", 3) == [3.0, 1.0, 1.0]
    assert branch_weights("oicr", 3) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        branch_weights("mist", 3, (1.0,))


def test_objective_terms_per_method() -> None:
    torch.manual_seed(0)
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [20.0, 20, 40, 40]])
    tc = WSODTrainConfig()
    r, c = 3, 2
    out = HeadOutputs(
        torch.randn(r, c),
        torch.randn(r, c),
        torch.randn(3, r, c + 1),
        torch.zeros(3, r, c + 1, 4),
        [r],
    )
    terms = batch_loss("mist", out, [boxes], [ImageTargets(torch.tensor([1]))], tc)
    assert set(terms) == {"mil", "cls", "reg", "loss"}
    assert float(terms["mil"]) > 0 and float(terms["cls"]) > 0
    torch.testing.assert_close(terms["loss"], terms["mil"] + terms["cls"] + terms["reg"])
    wsddn = HeadOutputs(out.cls_logits, out.det_logits, torch.zeros(0, r, c + 1), None, [r])
    t2 = batch_loss("wsddn", wsddn, [boxes], [ImageTargets(torch.tensor([1]))], tc)
    assert float(t2["cls"]) == 0.0 and float(t2["reg"]) == 0.0
    torch.testing.assert_close(t2["loss"], terms["mil"])
    sup = HeadOutputs(None, None, torch.zeros(1, r, c + 1), torch.zeros(1, r, c + 1, 4), [r])
    gt = ImageTargets(torch.tensor([0]), torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0]))
    t3 = batch_loss("supervised", sup, [boxes], [gt], tc)
    # uniform logits: every RoI costs log(3) with weight 1; RoI 1 regresses onto the GT box
    torch.testing.assert_close(t3["cls"], torch.log(torch.tensor(3.0)))
    assert float(t3["reg"]) > 0 and float(t3["mil"]) == 0.0
    with pytest.raises(ValueError, match="ground-truth"):
        batch_loss("supervised", sup, [boxes], [ImageTargets(torch.tensor([0]))], tc)


@pytest.mark.parametrize("method", ["wsddn", "oicr", "mist"])
def test_few_steps_reduce_nothing_to_nan(wsod_run: str, tiny_cfg: WSODConfig, method: str) -> None:
    torch.manual_seed(0)
    job = _job(wsod_run, method, tiny_cfg)
    model = build_wsod_model(tiny_cfg.model, 6, method)
    reports: list[dict[str, Any]] = []
    state = fit(
        model, build_sampler(tiny_cfg, job), tiny_cfg, job, reporter=lambda m, s: reports.append(m)
    )
    assert [r["step"] for r in reports] == [2, 4]  # checkpoint_every = 2
    assert state["step"] == 4 and len(state["history"]) == 4
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in state["history"])
    assert state["method"] == method and "optimizer" in state


def test_resume_repeats_the_uninterrupted_run(wsod_run: str, tiny_cfg: WSODConfig) -> None:
    """Kill after the step-2 checkpoint, resume from it: the final weights equal those of a
    run that was never interrupted (sampling, flips and dropout are seeded per step)."""
    job = _job(wsod_run, "mist", tiny_cfg)

    def run(resume: dict[str, Any] | None, stop_after: int | None) -> dict[str, Any]:
        torch.manual_seed(tiny_cfg.train.seed)
        model = build_wsod_model(tiny_cfg.model, 6, "mist")
        saved: list[dict[str, Any]] = []
        fit(
            model, build_sampler(tiny_cfg, job), tiny_cfg, job,
            resume=resume, reporter=lambda m, s: saved.append(copy.deepcopy(s)),
            stop_after=stop_after,
        )  # fmt: skip
        return saved[-1]

    full = run(None, None)
    killed = run(None, 3)  # dies at step 3: its last checkpoint is step 2
    assert killed["step"] == 2
    resumed = run(killed, None)
    assert resumed["step"] == 4
    assert [h["step"] for h in resumed["history"]] == [1, 2, 3, 4]
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, msg=k)


def test_method_overrides_give_each_method_its_own_settings() -> None:
    """WSOD2's OICR next to wetectron's MIST in one comparison."""
    cfg = load_into(
        WSODConfig,
        None,
        [
            "compare=[oicr]",
            "method_overrides=['oicr:train.mil_reduction=sum', 'oicr:train.refine_lr_factor=10',"
            " 'oicr:model.head_init_std=0.01', 'oicr:test.flip=false']",
        ],
    )
    oicr, mist = cfg.for_method("oicr"), cfg.for_method("mist")
    assert (oicr.train.mil_reduction, oicr.train.refine_lr_factor) == ("sum", 10.0)
    assert (oicr.model.head_init_std, oicr.test.flip) == (0.01, False)
    assert (mist.train.mil_reduction, mist.train.refine_lr_factor) == ("mean", 1.0)
    assert mist.test.flip and not oicr.method_overrides and not mist.method_overrides
    for bad, why in [
        ("method_overrides=['rcnn:train.lr=1']", "must look like"),
        ("method_overrides=['oicr:train.no_such=1']", "no setting train.no_such"),
        ("method_overrides=['oicr:train.mil_reduction=max']", "for oicr"),
    ]:
        with pytest.raises(Exception, match=why):
            load_into(WSODConfig, None, [bad])
