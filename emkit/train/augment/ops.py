"""The paper's ten augmentations as plain functions ``(sample, rng, **kw) -> sample``.

Paper, Methods, "Dataset augmentation" (numbers in the docstrings refer to its list). Every
function takes a sample (see :mod:`emkit.train.augment.sample`) and an explicit
:class:`numpy.random.Generator`, returns a *new* sample (input arrays are not modified) with a
record appended to ``sample["_applied"]``, and moves image and targets consistently. The defects
themselves (shifts, missing and blurred sections, lost sections) are made by :mod:`emkit.defects`,
the code that also damages the phantom; targets follow through :func:`emkit.defects.warp`
(nearest neighbour) and ``DefectResult.kept_sections``.

Functions that shift a target leave the uncovered border with label 0 and ``mask`` 0 there;
:class:`~emkit.train.augment.Augmenter` asks for extra context and crops it away instead.
"""
from __future__ import annotations

import numpy as np

from emkit import defects
from emkit.defects import DefectSpec
from emkit.errors import InputError

from .sample import array_keys, check_sample, ensure_mask, per_channel, record, target_keys

__all__ = ["N_FLIP_ROTATE", "flip_rotate", "invert_flip_rotate", "flip_rotate_array", "brightness_contrast",
           "warp", "draw_shift", "misalignment", "missing_section", "out_of_focus", "misalignment_missing",
           "lost_section", "lost_missing", "slip_interpolation", "warp_field"]

N_FLIP_ROTATE = 16
"""Flip & rotation configurations: flips in z, y, x and a y/x transpose (2 × 2 × 2 × 2)."""


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    raise InputError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


def _pick(rng, lo: int, hi: int, what: str, z=None) -> int:
    """An integer in [lo, hi] (inclusive): ``z`` checked if given, else drawn."""
    if hi < lo:
        raise InputError(f"the patch has too few sections for {what}")
    if z is not None:
        z = int(z)
        if not lo <= z <= hi:
            raise InputError(f"{what}: section z={z} outside the allowed range [{lo}, {hi}]")
        return z
    return int(rng.integers(lo, hi + 1))


# (1) flip & rotation ------------------------------------------------------------------------
def flip_rotate_array(arr: np.ndarray, config: int, inverse: bool = False) -> np.ndarray:
    """Apply configuration ``config`` (0–15) to the last three axes (z, y, x) of ``arr``.

    Bits: 1 flip z, 2 flip y, 4 flip x, 8 transpose y/x (after the flips). ``inverse=True``
    undoes it. Returns a contiguous copy.
    """
    config = int(config)
    if not 0 <= config < N_FLIP_ROTATE:
        raise InputError(f"flip/rotate config must be in 0..15, got {config}")
    if config & 8 and arr.shape[-1] != arr.shape[-2]:
        raise InputError(f"a y/x transpose (config {config}) needs y == x, got shape {arr.shape}")
    a = arr
    if inverse and config & 8:
        a = np.swapaxes(a, -1, -2)
    for bit, ax in ((1, -3), (2, -2), (4, -1)):
        if config & bit:
            a = np.flip(a, axis=ax)
    if not inverse and config & 8:
        a = np.swapaxes(a, -1, -2)
    return np.ascontiguousarray(a)


def flip_rotate(sample, rng, *, config: int | None = None) -> dict:
    """(1) One of the 16 flip/rotation configurations (drawn uniformly if ``config`` is None).

    Flips in x and y plus a y/x transpose give the eight in-plane configurations (rotations by
    multiples of 90° and mirrors); a z flip doubles them. Non-square patches (y != x) draw only
    among the eight without transpose. Applied identically to every array.
    """
    shape = check_sample(sample)
    square = shape[1] == shape[2]
    config = int(_rng(rng).integers(0, N_FLIP_ROTATE if square else 8)) if config is None else int(config)
    out = dict(sample)
    for k in array_keys(sample):
        out[k] = flip_rotate_array(sample[k], config)
    return record(out, "flip_rotate", config=config, flip_z=bool(config & 1), flip_y=bool(config & 2),
                  flip_x=bool(config & 4), transpose=bool(config & 8))


