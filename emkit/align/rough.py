"""Rough alignment: one rigid transform (rotation + translation) per section (issue 9 §3).

Paper: *Image acquisition and alignment*, *Rough alignment* — sections are first brought into
rough register by a rigid transform each, estimated at a coarse mip, before the fine fields.

How
---
1. **Coarse mip.** Every section is block-averaged by an integer factor so that its pixel is
   about ``params.coarse_nm`` (never fewer than ``params.min_coarse_px`` pixels a side).
2. **Tissue mask.** At the coarse mip, a pixel counts when it holds data (not 0, the value of
   no data), is not flat (local standard deviation ≥ ``params.flat_std`` grey levels: resin and
   empty regions are flat) and is not in the caller's ``ignore`` mask (e.g. fold or crack masks).
   Sections with less than ``params.min_tissue`` of tissue are **skipped** (missing sections).
   Then the coarse sections are smoothed (``params.smooth_px``).
3. **Pairs.** Each section is matched to the nearest previous section that is not skipped
   (looking back at most ``neighbours + max_gap`` sections); when that pair scores below
   ``params.min_score``, to the next one, up to ``params.neighbours`` (neighbour fallback). For every
   rotation on a grid of ``±max_rotation_deg`` (step ``rotation_step_deg``) the moving section
   is rotated about its centre and cross-correlated with the reference (both mean-free over the
   tissue mask and tapered by the smoothed mask and a raised Hann window, zero-padded: the
   ``normalization=None`` phase correlation of pitfall 11); the best angle is refined by a
   parabola through its neighbours (and kept only if it beats no rotation by
   ``params.rotation_gain`` in score) and the shift to sub-pixel precision by scikit-image's
   ``phase_cross_correlation`` (``upsample_factor``, ``normalization=None``). The pair's score
   is the normalised cross-correlation over the tissue both sections share after the move;
   pairs scoring below ``params.min_score`` are rejected, and so are those scoring below
   ``params.keep_ratio`` of the section's best pair.
4. **Composition (drift).** Transforms map a pixel of the aligned (reference) frame to the
   pixel of the unaligned section it reads (2×3 matrices, convention of
   :func:`emkit.align.fields.affine_field`). The first usable section is the reference (not
   moved). Section z's global transform is ``pair(z→r) ∘ global(r)`` for its accepted pair (the
   mean over pairs, projected back to a rotation, if several are given). A section with no
   accepted pair is **unmatched**: it keeps the transform of the section before (and serves as a
   reference like that).

   Composing pairwise transforms makes their errors add up along z (drift). The default is the
   paper's plain composition in ascending z (no global relaxation). Tissue that runs obliquely
   through the sections *looks* like a steady section-to-section shift, and an image-based
   aligner follows it; over a wide field of view the directions of many neurites average out
   (a clean 16×512² phantom moves by 1.5 px median), but over a small one a few large neurites
   dominate (clean 16×256² phantoms: 8–14 px; benchmarks/align.py). From images
   alone such a trend cannot be told apart from a slow drift of the sections. With
   ``params.detrend_sections`` > 0 it is left in place: the slow trend of the composed rotation
   angles and translations (about the section centre) along z — a Gaussian-weighted local
   linear fit with that sigma in sections — is subtracted and the reference re-anchored at the
   identity, so only section-to-section offsets are corrected (at the price of the low-pass
   part of the true offsets; benchmarks/align.py measures both).

Each section's estimate depends only on the sections in its look-back window, so the chunked
form (:func:`rough_align_layers`) estimates pairs in parallel over z-blocks, composes the
transforms serially (cheap), then warps z-blocks in parallel; it equals :func:`rough_align`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields as dc_fields

import numpy as np

from ..errors import InputError, LayerExistsError

__all__ = ["RoughParams", "RoughResult", "rough_align", "rough_align_layers", "coarse_factor", "tissue_mask",
           "estimate_pair", "compose_transforms", "read_transforms"]


@dataclass(frozen=True)
class RoughParams:
    """Parameters of rough alignment (defaults: the paper's rough, rigid stage at a coarse mip)."""

    coarse_nm: float = 32.0
    """Pixel size (nm) at which transforms are estimated (integer block-averaging factor)."""
    min_coarse_px: int = 256
    """The coarse section keeps at least this many pixels a side (caps the factor)."""
    max_rotation_deg: float = 6.0
    """Rotations searched between two sections: ±this (twice the largest rotation of one section)."""
    rotation_step_deg: float = 0.5
    """Step of the rotation grid (the best is refined by a parabola)."""
    upsample: int = 20
    """Sub-pixel precision of the shift: 1/upsample coarse pixel."""
    neighbours: int = 3
    """Previous sections (with tissue) a section may be matched to: the nearest first, the next
    only when the pairs so far score below ``min_score`` (neighbour fallback, as in the paper)."""
    max_gap: int = 3
    """Consecutive skipped (missing) sections bridged: look back ``neighbours + max_gap`` sections."""
    min_tissue: float = 0.15
    """Sections with a smaller fraction of tissue pixels are skipped (missing / empty)."""
    flat_std: float = 6.0
    """Local standard deviation (grey levels of 0–255) below which a pixel is flat (resin, empty)."""
    rotation_gain: float = 0.05
    """A rotation is kept only if it raises the pair's normalised cross-correlation by this much over
    no rotation (else the pair is a translation): noisy small angles would add up along z."""
    smooth_px: float = 1.5
    """Gaussian smoothing (sigma, coarse pixels) of the sections before matching: structures that
    persist from section to section weigh more than noise and small organelles."""
    min_score: float = 0.1
    """Pairs whose normalised cross-correlation after the move is lower are rejected."""
    detrend_sections: float = 0.0
    """Drift suppression (off by default, like the paper's plain composition): when > 0, the slow
    trend of the composed rotations and translations along z (Gaussian-weighted local linear fit,
    sigma in sections) is removed, so that section-to-section offsets are corrected but trends
    over many sections are left in place. Worth it only where a small field of view lets oblique
    tissue look like a steady shift (see the module docstring, step 4)."""
    keep_ratio: float = 0.8
    """Of a section's accepted pairs, those scoring at least this fraction of its best are averaged
    (with the fallback there is one; pairs given to :func:`compose_transforms` otherwise may be more)."""

    def __post_init__(self):
        for f in dc_fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise InputError(f"RoughParams.{f.name} must be a finite number >= 0, got {v!r}")
        if self.neighbours < 1 or self.upsample < 1 or self.min_coarse_px < 8 or self.rotation_step_deg <= 0:
            raise InputError("RoughParams: neighbours >= 1, upsample >= 1, min_coarse_px >= 8 and "
                             f"rotation_step_deg > 0 needed, got {self}")
        if self.coarse_nm <= 0:
            raise InputError(f"RoughParams.coarse_nm must be > 0, got {self.coarse_nm}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def lookback(self) -> int:
        return int(self.neighbours + self.max_gap)


@dataclass
class RoughResult:
    """Output of :func:`rough_align` (unpacks as ``image, matrices, report``).

    image : the aligned stack (z, y, x), dtype of the input; 0 where no data came in.
    matrices : float64 (z, 2, 3): aligned pixel ``p`` of section z reads the input section at
        ``matrices[z, :, :2] @ p + matrices[z, :, 2]`` (full-resolution pixels, (y, x)).
    report : dict: ``factor`` (coarse mip factor), ``status`` per section (``reference``,
        ``ok``, ``skipped`` (no tissue), ``unmatched`` (no pair accepted)), ``tissue`` fraction,
        ``pairs`` ([z, r, score, rotation_deg, shift_y, shift_x] of every pair estimated),
        ``rotation_deg`` and ``shift_px`` of every global transform.
    """

    image: np.ndarray
    matrices: np.ndarray
    report: dict

    def __iter__(self):
        return iter((self.image, self.matrices, self.report))

    def fields(self) -> np.ndarray:
        """The global transforms as fields, float32 (z, 2, y, x), (dy, dx) full-resolution pixels
        (:mod:`emkit.align.fields` convention: ``warp(input[z], fields[z]) == image[z]``)."""
        return _affine_fields(self.matrices, self.image.shape[1:])


def _params(params) -> RoughParams:
    params = RoughParams() if params is None else params
    if not isinstance(params, RoughParams):
        raise InputError(f"params must be a RoughParams, got {type(params).__name__}")
    return params


def coarse_factor(shape_yx, resolution_yx, params: RoughParams | None = None) -> int:
    """Integer block-averaging factor of the coarse mip (see :class:`RoughParams`)."""
    p = _params(params)
    f = int(max(1, np.floor(p.coarse_nm / float(min(resolution_yx)) + 1e-9)))
    cap = max(1, int(min(shape_yx) // p.min_coarse_px))
    return int(min(f, cap))


def _grey(section, what: str = "rough alignment") -> np.ndarray:
    """A section as float32 grey values 0-255 (uint8 as is, float 0-1 scaled); other dtypes refused."""
    a = np.asarray(section)
    if a.dtype == np.uint8:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32) * 255.0
    raise InputError(f"{what} works on uint8 (0-255) or float (0-1) images, got dtype {a.dtype}")


def _downsample(a: np.ndarray, f: int, how="mean") -> np.ndarray:
    if f == 1:
        return a
    ny, nx = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    b = a[:ny, :nx].reshape(ny // f, f, nx // f, f)
    return b.mean(axis=(1, 3)) if how == "mean" else b.max(axis=(1, 3))


def tissue_mask(coarse: np.ndarray, params: RoughParams | None = None, ignore=None) -> np.ndarray:
    """Boolean mask of tissue in a coarse section (grey levels 0–255): data, not flat, not ignored."""
    from scipy.ndimage import binary_erosion, gaussian_filter, uniform_filter

    p = _params(params)
    data = binary_erosion(coarse > 0.5, iterations=2)
    g = gaussian_filter(coarse, 1.0)
    m1 = uniform_filter(g, 7)
    var = np.maximum(uniform_filter(g * g, 7) - m1 * m1, 0)
    m = data & (np.sqrt(var) >= p.flat_std)
    if ignore is not None:
        m &= ~np.asarray(ignore, bool)
    return m


def _prepare_section(section, f, params, ignore=None):
    from scipy.ndimage import gaussian_filter

    c = _downsample(_grey(section), f)
    ig = None if ignore is None else _downsample(np.asarray(ignore) > 0, f, how="max")
    m = tissue_mask(c, params, ig)
    if params.smooth_px > 0:
        # normalised convolution: the no-data region (0) does not darken the tissue next to it
        d = (c > 0.5).astype(np.float32)
        w = gaussian_filter(d, params.smooth_px)
        c = np.where(d > 0, gaussian_filter(c * d, params.smooth_px) / np.maximum(w, 1e-3), 0.0).astype(np.float32)
    return c, m


# -- pair estimation (coarse pixels) --------------------------------------------------------------
def _rot_matrix(theta_deg, shape):
    t = np.deg2rad(theta_deg)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = (np.asarray(shape, float) - 1) / 2
    return R, c


def _affine_sample(img, M, order=1):
    """out[p] = img[M[:, :2] @ p + M[:, 2]] (scipy, 0 outside)."""
    from scipy.ndimage import affine_transform

    return affine_transform(img, M[:, :2], offset=M[:, 2], order=order, mode="constant", cval=0.0)


def _taper(mask):
    from scipy.ndimage import gaussian_filter

    h = np.outer(np.hanning(mask.shape[0]), np.hanning(mask.shape[1]))
    return gaussian_filter(mask.astype(np.float32), 2.0) * (0.25 + 0.75 * h)


def _prep(img, mask):
    if mask.sum() < 4:
        return np.zeros_like(img)
    x = np.where(mask, img - img[mask].mean(), 0.0)
    return (x * _taper(mask)).astype(np.float32)


def _xcorr(a_fft, b, shape2):
    """Circular cross-correlation of zero-padded images (a given as its FFT)."""
    B = np.fft.rfft2(b, shape2)
    return np.fft.irfft2(a_fft * np.conj(B), shape2)


def _ncc(a, b, m):
    if m.sum() < 16:
        return 0.0
    x, y = a[m] - a[m].mean(), b[m] - b[m].mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else 0.0


def estimate_pair(ref, ref_mask, mov, mov_mask, params: RoughParams | None = None):
    """Rigid transform taking section ``mov`` onto ``ref`` (coarse sections, same shape).

    Returns ``(matrix, score, angle_deg, shift)``: ``matrix`` (2, 3) maps a pixel ``p`` of
    ``ref``'s frame to the pixel of ``mov`` that shows the same tissue
    (``mov[matrix @ (p, 1)] ≈ ref[p]``); ``score`` the normalised cross-correlation over the
    tissue both share after the move; the rotation (degrees, about the centre) and the shift
    (coarse pixels) it is made of.
    """
    from skimage.registration import phase_cross_correlation

    p = _params(params)
    shape = ref.shape
    shape2 = tuple(2 * s for s in shape)
    A = np.fft.rfft2(_prep(ref, ref_mask), shape2)
    n_steps = int(np.floor(p.max_rotation_deg / p.rotation_step_deg + 1e-9))
    angles = np.arange(-n_steps, n_steps + 1) * p.rotation_step_deg
    movf = mov.astype(np.float32)
    mmask = mov_mask.astype(np.float32)

    def rotated(theta):
        R, c = _rot_matrix(theta, shape)
        M = np.concatenate([R, (c - R @ c)[:, None]], 1)
        return _affine_sample(movf, M), _affine_sample(mmask, M) > 0.5

    norm_ref = float(np.sqrt((np.abs(A) ** 2).sum() / np.prod(shape2)))
    scores = []
    for th in angles:
        r_img, r_mask = rotated(th)
        b = _prep(r_img, r_mask)
        cc = _xcorr(A, b, shape2)
        nb = float(np.sqrt((b * b).sum()))
        scores.append(float(cc.max()) / (norm_ref * nb) if nb > 0 and norm_ref > 0 else 0.0)
    scores = np.asarray(scores)
    i = int(np.argmax(scores))
    theta = float(angles[i])
    if 0 < i < len(angles) - 1:
        s0, s1, s2 = scores[i - 1:i + 2]
        den = s0 - 2 * s1 + s2
        if den < 0:
            theta += float(np.clip(0.5 * (s0 - s2) / den, -0.5, 0.5)) * p.rotation_step_deg

    def fit(theta):
        r_img, r_mask = rotated(theta)
        a_p = np.pad(_prep(ref, ref_mask), [(0, s) for s in shape])
        b_p = np.pad(_prep(r_img, r_mask), [(0, s) for s in shape])
        shift, _, _ = phase_cross_correlation(a_p, b_p, upsample_factor=p.upsample, normalization=None)
        shift = np.asarray(shift, float)
        # wrap to the range of a zero-padded correlation
        shift = np.where(shift > np.asarray(shape), shift - np.asarray(shape2), shift)
        R, c = _rot_matrix(theta, shape)
        # ref[p] ≈ rot(mov)[p - s] = mov[c + R (p - s - c)]
        M = np.concatenate([R, (c - R @ (c + shift))[:, None]], 1)
        moved = _affine_sample(movf, M)
        both = ref_mask & (_affine_sample(mmask, M) > 0.5)
        return M, _ncc(ref, moved, both), shift

    M, score, shift = fit(theta)
    if theta != 0.0 and p.rotation_gain > 0:
        # a rotation must earn its place: small sections of tissue that changes from section to
        # section give flat score curves, and a noisy angle would add up along z
        M0, score0, shift0 = fit(0.0)
        if score - score0 < p.rotation_gain:
            M, score, shift, theta = M0, score0, shift0, 0.0
    return M, score, theta, shift


def _candidates(z, good, lookback, neighbours):
    out = []
    for r in range(z - 1, max(-1, z - 1 - lookback), -1):
        if good[r]:
            out.append(r)
            if len(out) == neighbours:
                break
    return out


def _estimate_window(coarse, masks, good, z_list, z0, params):
    """Pairs of sections ``z_list`` (absolute) from a window of coarse sections starting at ``z0``:
    the nearest previous section with tissue first, farther ones only while the pairs found score
    below ``params.min_score`` (the paper's neighbour fallback), at most ``params.neighbours``."""
    pairs = []
    for z in z_list:
        if not good[z - z0]:
            continue
        for r in _candidates(z - z0, good, params.lookback, params.neighbours):
            M, score, theta, shift = estimate_pair(coarse[r], masks[r], coarse[z - z0], masks[z - z0], params)
            pairs.append({"z": int(z), "r": int(r + z0), "score": float(score), "rotation_deg": float(theta),
                          "shift": [float(s) for s in shift], "matrix": M.tolist()})
            if score >= params.min_score:
                break
    return pairs


def _to_fine(M, f):
    """A coarse-pixel transform (coarse pixel i covers fine pixels [f·i, f·(i+1))) at full resolution."""
    M = np.asarray(M, float)
    o = (f - 1) / 2.0
    A = M[:, :2]
    b = f * M[:, 2] + o - A @ np.full(2, o)
    return np.concatenate([A, b[:, None]], 1)


def _h(M):
    return np.vstack([M, [0.0, 0.0, 1.0]])


def _rigid(M):
    """Nearest rotation (polar decomposition) of the linear part, translation kept."""
    U, _, Vt = np.linalg.svd(M[:, :2])
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    return np.concatenate([R, M[:, 2:]], 1)


def compose_transforms(nz: int, good, pairs, factor: int, params: RoughParams | None = None, *, shape_yx=(1, 1)):
    """Global transforms (z, 2, 3) at full resolution and the status of every section from the
    pairs (see the module docstring, step 4); ``shape_yx``: the full-resolution section size
    (its centre is the centre of the rotations detrended)."""
    p = _params(params)
    by_z: dict[int, list] = {}
    for pr in sorted(pairs, key=lambda d: (d["z"], d["r"])):
        by_z.setdefault(pr["z"], []).append(pr)
    G = np.zeros((nz, 2, 3))
    G[:, 0, 0] = G[:, 1, 1] = 1.0
    status = []
    placed = np.zeros(nz, bool)
    ref_found = False
    last = np.eye(3)[:2]
    for z in range(nz):
        if not good[z]:
            status.append("skipped")
            G[z] = last
            continue
        if not ref_found:
            ref_found = True
            placed[z] = True
            status.append("reference")
            G[z] = last
            continue
        acc = [pr for pr in by_z.get(z, []) if pr["score"] >= p.min_score]
        if acc:
            best = max(pr["score"] for pr in acc)
            acc = [pr for pr in acc if pr["score"] >= p.keep_ratio * best]
        if not acc:
            status.append("unmatched")
            G[z] = last
            continue
        mats = [(_h(_to_fine(pr["matrix"], factor)) @ _h(G[pr["r"]]))[:2] for pr in acc]
        G[z] = _rigid(np.mean(mats, axis=0))
        placed[z] = True
        status.append("ok")
        last = G[z]
    if p.detrend_sections > 0 and placed.sum() > 2:
        G = _detrend(G, placed, p.detrend_sections, status.index("reference"), shape_yx)
    return G, status


def _local_linear(x, y, sigma):
    """Gaussian-weighted local linear regression of y (n, k) on x (n,), evaluated at x: follows
    a linear trend exactly, up to the ends (where a plain Gaussian low-pass bends it)."""
    out = np.empty_like(y)
    for i, x0 in enumerate(x):
        w = np.exp(-0.5 * ((x - x0) / sigma) ** 2)
        A = np.stack([np.ones_like(x), x - x0], 1) * np.sqrt(w)[:, None]
        sol, *_ = np.linalg.lstsq(A, y * np.sqrt(w)[:, None], rcond=None)
        out[i] = sol[0]
    return out


def _detrend(G, placed, sigma, ref, shape_yx):
    """Remove the slow trend (Gaussian-weighted local linear fit, sigma sections) of rotation and
    translation about the section centre from the placed sections; the reference stays the identity."""
    # G p = R (p - c) + c + t: rotation about the centre c and translation t, detrended as numbers
    c = (np.asarray(shape_yx, float) - 1) / 2
    th = np.arctan2(G[:, 1, 0], G[:, 0, 0])
    t = np.stack([G[z, :, 2] - c + G[z, :, :2] @ c for z in range(len(G))])
    idx = np.flatnonzero(placed)
    params = np.concatenate([th[idx, None], t[idx]], 1)
    trend = _local_linear(idx.astype(float), params, sigma)
    trend -= trend[list(idx).index(ref)]
    out = G.copy()
    new = params - trend
    for k, z in enumerate(idx):
        a = new[k, 0]
        R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out[z] = np.concatenate([R, (new[k, 1:] + c - R @ c)[:, None]], 1)
    # sections not placed keep the transform of the placed section before them
    last = np.eye(3)[:2]
    for z in range(len(G)):
        if placed[z]:
            last = out[z]
        else:
            out[z] = last
    return out


def _summary(G, status, tissue, pairs, factor, params):
    return {
        "method": "rough (rigid) alignment, emkit.align.rough", "factor": int(factor),
        "params": params.to_dict(), "status": status, "tissue": [round(float(t), 4) for t in tissue],
        "pairs": [[d["z"], d["r"], round(d["score"], 4), round(d["rotation_deg"], 4),
                   round(d["shift"][0], 3), round(d["shift"][1], 3)] for d in pairs],
        "rotation_deg": [round(float(np.degrees(np.arctan2(m[1, 0], m[0, 0]))), 4) for m in G],
        "shift_px": [[round(float(v), 3) for v in m[:, 2]] for m in G],
        "counts": {s: status.count(s) for s in ("reference", "ok", "skipped", "unmatched")},
    }


def _warp_section(section, M):
    """``out[p] = section[M @ (p, 1)]`` (bilinear, 0 outside; integers rounded): scipy, so that the
    command needs no torch."""
    a = np.asarray(section)
    out = _affine_sample(a.astype(np.float32), np.asarray(M, float))
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(a.dtype)


def _affine_fields(matrices, shape_yx) -> np.ndarray:
    """numpy twin of :func:`emkit.align.fields.affine_field` for (z, 2, 3) matrices: float32 (z, 2, y, x)."""
    m = np.asarray(matrices, np.float64)
    p = np.mgrid[0:shape_yx[0], 0:shape_yx[1]].astype(np.float64)
    src = np.einsum("zij,jyx->ziyx", m[:, :, :2], p) + m[:, :, 2, None, None]
    return (p[None] - src).astype(np.float32)


# -- array form --------------------------------------------------------------------------------------
def rough_align(stack, *, resolution=(40, 8, 8), params: RoughParams | None = None, ignore=None) -> RoughResult:
    """Rigidly align every section of ``stack`` to the ones before it (the first usable section
    is the reference and does not move).

    Parameters
    ----------
    stack : image (z, y, x), uint8 (0–255) or float (0–1).
    resolution : voxel size (z, y, x) in nm (sets the coarse mip; see :class:`RoughParams`).
    params : :class:`RoughParams`.
    ignore : optional (z, y, x) mask, nonzero where the image is not to be matched (e.g. fold,
        crack or resin masks); flat and empty regions are ignored anyway.

    Returns
    -------
    :class:`RoughResult` (``image, matrices, report``); ``result.fields()`` gives the fields.
    """
    from ..geometry import as_vec3

    p = _params(params)
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise InputError(f"rough_align needs an image (z, y, x), got shape {stack.shape}")
    res = as_vec3(resolution, "resolution", positive=True, dtype=float)
    if ignore is not None and np.shape(ignore) != stack.shape:
        raise InputError(f"ignore mask of shape {np.shape(ignore)} does not fit the image of shape {stack.shape}")
    f = coarse_factor(stack.shape[1:], res[1:], p)
    coarse, masks = zip(*(_prepare_section(stack[z], f, p, None if ignore is None else ignore[z])
                          for z in range(stack.shape[0])))
    tissue = np.array([m.mean() for m in masks])
    good = tissue >= p.min_tissue
    pairs = sorted(_estimate_window(coarse, masks, good, range(stack.shape[0]), 0, p), key=lambda d: (d["z"], d["r"]))
    G, status = compose_transforms(stack.shape[0], good, pairs, f, p, shape_yx=stack.shape[1:])
    out = np.stack([_warp_section(stack[z], G[z]) for z in range(stack.shape[0])])
    return RoughResult(image=out, matrices=G, report=_summary(G, status, tissue, pairs, f, p))


# -- chunked form --------------------------------------------------------------------------------------
class _PairTask:
    """Estimate the pairs of the sections of one z-block (reads the look-back window)."""

    def __init__(self, image_url, ignore_url, out_url, factor, params, z_origin):
        self.image_url, self.ignore_url, self.out_url = image_url, ignore_url, out_url
        self.factor, self.params, self.z_origin = factor, params, z_origin

    def __call__(self, chunk, read_bbox):
        from cloudfiles import CloudFiles

        from ..io import Layer

        p = self.params
        img = Layer(self.image_url).read(read_bbox)
        ign = Layer(self.ignore_url).read(read_bbox) if self.ignore_url else None
        coarse, masks = zip(*(_prepare_section(img[i], self.factor, p, None if ign is None else ign[i])
                              for i in range(img.shape[0])))
        tissue = [float(m.mean()) for m in masks]
        good = np.array(tissue) >= p.min_tissue
        z0 = read_bbox.start[0] - self.z_origin
        zs = range(chunk.start[0] - self.z_origin, chunk.stop[0] - self.z_origin)
        pairs = _estimate_window(coarse, masks, good, zs, z0, p)
        off = chunk.start[0] - read_bbox.start[0]
        doc = {"z": list(zs), "tissue": tissue[off:off + len(zs)], "pairs": pairs}
        CloudFiles(self.out_url).put_json(f"align/pairs/{zs.start}-{zs.stop}.json", doc)


class _WarpTask:
    def __init__(self, image_url, out_image, out_field, matrices, z_origin):
        self.image_url, self.out_image, self.out_field = image_url, out_image, out_field
        self.matrices, self.z_origin = np.asarray(matrices), z_origin

    def __call__(self, chunk, read_bbox):
        from ..io import Layer

        img = Layer(self.image_url).read(chunk)
        zs = range(chunk.start[0] - self.z_origin, chunk.stop[0] - self.z_origin)
        out = np.stack([_warp_section(img[i], self.matrices[z]) for i, z in enumerate(zs)])
        Layer(self.out_image).write(out, chunk.start)
        if self.out_field:
            fld = _affine_fields(self.matrices[zs.start:zs.stop], img.shape[1:])
            Layer(self.out_field).write(np.ascontiguousarray(fld.transpose(1, 0, 2, 3)), chunk.start)


def claim_output(out_url, record: str, work_prefix: str, overwrite: bool):
    """The output folder of an alignment run: its URL, ``image`` and ``field`` layer URLs and a
    CloudFiles on it. Refuses (LayerExistsError) a folder that holds an alignment already — the
    layers or the run's ``record`` file — unless ``overwrite``, which clears ``work_prefix``."""
    from cloudfiles import CloudFiles

    from ..io import join_url, layer_exists, normalize_url

    out_url = normalize_url(out_url)
    out_image, out_field = join_url(out_url, "image"), join_url(out_url, "field")
    cf = CloudFiles(out_url)
    if not overwrite:
        found = [n for n, u in (("image", out_image), ("field", out_field)) if layer_exists(u)]
        found += [record] if cf.exists(record) else []
        if found:
            raise LayerExistsError(f"{out_url} already holds {', '.join(found)}; pass overwrite=True (--overwrite) "
                                   "to replace them")
    else:
        old = list(cf.list(prefix=work_prefix))
        if old:
            cf.delete(old)
    return out_url, out_image, out_field, cf


def rough_align_layers(image_url, out_url, *, params: RoughParams | None = None, ignore_url=None,
                       write_field: bool = True, z_block: int | None = None, overwrite: bool = False,
                       workers: int | None = 0, scheduler: str | None = None, client=None,
                       progress: bool = False, sections=None) -> dict:
    """Chunked :func:`rough_align` over Precomputed layers; equals the array form.

    Writes under ``out_url``: ``image`` (aligned; same size, resolution, voxel offset and chunk
    size as the input), ``field`` (with ``write_field``: float32, 2 channels ``dy``, ``dx`` in
    pixels at the image's resolution, module convention of :mod:`emkit.align.fields`, per
    section), ``transforms.json`` (the report of :class:`RoughResult` plus ``matrices``), and
    the per-block pair estimates under ``align/pairs/``.

    Parameters
    ----------
    image_url : image layer (z, y, x).
    out_url : output folder (local path or URL).
    params : :class:`RoughParams`.
    ignore_url : optional mask layer on the image's grid, nonzero where not to match.
    write_field : also write the ``field`` layer (8 bytes per voxel).
    z_block : sections per task (default the image's z chunk size).
    overwrite : replace existing outputs (otherwise :class:`~emkit.errors.LayerExistsError`).
    workers, scheduler, client : where tasks run (:func:`emkit.runtime.map_chunks`; default
        ``workers=0``: serially in this process).
    sections : optional ``(first, stop)`` absolute z (voxels): align only these sections (the
        first is the reference); the output layers cover the input's grid, sections outside
        the range are not written (they read 0).

    Returns
    -------
    the report dict (also in ``transforms.json``), with ``matrices`` (z, 2, 3) as lists (one per
    section of the range) and ``z_start``, the absolute z of the first.
    """
    from ..io import Layer, check_same_grid, normalize_url
    from ..runtime import map_chunks

    p = _params(params)
    src = Layer(image_url)
    if src.kind.name != "image":
        raise InputError(f"{src.url} is a {src.kind.name} layer; rough alignment needs an image layer")
    if ignore_url:
        check_same_grid(src, Layer(ignore_url), what="rough alignment (image, ignore mask)")
    out_url, out_image, out_field, cf = claim_output(out_url, "transforms.json", "align/pairs/", overwrite)
    bounds = section_bounds(src, sections)
    nz, ny, nx = bounds.shape
    z_origin = bounds.start[0]
    zb = int(z_block or src.chunk_size[0])
    f = coarse_factor((ny, nx), src.resolution[1:], p)
    run = dict(workers=workers, scheduler=scheduler, client=client, progress=progress)
    if client is not None or scheduler is not None:
        run.pop("workers")
    map_chunks(_PairTask(src.url, ignore_url and normalize_url(ignore_url), out_url, f, p, z_origin), bounds,
               (zb, ny, nx), halo=(p.lookback, 0, 0), desc="align pairs", **run)
    pairs, tissue = [], np.zeros(nz)
    for name in cf.list(prefix="align/pairs/"):
        doc = cf.get_json(name)
        pairs += doc["pairs"]
        tissue[doc["z"]] = doc["tissue"]
    good = tissue >= p.min_tissue
    G, status = compose_transforms(nz, good, pairs, f, p, shape_yx=(ny, nx))
    report = _summary(G, status, tissue, sorted(pairs, key=lambda d: (d["z"], d["r"])), f, p)
    report["matrices"] = G.tolist()
    report["image"] = src.url
    report["z_start"] = int(z_origin)
    Layer.create(out_image, "image", src.size, resolution=src.resolution, voxel_offset=src.voxel_offset,
                 chunk_size=src.chunk_size, overwrite=overwrite, description=f"emkit align (rough) of {src.url}")
    if write_field:
        Layer.create(out_field, "probability", src.size, resolution=src.resolution, voxel_offset=src.voxel_offset,
                     chunk_size=src.chunk_size, num_channels=2, channel_names=("dy", "dx"), overwrite=overwrite,
                     description="emkit align: (dy, dx) pixels; aligned[z,y,x] = image[z, y-dy, x-dx]")
    out_chunk = (src.chunk_size[0], ny, nx)
    map_chunks(_WarpTask(src.url, out_image, out_field if write_field else None, G, z_origin), bounds, out_chunk,
               origin=src.voxel_offset, desc="align warp", **run)
    cf.put_json("transforms.json", report)
    return report


def section_bounds(src, sections=None):
    """The box of the sections ``(first, stop)`` (absolute z) of layer ``src`` (all when None)."""
    from ..geometry import Bbox

    b = src.bbox
    if sections is None:
        return b
    try:
        a, e = (int(v) for v in sections)
    except (TypeError, ValueError):
        raise InputError(f"sections must be (first, stop) section numbers, got {sections!r}") from None
    if not (b.start[0] <= a < e <= b.stop[0]) or e - a < 1:
        raise InputError(f"sections {a}:{e} are not a non-empty range inside the layer's z range "
                         f"{b.start[0]}:{b.stop[0]}")
    return Bbox((a, b.start[1], b.start[2]), (e, b.stop[1], b.stop[2]))


def read_transforms(out_url) -> dict:
    """The ``transforms.json`` report :func:`rough_align_layers` wrote (``matrices`` as an array)."""
    from cloudfiles import CloudFiles

    from ..io import join_url

    doc = CloudFiles(join_url(out_url)).get_json("transforms.json")
    if doc is None:
        raise InputError(f"no transforms.json under {join_url(out_url)} (not an emkit align output)")
    doc["matrices"] = np.asarray(doc["matrices"], float)
    return doc
