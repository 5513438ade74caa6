"""Defects of serial-section EM, simulated on any image volume (z, y, x).

One implementation shared by the phantom and by training augmentation: every function takes an
explicit :class:`numpy.random.Generator` and returns a :class:`DefectResult` with the damaged
image, a uint8 mask per defect kind (1 where the defect is, in the frame of the damaged image)
and the in-plane displacement it applied.

Displacement convention
-----------------------
``displacement`` is float32 ``(2, z, y, x)``: ``(dy, dx)`` in voxels, defined on the grid of the
*damaged* image. The damaged image at ``(z, y, x)`` shows the tissue that sits at
``(z, y - dy, x - dx)`` in the clean image, i.e. content moved by ``(+dy, +dx)``::

    damaged[z, y, x] == clean[z, y - dy, x - dx]      (outside masked regions)

:func:`warp` applies such a field to any volume (e.g. labels, with ``order=0``), which is how
ground truth in the clean frame is brought into the damaged frame. Composition of several
warps is handled by :func:`apply_defects`.

Kinds (:data:`DEFECT_KINDS`)
----------------------------
``fold``            tissue folded over along a line: a dark band where tissue is lost, tissue on
                    both sides pushed towards it (displacement towards the band, decaying away).
``crack``           tissue torn along a line: a bright empty gap, the two sides pulled apart.
``missing``         a whole section without data (zeros).
``partial_missing`` a rectangular part of a section without data (zeros), e.g. a missing tile.
``blur``            an out-of-focus section (Gaussian blur).
``slip``            one section shifted (whole-pixel shift; uncovered border zero).
``step``            every section from z on shifted by the same amount (mask: section z).
``lost``            a section lost during cutting: removed, the stack closes up (one section fewer;
                    ``kept_sections`` says which input sections remain; mask: the section after
                    the gap).
``thick``           a section cut twice as thick: sections z and z+1 both show their average.
``partial``         the section does not cover the field: beyond a curved edge only resin.
``resin``           an empty region (resin, no tissue) through a few sections.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from .errors import InputError

__all__ = ["DEFECT_KINDS", "DEFAULT_DEFECTS", "DefectSpec", "DefectResult", "parse_kinds", "plan_sections",
           "apply_defects", "warp", "fold", "crack", "missing", "partial_missing", "blur", "slip", "step", "lost",
           "thick", "partial", "resin"]

DEFECT_KINDS = ("fold", "crack", "missing", "partial_missing", "blur", "slip", "step", "lost", "thick",
                "partial", "resin")
"""All defect kinds, in the order :func:`apply_defects` applies them (tissue first, then imaging,
then misalignment, then data loss)."""
_ORDER = ("resin", "partial", "fold", "crack", "thick", "blur", "slip", "step", "partial_missing", "missing", "lost")
DEFAULT_DEFECTS = ("fold", "crack", "missing", "partial_missing", "blur", "slip", "step")
"""The mix used by ``make_phantom(defects="default")``."""


@dataclass(frozen=True)
class DefectSpec:
    """Sizes of the simulated defects (pixels in-plane unless said otherwise)."""

    fold_band_px: tuple[float, float] = (4.0, 12.0)
    """Width of the dark band of a fold."""
    fold_lost_px: tuple[float, float] = (8.0, 24.0)
    """Width of tissue folded under (both sides move towards the band by half of it)."""
    crack_gap_px: tuple[float, float] = (4.0, 12.0)
    """Width of the bright gap of a crack (both sides move apart by half of it)."""
    decay_px: tuple[float, float] = (60.0, 160.0)
    """How far from the line a fold or crack still moves tissue (exponential decay length)."""
    bend: float = 0.3
    """Curvature of fold and crack lines (0 = straight)."""
    blur_sigma_px: tuple[float, float] = (2.0, 4.0)
    slip_px: tuple[int, int] = (4, 16)
    """Range of |shift| of a slip, per axis."""
    step_px: tuple[int, int] = (4, 16)
    partial_missing_fraction: tuple[float, float] = (0.25, 0.6)
    """Side of the missing rectangle as a fraction of the section's side."""
    partial_fraction: tuple[float, float] = (0.15, 0.4)
    """Fraction of the field beyond the edge of a partial section."""
    resin_radius_px: tuple[float, float] = (20.0, 60.0)
    resin_sections: tuple[int, int] = (1, 3)
    """How many consecutive sections a resin region spans."""
    resin_level: float = 0.84
    """Grey level of resin / empty space, as a fraction of full scale."""
    fold_level: float = 0.1
    crack_level: float = 0.93

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            vals = v if isinstance(v, tuple) else (v,)
            if any(x < 0 for x in vals) or (isinstance(v, tuple) and (len(v) != 2 or v[0] > v[1])):
                raise InputError(f"DefectSpec.{f.name} must be non-negative (a range low <= high), got {v!r}")


