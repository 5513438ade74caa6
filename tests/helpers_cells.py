"""Test volumes shared by the segmentation tests."""
from __future__ import annotations

import numpy as np


def voronoi(shape, n, seed, sampling=(4, 1, 1)) -> np.ndarray:
    """Voronoi cells: ``n`` random seeds, labels 1..n (uint64), distances anisotropic by
    ``sampling`` (z counts 4× by default, like 40×8×8 nm voxels)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    seeds = np.ones(shape, bool)
    idx = rng.choice(np.prod(shape), n, replace=False)
    seeds.flat[idx] = False
    _, inds = ndimage.distance_transform_edt(seeds, sampling=sampling, return_indices=True)
    lab = np.zeros(np.prod(shape), np.uint64)
    lab[idx] = np.arange(1, n + 1)
    return lab[np.ravel_multi_index(tuple(inds), shape)].reshape(shape)