def invert_flip_rotate(sample, config: int) -> dict:
    """Undo :func:`flip_rotate` with the same ``config`` (no record added)."""
    check_sample(sample)
    out = dict(sample)
    for k in array_keys(sample):
        out[k] = flip_rotate_array(sample[k], config, inverse=True)
    return out


# (2) brightness & contrast ------------------------------------------------------------------
def brightness_contrast(sample, rng, *, contrast_factor: float = 0.3, brightness_factor: float = 0.3,
                        per_section: bool | None = None, per_section_probability: float = 0.5) -> dict:
    """(2) Perturb contrast, brightness and gamma of the image (targets untouched).

    On the image scaled to [0, 1]: ``x · (1 + (u₁ − ½)·contrast_factor) + (u₂ − ½)·brightness_factor``,
    clipped to [0, 1], then raised to ``2^(2u₃ − 1)`` (Lee et al. 2017); u ~ U[0, 1) drawn once for
    the patch or once per section (``per_section``; drawn with ``per_section_probability`` if None).
    Voxels that are exactly 0 (no data: input-masked or missing) stay 0, as the net sees them at
    inference.
    """
    check_sample(sample)
    rng = _rng(rng)
    img = sample["image"]
    scale = 255.0 if img.dtype == np.uint8 else 1.0
    if per_section is None:
        per_section = bool(rng.random() < per_section_probability)
    n = img.shape[0] if per_section else 1
    c = (1.0 + (rng.random(n) - 0.5) * contrast_factor).astype(np.float32)[:, None, None]
    b = ((rng.random(n) - 0.5) * brightness_factor).astype(np.float32)[:, None, None]
    g = (2.0 ** (rng.random(n) * 2 - 1)).astype(np.float32)[:, None, None]
    x = np.clip(img.astype(np.float32) / scale * c + b, 0.0, 1.0) ** g
    x[img == 0] = 0.0                       # no data (input masks, missing sections) stays 0
    out = dict(sample)
    out["image"] = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8) if img.dtype == np.uint8 else x.astype(img.dtype)
    return record(out, "brightness_contrast", per_section=per_section, contrast=c.ravel().tolist(),
                  brightness=b.ravel().tolist(), gamma=g.ravel().tolist())


# (3) warping ----------------------------------------------------------------------------------
def _source_coords(t, prm, nz, qy, qx, center):
    """Source (y, x) in the input for output offsets (qy, qx) from the output centre, per section.

    ``prm`` = (rot, shear, sy, sx, st_y, st_x, twist) at full strength; ``t`` in [0, 1] scales
    every deviation from the identity. Returns arrays of shape (nz, *qy.shape).
    """
    rot, shear, sy, sx, sty, stx, twist = prm
    hy, hx = max(np.abs(qy).max(), 1.0), max(np.abs(qx).max(), 1.0)
    zf = (np.arange(nz, dtype=np.float64) / max(nz - 1, 1) - 0.5)
    ang = t * (rot + twist * zf)                                   # (nz,)
    ca, sa = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
    # scale, then shear (x moves with y), then rotate; then perspective stretch
    y1 = (1 + t * sy) * qy
    x1 = (1 + t * sx) * qx + t * shear * y1
    py = ca * y1 - sa * x1
    px = sa * y1 + ca * x1
    py = py * (1 + t * sty * qx / hx)
    px = px * (1 + t * stx * qy / hy)
    return center[0] + py, center[1] + px