@dataclass
class DefectResult:
    """Output of a defect function.

    image : the damaged image (same dtype as the input; fewer sections after ``lost``).
    masks : ``{kind: uint8 (z, y, x)}``, 1 where the defect is, in the damaged frame.
    displacement : float32 (2, z, y, x), (dy, dx) voxels (see module docstring).
    kept_sections : int64 indices of the input sections present in ``image`` (all unless ``lost``).
    sections : ``{kind: [z, ...]}`` input section indices where each defect was put.
    """

    image: np.ndarray
    masks: dict = field(default_factory=dict)
    displacement: np.ndarray | None = None
    kept_sections: np.ndarray | None = None
    sections: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
def _scale(image) -> float:
    if image.dtype == np.uint8:
        return 255.0
    if np.issubdtype(image.dtype, np.floating):
        return 1.0
    raise InputError(f"defects work on uint8 (0-255) or float (0-1) images, got dtype {image.dtype}")


def _as_out(values, like):
    if like.dtype == np.uint8:
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return values.astype(like.dtype)


def _check(image):
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"defects need an image of 3 dimensions (z, y, x), got shape {image.shape}")
    _scale(image)
    return image


def _pick_z(rng, nz, z, need_next=False):
    if z is not None:
        z = int(z)
        if not 0 <= z < nz - (1 if need_next else 0):
            raise InputError(f"section z={z} is outside the volume of {nz} sections"
                             + (" (this defect also needs section z+1)" if need_next else ""))
        return z
    hi = nz - 1 if need_next else nz
    if hi < 1:
        raise InputError(f"volume of {nz} section(s) is too thin for this defect")
    return int(rng.integers(0, hi))


def _empty_result(image, kind):
    return DefectResult(image=image.copy(), masks={kind: np.zeros(image.shape, np.uint8)},
                        displacement=np.zeros((2, *image.shape), np.float32),
                        kept_sections=np.arange(image.shape[0]), sections={kind: []})


def _warp_section(section, dy, dx, order=1, cval=0.0):
    """``out[y, x] = section[y - dy, x - dx]`` (bilinear for order 1, nearest for order 0)."""
    from scipy.ndimage import map_coordinates

    ny, nx = section.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    if order == 0:
        # nearest neighbour by gathering: exact for any dtype (uint64 ids above 2**53 included,
        # which map_coordinates would round through float64); same result as order-0
        # map_coordinates on rounded coordinates with mode="constant".
        iy = np.rint(yy - dy).astype(np.int64)
        ix = np.rint(xx - dx).astype(np.int64)
        inside = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
        out = np.full(section.shape, cval, dtype=section.dtype)
        out[inside] = section[iy[inside], ix[inside]]
        return out
    coords = np.stack([yy - dy, xx - dx])
    out = map_coordinates(section.astype(np.float32) if order else section, coords, order=order, mode="constant",
                          cval=cval)
    return out


def _moved_sections(displacement) -> np.ndarray:
    return np.flatnonzero([np.any(displacement[:, z]) for z in range(displacement.shape[1])])


