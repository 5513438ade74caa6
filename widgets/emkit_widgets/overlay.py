"""Colour label images for display: stable pseudo-random colours per id, alpha blending."""
from __future__ import annotations

import numpy as np

__all__ = ["label_colors", "blend", "to_rgb", "SEMANTIC_COLORS"]

# 0 background, 1 soma+nucleus, 2 axon, 3 dendrite, 4 glia, 5 blood vessel (design.md conventions)
SEMANTIC_COLORS = np.array([
    [0, 0, 0], [230, 80, 60], [60, 140, 240], [250, 200, 40], [90, 200, 90], [200, 60, 200],
], dtype=np.float32) / 255.0


def label_colors(labels: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] for each voxel of an integer label image (a hash of the id; 0 is black).

    Parameters
    ----------
    labels : integer array of any shape.

    Returns
    -------
    float32 array of shape ``labels.shape + (3,)``.
    """
    ids = labels.astype(np.uint64, copy=False)
    h = ids * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(0xFF) for s in (0, 8, 16)], axis=-1).astype(np.float32)
    rgb = 0.25 + 0.75 * rgb / 255.0
    rgb[ids == 0] = 0
    return rgb


def to_rgb(gray: np.ndarray) -> np.ndarray:
    """uint8 or float gray image (y, x) → float32 RGB in [0, 1], shape (y, x, 3)."""
    g = gray.astype(np.float32)
    if gray.dtype == np.uint8:
        g /= 255.0
    return np.repeat(g[..., None], 3, axis=-1)


def blend(rgb: np.ndarray, color: np.ndarray, where: np.ndarray, alpha: float) -> np.ndarray:
    """Alpha-blend ``color`` (same shape as ``rgb`` or an RGB triple) into ``rgb`` where ``where``."""
    out = rgb.copy()
    c = color[where] if color.ndim == rgb.ndim else np.asarray(color, np.float32)
    out[where] = (1 - alpha) * rgb[where] + alpha * c
    return out
