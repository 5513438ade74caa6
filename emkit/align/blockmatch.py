"""Block matching (issue 9 §4, first step): a dense field from patches matched on a grid.

Paper (*Alignment at 1024 nm & 64 nm*): source patches on a regular grid are matched by
cross-correlation in larger target patches; the displacements, filtered for outliers, make a
dense field. Here, for one pair of sections (after rough alignment):

1. on a grid of step ``params.step_px``, a ``patch_px`` patch of the *moving* section is matched
   in the *reference* section within ``±search_px`` by normalised cross-correlation
   (scikit-image ``match_template``), the peak refined to sub-pixel by a parabola per axis;
2. patches with too little tissue, with a peak below ``min_score``, or whose vector differs from
   the median of its 3×3 grid neighbours by more than ``outlier_px`` are dropped;
3. the kept vectors are interpolated to every pixel (linear inside their hull, nearest outside)
   and smoothed (Gaussian, ``smooth_px``).

The result follows :mod:`emkit.align.fields`: ``warp(moving, field) ≈ reference``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields as dc_fields

import numpy as np

from ..errors import InputError

__all__ = ["BlockParams", "BlockMatch", "block_match", "dense_field"]


@dataclass(frozen=True)
class BlockParams:
    """Block matching parameters, pixels of the sections matched."""

    step_px: int = 32
    """Grid step of the patch centres."""
    patch_px: int = 48
    """Side of the moving patch."""
    search_px: int = 12
    """Largest displacement searched (each axis); the reference window is patch + 2·search."""
    min_score: float = 0.3
    """Patches whose correlation peak is lower are dropped."""
    min_tissue: float = 0.5
    """Patches with a smaller fraction of tissue (mask) are dropped."""
    outlier_px: float = 3.0
    """A vector farther than this from the median of its grid neighbours is dropped."""
    smooth_px: float = 8.0
    """Gaussian smoothing of the dense field (sigma; 0 = none)."""

    def __post_init__(self):
        for f in dc_fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise InputError(f"BlockParams.{f.name} must be a finite number >= 0, got {v!r}")
        if self.step_px < 1 or self.patch_px < 8 or self.search_px < 1:
            raise InputError(f"BlockParams: step_px >= 1, patch_px >= 8 and search_px >= 1 needed, got {self}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class BlockMatch:
    """Vectors of :func:`block_match`.

    points : float (n, 2) patch centres (y, x) px.   vectors : float (n, 2) (dy, dx) px: the
    moving section's content at ``point`` shows in the reference at ``point + vector``.
    scores : (n,) correlation peaks.   kept : (n,) bool, after the tissue, score and outlier tests.
    grid_shape : (rows, cols) of the grid (points are in C order).
    """

    points: np.ndarray
    vectors: np.ndarray
    scores: np.ndarray
    kept: np.ndarray
    grid_shape: tuple


def _subpixel(c, i):
    """Parabola through c[i-1], c[i], c[i+1] (an offset in [-0.5, 0.5])."""
    if 0 < i < len(c) - 1:
        den = c[i - 1] - 2 * c[i] + c[i + 1]
        if den < 0:
            return float(np.clip(0.5 * (c[i - 1] - c[i + 1]) / den, -0.5, 0.5))
    return 0.0


def block_match(reference, moving, *, params: BlockParams | None = None, mask=None) -> BlockMatch:
    """Match patches of ``moving`` in ``reference`` (2-D sections of the same shape).

    ``mask`` (optional, bool (y, x)): where the moving section has tissue (default everywhere it
    is not 0).
    """
    from skimage.feature import match_template

    p = BlockParams() if params is None else params
    if not isinstance(p, BlockParams):
        raise InputError(f"params must be a BlockParams, got {type(p).__name__}")
    ref = np.asarray(reference, np.float32)
    mov = np.asarray(moving, np.float32)
    if ref.ndim != 2 or ref.shape != mov.shape:
        raise InputError(f"block_match needs two sections (y, x) of the same shape, got {ref.shape} and {mov.shape}")
    m = (mov > 0) if mask is None else np.asarray(mask, bool)
    if m.shape != mov.shape:
        raise InputError(f"mask of shape {m.shape} does not fit sections of shape {mov.shape}")
    h, s, st = p.patch_px // 2, int(p.search_px), int(p.step_px)
    ny, nx = ref.shape
    ys = np.arange(h + s, ny - h - s, st)
    xs = np.arange(h + s, nx - h - s, st)
    if len(ys) == 0 or len(xs) == 0:
        raise InputError(f"sections of {ref.shape} px are too small for patches of {p.patch_px} px searched "
                         f"±{p.search_px} px")
    pts, vec, sc, ok = [], [], [], []
    for y in ys:
        for x in xs:
            tpl = mov[y - h:y + h, x - h:x + h]
            win = ref[y - h - s:y + h + s, x - h - s:x + h + s]
            frac = m[y - h:y + h, x - h:x + h].mean()
            good = frac >= p.min_tissue and tpl.std() > 0 and win.std() > 0
            d, score = (0.0, 0.0), 0.0
            if good:
                c = match_template(win, tpl)  # (2s+1, 2s+1): offset (i - s, j - s)
                i, j = np.unravel_index(int(np.argmax(c)), c.shape)
                score = float(c[i, j])
                d = (i - s + _subpixel(c[:, j], i), j - s + _subpixel(c[i, :], j))
            pts.append((y, x))
            vec.append(d)
            sc.append(score)
            ok.append(good and score >= p.min_score)
    pts, vec, sc, ok = np.asarray(pts, float), np.asarray(vec, float), np.asarray(sc), np.asarray(ok)
    grid = (len(ys), len(xs))
    # outliers: far from the median of the kept 3x3 neighbours
    V = vec.reshape(*grid, 2)
    K = ok.reshape(grid)
    keep = K.copy()
    for a in range(grid[0]):
        for b in range(grid[1]):
            if not K[a, b]:
                continue
            nb = [(a + i, b + j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i or j)
                  and 0 <= a + i < grid[0] and 0 <= b + j < grid[1] and K[a + i, b + j]]
            if len(nb) >= 2:
                med = np.median([V[q] for q in nb], axis=0)
                if np.hypot(*(V[a, b] - med)) > p.outlier_px:
                    keep[a, b] = False
    return BlockMatch(points=pts, vectors=vec, scores=sc, kept=keep.ravel(), grid_shape=grid)


def dense_field(match: BlockMatch, shape, *, params: BlockParams | None = None) -> np.ndarray:
    """The dense field (float32 (2, y, x), :mod:`emkit.align.fields` convention) of the kept
    vectors: ``warp(moving, field) ≈ reference``. Zero when no vector was kept."""
    from scipy.interpolate import griddata
    from scipy.ndimage import gaussian_filter

    p = BlockParams() if params is None else params
    ny, nx = (int(v) for v in shape)
    k = np.asarray(match.kept, bool)
    out = np.zeros((2, ny, nx), np.float32)
    if k.sum() == 0:
        return out
    pts, vec = match.points[k], match.vectors[k]
    yy, xx = np.mgrid[0:ny, 0:nx]
    # content at q (moving) shows at q + d (reference): the field at q + d is d; sampled at the
    # patch centres q + d, then interpolated
    at = pts + vec
    for c in range(2):
        if k.sum() >= 3:
            lin = griddata(at, vec[:, c], (yy, xx), method="linear")
        else:
            lin = np.full((ny, nx), np.nan)
        near = griddata(at, vec[:, c], (yy, xx), method="nearest")
        v = np.where(np.isnan(lin), near, lin)
        out[c] = gaussian_filter(v, p.smooth_px) if p.smooth_px > 0 else v
    return out
