"""emkit.train.losses: inverse margin and patch-wise class rebalancing, checked by hand."""
import math

import numpy as np
import pytest

from helpers_require import require

torch = require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")

from emkit.nets import HeadSpec, NetConfig  # noqa: E402
from emkit.train.losses import bce_loss, head_losses, rebalance_weights, soft_targets  # noqa: E402


def _bce(p, t):
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_inverse_margin():
    t = torch.tensor([0.0, 1.0])
    assert soft_targets(t, 0.1).tolist() == pytest.approx([0.1, 0.9])
    z = torch.tensor([[[[[2.0, -1.0]]]]])            # (1, 1, 1, 1, 2) logits
    tgt = torch.tensor([[[[[1.0, 0.0]]]]])
    valid = torch.ones_like(tgt)
    sig = lambda a: 1 / (1 + math.exp(-a))           # noqa: E731
    want = (_bce(sig(2.0), 0.9) + _bce(sig(-1.0), 0.1)) / 2
    assert float(bce_loss(z, tgt, valid, margin=0.1)) == pytest.approx(want, rel=1e-6)
    plain = (_bce(sig(2.0), 1.0) + _bce(sig(-1.0), 0.0)) / 2
    assert float(bce_loss(z, tgt, valid)) == pytest.approx(plain, rel=1e-6)
    # with the margin the minimum sits at p = 0.9, not at p -> 1
    zs = torch.linspace(0, 6, 601)
    losses = [float(bce_loss(a.reshape(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1),
                             margin=0.1)) for a in zs]
    best = 1 / (1 + math.exp(-float(zs[int(np.argmin(losses))])))
    assert best == pytest.approx(0.9, abs=0.01)


def test_class_rebalancing_by_hand():
    # one positive, three negatives, one invalid voxel in one patch/channel
    tgt = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0]).reshape(1, 1, 1, 1, 5)
    valid = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]).reshape(1, 1, 1, 1, 5)
    w = rebalance_weights(tgt, valid).flatten().tolist()
    assert w == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3, 0.0])    # n/(2 n+) and n/(2 n-)
    assert sum(w[:1]) == pytest.approx(sum(w[1:4]))               # each class weighs the same
    z = torch.tensor([0.5, -0.3, 0.2, 1.0, 3.0]).reshape(1, 1, 1, 1, 5)
    p = 1 / (1 + np.exp(-z.flatten().numpy().astype(np.float64)))
    soft = [0.9, 0.1, 0.1, 0.1, 0.9]
    want = sum(wi * _bce(pi, ti) for wi, pi, ti in zip(w, p, soft)) / 4
    got = float(bce_loss(z, tgt, valid, margin=0.1, rebalance=True))
    assert got == pytest.approx(want, rel=1e-5)


def test_rebalancing_per_sample_and_channel_and_single_class():
    tgt = torch.zeros(2, 2, 1, 1, 4)
    tgt[0, 0, ..., 0] = 1          # sample 0 channel 0: 1 positive of 4
    tgt[1, 1] = 1                  # sample 1 channel 1: all positive
    valid = torch.ones_like(tgt)
    w = rebalance_weights(tgt, valid)
    assert w[0, 0].flatten().tolist() == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3])
    assert w[0, 1].flatten().tolist() == [1.0] * 4      # one class only: plain weights
    assert w[1, 1].flatten().tolist() == [1.0] * 4


def test_head_losses_use_each_heads_channels():
    cfg = NetConfig(widths=(4,), patch_size=(1, 4, 4), heads=(HeadSpec("affinity", 3, "affinity"),
                                                             HeadSpec("semantic", 5, "semantic")))
    tgt_a = torch.ones(1, 3, 1, 4, 4)
    tgt_s = torch.zeros(1, 5, 1, 4, 4)
    tgt_s[:, 2] = 1
    logits = torch.zeros(1, 8, 1, 4, 4)
    logits[:, 3:] = -20.0
    logits[:, 5] = 20.0                           # semantic channel 2 is perfect
    out = head_losses(logits, {"affinity": (tgt_a, torch.ones_like(tgt_a)),
                               "semantic": (tgt_s, torch.ones_like(tgt_s))}, cfg)
    assert float(out["semantic"]) < 1e-6          # plain BCE (no margin) for semantic classes
    assert float(out["affinity"]) == pytest.approx(math.log(2), rel=1e-6)  # mean over valid channel-voxels


def test_semantic_rebalancing_on_request():
    from emkit.nets import NetConfig, semantic_heads
    from emkit.train.losses import bce_loss, head_losses

    cfg = NetConfig(widths=(2, 4), heads=semantic_heads(), patch_size=(2, 8, 8), resolution=(40, 8, 8))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 5, 2, 8, 8, generator=g)
    t = torch.zeros(1, 5, 2, 8, 8)
    t[:, 0, :, :2] = 1                                     # a rare class
    t[:, 1, :, 2:] = 1
    v = torch.ones_like(t)
    plain = head_losses(logits, {"semantic": (t, v)}, cfg)["semantic"]
    reb = head_losses(logits, {"semantic": (t, v)}, cfg, rebalance=("semantic",))["semantic"]
    assert torch.allclose(plain, bce_loss(logits, t, v))
    assert torch.allclose(reb, bce_loss(logits, t, v, rebalance=True)) and not torch.allclose(plain, reb)
