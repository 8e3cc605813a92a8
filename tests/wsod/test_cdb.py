"""Concrete DropBlock: the block mask, the Concrete seeds on fixed noise, the module, and the
adversarial second pass in training."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
import torch

from weaksam.runs import manifest_path
from weaksam.wsod.cdb import ConcreteDropBlock, block_keep_mask, concrete_seeds
from weaksam.wsod.config import WSODConfig
from weaksam.wsod.model import WSODModel, build_wsod_model
from weaksam.wsod.stage import proposals_path
from weaksam.wsod.training import TrainJob, build_optimizer, build_sampler, fit


def test_block_mask_grows_each_seed_into_a_square() -> None:
    seeds = torch.zeros(2, 5, 5)
    seeds[0, 2, 2] = 1.0  # centre: a 3x3 block
    seeds[1, 0, 4] = 1.0  # corner: clipped to 2x2
    keep = block_keep_mask(seeds, 3)
    want0 = torch.ones(5, 5)
    want0[1:4, 1:4] = 0
    want1 = torch.ones(5, 5)
    want1[0:2, 3:5] = 0
    torch.testing.assert_close(keep[0], want0)
    torch.testing.assert_close(keep[1], want1)
    even = block_keep_mask(seeds[:1], 2)  # even side: the output keeps the input's size
    assert even.shape == (1, 5, 5) and int((even == 0).sum()) == 4


def test_concrete_seeds_on_fixed_noise() -> None:
    """Equal Gumbel draws cancel: the hard seed is 1 exactly where p > 0.5; other draws shift
    the odds by log-odds of the noise; the gradient is the relaxed sample's."""
    probs = torch.tensor([[[0.9, 0.1], [0.6, 0.4]]])
    half = torch.full_like(probs, 0.5)
    seeds = concrete_seeds(probs, 0.01, (half, half))
    torch.testing.assert_close(seeds, torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]))
    # u1 = 0.9 and u2 = 0.1 add g1 - g2 = 2.97 to the log-odds: p = 0.1 (-2.2) becomes a seed
    tilted = concrete_seeds(probs, 0.01, (torch.full_like(probs, 0.9), torch.full_like(probs, 0.1)))
    assert bool((tilted == 1).all())
    p = probs.clone().requires_grad_(True)
    concrete_seeds(p, 1.0, (half, half)).sum().backward()
    assert p.grad is not None and bool((p.grad > 0).all())  # straight-through: relaxed gradient


def test_module_drops_blocks_in_training_only() -> None:
    torch.manual_seed(0)
    # temperature 1 for a visible gradient (at the reference's 0.01 the relaxed sample saturates)
    cdb = ConcreteDropBlock(4, drop_prob=0.3, block_size=3, temperature=1.0)
    x = torch.rand(8, 4, 7, 7) + 0.5
    cdb.eval()
    assert torch.equal(cdb(x), x)
    cdb.train()
    probs = cdb.seed_probs(x)
    assert float(probs.detach().max()) <= 0.3 / 9 + 1e-6  # the DropBlock budget bounds every seed
    out = cdb(x)
    dropped = (out == 0).all(dim=1)  # a dropped cell is zero in every channel
    kept = ~dropped
    scale = kept.numel() / float(kept.sum())
    torch.testing.assert_close(
        out[kept[:, None].expand_as(out)], (x * scale)[kept[:, None].expand_as(x)]
    )
    assert abs(cdb.last_dropped - float(dropped.float().mean())) < 1e-6
    assert 0.0 < cdb.last_dropped < 0.6
    out.sum().backward()
    assert cdb.conv1.weight.grad is not None and float(cdb.conv1.weight.grad.abs().sum()) > 0


def test_mist_only_and_kept_out_of_the_detector_optimizer(tiny_cfg: WSODConfig) -> None:
    cfg = replace(tiny_cfg.model, cdb=True)
    assert build_wsod_model(cfg, 6, "oicr").cdb is None
    model = build_wsod_model(cfg, 6, "mist")
    assert isinstance(model.cdb, ConcreteDropBlock)
    in_opt = {
        id(p) for g in build_optimizer(model, tiny_cfg.train).param_groups for p in g["params"]
    }
    assert not in_opt & {id(p) for p in model.cdb.parameters()}