def warp_field(shape, rng, *, out_shape=None, rotation_deg=15.0, shear=0.1, scale=0.1, stretch=0.1,
               twist_deg=5.0):
    """Draw an in-plane warp for a volume of ``shape`` (z, y, x) and return its displacement.

    The warp combines (1) continuous rotation, (2) shear, (3) twist (rotation changing linearly
    with z), (4) scale and (5) perspective stretch (paper: Warping), about the centre of the
    central ``out_shape`` (y, x) window. With ``out_shape`` given, the strength is halved until
    that window samples only inside the volume (up to 10 times, then the identity); without it
    the warp keeps its full strength and may sample outside (see :func:`warp`).

    Returns
    -------
    displacement : float32 (2, z, y, x), (dy, dx) voxels in the convention of
        :mod:`emkit.defects` (``out[z, y, x] = volume[z, y − dy, x − dx]``), defined on the whole grid.
    origin : (y0, x0) of the central window; info : dict of the drawn parameters and strength.
    """
    rng = _rng(rng)
    nz, ny, nx = shape
    oy, ox = (ny, nx) if out_shape is None else (int(out_shape[-2]), int(out_shape[-1]))
    if oy > ny or ox > nx or oy < 1 or ox < 1:
        raise InputError(f"warp output (y, x) = {(oy, ox)} must fit in the input {(ny, nx)}")
    y0, x0 = (ny - oy) // 2, (nx - ox) // 2
    center = (y0 + (oy - 1) / 2.0, x0 + (ox - 1) / 2.0)
    u = rng.uniform(-1, 1, 7)
    prm = (np.deg2rad(rotation_deg) * u[0], shear * u[1], scale * u[2], scale * u[3], stretch * u[4],
           stretch * u[5], np.deg2rad(twist_deg) * u[6])
    # the window's border decides whether it stays inside (the maps have no interior extrema)
    by = np.concatenate([np.arange(oy), np.arange(oy), np.zeros(ox), np.full(ox, oy - 1)]) - (oy - 1) / 2.0
    bx = np.concatenate([np.zeros(oy), np.full(oy, ox - 1), np.arange(ox), np.arange(ox)]) - (ox - 1) / 2.0
    t = 1.0
    if out_shape is not None:
        for _ in range(11):
            sy_, sx_ = _source_coords(t, prm, nz, by[None, None, :], bx[None, None, :], center)
            if sy_.min() >= 0 and sx_.min() >= 0 and sy_.max() <= ny - 1 and sx_.max() <= nx - 1:
                break
            t /= 2
        else:
            t = 0.0
    qy, qx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    qy -= center[0]
    qx -= center[1]
    src_y, src_x = _source_coords(t, prm, nz, qy[None], qx[None], center)
    disp = np.stack([qy[None] + center[0] - src_y, qx[None] + center[1] - src_x]).astype(np.float32)
    names = ("rotation_rad", "shear", "scale_y", "scale_x", "stretch_y", "stretch_x", "twist_rad")
    info = {n: float(t * v) for n, v in zip(names, prm)}
    info["strength"] = t
    return disp, (y0, x0), info


def warp(sample, rng, *, out_shape=None, rotation_deg: float = 15.0, shear: float = 0.1, scale: float = 0.1,
         stretch: float = 0.1, twist_deg: float = 5.0, image_order: int = 1) -> dict:
    """(3) Warp image and targets by the same random in-plane transform (:func:`warp_field`).

    The image is resampled bilinearly (``image_order=1``; 0 for nearest), targets by nearest
    neighbour, both through :func:`emkit.defects.warp`. With ``out_shape`` ((z,) y, x) the
    result is the central (y, x) window of that size, and the warp is weakened as needed so that
    the window only shows real context; without it the output has the input's size and
    ``mask`` is 0 where a target voxel came from outside the input.
    """
    shape = check_sample(sample)
    disp, (y0, x0), info = warp_field(shape, rng, out_shape=out_shape, rotation_deg=rotation_deg, shear=shear,
                                      scale=scale, stretch=stretch, twist_deg=twist_deg)
    oy, ox = (shape[1], shape[2]) if out_shape is None else (int(out_shape[-2]), int(out_shape[-1]))
    win = (slice(None), slice(y0, y0 + oy), slice(x0, x0 + ox))

    def _w(a, order):
        return defects.warp(a, disp, order=order)[win]

    out = dict(sample)
    out["image"] = np.ascontiguousarray(_w(sample["image"], image_order))
    for k in target_keys(sample):
        out[k] = np.ascontiguousarray(per_channel(sample[k], lambda a: _w(a, 0)))
    valid = _w(np.ones(shape, np.uint8), 0)
    if "mask" in sample or not valid.all():
        out["mask"] = (out["mask"] if "mask" in out else np.ones(valid.shape, np.uint8)) * valid
    return record(out, "warp", **info)


