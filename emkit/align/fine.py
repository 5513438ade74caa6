"""Fine alignment (issue 9 §4–§5): a displacement field per section, composed along z.

Paper: *Alignment at 1024 nm & 64 nm* — displacement fields between each section and up to five
previous sections, found by block matching and refined by gradient descent on the similarity of
the pair with a smoothness penalty that is relaxed inside fold and crack masks; neighbours
displaced by more than 8 px (by cross-correlation) or holding zero-value pixels are replaced by a
composite of earlier neighbours; the pairwise fields are combined "by ascending section index"
(no global elastic relaxation); the final field is at 64 nm, bilinearly upsampled to 8 nm.

How (after :func:`emkit.align.rough.rough_align`, on the rough-aligned sections ``R``)
--------------------------------------------------------------------------------------------
1. **Tissue.** A pixel takes part in the image term when it holds data (not 0), is not flat
   (resin, empty: local std < ``flat_std``) and is not in the caller's defect masks (folds,
   cracks, resin). Sections with less than ``min_tissue`` of tissue are **skipped**.
2. **Pair field** (:func:`pair_field`): the field ``P`` with ``warp(R[z], P) ≈ ref`` where ``ref``
   is the nearest previous section with tissue — its holes (pixels with no data) filled from
   the sections before it (the paper's composite). Coarse-to-fine over the image mips
   ``params.mips``: block matching at the coarsest mip (patches on a grid of ``block_step_nm``,
   outlier-filtered, made dense) initialises the field, then Adam minimises
   ``MSE(ref, warp(R[z], P))`` over tissue of both + ``smooth_weight · mean(s · |∇P|²)`` at each
   mip in turn, where ``s = mask_relax`` inside the defect masks of either section (the field
   may tear there) and 1 elsewhere. The field lives on a grid of ``field_nm`` pixels and is
   bilinearly upsampled to the image (as in the paper).
3. **Neighbour fallback.** The pair's quality is its normalised cross-correlation after the
   move and the median length of the block-matching vectors left between ``ref`` and the
   warped section. When it scores below ``min_score`` or is displaced by more than
   ``fallback_px`` (paper: 8 px), the next previous section is tried (up to ``neighbours``).
4. **Composition** (:func:`compose_pairs`): ``C[z] = compose(P[z], C[r])`` in ascending z for the
   accepted pair ``(z, r)``; the first section with tissue is the reference (``C = 0``).
   Skipped and unmatched sections keep the field of the section before. The field that takes
   the *unaligned* section to the aligned one is ``compose(rough[z], C[z])``.
5. **Oblique tissue** (``detrend_sections``): tissue that runs obliquely through the sections
   looks like a consistent section-to-section motion, a pairwise aligner follows it and the
   composition adds it up along z (the rough stage's 256² problem, benchmarks/RESULTS.md).
   With ``detrend_sections`` > 0 (default 3) the slow trend of the composed fine fields along
   z (a Gaussian-weighted local linear fit with that sigma, in sections) is removed, the
   reference kept at 0: the tissue's steady motion is left in place, only section-to-section
   deviations are corrected. The true per-section distortions are independent from section
   to section, so their low-pass part is small (it is the price: about a third of their
   amplitude at sigma 3). ``detrend_sections=0`` is the paper's plain composition;
   benchmarks/align.py measures both (on a 16×512² phantom 2.75 px median against 10 px;
   on 256² sections the rough stage's own trend dominates and plain composition does better).

Chunked form: the pair fields of a z-block depend only on the rough-aligned sections in its
look-back window, so :func:`fine_align_layers` estimates them in parallel over z-blocks
(:func:`emkit.runtime.map_chunks`), composes them serially in the driver (on the small field
grid), then warps the z-blocks in parallel; it equals :func:`fine_align`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["FineParams", "FineResult", "pair_field", "compose_pairs", "fine_align", "fine_align_layers",
           "read_report"]


@dataclass(frozen=True)
class FineParams:
    """Parameters of the fine alignment (paper, *Alignment at 1024 nm & 64 nm*).

    Lengths in nm are converted to pixels of the image's in-plane resolution.
    """

    mips: tuple = (4, 2, 1)
    """Image mips (block-averaging factors) of the coarse-to-fine refinement, coarse first."""
    iterations: tuple = (80, 40, 20)
    """Gradient-descent steps at each mip of ``mips``."""
    field_nm: float = 64.0
    """Pixel of the field grid (paper: the final field is at 64 nm, bilinearly upsampled to 8 nm)."""
    block_step_nm: float = 1024.0
    """Grid step of block matching at the coarsest mip (the paper matches at 1024 nm; the step is
    taken as that length). Patches are twice the step, searched ±half a step (paper's ratio
    256 px source in a 384 px target). Skipped on sections too small for a 2×2 grid."""
    learning_rate: float = 0.1
    """Adam step (px of full resolution)."""
    smooth_weight: float = 10.0
    """λ of the smoothness penalty (mean squared gradient of the field, px/px)."""
    mask_relax: float = 0.02
    """Factor of the smoothness penalty inside fold/crack masks (the field may tear there)."""
    neighbours: int = 5
    """Previous sections (with tissue) a section may be matched to (paper: up to five)."""
    fallback_px: float = 8.0
    """A pair still displaced by more than this (median block-matching vector after the move, px)
    falls back to the next neighbour (paper: 8 px by cross-correlation)."""
    min_score: float = 0.1
    """A pair whose normalised cross-correlation after the move is lower falls back too."""
    min_tissue: float = 0.15
    """Sections with a smaller fraction of tissue are skipped (missing, empty)."""
    flat_std: float = 6.0
    """Local std (grey levels 0–255) below which a pixel is flat (resin, empty)."""
    composite: bool = True
    """Fill the reference's pixels without data from earlier sections (paper's composite)."""
    detrend_sections: float = 3.0
    """When > 0: remove the slow trend of the composed fine fields along z (Gaussian-weighted local
    linear fit, sigma in sections); see the module docstring, step 5. 0 = the paper's plain
    composition. Default 3: measured in benchmarks/align.py (16×512² phantom: median 2.75 px
    against 10 px plain; on 256² sections plain composition is better, 6.9 against 8.7 px)."""
    field_model: str | None = None
    """The field net (:mod:`emkit.align.fieldnet`; paper: a self-supervised net, then per-pair
    gradient descent): a shipped model name (``"field"``) or a checkpoint path. When set, each
    pair's gradient descent runs from both starts — the net's field and block matching — and the
    field with the higher normalised cross-correlation is kept (no truth involved). None
    (default): block matching only. Measured on 13 pairs of 256² sections of an unseen phantom
    (emkit/models/field.json): median / p95 residual 2.42 / 8.5 px against 2.63 / 13.2 px, at
    1.7× the time."""

    def __post_init__(self):
        mips = tuple(int(m) for m in self.mips)
        its = tuple(int(i) for i in self.iterations)
        if not mips or any(m < 1 for m in mips) or list(mips) != sorted(mips, reverse=True):
            raise InputError(f"FineParams.mips must be mips >= 1 from coarse to fine, got {self.mips!r}")
        if len(its) != len(mips) or any(i < 0 for i in its):
            raise InputError(f"FineParams.iterations needs one count >= 0 per mip {mips}, got {self.iterations!r}")
        object.__setattr__(self, "mips", mips)
        object.__setattr__(self, "iterations", its)
        for name in ("field_nm", "block_step_nm", "learning_rate", "smooth_weight", "mask_relax", "fallback_px",
                     "min_score", "min_tissue", "flat_std", "detrend_sections"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise InputError(f"FineParams.{name} must be a finite number >= 0, got {v!r}")
        if self.field_nm <= 0 or self.block_step_nm <= 0:
            raise InputError("FineParams.field_nm and block_step_nm must be > 0")
        if self.field_model is not None and not (isinstance(self.field_model, str) and self.field_model):
            raise InputError(f"FineParams.field_model must be a model name, a checkpoint path or None, "
                             f"got {self.field_model!r}")
        if not (isinstance(self.neighbours, int) and self.neighbours >= 1):
            raise InputError(f"FineParams.neighbours must be an integer >= 1, got {self.neighbours!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mips"], d["iterations"] = list(self.mips), list(self.iterations)
        return d


def _params(params) -> FineParams:
    params = FineParams() if params is None else params
    if not isinstance(params, FineParams):
        raise InputError(f"params must be a FineParams, got {type(params).__name__}")
    return params


def field_factor(resolution_yx, shape_yx, params: FineParams) -> int:
    """Mip of the field grid: ``field_nm`` / pixel, at least 1, leaving at least 16 px a side."""
    f = int(max(1, np.floor(params.field_nm / float(min(resolution_yx)) + 1e-9)))
    while f > 1 and min(shape_yx) / f < 16:
        f //= 2
    return f


# -- sections -----------------------------------------------------------------------------------------
def _grey(a) -> np.ndarray:
    from .rough import _grey as grey

    return grey(a, "fine alignment")


def tissue(section, params: FineParams, defects=None) -> np.ndarray:
    """Bool (y, x): data (not 0), not flat (resin, empty), not in ``defects``."""
    from scipy.ndimage import binary_erosion, gaussian_filter, uniform_filter

    g = _grey(section)
    data = binary_erosion(g > 0.5, iterations=2)
    s = gaussian_filter(g, 1.0)
    m1 = uniform_filter(s, 9)
    var = np.maximum(uniform_filter(s * s, 9) - m1 * m1, 0)
    m = data & (np.sqrt(var) >= params.flat_std)
    if defects is not None:
        m &= ~(np.asarray(defects) > 0)
    return m


def _ncc(a, b, m):
    if m.sum() < 16:
        return 0.0
    x, y = a[m] - a[m].mean(), b[m] - b[m].mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else 0.0


def _pad_to(a, mult, value=0):
    ny, nx = a.shape[-2:]
    py, px = (-ny) % mult, (-nx) % mult
    if py == 0 and px == 0:
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, py), (0, px)]
    return np.pad(a, pad, constant_values=value)


def _block_init(ref_k, mov_k, mask_k, k, resolution_yx, params, shape_f, f):
    """Dense block-matching field at mip k, returned on the field grid (full-resolution px)."""
    from .blockmatch import BlockParams, block_match, dense_field
    from . import fields as F

    step = max(4, int(round(params.block_step_nm / (float(min(resolution_yx)) * k))))
    ny, nx = ref_k.shape
    while step > 4 and (ny - 3 * step) // step < 1:
        step //= 2
    patch, search = 2 * step, max(2, step // 2)
    if patch < 8 or ny < patch + 2 * search + step or nx < patch + 2 * search + step:
        return np.zeros((2, *shape_f), np.float32)
    bp = BlockParams(step_px=step, patch_px=patch, search_px=search, min_score=0.3, min_tissue=0.5,
                     outlier_px=max(1.0, search / 3), smooth_px=step / 2)
    m = block_match(ref_k, mov_k, params=bp, mask=mask_k)
    if m.kept.sum() == 0:
        return np.zeros((2, *shape_f), np.float32)
    d = dense_field(m, ref_k.shape, params=bp)
    # mip-k px on the mip-k grid → the field grid (mip f), values in full-resolution px
    return np.asarray(F.resample(d, k / f, size=shape_f), np.float32) * f


def pair_field(reference, moving, *, params: FineParams | None = None, resolution_yx=(8, 8), ref_tissue=None,
               mov_tissue=None, relax=None, init=None):
    """The field ``P`` (float32 ``(2, y, x)``, px) with ``warp(moving, P) ≈ reference``.

    Parameters
    ----------
    reference, moving : sections (y, x), uint8 (0–255) or float (0–1), same shape.
    params : :class:`FineParams`.
    resolution_yx : pixel size (nm) (sets the field grid and the block-matching step).
    ref_tissue, mov_tissue : bool (y, x), where each section takes part in the image term
        (default :func:`tissue` of each).
    relax : bool (y, x), fold/crack masks (of either section) where the smoothness penalty is
        relaxed by ``params.mask_relax``.
    init : optional (2, y', x') initial field on the field grid (full-resolution px). Default:
        block matching, and with ``params.field_model`` also the field net's field (the descent
        runs from both; the better-scoring field is kept).

    Returns
    -------
    ``(field, info)``: the full-resolution field and a dict: ``grid`` (the field on its grid,
    ``(2, y/f, x/f)``, full-resolution px), ``factor`` f, ``score`` (normalised
    cross-correlation over shared tissue after the move), ``score_before``,
    ``residual_px`` (median block-matching displacement left, px; nan when none measured).
    """
    import torch

    from . import fields as F

    p = _params(params)
    ref = _grey(reference)
    mov = _grey(moving)
    if ref.ndim != 2 or ref.shape != mov.shape:
        raise InputError(f"pair_field needs two sections (y, x) of the same shape, got {ref.shape} and {mov.shape}")
    ny, nx = ref.shape
    rt = tissue(reference, p) if ref_tissue is None else np.asarray(ref_tissue, bool)
    mt = tissue(moving, p) if mov_tissue is None else np.asarray(mov_tissue, bool)
    rx = np.zeros((ny, nx), bool) if relax is None else np.asarray(relax, bool)
    f = field_factor(resolution_yx, (ny, nx), p)
    mult = int(np.lcm.reduce([f, *p.mips]))
    # normalise grey levels over tissue, pad to a multiple of every factor
    def norm(a, m):
        if m.sum() < 16:
            return np.zeros_like(a)
        return np.where(m, (a - a[m].mean()) / max(a[m].std(), 1e-3), 0).astype(np.float32)

    refn, movn = _pad_to(norm(ref, rt), mult), _pad_to(norm(mov, mt), mult)
    rtp, mtp, rxp = (_pad_to(a.astype(np.float32), mult) for a in (rt, mt, rx))
    H, W = refn.shape
    shape_f = (H // f, W // f)
    T = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]  # noqa: E731
    refT, movT, rtT, mtT = T(refn), T(movn), T(rtp), T(mtp)
    pool = torch.nn.functional.avg_pool2d
    relax_f = torch.nn.functional.max_pool2d(T(rxp), f)[0, 0] if f > 1 else T(rxp)[0, 0]
    wsm = 1.0 - (1.0 - p.mask_relax) * relax_f
    wsm_y = torch.minimum(wsm[1:], wsm[:-1])[None, None]
    wsm_x = torch.minimum(wsm[:, 1:], wsm[:, :-1])[None, None]

    starts = []
    if init is not None:
        u0 = np.asarray(init, np.float32)
        if u0.shape != (2, *shape_f):
            raise InputError(f"init field of shape {u0.shape} does not fit the field grid {(2, *shape_f)}")
        starts.append(("init", u0))
    else:
        k0 = p.mips[0]
        r0 = pool(refT, k0)[0, 0].numpy() if k0 > 1 else refn
        m0 = pool(movT, k0)[0, 0].numpy() if k0 > 1 else movn
        mm0 = (pool(mtT, k0)[0, 0].numpy() if k0 > 1 else mtp) > 0.5
        starts.append(("block matching", _block_init(r0, m0, mm0, k0, resolution_yx, p, shape_f, f)))
        if p.field_model is not None:
            from .fieldnet import predict_field, to_field_grid

            net = predict_field(reference, moving, model=p.field_model, relax=rx, resolution_yx=resolution_yx,
                                ref_tissue=rt, mov_tissue=mt)
            starts.append(("field net", to_field_grid(net, f, shape_f)))

    def descend(u0):
        u = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(u0))[None].clone())
        opt = torch.optim.Adam([u], lr=p.learning_rate)
        for k, n_it in zip(p.mips, p.iterations):
            if n_it == 0:
                continue
            rk, mk = (pool(refT, k), pool(movT, k)) if k > 1 else (refT, movT)
            rtk, mtk = (pool(rtT, k), pool(mtT, k)) if k > 1 else (rtT, mtT)
            rtk = (rtk > 0.5).float()
            size = rk.shape[-2:]
            for _ in range(n_it):
                opt.zero_grad()
                fk = torch.nn.functional.interpolate(u, size=size, mode="bilinear", align_corners=False) / k
                warped = F.warp(mk[0], fk[0])
                with torch.no_grad():
                    w = rtk[0] * (F.warp(mtk[0], fk[0]) > 0.5).float()
                den = w.sum().clamp_min(1.0)
                img = (w * (warped - rk[0]) ** 2).sum() / den
                g = u / f  # px per field-grid px: dimensionless gradients
                dy = g[:, :, 1:] - g[:, :, :-1]
                dx = g[:, :, :, 1:] - g[:, :, :, :-1]
                sm = (wsm_y * dy ** 2).sum(1).mean() + (wsm_x * dx ** 2).sum(1).mean()
                loss = img + p.smooth_weight * sm
                loss.backward()
                opt.step()
        grid = u.detach()[0]
        full = torch.nn.functional.interpolate(grid[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        field = full[:, :ny, :nx].numpy().astype(np.float32)
        with torch.no_grad():
            moved = F.warp(mov, field)
            moved_t = F.warp(mt.astype(np.float32), field) > 0.5
        both = rt & moved_t
        return grid, field, moved, both, _ncc(ref, moved, both)

    best = None
    for name, u0 in starts:
        out = descend(u0)
        if best is None or out[-1] > best[1][-1]:  # the higher similarity after the move (no truth)
            best = (name, out)
    start, (grid, field, moved, both, score) = best
    info = {"grid": grid.numpy().astype(np.float32), "factor": int(f), "score": score,
            "score_before": _ncc(ref, mov, rt & mt), "start": start}
    info["residual_px"] = _residual(ref, moved, both, resolution_yx, p)
    return field, info


def _residual(ref, moved, both, resolution_yx, p):
    """Displacement left between two sections after the move (px): the shift of the masked
    normalised cross-correlation of the whole sections (scikit-image, integer pixels) at a mip
    where the section keeps at least 64 px a side; nan when there is too little tissue. Whole
    sections: the motion of single neurites from section to section averages out, a gross
    mismatch (the paper's "> 8 px by cross-correlation") does not."""
    from skimage.registration import phase_cross_correlation

    if both.sum() < 64:
        return float("nan")
    k = 1
    while min(ref.shape) // (2 * k) >= 64 and 2 * k <= max(1, int(p.fallback_px // 2)):
        k *= 2
    ny, nx = (ref.shape[0] // k) * k, (ref.shape[1] // k) * k
    red = lambda a: a[:ny, :nx].reshape(ny // k, k, nx // k, k).mean((1, 3))  # noqa: E731
    m = red(both.astype(np.float32)) > 0.5
    if m.sum() < 64:
        return float("nan")
    shift = phase_cross_correlation(red(ref), red(moved), reference_mask=m, moving_mask=m)[0]
    return float(np.hypot(*shift) * k)


# -- composition ----------------------------------------------------------------------------------------
def compose_pairs(nz: int, pairs: dict, status: list, factor: int, params: FineParams | None = None) -> np.ndarray:
    """Composed fine fields on the field grid (z, 2, y/f, x/f), full-resolution px.

    ``pairs``: {z: (r, grid)} of the accepted pair of every placed section; ``status`` per
    section (``reference``, ``ok``, ``fallback``, ``skipped``, ``unmatched``). ``C[ref] = 0``,
    ``C[z] = compose(P[z], C[r])``; others keep the field of the section before.
    """
    from . import fields as F

    p = _params(params)
    if not pairs:
        return None
    shape = next(iter(pairs.values()))[1].shape
    res = np.zeros((nz, *shape), np.float32)
    last = np.zeros(shape, np.float32)
    for z in range(nz):
        st = status[z]
        if st in ("ok", "fallback") and z in pairs:
            r, g = pairs[z]
            last = np.asarray(F.compose(g / factor, res[r] / factor), np.float32) * factor
        elif st == "reference":
            last = np.zeros(shape, np.float32)
        res[z] = last
    if p.detrend_sections > 0:
        placed = np.array([s in ("ok", "fallback", "reference") for s in status])
        if placed.sum() > 2:
            res = _detrend(res, placed, p.detrend_sections, status.index("reference"))
    return res


def _detrend(C, placed, sigma, ref):
    """Remove the slow trend along z (Gaussian-weighted local linear fit, sigma sections) of the
    placed sections' fields; the reference's trend is subtracted from all (it stays at 0)."""
    idx = np.flatnonzero(placed)
    zs = idx.astype(float)
    Wm = np.zeros((len(idx), len(idx)))  # trend = Wm @ C[idx] (a linear filter along z)
    for i, z0 in enumerate(zs):
        w = np.exp(-0.5 * ((zs - z0) / sigma) ** 2)
        A = np.stack([np.ones_like(zs), zs - z0], 1)
        AtW = A.T * w
        Wm[i] = np.linalg.solve(AtW @ A + 1e-9 * np.eye(2), AtW)[0]
    trend = np.tensordot(Wm, C[idx], axes=1)
    trend -= trend[list(idx).index(ref)]
    out = C.copy()
    out[idx] = C[idx] - trend
    last = np.zeros_like(C[0])
    for z in range(len(C)):
        if placed[z]:
            last = out[z]
        else:
            out[z] = last
    return out


# -- pairs over a window of sections ------------------------------------------------------------------------
def _section_info(R, defects, p):
    t = [tissue(R[i], p, None if defects is None else defects[i]) for i in range(len(R))]
    return t, np.array([float(m.mean()) for m in t])


def _composite(R, T, good, r, z0, p, lo):
    """Section r (absolute) with its pixels without data filled from earlier good sections (>= lo)."""
    img, tis = R[r - z0].copy(), T[r - z0].copy()
    if not p.composite:
        return img, tis
    hole = img == 0
    q = r - 1
    used = 0
    while hole.any() and q >= lo and used < p.neighbours - 1:
        if good[q - z0]:
            fill = hole & (R[q - z0] > 0)
            img[fill] = R[q - z0][fill]
            tis[fill] = T[q - z0][fill]
            hole &= ~fill
            used += 1
        q -= 1
    return img, tis


def _lookback(p) -> int:
    """Sections looked back at: ``neighbours`` plus 3 missing ones bridged."""
    return int(p.neighbours + 3)


def _window_pairs(R, defects, z_list, z0, p, resolution_yx, T=None, tissue_frac=None):
    """Pairs of sections ``z_list`` (absolute) from the rough-aligned window ``R`` starting at z0."""
    if T is None:
        T, tissue_frac = _section_info(R, defects, p)
    good = tissue_frac >= p.min_tissue
    out = {}
    for z in z_list:
        i = z - z0
        if not good[i]:
            continue
        lo = max(z0, z - _lookback(p))
        cands = [q for q in range(z - 1, lo - 1, -1) if good[q - z0]][:p.neighbours]
        rows = []
        for n, r in enumerate(cands):
            ref, rt = _composite(R, T, good, r, z0, p, lo)
            relax = None
            if defects is not None:
                relax = (defects[i] > 0) | (defects[r - z0] > 0)
            fld, info = pair_field(ref, R[i], params=p, resolution_yx=resolution_yx, ref_tissue=rt,
                                   mov_tissue=T[i], relax=relax)
            res_px = info["residual_px"]
            bad = info["score"] < p.min_score or (np.isfinite(res_px) and res_px > p.fallback_px)
            rows.append({"z": int(z), "r": int(r), "score": round(info["score"], 4),
                         "score_before": round(info["score_before"], 4),
                         "residual_px": None if not np.isfinite(res_px) else round(res_px, 3),
                         "max_px": round(float(np.abs(info["grid"]).max()), 3), "accepted": not bad,
                         "start": info["start"],
                         "grid": info["grid"], "factor": info["factor"]})
            if not bad:
                break
        out[z] = rows
    return out, tissue_frac


def _status(nz, good, rows_by_z):
    status, pairs = [], {}
    ref_found = False
    for z in range(nz):
        if not good[z]:
            status.append("skipped")
            continue
        if not ref_found:
            ref_found = True
            status.append("reference")
            continue
        rows = rows_by_z.get(z, [])
        acc = [r for r in rows if r["accepted"]]
        if not acc:
            status.append("unmatched")
            continue
        a = acc[0]
        pairs[z] = (a["r"], a["grid"])
        nearest = rows[0]["r"] if rows else None
        status.append("ok" if a["r"] == nearest else "fallback")
    return status, pairs


def _quality_rows(nz, status, rows_by_z, tissue_frac, C):
    table = []
    for z in range(nz):
        rows = rows_by_z.get(z, [])
        acc = [r for r in rows if r["accepted"]]
        a = acc[0] if acc else (rows[-1] if rows else None)
        table.append({"z": z, "status": status[z], "tissue": round(float(tissue_frac[z]), 4),
                      "neighbour": None if a is None else a["r"],
                      "tried": [r["r"] for r in rows],
                      "score_before": None if a is None else a["score_before"],
                      "score": None if a is None else a["score"],
                      "residual_px": None if a is None else a["residual_px"],
                      "pair_max_px": None if a is None else a["max_px"],
                      "field_max_px": None if C is None else round(float(np.abs(C[z]).max()), 3)})
    return table


@dataclass
class FineResult:
    """Output of :func:`fine_align` (unpacks as ``image, fields, report``).

    image : the aligned stack (z, y, x), dtype of the input.
    fields : float32 (z, 2, y, x), (dy, dx) full-resolution px: ``warp(input[z], fields[z]) ==
        image[z]`` (rough and fine composed; :mod:`emkit.align.fields` convention).
    report : dict: ``rough`` (the rough report), ``sections`` (quality table: status, neighbour
        used, scores before/after, residual_px, largest vectors), ``factor`` (field grid mip),
        ``params``.
    fine : float32 (z, 2, y/f, x/f) composed fine fields on the field grid (full-res px).
    """

    image: np.ndarray
    fields: np.ndarray
    report: dict
    fine: np.ndarray | None = None

    def __iter__(self):
        return iter((self.image, self.fields, self.report))


def _total_field(rough_matrix, fine_grid, factor, shape_yx):
    """compose(rough, upsampled fine) at full resolution, float32 (2, y, x)."""
    import torch

    from . import fields as F
    from .rough import _affine_fields

    rf = _affine_fields(np.asarray(rough_matrix)[None], shape_yx)[0]
    if fine_grid is None or not np.any(fine_grid):
        return rf
    ny, nx = shape_yx
    H, W = fine_grid.shape[1] * factor, fine_grid.shape[2] * factor
    up = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(fine_grid))[None], size=(H, W),
                                         mode="bilinear", align_corners=False)[0, :, :ny, :nx].numpy()
    return np.asarray(F.compose(rf, up), np.float32)


def _warp_with(section, field):
    from . import fields as F

    import torch

    with torch.no_grad():
        return F.warp(np.asarray(section), field)


def fine_align(stack, *, resolution=(40, 8, 8), params: FineParams | None = None, rough_params=None,
               masks=None, ignore=None) -> FineResult:
    """Align every section of ``stack``: rough (rigid) then fine (fields), composed along z.

    Parameters
    ----------
    stack : image (z, y, x), uint8 (0–255) or float (0–1).
    resolution : voxel size (z, y, x) nm.
    params : :class:`FineParams`; rough_params : :class:`emkit.align.rough.RoughParams`.
    masks : optional (z, y, x), nonzero in fold/crack/resin regions (unaligned frame): left out
        of the image term and the field's smoothness relaxed there (e.g. the phantom's masks or
        ``emkit masks`` output).
    ignore : optional (z, y, x) for the rough stage only (regions not to match); default ``masks``.

    Returns
    -------
    :class:`FineResult` (``image, fields, report``).
    """
    from ..geometry import as_vec3
    from .rough import _warp_section, rough_align

    p = _params(params)
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise InputError(f"fine_align needs an image (z, y, x), got shape {stack.shape}")
    res = as_vec3(resolution, "resolution", positive=True, dtype=float)
    if masks is not None and np.shape(masks) != stack.shape:
        raise InputError(f"masks of shape {np.shape(masks)} do not fit the image of shape {stack.shape}")
    rough = rough_align(stack, resolution=res, params=rough_params, ignore=masks if ignore is None else ignore)
    R = rough.image
    nz = stack.shape[0]
    D = None
    if masks is not None:
        D = np.stack([_warp_section((np.asarray(masks[z]) > 0).astype(np.float32), rough.matrices[z]) > 0.5
                      for z in range(nz)])
    T, frac = _section_info(R, D, p)
    rows_by_z, _ = _window_pairs(R, D, range(nz), 0, p, tuple(res[1:]), T=T, tissue_frac=frac)
    good = frac >= p.min_tissue
    status, pairs = _status(nz, good, rows_by_z)
    f = field_factor(res[1:], stack.shape[1:], p)
    C = compose_pairs(nz, pairs, status, f, p)
    fields = np.stack([_total_field(rough.matrices[z], None if C is None else C[z], f, stack.shape[1:])
                       for z in range(nz)])
    image = np.stack([_warp_with(stack[z], fields[z]) for z in range(nz)])
    report = _report(rough.report, status, rows_by_z, frac, C, f, p)
    return FineResult(image=image, fields=fields, report=report, fine=C)


def _report(rough_report, status, rows_by_z, frac, C, f, p):
    nz = len(status)
    return {"method": "rough + fine alignment, emkit.align.fine", "rough": rough_report, "factor": int(f),
            "params": p.to_dict(), "status": status,
            "counts": {s: status.count(s) for s in ("reference", "ok", "fallback", "skipped", "unmatched")},
            "sections": _quality_rows(nz, status, rows_by_z, frac, C)}


# -- chunked form ---------------------------------------------------------------------------------------------
class _FinePairTask:
    """Pair fields of the sections of one z-block (reads the rough-aligned look-back window)."""

    def __init__(self, rough_url, mask_urls, matrices, out_url, params, resolution_yx, z_origin):
        self.rough_url, self.mask_urls, self.matrices = rough_url, list(mask_urls or []), np.asarray(matrices)
        self.out_url, self.params, self.resolution_yx, self.z_origin = out_url, params, resolution_yx, z_origin

    def __call__(self, chunk, read_bbox):
        import io

        from cloudfiles import CloudFiles

        from ..io import Layer
        from .rough import _warp_section

        p = self.params
        R = Layer(self.rough_url).read(read_bbox)
        z0 = read_bbox.start[0] - self.z_origin
        D = None
        if self.mask_urls:
            raw = np.zeros(R.shape, bool)
            for u in self.mask_urls:
                m = Layer(u).read(read_bbox)
                raw |= (m[0] if m.ndim == 4 else m) > 0
            D = np.stack([_warp_section(raw[i].astype(np.float32), self.matrices[z0 + i]) > 0.5
                          for i in range(R.shape[0])])
        zs = range(chunk.start[0] - self.z_origin, chunk.stop[0] - self.z_origin)
        rows_by_z, frac = _window_pairs(R, D, zs, z0, p, self.resolution_yx)
        off = chunk.start[0] - read_bbox.start[0]
        grids = {}
        doc = {"z": list(zs), "tissue": [float(v) for v in frac[off:off + len(zs)]], "rows": []}
        for z, rows in rows_by_z.items():
            for k, r in enumerate(rows):
                grids[f"{z}_{r['r']}"] = r["grid"]
                doc["rows"].append({kk: v for kk, v in r.items() if kk != "grid"})
        buf = io.BytesIO()
        np.savez_compressed(buf, **grids) if grids else np.savez_compressed(buf, none=np.zeros(0))
        cf = CloudFiles(self.out_url)
        cf.put(f"align/fine/{zs.start}-{zs.stop}.npz", buf.getvalue())
        cf.put_json(f"align/fine/{zs.start}-{zs.stop}.json", doc)


class _FineWarpTask:
    def __init__(self, image_url, out_image, out_field, matrices, fine, factor, z_origin):
        self.image_url, self.out_image, self.out_field = image_url, out_image, out_field
        self.matrices, self.fine, self.factor, self.z_origin = np.asarray(matrices), fine, factor, z_origin

    def __call__(self, chunk, read_bbox):
        from ..io import Layer

        img = Layer(self.image_url).read(chunk)
        zs = range(chunk.start[0] - self.z_origin, chunk.stop[0] - self.z_origin)
        flds = np.stack([_total_field(self.matrices[z], None if self.fine is None else self.fine[z], self.factor,
                                      img.shape[1:]) for z in zs])
        out = np.stack([_warp_with(img[i], flds[i]) for i in range(len(zs))])
        Layer(self.out_image).write(out, chunk.start)
        if self.out_field:
            Layer(self.out_field).write(np.ascontiguousarray(flds.transpose(1, 0, 2, 3)), chunk.start)


def fine_align_layers(image_url, out_url, *, params: FineParams | None = None, rough_params=None, mask_urls=(),
                      ignore_url=None, z_block: int | None = None, overwrite: bool = False,
                      workers: int | None = 0, scheduler: str | None = None, client=None,
                      progress: bool = False, sections=None) -> dict:
    """Chunked :func:`fine_align` over Precomputed layers; equals the array form.

    Writes under ``out_url``: ``image`` (aligned; same size, resolution, voxel offset and chunk
    size as the input; the first section with tissue is the reference and is not moved),
    ``field`` (float32, channels ``dy``, ``dx``: px at the image's resolution, rough and fine
    composed, :mod:`emkit.align.fields` convention), ``quality.json`` (the report of
    :class:`FineResult`: per section status, neighbour, scores, residual) with
    ``quality.tsv`` (the per-section table), ``fine_fields.npz`` (composed fine fields on
    the field grid), ``rough/`` (the rough stage: its aligned image and transforms.json) and
    the per-block pair estimates under ``align/fine/``.

    Parameters
    ----------
    image_url : image layer (z, y, x).
    out_url : output folder or URL.
    params, rough_params : :class:`FineParams`, :class:`~emkit.align.rough.RoughParams`.
    mask_urls : mask layers on the image's grid (unaligned frame), nonzero in folds, cracks,
        resin: left out of the image term, smoothness relaxed there.
    ignore_url : mask for the rough stage (default none).
    z_block : sections per task (default the image's z chunk size).
    overwrite : replace existing outputs (otherwise :class:`~emkit.errors.LayerExistsError`).
    workers, scheduler, client : where tasks run (:func:`emkit.runtime.map_chunks`).
    sections : optional ``(first, stop)`` absolute z: align only these sections (the first is
        the reference); sections outside the range are not written (they read 0).

    Returns
    -------
    the report (also in ``quality.json``).
    """
    import io

    from ..io import Layer, check_same_grid, join_url, normalize_url
    from ..runtime import map_chunks
    from .rough import claim_output, rough_align_layers, section_bounds

    p = _params(params)
    src = Layer(image_url)
    if src.kind.name != "image":
        raise InputError(f"{src.url} is a {src.kind.name} layer; alignment needs an image layer")
    mask_urls = [normalize_url(u) for u in (mask_urls or [])]
    if mask_urls:
        check_same_grid(src, *[Layer(u) for u in mask_urls], what="alignment (image, masks)")
    out_url, out_image, out_field, cf = claim_output(out_url, "quality.json", "align/fine/", overwrite)
    run = dict(workers=workers, scheduler=scheduler, client=client, progress=progress)
    if client is not None or scheduler is not None:
        run.pop("workers")
    rough_url = join_url(out_url, "rough")
    rrep = rough_align_layers(src.url, rough_url, params=rough_params, ignore_url=ignore_url, write_field=False,
                              z_block=z_block, overwrite=overwrite, sections=sections, **run)
    matrices = np.asarray(rrep["matrices"], float)
    bounds = section_bounds(src, sections)
    nz, ny, nx = bounds.shape
    z_origin = bounds.start[0]
    zb = int(z_block or src.chunk_size[0])
    res_yx = tuple(float(v) for v in src.resolution[1:])
    task = _FinePairTask(join_url(rough_url, "image"), mask_urls, matrices, out_url, p, res_yx, z_origin)
    map_chunks(task, bounds, (zb, ny, nx), halo=(_lookback(p), 0, 0), desc="align fine pairs", **run)
    rows_by_z, frac = {}, np.zeros(nz)
    for name in cf.list(prefix="align/fine/"):
        if not name.endswith(".json"):
            continue
        doc = cf.get_json(name)
        frac[doc["z"]] = doc["tissue"]
        with np.load(io.BytesIO(cf.get(name[:-5] + ".npz"))) as g:
            for r in doc["rows"]:
                r["grid"] = g[f"{r['z']}_{r['r']}"]
                rows_by_z.setdefault(r["z"], []).append(r)
    good = frac >= p.min_tissue
    status, pairs = _status(nz, good, rows_by_z)
    f = field_factor(res_yx, (ny, nx), p)
    C = compose_pairs(nz, pairs, status, f, p)
    report = _report(rrep, status, rows_by_z, frac, C, f, p)
    report["image"] = src.url
    report["z_start"] = int(z_origin)
    Layer.create(out_image, "image", src.size, resolution=src.resolution, voxel_offset=src.voxel_offset,
                 chunk_size=src.chunk_size, overwrite=overwrite, description=f"emkit align of {src.url}")
    Layer.create(out_field, "probability", src.size, resolution=src.resolution, voxel_offset=src.voxel_offset,
                 chunk_size=src.chunk_size, num_channels=2, channel_names=("dy", "dx"), overwrite=overwrite,
                 description="emkit align: (dy, dx) pixels; aligned[z,y,x] = image[z, y-dy, x-dx]")
    map_chunks(_FineWarpTask(src.url, out_image, out_field, matrices, C, f, z_origin), bounds,
               (src.chunk_size[0], ny, nx), origin=src.voxel_offset, desc="align warp", **run)
    buf = io.BytesIO()
    np.savez_compressed(buf, fine=np.zeros((nz, 2, 1, 1), np.float32) if C is None else C, factor=f)
    cf.put("fine_fields.npz", buf.getvalue())
    cf.put_json("quality.json", report)
    cols = ["z", "status", "tissue", "neighbour", "score_before", "score", "residual_px", "pair_max_px", "field_max_px"]
    lines = ["\t".join(cols)] + ["\t".join("" if r[c] is None else str(r[c]) for c in cols) for r in report["sections"]]
    cf.put("quality.tsv", ("\n".join(lines) + "\n").encode())
    return report


def read_report(out_url) -> dict:
    """The ``quality.json`` report :func:`fine_align_layers` wrote."""
    from cloudfiles import CloudFiles

    from ..io import join_url

    doc = CloudFiles(join_url(out_url)).get_json("quality.json")
    if doc is None:
        raise InputError(f"no quality.json under {join_url(out_url)} (not an emkit align output)")
    return doc