def test_adversarial_training_and_resume(wsod_run: str, tiny_cfg: WSODConfig) -> None:
    """Both players step; the checkpoint keeps the CDB optimiser and a resumed run repeats the
    uninterrupted one, CDB weights included."""
    cfg = replace(
        tiny_cfg,
        model=replace(tiny_cfg.model, cdb=True, cdb_temperature=1.0),
        train=replace(tiny_cfg.train, cdb_weight_decay=0.0),  # weights move by gradients only
    )
    job = TrainJob(
        "mist", 6, tuple("abcdef"), manifest_path(wsod_run), proposals_path(wsod_run, cfg), "train"
    )

    def run(resume: dict[str, Any] | None, stop_after: int | None) -> tuple[Any, dict[str, Any]]:
        torch.manual_seed(cfg.train.seed)
        model = build_wsod_model(cfg.model, 6, "mist")
        saved: list[dict[str, Any]] = []
        fit(
            model, build_sampler(cfg, job), cfg, job, resume=resume,
            reporter=lambda m, s: saved.append(copy.deepcopy(s)), stop_after=stop_after,
        )  # fmt: skip
        return model, saved[-1]

    torch.manual_seed(cfg.train.seed)
    before = copy.deepcopy(build_wsod_model(cfg.model, 6, "mist").cdb.state_dict())  # type: ignore[union-attr]
    model, full = run(None, None)
    assert "cdb_optimizer" in full
    assert any(
        not torch.equal(v, model.cdb.state_dict()[k])
        for k, v in before.items()
        if v.is_floating_point()
    )
    assert all("cdb_loss" in h and 0.0 <= h["cdb_dropped"] <= 1.0 for h in full["history"])
    _, killed = run(None, 3)
    _, resumed = run(killed, None)
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, msg=k)


def test_exported_mist_with_cdb_loads_strictly_and_predicts_without_it(
    tmp_path, tiny_cfg: WSODConfig
) -> None:
    from weaksam.configlib import to_dict
    from weaksam.wsod.inference import export_checkpoint, load_checkpoint

    cfg = replace(tiny_cfg.model, cdb=True)
    model = build_wsod_model(cfg, 6, "mist")
    state = {
        "model": model.state_dict(),
        "model_config": to_dict(cfg),
        "method": "mist",
        "num_classes": 6,
        "class_names": list("abcdef"),
        "step": 0,
        "history": [],
    }
    loaded, _ = load_checkpoint(export_checkpoint(state, str(tmp_path / "model.pt")))
    assert isinstance(loaded.cdb, ConcreteDropBlock) and not loaded.cdb.training
    x = torch.rand(3, loaded.backbone.out_channels, 7, 7)
    assert torch.equal(loaded.cdb(x), x)  # identity at inference


@pytest.mark.parametrize("freeze", [True, False])
def test_adversarial_pass_from_the_pooled_features_equals_a_full_second_pass(
    wsod_run: str, tiny_cfg: WSODConfig, freeze: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CDB's pass starts at the pooled RoI features (the first pass's with a frozen
    backbone, recomputed without a graph otherwise): every weight, the CDB's included, and
    both optimisers end as with a full second forward and backward through the backbone;
    a frozen backbone runs once per step, a trained one twice."""
    cfg = replace(
        tiny_cfg,
        model=replace(tiny_cfg.model, cdb=True, cdb_temperature=1.0, freeze_backbone=freeze),
        train=replace(tiny_cfg.train, cdb_weight_decay=0.0),
    )
    job = TrainJob(
        "mist", 6, tuple("abcdef"), manifest_path(wsod_run), proposals_path(wsod_run, cfg), "train"
    )

    def run() -> tuple[dict[str, Any], int]:
        torch.manual_seed(cfg.train.seed)
        model = build_wsod_model(cfg.model, 6, "mist")
        calls = [0]
        model.backbone.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        saved: list[dict[str, Any]] = []
        fit(
            model,
            build_sampler(cfg, job),
            cfg,
            job,
            reporter=lambda m, s: saved.append(copy.deepcopy(s)),
        )
        return saved[-1], calls[0]

    state, calls = run()
    assert calls == cfg.train.steps * (1 if freeze else 2)
    # the reference: the adversarial pass as a whole second forward from the images (the
    # pooled features fit asks for are not computed; forward computes its own)
    full_pass, real_pool, inside = WSODModel.forward, WSODModel.pool_rois, [False]

    def forward(self: WSODModel, *args: Any, pooled: Any = None) -> Any:
        inside[0] = True
        try:
            return full_pass(self, *args)
        finally:
            inside[0] = False

    monkeypatch.setattr(WSODModel, "forward", forward)
    monkeypatch.setattr(
        WSODModel, "pool_rois", lambda self, *a: real_pool(self, *a) if inside[0] else None
    )
    reference, ref_calls = run()
    assert ref_calls == 2 * cfg.train.steps
    assert any(k.startswith("cdb.") for k in state["model"])
    for k, v in reference["model"].items():
        assert torch.equal(state["model"][k], v), k
    for key in ("optimizer", "cdb_optimizer"):
        for pid, st in reference[key]["state"].items():
            for name, v in st.items():
                assert torch.equal(state[key]["state"][pid][name], v), (key, pid, name)