# (4) misalignment, (10) slip interpolation -------------------------------------------------------
def draw_shift(rng, d_max: int) -> tuple[int, int]:
    """A misalignment (dy, dx): each |d| uniform on the integers [0, d_max] (paper), with a random
    sign (the paper's flips randomise the direction; here the shift may come after the flip)."""
    rng = _rng(rng)
    d_max = int(d_max)
    if d_max < 0:
        raise InputError(f"d_max must be >= 0 voxels, got {d_max}")
    mag = rng.integers(0, d_max + 1, 2)
    sign = rng.choice([-1, 1], 2)
    return int(mag[0] * sign[0]), int(mag[1] * sign[1])


def _shift_targets(out, sample, displacement):
    """Move every target by ``displacement`` (nearest) and zero the mask where nothing came in."""
    for k in target_keys(sample):
        if k == "mask":
            continue
        out[k] = per_channel(sample[k], lambda a: defects.warp(a, displacement, order=0))
    valid = defects.warp(np.ones(sample["image"].shape, np.uint8), displacement, order=0)
    out["mask"] = defects.warp(ensure_mask(sample), displacement, order=0) * valid
    return out


def misalignment(sample, rng, *, d_max: int = 10, kind: str | None = None, step_probability: float = 0.7,
                 slip_target: bool = False, z: int | None = None, shift=None) -> dict:
    """(4) A translational misalignment at section ``z`` (paper; Lee et al. 2017).

    ``kind="step"``: every section from z on is shifted by ``shift`` (dy, dx) in the image *and*
    in the targets (targets computed from shifted labels then have no affinity across the
    mismatched sections z−1 / z). ``kind="slip"``: only section z is shifted; with
    ``slip_target=False`` (the default, the paper's "slip interpolation") the targets are
    untouched, with True they slip too. ``kind`` None draws step with ``step_probability``;
    ``shift`` None draws it with :func:`draw_shift` from ``d_max``.
    """
    nz, _, _ = check_sample(sample)
    rng = _rng(rng)
    if kind is None:
        kind = "step" if rng.random() < step_probability else "slip"
    if kind not in ("step", "slip"):
        raise InputError(f"misalignment kind must be 'step' or 'slip', got {kind!r}")
    shift = draw_shift(rng, d_max) if shift is None else (int(shift[0]), int(shift[1]))
    if kind == "step":
        z = _pick(rng, 1, nz - 1, "a step misalignment (needs a section above)", z)
        res = defects.step(sample["image"], rng, z=z, shift=shift)
    else:
        lo, hi = (1, nz - 2) if nz >= 3 else (0, nz - 1)
        z = _pick(rng, lo, hi, "a slip misalignment", z)
        res = defects.slip(sample["image"], rng, z=z, shift=shift)
    out = dict(sample)
    out["image"] = res.image
    moved = kind == "step" or slip_target
    if moved:
        _shift_targets(out, sample, res.displacement)
    name = "slip_interpolation" if kind == "slip" and not slip_target else "misalignment"
    return record(out, name, kind=kind, z=z, shift=shift, d_max=int(d_max), target_moved=moved)


def slip_interpolation(sample, rng, *, d_max: int = 10, z: int | None = None, shift=None) -> dict:
    """(10) Slip interpolation (Lee et al. 2021): section z shifted in the input only."""
    return misalignment(sample, rng, d_max=d_max, kind="slip", slip_target=False, z=z, shift=shift)