def warp(volume: np.ndarray, displacement: np.ndarray, order: int = 0, cval=0, *, sections=None) -> np.ndarray:
    """Bring ``volume`` (z, y, x) from the clean frame into the damaged frame of ``displacement``.

    ``out[z, y, x] = volume[z, y - dy, x - dx]``; ``order=0`` (nearest) for labels and masks,
    ``order=1`` (bilinear) for images; order 0 copies values exactly (any dtype, uint64 ids
    included). Only sections with a non-zero field are resampled
    (``sections``, when given, lists them and saves finding them).
    """
    volume = np.asarray(volume)
    displacement = np.asarray(displacement)
    if displacement.shape != (2, *volume.shape):
        raise InputError(f"displacement of shape {displacement.shape} does not fit a volume of shape "
                         f"{volume.shape}; expected (2, z, y, x)")
    out = volume.copy()
    for z in (_moved_sections(displacement) if sections is None else sections):
        if not np.any(volume[z]) and not cval:
            continue
        w = _warp_section(volume[z], displacement[0, z], displacement[1, z], order=order, cval=cval)
        out[z] = np.rint(w) if (order and not np.issubdtype(volume.dtype, np.floating)) else w
    return out


def _line(rng, shape, spec):
    """Signed distance (px) to a random, slightly bent line through the middle of a section,
    and the line's unit normal (ny, nx)."""
    ny, nx = shape
    theta = rng.uniform(0, np.pi)
    n = np.array([np.cos(theta), np.sin(theta)])
    c = np.array([ny, nx]) * (0.5 + rng.uniform(-0.2, 0.2, 2))
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    dy, dx = yy - c[0], xx - c[1]
    s = n[0] * dy + n[1] * dx
    tang = -n[1] * dy + n[0] * dx
    s = s + spec.bend * rng.uniform(-1, 1) * tang ** 2 / max(ny, nx)
    return s.astype(np.float32), n


def _band_warp(image, rng, z, spec, kind):
    img = _check(image)
    z = _pick_z(rng, img.shape[0], z)
    scale = _scale(img)
    res = _empty_result(img, kind)
    s, n = _line(rng, img.shape[1:], spec)
    L = rng.uniform(*spec.decay_px)
    if kind == "fold":
        band = rng.uniform(*spec.fold_band_px)
        move = -0.5 * rng.uniform(*spec.fold_lost_px)           # towards the band
        level = spec.fold_level
    else:
        band = rng.uniform(*spec.crack_gap_px)
        move = 0.5 * band                                         # away from the gap
        level = spec.crack_level
    a = np.abs(s)
    g = np.exp(-np.maximum(a - band / 2, 0) / L) * np.sign(s)
    dy, dx = (move * g * n[0]).astype(np.float32), (move * g * n[1]).astype(np.float32)
    sec = _warp_section(img[z], dy, dx, order=1)
    inband = a < band / 2
    fill = level * scale + 0.03 * scale * rng.standard_normal(inband.sum())
    sec[inband] = fill
    res.image[z] = _as_out(sec, img)
    res.masks[kind][z] = inband
    res.displacement[0, z] = np.where(inband, 0, dy)
    res.displacement[1, z] = np.where(inband, 0, dx)
    res.sections[kind] = [z]
    return res


