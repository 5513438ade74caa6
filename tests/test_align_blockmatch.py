"""Block matching (issue 9 §4, first step): a smooth known field recovered from patches."""
from __future__ import annotations

import numpy as np
import pytest
from helpers_require import require

from emkit.align.blockmatch import BlockParams, block_match, dense_field
from emkit.errors import InputError

torch = require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")
torch.set_num_threads(1)


def test_recovers_a_smooth_field_and_drops_outliers():
    from scipy.ndimage import gaussian_filter

    from emkit.align import fields as F

    rng = np.random.default_rng(0)
    ref = gaussian_filter(rng.random((160, 160)), 2.0).astype(np.float32)
    yy, xx = np.mgrid[0:160, 0:160].astype(np.float32)
    g = np.stack([3 * np.sin(xx / 40.0) + 1.0, 2 * np.cos(yy / 35.0) - 1.5]).astype(np.float32)
    mov = F.warp(ref, g)
    mov[60:100, 60:100] = rng.random((40, 40))  # a patch of something else: its vectors are outliers or dropped
    p = BlockParams(step_px=16, smooth_px=4)
    m = block_match(ref, mov, params=p, mask=np.ones(ref.shape, bool))
    assert m.points.shape == m.vectors.shape == (np.prod(m.grid_shape), 2)
    inside = np.all((m.points >= 64) & (m.points < 96), axis=1)  # patch centres on the foreign block
    assert inside.sum() >= 1 and not m.kept[inside].any()
    assert m.kept[~inside].mean() > 0.4
    f = dense_field(m, ref.shape, params=p)
    truth = F.invert(g)
    outside = np.ones(ref.shape, bool)  # inside the grid, away from the foreign block
    outside[50:110, 50:110] = False
    outside[:30], outside[-30:], outside[:, :30], outside[:, -30:] = False, False, False, False
    err = F.norm(f - truth)[outside]
    assert np.median(err) < 0.4 and np.median(F.norm(truth)[outside]) > 2.5
    back = F.warp(mov, f)
    assert np.abs(back - ref)[outside].mean() < 0.3 * np.abs(mov - ref)[outside].mean()


def test_bad_input():
    with pytest.raises(InputError, match="same shape"):
        block_match(np.zeros((64, 64)), np.zeros((64, 48)))
    with pytest.raises(InputError, match="too small"):
        block_match(np.zeros((40, 40)), np.zeros((40, 40)))
    with pytest.raises(InputError, match="BlockParams"):
        BlockParams(patch_px=4)
    m = block_match(np.zeros((96, 96)), np.zeros((96, 96)))  # no tissue: nothing kept, zero field
    assert not m.kept.any() and not np.any(dense_field(m, (96, 96)))
