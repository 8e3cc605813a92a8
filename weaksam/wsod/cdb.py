"""Concrete DropBlock (CDB): MIST's learnable, adversarial DropBlock on the pooled RoI features
(method §3a; Ren et al., CVPR 2020, section 3.3).

A small residual conv block looks at each RoI's pooled features (detached: it does not train
the backbone) and scores every cell; the scores become drop-seed probabilities
``p = gamma * sigmoid(score)`` with ``gamma = drop_prob / block_size**2`` (the DropBlock budget:
about ``drop_prob`` of the cells end up dropped when every seed probability is at its
maximum), a hard seed mask is sampled from the binary Concrete (Gumbel-softmax) relaxation
with temperature ``temperature`` (straight-through: hard forward, relaxed gradient), every seed
is grown into a ``block_size`` square (a max-pool), and the kept features are rescaled by
``cells / kept cells`` as DropBlock does.

Training is a min-max game: the detector minimises its loss ``L`` on the dropped features,
and the CDB block, with its own optimiser, minimises ``-weight * L`` (``weight`` 0.01) on a
second forward pass (:func:`weaksam.wsod.training.fit`). At inference the block does nothing.

The reference settings (wetectron's defaults): ``drop_prob`` 0.3, ``block_size`` 3, Concrete
temperature 0.01, hard masks; the CDB optimiser Adam at lr 1e-5, weight decay 5e-4. The design
(a residual block scoring cells, seeds bounded by the DropBlock budget, DropBlock's rescale)
is the method's as its reference implementation realises it; the reference code is under a
non-commercial licence and none of it is copied here. At temperature 0.01 the relaxed sample
saturates, so the adversary's gradient is small except near the decision boundary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def block_keep_mask(seeds: torch.Tensor, block_size: int) -> torch.Tensor:
    """``1 - maxpool(seeds)``: every seed (1) of ``seeds`` ``NxHxW`` grown into a
    ``block_size`` square centred on it (for an even size, anchored so the output stays
    ``HxW``); returns the keep mask ``NxHxW`` (0 where dropped)."""
    pad = block_size // 2
    grown = F.max_pool2d(seeds[:, None], block_size, stride=1, padding=pad)
    if block_size % 2 == 0:
        grown = grown[..., :-1, :-1]
    return 1.0 - grown[:, 0]


def concrete_seeds(
    probs: torch.Tensor,
    temperature: float,
    uniform: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Hard drop seeds ``NxHxW`` in {0, 1} sampled with probabilities ``probs`` through the
    binary Concrete relaxation (two-class Gumbel-softmax at ``temperature``), straight-through:
    the forward value is the hard sample, the gradient the relaxed one's.

    ``uniform``: the two ``U(0, 1)`` draws of the Gumbel noise (tests fix them; default
    ``torch.rand``)."""
    eps = 1e-10
    u1, u2 = uniform if uniform is not None else (torch.rand_like(probs), torch.rand_like(probs))
    g1 = -torch.log(-torch.log(u1 + eps) + eps)
    g2 = -torch.log(-torch.log(u2 + eps) + eps)
    logit = (torch.log(probs + eps) + g1 - torch.log(1.0 - probs + eps) - g2) / temperature
    soft = torch.sigmoid(logit)
    hard = (soft > 0.5).to(soft.dtype)
    return hard - soft.detach() + soft


class ConcreteDropBlock(nn.Module):
    """The CDB block on ``NxDxSxS`` pooled RoI features (see the module docstring).

    Args:
        channels: ``D``. drop_prob / block_size / temperature: the DropBlock budget, the block
            side and the Concrete temperature.
    """

    def __init__(
        self, channels: int, drop_prob: float = 0.3, block_size: int = 3, temperature: float = 0.01
    ) -> None:
        super().__init__()
        self.drop_prob, self.block_size, self.temperature = drop_prob, block_size, temperature
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, 1, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(1)
        self.shortcut = nn.Conv2d(channels, 1, 1, bias=False)
        for m in (self.conv1, self.conv2, self.shortcut):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.last_dropped = 0.0  # fraction of cells dropped by the last training call

    def seed_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Drop-seed probabilities ``NxSxS`` in ``[0, gamma]`` of (detached) features ``x``."""
        x = x.detach()
        h = torch.relu(self.bn1(self.conv1(x)))
        score = self.bn2(self.conv2(h)) + self.shortcut(x)
        gamma = self.drop_prob / self.block_size**2
        return gamma * torch.sigmoid(score[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with blocks dropped and the rest rescaled (training), or ``x`` (eval)."""
        if not self.training or self.drop_prob <= 0 or x.shape[0] == 0:
            return x
        keep = block_keep_mask(
            concrete_seeds(self.seed_probs(x), self.temperature), self.block_size
        )
        kept = keep.sum().clamp(min=1.0)
        self.last_dropped = float(1.0 - kept.detach() / keep.numel())
        return x * keep[:, None] * (keep.numel() / kept)


__all__ = ["ConcreteDropBlock", "block_keep_mask", "concrete_seeds"]