def fold(image, rng, *, z=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """Fold in section ``z`` (random if None): dark band, tissue on both sides pushed towards it."""
    return _band_warp(image, rng, z, spec, "fold")


def crack(image, rng, *, z=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """Crack in section ``z``: bright gap, tissue on both sides pulled apart."""
    return _band_warp(image, rng, z, spec, "crack")


def missing(image, rng, *, z=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """Section ``z`` without data: all zeros, mask 1 on the whole section."""
    img = _check(image)
    z = _pick_z(rng, img.shape[0], z)
    res = _empty_result(img, "missing")
    res.image[z] = 0
    res.masks["missing"][z] = 1
    res.sections["missing"] = [z]
    return res


def partial_missing(image, rng, *, z=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """A rectangle of section ``z`` without data (zeros)."""
    img = _check(image)
    z = _pick_z(rng, img.shape[0], z)
    res = _empty_result(img, "partial_missing")
    ny, nx = img.shape[1:]
    h = max(1, int(ny * rng.uniform(*spec.partial_missing_fraction)))
    w = max(1, int(nx * rng.uniform(*spec.partial_missing_fraction)))
    y0 = int(rng.integers(0, ny - h + 1)); x0 = int(rng.integers(0, nx - w + 1))
    res.image[z, y0:y0 + h, x0:x0 + w] = 0
    res.masks["partial_missing"][z, y0:y0 + h, x0:x0 + w] = 1
    res.sections["partial_missing"] = [z]
    return res


def blur(image, rng, *, z=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """Section ``z`` out of focus (Gaussian blur); mask 1 on the whole section."""
    from scipy.ndimage import gaussian_filter

    img = _check(image)
    z = _pick_z(rng, img.shape[0], z)
    res = _empty_result(img, "blur")
    res.image[z] = _as_out(gaussian_filter(img[z].astype(np.float32), rng.uniform(*spec.blur_sigma_px)), img)
    res.masks["blur"][z] = 1
    res.sections["blur"] = [z]
    return res


def _random_shift(rng, rng_px):
    return tuple(int(rng.integers(rng_px[0], rng_px[1] + 1)) * int(rng.choice([-1, 1])) for _ in range(2))


def _shift_sections(res, img, zs, dy, dx):
    for z in zs:
        res.image[z] = _as_out(_warp_section(img[z], float(dy), float(dx), order=0), img)
        res.displacement[0, z] = dy
        res.displacement[1, z] = dx


def slip(image, rng, *, z=None, shift=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """Section ``z`` shifted by ``shift`` (dy, dx) whole voxels (random if None); the uncovered
    border is zero. Mask 1 on section z."""
    img = _check(image)
    z = _pick_z(rng, img.shape[0], z)
    dy, dx = _random_shift(rng, spec.slip_px) if shift is None else (int(shift[0]), int(shift[1]))
    res = _empty_result(img, "slip")
    _shift_sections(res, img, [z], dy, dx)
    res.masks["slip"][z] = 1
    res.sections["slip"] = [z]
    return res


def step(image, rng, *, z=None, shift=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """Every section from ``z`` on shifted by ``shift`` (dy, dx) whole voxels; mask 1 on section z."""
    img = _check(image)
    z = _pick_z(rng, img.shape[0], z)
    if z == 0 and img.shape[0] > 1 and shift is None:
        z = 1
    dy, dx = _random_shift(rng, spec.step_px) if shift is None else (int(shift[0]), int(shift[1]))
    res = _empty_result(img, "step")
    _shift_sections(res, img, range(z, img.shape[0]), dy, dx)
    res.masks["step"][z] = 1
    res.sections["step"] = [z]
    return res


def lost(image, rng, *, z=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """Section ``z`` lost: removed, the stack closes up. ``kept_sections`` lists the input
    sections kept (apply it to ground truth: ``gt[result.kept_sections]``); mask 1 on the
    section that follows the gap (or the last section when z was the last)."""
    img = _check(image)
    if img.shape[0] < 2:
        raise InputError(f"cannot lose a section of a volume with {img.shape[0]} section")
    z = _pick_z(rng, img.shape[0], z)
    keep = np.delete(np.arange(img.shape[0]), z)
    out = img[keep].copy()
    mask = np.zeros(out.shape, np.uint8)
    mask[min(z, out.shape[0] - 1)] = 1
    return DefectResult(image=out, masks={"lost": mask}, displacement=np.zeros((2, *out.shape), np.float32),
                        kept_sections=keep, sections={"lost": [z]})


def thick(image, rng, *, z=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """Sections ``z`` and ``z+1`` cut as one thick section: both show their average."""
    img = _check(image)
    z = _pick_z(rng, img.shape[0], z, need_next=True)
    res = _empty_result(img, "thick")
    avg = _as_out(0.5 * (img[z].astype(np.float32) + img[z + 1].astype(np.float32)), img)
    res.image[z] = avg
    res.image[z + 1] = avg
    res.masks["thick"][z:z + 2] = 1
    res.sections["thick"] = [z]
    return res


def partial(image, rng, *, z=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """Section ``z`` covers only part of the field: beyond a curved edge, resin."""
    img = _check(image)
    z = _pick_z(rng, img.shape[0], z)
    scale = _scale(img)
    res = _empty_result(img, "partial")
    ny, nx = img.shape[1:]
    s, _ = _line(rng, (ny, nx), spec)
    s = s - s.min()
    frac = rng.uniform(*spec.partial_fraction)
    out = s < np.quantile(s, frac)
    sec = img[z].astype(np.float32)
    sec[out] = spec.resin_level * scale + 0.025 * scale * rng.standard_normal(out.sum())
    res.image[z] = _as_out(sec, img)
    res.masks["partial"][z] = out
    res.sections["partial"] = [z]
    return res


def resin(image, rng, *, z=None, spec: DefectSpec = DefectSpec()) -> DefectResult:
    """An empty (resin) region with an irregular outline through a few sections from ``z``."""
    from scipy.ndimage import gaussian_filter

    img = _check(image)
    z = _pick_z(rng, img.shape[0], z)
    scale = _scale(img)
    res = _empty_result(img, "resin")
    ny, nx = img.shape[1:]
    r = rng.uniform(*spec.resin_radius_px)
    c = np.array([rng.uniform(0, ny), rng.uniform(0, nx)])
    n = int(rng.integers(spec.resin_sections[0], spec.resin_sections[1] + 1))
    yy, xx = np.mgrid[0:ny, 0:nx]
    wob = gaussian_filter(rng.standard_normal((ny, nx)), max(2.0, r / 4), mode="wrap")
    wob /= max(wob.std(), 1e-6)
    zs = list(range(z, min(img.shape[0], z + n)))
    for k, zz in enumerate(zs):
        rk = r * (1.0 - 0.25 * abs(k - (len(zs) - 1) / 2))
        region = np.hypot(yy - c[0], xx - c[1]) < rk * (1 + 0.25 * wob)
        sec = img[zz].astype(np.float32)
        sec[region] = spec.resin_level * scale + 0.025 * scale * rng.standard_normal(region.sum())
        res.image[zz] = _as_out(sec, img)
        res.masks["resin"][zz] = region
    res.sections["resin"] = zs[:1]
    return res


_FUNCS = {"fold": fold, "crack": crack, "missing": missing, "partial_missing": partial_missing, "blur": blur,
          "slip": slip, "step": step, "lost": lost, "thick": thick, "partial": partial, "resin": resin}
_WARPING = {"fold", "crack", "slip", "step"}


# --------------------------------------------------------------------------------------------
def parse_kinds(kinds) -> tuple[str, ...]:
    """Normalise a defect selection: None / ``"none"`` / ``""`` → (), ``"default"`` →
    :data:`DEFAULT_DEFECTS`, ``"all"`` → every kind, ``"fold,crack"`` or a list → those kinds
    (a kind may repeat to get several). Unknown names raise InputError listing the valid ones."""
    if kinds is None:
        return ()
    if isinstance(kinds, str):
        k = kinds.strip().lower()
        if k in ("", "none"):
            return ()
        if k == "default":
            return DEFAULT_DEFECTS
        if k == "all":
            return DEFECT_KINDS
        kinds = [x.strip() for x in k.split(",") if x.strip()]
    out = []
    for k in kinds:
        if k not in _FUNCS:
            raise InputError(f"unknown defect kind {k!r}; valid kinds: {', '.join(DEFECT_KINDS)} "
                             "(or 'default', 'all', 'none')")
        out.append(k)
    return tuple(out)


def plan_sections(kinds, nz: int, rng: np.random.Generator) -> dict[str, list[int]]:
    """Choose a distinct section for each requested defect, away from the first and last
    section where possible. With fewer sections than defects, later defects are dropped.
    Returns ``{kind: [z, ...]}`` (input section indices, before any ``lost`` section)."""
    kinds = parse_kinds(kinds)
    pool = list(range(1, nz - 1)) if nz >= 3 else list(range(nz))
    pool = list(rng.permutation(pool))
    plan: dict[str, list[int]] = {}
    for k in kinds:
        cands = [z for z in pool if (k != "thick" or z + 1 < nz)]
        if not cands:
            continue
        z = int(cands[0])
        pool.remove(z)
        plan.setdefault(k, []).append(z)
    return plan


def apply_defects(image: np.ndarray, kinds="default", rng: np.random.Generator | None = None, *,
                  spec: DefectSpec = DefectSpec(), sections: dict | None = None) -> DefectResult:
    """Apply several defects to ``image`` (z, y, x), composing their masks and displacements.

    Parameters
    ----------
    image : uint8 (0-255) or float (0-1) volume, axes (z, y, x).
    kinds : ``"default"``, ``"none"``, ``"all"``, a comma-separated string or a list of kinds
        (see :data:`DEFECT_KINDS`).
    rng : numpy Generator (a fresh ``default_rng(0)`` if None — pass one for reproducible runs).
    spec : sizes of the defects.
    sections : ``{kind: [z, ...]}`` to place defects yourself; default :func:`plan_sections`.

    Returns
    -------
    DefectResult with one mask per requested kind, the total displacement (dy, dx voxels; the
    damaged image at (z, y, x) shows the clean image at (z, y - dy, x - dx)), and
    ``kept_sections`` (input sections present in the output; all unless ``lost``).
    Defects are applied in the fixed order of ``_ORDER``: tissue damage (resin, partial, fold,
    crack, thick), imaging (blur), misalignment (slip, step), data loss (missing, lost).
    """
    img = _check(image)
    rng = np.random.default_rng(0) if rng is None else rng
    kinds = parse_kinds(kinds)
    plan = plan_sections(kinds, img.shape[0], rng) if sections is None else {
        parse_kinds([k])[0]: [int(z) for z in np.atleast_1d(v)] for k, v in sections.items()}
    cur = img.copy()
    masks = {k: np.zeros(img.shape, np.uint8) for k in dict.fromkeys(kinds) if k != "lost"}
    disp = np.zeros((2, *img.shape), np.float32)
    kept = np.arange(img.shape[0])
    done: dict[str, list[int]] = {}
    for k in _ORDER:
        for z in plan.get(k, []):
            if k == "lost":
                continue
            r = _FUNCS[k](cur, rng, z=z, spec=spec)
            cur = r.image
            if k in _WARPING:
                d = r.displacement
                zs = _moved_sections(d)
                for name in masks:
                    masks[name] = warp(masks[name], d, order=0, sections=zs)
                for i in range(2):
                    disp[i] = warp(disp[i], d, order=1, sections=zs)
                disp[:, zs] += d[:, zs]
            masks.setdefault(k, np.zeros(img.shape, np.uint8))
            masks[k] |= r.masks[k]
            done.setdefault(k, []).extend(r.sections[k])
    lost_z = sorted(plan.get("lost", []), reverse=True)
    if lost_z:
        keep = np.setdiff1d(np.arange(img.shape[0]), lost_z)
        if len(keep) == 0:
            raise InputError("cannot lose every section")
        gap_after = np.zeros(img.shape[0], bool)
        for z in lost_z:
            nxt = keep[keep > z]
            gap_after[nxt[0] if len(nxt) else keep[-1]] = True
        cur = cur[keep]
        disp = disp[:, keep]
        masks = {k: m[keep] for k, m in masks.items()}
        lm = np.zeros(cur.shape, np.uint8)
        lm[gap_after[keep]] = 1
        masks["lost"] = lm
        kept = keep
        done["lost"] = sorted(lost_z)
    return DefectResult(image=cur, masks=masks, displacement=disp.astype(np.float32), kept_sections=kept,
                        sections=done)