# (5) missing section, (6) out-of-focus section ----------------------------------------------------
def missing_section(sample, rng, *, consecutive: int = 2, max_single: int = 7, n_single: int | None = None,
                    partial_probability: float = 0.5, z: int | None = None,
                    spec: DefectSpec = DefectSpec()) -> dict:
    """(5) Missing sections in the input (zeros), targets untouched (the net interpolates).

    ``consecutive`` sections from ``z`` on (paper: two), full or partial (one choice for the
    run), plus ``n_single`` independent single sections (drawn on [0, max_single]; paper: up to
    seven), each full or partial; fewer when the patch has not enough sections.
    Uses :func:`emkit.defects.missing` and :func:`emkit.defects.partial_missing`.
    """
    nz, _, _ = check_sample(sample)
    rng = _rng(rng)
    consecutive = int(consecutive)
    z = _pick(rng, 0, nz - consecutive, f"{consecutive} consecutive missing sections", z)
    run = list(range(z, z + consecutive))
    rest = np.setdiff1d(np.arange(nz), run)
    n = int(rng.integers(0, int(max_single) + 1)) if n_single is None else int(n_single)
    singles = sorted(int(s) for s in rng.choice(rest, min(n, len(rest)), replace=False)) if len(rest) else []
    run_partial = bool(rng.random() < partial_probability)
    img = sample["image"]
    sections, partial = [], []
    for s in run + singles:
        part = run_partial if s in run else bool(rng.random() < partial_probability)
        img = (defects.partial_missing if part else defects.missing)(img, rng, z=s, spec=spec).image
        sections.append(s)
        partial.append(part)
    out = dict(sample)
    out["image"] = img
    return record(out, "missing_section", sections=sections, partial=partial, consecutive=run)


def out_of_focus(sample, rng, *, max_sections: int = 7, n: int | None = None, partial_probability: float = 0.5,
                 spec: DefectSpec = DefectSpec()) -> dict:
    """(6) Out-of-focus sections: ``n`` independent sections (drawn on [1, max_sections]; paper:
    up to seven) blurred by :func:`emkit.defects.blur`, each over the whole section or, with
    ``partial_probability``, inside a random rectangle only. Targets untouched."""
    nz, ny, nx = check_sample(sample)
    rng = _rng(rng)
    n = int(rng.integers(1, int(max_sections) + 1)) if n is None else int(n)
    zs = sorted(int(s) for s in rng.choice(nz, min(n, nz), replace=False))
    img = sample["image"]
    boxes = []
    for s in zs:
        blurred = defects.blur(img, rng, z=s, spec=spec).image
        if rng.random() < partial_probability:
            h, w = max(1, int(ny * rng.uniform(0.3, 0.7))), max(1, int(nx * rng.uniform(0.3, 0.7)))
            y0, x0 = int(rng.integers(0, ny - h + 1)), int(rng.integers(0, nx - w + 1))
            img = img.copy() if img is sample["image"] else img
            img[s, y0:y0 + h, x0:x0 + w] = blurred[s, y0:y0 + h, x0:x0 + w]
            boxes.append((y0, y0 + h, x0, x0 + w))
        else:
            img = blurred
            boxes.append(None)
    out = dict(sample)
    out["image"] = img
    return record(out, "out_of_focus", sections=zs, boxes=boxes)


# (7) misalignment + missing section ------------------------------------------------------------
def misalignment_missing(sample, rng, *, d_max: int = 10, z: int | None = None, shift=None,
                         n_missing: int | None = None) -> dict:
    """(7) A step misalignment co-simulated with missing section(s) at the same place.

    The image is shifted by ``shift`` from section z on (:func:`emkit.defects.step`) and sections
    z−n+1 … z are missing (:func:`emkit.defects.missing`, n = ``n_missing``, 1 or 2, drawn if
    None). The target interpolates: sections before the gap stay, sections after it are shifted
    by ``shift``, and the k-th missing section (k = 1..n) by round(k·shift/(n+1)) — so the net
    learns to move smoothly through the gap instead of guessing the side of the step.
    """
    nz, _, _ = check_sample(sample)
    rng = _rng(rng)
    n = int(rng.integers(1, 3)) if n_missing is None else int(n_missing)
    if n not in (1, 2):
        raise InputError(f"misalignment + missing takes 1 or 2 missing sections, got {n}")
    z = _pick(rng, n, nz - 1, f"misalignment + {n} missing section(s)", z)
    shift = draw_shift(rng, d_max) if shift is None else (int(shift[0]), int(shift[1]))
    img = defects.step(sample["image"], rng, z=z, shift=shift).image
    gap = list(range(z - n + 1, z + 1))
    for s in gap:
        img = defects.missing(img, rng, z=s).image
    disp = np.zeros((2, *img.shape), np.float32)
    target_shifts = []
    for k, s in enumerate(gap, start=1):
        ts = (int(round(shift[0] * k / (n + 1))), int(round(shift[1] * k / (n + 1))))
        disp[0, s], disp[1, s] = ts
        target_shifts.append(ts)
    disp[0, z + 1:], disp[1, z + 1:] = shift
    out = dict(sample)
    out["image"] = img
    _shift_targets(out, sample, disp)
    return record(out, "misalignment_missing", z=z, missing=gap, shift=shift, d_max=int(d_max),
                  target_shifts=target_shifts)


