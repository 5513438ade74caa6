"""Losses of the paper (Methods: Boundary detection, Loss function; Semantic labeling).

* Affinities (nearest and long-range): binary cross-entropy with "inverse margin" 0.1 (targets
  0.9 / 0.1 instead of 1 / 0; Huang & Jain 2013) and patch-wise class rebalancing (Lee et al.
  2017): in each patch and channel, positive and negative voxels are weighted inversely to their
  count, so each class carries half of the weight.
* Myelin and vessel wall: the same BCE with inverse margin 0.1, no rebalancing (paper: "For
  myelin detection, we used the same binary cross-entropy loss with inverse margin of 0.1, but no
  class rebalancing was used").
* Semantic classes: plain binary cross-entropy per class channel.
* Synaptic clefts: plain binary cross-entropy (paper, Methods *Synapse detection*: "binary cross
  entropy loss"; the paper deliberately did not up-weight synaptic voxels, it fixed the labels'
  false negatives instead). The imbalance is met by where patches fall
  (:class:`emkit.train.sampler.PatchSampler`, ``balance="clefts"``).

Every loss is a weighted mean over valid voxels: ``sum(w * bce) / sum(valid)``; the weights of
a rebalanced channel average to 1 over its valid voxels, so losses of different heads are on one
scale. The total is the sum over heads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSS_SETTINGS", "soft_targets", "rebalance_weights", "bce_loss", "head_losses"]

#: head kind -> (inverse margin, class rebalancing)
LOSS_SETTINGS = {
    "affinity": (0.1, True),
    "long_range": (0.1, True),
    "myelin": (0.1, False),
    "vessel": (0.1, False),
    "semantic": (0.0, False),
    "cleft": (0.0, False),
}


def soft_targets(target: torch.Tensor, margin: float) -> torch.Tensor:
    """Targets 1 -> 1 - margin, 0 -> margin (inverse margin)."""
    return target * (1.0 - 2.0 * margin) + margin


def rebalance_weights(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Patch-wise class rebalancing weights, per sample and channel of (B, C, z, y, x) tensors.

    With n+ positive and n- negative valid voxels (n = n+ + n-), positives weigh n / (2 n+) and
    negatives n / (2 n-); each class then contributes half the weight and the mean weight over
    valid voxels is 1. When a class is absent the other weighs 1. Invalid voxels weigh 0.
    """
    dims = tuple(range(2, target.ndim))
    pos = (target > 0.5).to(valid.dtype) * valid
    neg = valid - pos
    n_pos = pos.sum(dim=dims, keepdim=True)
    n_neg = neg.sum(dim=dims, keepdim=True)
    n = n_pos + n_neg
    both = (n_pos > 0) & (n_neg > 0)
    w_pos = torch.where(both, n / (2.0 * n_pos.clamp(min=1)), torch.ones_like(n))
    w_neg = torch.where(both, n / (2.0 * n_neg.clamp(min=1)), torch.ones_like(n))
    return pos * w_pos + neg * w_neg


def bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, *, margin: float = 0.0,
             rebalance: bool = False) -> torch.Tensor:
    """Weighted BCE (with logits) over valid voxels; see the module docstring."""
    weight = rebalance_weights(target, valid) if rebalance else valid
    t = soft_targets(target, margin) if margin else target
    per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    denom = valid.sum().clamp(min=1.0)
    return (per * weight).sum() / denom


def head_losses(logits: torch.Tensor, targets: dict, config, rebalance=()) -> dict[str, torch.Tensor]:
    """``{head name: loss}`` for ``logits`` (B, C, z, y, x) of a net with ``config``.

    ``rebalance``: head kinds rebalanced besides the paper's (e.g. ``("semantic",)``).

    ``targets`` maps head name -> ``(target, valid)`` tensors (B, c_head, z, y, x).
    """
    out = {}
    sl = config.head_slices
    for h in config.heads:
        if h.name not in targets:
            continue
        t, v = targets[h.name]
        margin, reb = LOSS_SETTINGS[h.kind]
        reb = reb or h.kind in rebalance
        out[h.name] = bce_loss(logits[:, sl[h.name]], t, v, margin=margin, rebalance=reb)
    return out