# (8) lost section, (9) lost + missing section --------------------------------------------------
def _keep_sections(out, sample, kept):
    for k in target_keys(sample):
        out[k] = np.ascontiguousarray(sample[k][..., kept, :, :])
    return out


def lost_section(sample, rng, *, single: bool | None = None, double: bool | None = None,
                 z_single: int | None = None, z_double: int | None = None) -> dict:
    """(8) Lost sections: removed from the input *and* the targets, the stack closes up.

    A single lost section and a double (two consecutive) lost section are simulated
    independently, at least one of them (drawn uniformly among single / double / both when
    both flags are None): 1 to 3 sections fewer (paper). Sections are chosen away from the first
    and last section (``z_single`` / ``z_double`` to place them, input indices). Uses
    :func:`emkit.defects.lost`; its ``kept_sections`` cut the targets.
    """
    nz, _, _ = check_sample(sample)
    rng = _rng(rng)
    if single is None and double is None:
        c = int(rng.integers(0, 3))
        single, double = c != 1, c != 0
    single, double = bool(single), bool(double)
    if not (single or double):
        raise InputError("lost_section needs single=True and/or double=True")
    removed = []
    if double:
        zd = _pick(rng, 1, nz - 3, "a double lost section", z_double)
        removed += [zd, zd + 1]
    if single:
        cands = [s for s in range(1, nz - 1) if s not in removed]
        if z_single is not None:
            if int(z_single) not in cands:
                raise InputError(f"single lost section z={z_single} must be in 1..{nz - 2} and not already lost")
            zs = int(z_single)
        elif not cands:
            raise InputError("the patch has too few sections for a single lost section")
        else:
            zs = int(rng.choice(cands))
        removed.append(zs)
    img, kept = sample["image"], np.arange(nz)
    for s in sorted(removed, reverse=True):            # from the top: lower indices stay valid
        r = defects.lost(img, rng, z=s)
        img, kept = r.image, kept[r.kept_sections]
    out = dict(sample)
    out["image"] = img
    _keep_sections(out, sample, kept)
    return record(out, "lost_section", lost=sorted(removed), single=single, double=double,
                  kept=kept.tolist())


def lost_missing(sample, rng, *, z: int | None = None) -> dict:
    """(9) Lost + missing: input sections z−1, z, z+1 become one missing section; the targets
    keep only section z of the three (two sections fewer in both). Uses :func:`emkit.defects.lost`
    and :func:`emkit.defects.missing`."""
    nz, _, _ = check_sample(sample)
    rng = _rng(rng)
    lo, hi = (2, nz - 3) if nz >= 5 else (1, nz - 2)
    z = _pick(rng, lo, hi, "lost + missing (three sections)", z)
    r1 = defects.lost(sample["image"], rng, z=z + 1)
    r2 = defects.lost(r1.image, rng, z=z - 1)
    kept = np.arange(nz)[r1.kept_sections][r2.kept_sections]
    img = defects.missing(r2.image, rng, z=z - 1).image   # section z now sits at index z − 1
    out = dict(sample)
    out["image"] = img
    _keep_sections(out, sample, kept)
    return record(out, "lost_missing", z=z, lost=[z - 1, z + 1], missing_at=z - 1, kept=kept.tolist())
