"""Misalignment maps and step/slip classification (paper, Methods, *Segmentation masks*).

For each section ``z`` and each neighbour distance ``k = 1..K`` (paper: neighbours up to five
sections apart) a *misalignment map* says where sections ``z`` and ``z - k`` still disagree:
the normalised (Pearson) correlation of 8 × 8 px patches of the two high-pass filtered sections
(paper), averaged over a small window of patches (the smoothing), and thresholded
(:func:`misaligned`).

Grid and conventions
--------------------
* Axes are (z, y, x) everywhere; maps are ``(K, z, py, px)``: index ``k - 1`` holds the pair
  (z, z - k). ``py, px`` is the *patch grid*: patches of ``patch_px`` working pixels, a working
  pixel being the mean of ``downsample × downsample`` image pixels, so one patch covers
  ``patch_px * downsample`` image pixels per axis, aligned to the volume's first voxel. A volume
  whose y/x size is not a multiple of that is padded at its end by reflection.
* Maps are NaN where there is no answer: ``z - k < 0``, or no patch in the smoothing window
  where both sections have content (an empty or missing region: more than ``empty_fraction`` of
  the patch's pixels are 0, or the high-passed patch is flat).
* Intensities: uint8 (0-255) or float (0-1); both are scaled to 0-1.

The high-pass filter is ``x - G_sigma * x`` (a Gaussian low-pass subtracted), i.e. the transfer
function ``1 - exp(-2 pi^2 sigma^2 f^2)`` applied in the frequency domain as the paper does, but
computed in space so that chunks with a halo give exactly the whole-volume result.

Classification (:func:`classify_regions`, :func:`classify_misalignments`) uses the distance-1
and distance-2 maps: a *slip* at z is a section aligned to neither neighbour while its
neighbours align to each other (their distance-2 correlation is not below ``threshold_far``),
or whose correlations with both neighbours fall below its neighbours' correlation with each other
by more than ``slip_margin`` (the relative test: it does not depend on the local contrast);
a *step* at z is the pair (z - 1, z) misaligned while neither (z - 2, z - 1) nor (z, z + 1)
is. Where a neighbour pair lies outside the volume (or has no answer) it counts as "not
misaligned"; so section 0 is never classified, and a shifted last section counts as a step.
The maps of distances 3..K are computed (as the paper does) but not used by the classifier.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["MisalignmentParams", "misalignment_maps", "misaligned", "classify_regions", "classify_misalignments",
           "patch_extent", "upsample_patches"]


@dataclass(frozen=True)
class MisalignmentParams:
    """Parameters of misalignment maps, step/slip classification and segmentation masks.

    Defaults are the paper's (Methods, *Segmentation masks*) where it gives a number; the others
    were chosen on phantoms (8 nm pixels) and on the ISBI 2012 ssTEM stack (4 nm pixels) —
    see each field.
    """

    max_distance: int = 5
    """Neighbours compared, up to this many sections apart (paper: five)."""
    patch_px: int = 8
    """Side of the correlation patches in working pixels (paper: 8 × 8 px)."""
    downsample: int = 8
    """Working pixel = mean of ``downsample²`` image pixels (the working mip). The paper computes
    the maps at 256 nm and 1024 nm per pixel (32× and 128× its 8 nm images); emkit's default is
    8 (64 nm/px at 8 nm, a patch = 512 nm) so that small volumes still hold several patches.
    Measured on phantoms (8 nm px): the median correlation of aligned neighbours was ~0.05 at
    1 and 2 (noise dominates), ~0.3 at 4, ~0.5 at 8; shifted pairs ~0 throughout."""
    highpass_sigma_px: float = 2.0
    """Sigma (working px) of the Gaussian subtracted by the high-pass filter (the paper gives no
    number; 2 px keeps structure smaller than a patch)."""
    smooth_radius: int = 1
    """Smoothing: maps are the mean correlation over (2r + 1)² patches (the paper gives no
    number)."""
    threshold: float = 0.25
    """A location is misaligned with its next section where their smoothed correlation is below
    this (the paper gives no number). Measured on 24 × 256 × 256 phantoms (8 nm px, defaults):
    aligned neighbours 0.33-0.7 per location (median ~0.5), pairs shifted by 6-9 px at most
    0.2 (median ~0). Real ssTEM (ISBI 2012, 4 nm px, 50 nm sections) at the same 64 nm working
    pixel (``downsample=16``) has aligned neighbours at a section median of ~0.38 (0.26-0.51),
    and the two pairs it calls misaligned are offset by 8-14 px indeed."""
    threshold_far: float = 0.0
    """Slip test: the neighbours of section z count as aligned to each other unless their
    (distance-2) correlation is below this. Tissue decorrelates fast with distance: in 24 × 256 ×
    256 phantoms aligned pairs two apart averaged ~0.15 per section but ~0.02 in places, pairs
    across a shift ~0 ± 0.1; so this only vetoes clear cases (the paper gives no number)."""
    slip_margin: float | None = 0.1
    """Slip test, relative form: section z is also a slip where both its correlations with z - 1
    and z + 1 are below the correlation of z - 1 with z + 1 by more than this. Aligned tissue
    correlates less the farther apart the sections are, so a section that matches its
    neighbours worse than they match each other is displaced, whatever the local contrast: on the
    phantoms of ``benchmarks/masks_effect.py`` (seeds 0, 1, 20-25: 16 slips of 4-16 px) the
    patches of slipped sections found rose from 48 % to 62 %, the patches wrongly called slips
    from 0.42 % to 0.58 %. ``None``: the absolute test alone (the paper gives no rule)."""
    slip_relative_factor: float = 2.5
    """The relative slip test counts only where both neighbour correlations are also below this
    many times ``threshold`` (0.625 at the default threshold: above every slipped patch of those
    phantoms), so that lowering ``threshold`` makes every test stricter (at a threshold <= 0
    the relative test finds nothing)."""
    slip_fill_radius: int = 1
    """Slip regions are filled in on the patch grid: a patch becomes a slip where at least
    ``slip_fill_fraction`` of the (2r + 1)² patches around it (those inside the volume) are slips.
    A slipped region is displaced as a whole, but where its tissue varies slowly a patch still
    correlates with its neighbours and the tests miss it; filling keeps isolated false patches
    out (they are alone in their window). 0: no filling. On the phantoms of ``slip_margin``, with
    the relative test, the slipped patches found rose from 62 % to 69 %, the false ones from
    0.58 % to 0.77 % (ours; the paper gives no rule)."""
    slip_fill_fraction: float = 0.34
    """See ``slip_fill_radius`` (0.34: three of the nine patches of a 3 × 3 window)."""
    empty_fraction: float = 0.5
    """A patch with more than this fraction of exactly-0 pixels is empty (no answer)."""
    min_std: float = 1e-3
    """A high-passed patch whose standard deviation (0-1 intensity units) is below this is flat
    (no answer)."""
    input_defects: tuple = ("fold", "crack", "resin")
    """Defect kinds (keys of ``defect_masks``) added to the input mask (paper: folds, cracks,
    resin)."""
    consecutive: int = 3
    """Locations masked in the input for this many consecutive sections go into the output mask
    (paper: three)."""
    output_steps: bool = False
    """Put step misalignments into the output mask (the paper does: its boundary net's accuracy
    "becomes marginal" there, and zeroing the boundary map "biases the subsequent segmentation
    procedure toward split errors"). emkit's default is not to: the shipped boundary net is
    trained on steps (``emkit.train.sampler.LEARNED_DEFECTS``) and bridges them, and zeroing its
    output on a step section cuts every object that crosses the step. Measured on a 32 × 256 ×
    256 phantom (seed 0, two slips, a step, two folds, two cracks; ``benchmarks/masks_effect.py``):
    adapted Rand error 0.016 with the true input mask, 0.112 when the step goes into the output
    mask as well (0.018 without masks); even when the splits across the step are not counted
    as errors the step mask costs (0.0157 vs 0.0142). ``True`` gives the paper's rule."""

    def __post_init__(self):
        if not isinstance(self.output_steps, (bool, np.bool_)):
            raise InputError(f"MisalignmentParams.output_steps must be True or False, got {self.output_steps!r}")
        ints = {"max_distance": 2, "patch_px": 2, "downsample": 1, "smooth_radius": 0, "consecutive": 1,
                "slip_fill_radius": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise InputError(f"MisalignmentParams.{name} must be an integer >= {lo}, got {v!r}")
        if self.slip_margin is not None and (isinstance(self.slip_margin, bool) or not isinstance(
                self.slip_margin, (int, float, np.floating, np.integer)) or not 0 <= self.slip_margin <= 2):
            raise InputError(f"MisalignmentParams.slip_margin must be None or a number in [0, 2], got "
                             f"{self.slip_margin!r}")
        f = self.slip_fill_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float, np.floating, np.integer)) or not 0 < f <= 1:
            raise InputError(f"MisalignmentParams.slip_fill_fraction must be a number in (0, 1], got {f!r}")
        for name in ("highpass_sigma_px", "threshold", "threshold_far", "empty_fraction", "min_std",
                     "slip_relative_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v):
                raise InputError(f"MisalignmentParams.{name} must be a finite number, got {v!r}")
        if self.highpass_sigma_px <= 0:
            raise InputError(f"MisalignmentParams.highpass_sigma_px must be > 0, got {self.highpass_sigma_px!r}")
        for name in ("threshold", "threshold_far"):
            if not -1 <= getattr(self, name) <= 1:
                raise InputError(f"MisalignmentParams.{name} must be a correlation in [-1, 1], got "
                                 f"{getattr(self, name)!r}")
        if not 0 <= self.empty_fraction <= 1:
            raise InputError(f"MisalignmentParams.empty_fraction must be in [0, 1], got {self.empty_fraction!r}")
        if self.min_std < 0:
            raise InputError(f"MisalignmentParams.min_std must be >= 0, got {self.min_std!r}")
        if isinstance(self.input_defects, str) or not all(isinstance(k, str) for k in self.input_defects):
            raise InputError(f"MisalignmentParams.input_defects must be a tuple of defect kinds, got "
                             f"{self.input_defects!r}")

    @classmethod
    def for_resolution(cls, pixel_nm: float, working_nm: float = 64.0, **overrides) -> "MisalignmentParams":
        """Parameters whose working pixel is about ``working_nm`` for images of ``pixel_nm`` per
        pixel in y/x (``downsample = round(working_nm / pixel_nm)``, at least 1); e.g. 8 for 8 nm
        (the default), 16 for 4 nm. ``overrides`` set other fields."""
        try:
            ratio = float(working_nm) / float(pixel_nm)
        except (TypeError, ValueError, ZeroDivisionError):
            raise InputError(f"pixel_nm and working_nm must be positive numbers, got {pixel_nm!r}, "
                             f"{working_nm!r}") from None
        if not (np.isfinite(ratio) and ratio > 0 and float(pixel_nm) > 0):
            raise InputError(f"pixel_nm and working_nm must be positive numbers, got {pixel_nm!r}, {working_nm!r}")
        return cls(**{"downsample": max(1, int(round(ratio))), **overrides})


def _params(params) -> MisalignmentParams:
    if params is None:
        return MisalignmentParams()
    if not isinstance(params, MisalignmentParams):
        raise InputError(f"params must be a MisalignmentParams, got {type(params).__name__}")
    return params


def patch_extent(params: MisalignmentParams | None = None) -> int:
    """Image pixels (per axis) covered by one patch: ``patch_px * downsample``."""
    p = _params(params)
    return p.patch_px * p.downsample


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"misalignment maps need an image of 3 dimensions (z, y, x), got shape {image.shape}")
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise InputError(f"misalignment maps need a uint8 (0-255) or float (0-1) image, got dtype {image.dtype}")
    if min(image.shape) < 1:
        raise InputError(f"image of shape {image.shape} is empty")
    return image


def _working(image: np.ndarray, p: MisalignmentParams):
    """Working-resolution image (0-1 float32, padded by reflection to whole patches) and the
    fraction of exactly-0 image pixels per working pixel."""
    ext = p.patch_px * p.downsample
    nz, ny, nx = image.shape
    py, px = -(-ny // ext), -(-nx // ext)
    pad = ((0, 0), (0, py * ext - ny), (0, px * ext - nx))
    x = image.astype(np.float32) * np.float32(1 / 255 if image.dtype == np.uint8 else 1)
    zero = (image == 0).astype(np.float32)
    if any(a[1] for a in pad):
        x = np.pad(x, pad, mode="symmetric")
        zero = np.pad(zero, pad, mode="symmetric")
    f = p.downsample
    if f > 1:
        shp = (nz, py * p.patch_px, f, px * p.patch_px, f)
        x = x.reshape(shp).mean(axis=(2, 4), dtype=np.float32)
        zero = zero.reshape(shp).mean(axis=(2, 4), dtype=np.float32)
    return x, zero


def _patches(a: np.ndarray, P: int) -> np.ndarray:
    nz, ny, nx = a.shape
    return a.reshape(nz, ny // P, P, nx // P, P).transpose(0, 1, 3, 2, 4).reshape(nz, ny // P, nx // P, P * P)


def misalignment_maps(image, params: MisalignmentParams | None = None) -> np.ndarray:
    """Smoothed patch correlation of every section with its neighbours up to K sections before.

    Parameters
    ----------
    image : uint8 (0-255) or float (0-1) array (z, y, x).
    params : :class:`MisalignmentParams` (default: the paper's values).

    Returns
    -------
    float32 array (K, z, py, px), ``K = params.max_distance``: ``maps[k - 1, z]`` is the
    correlation (-1..1) between sections z and z - k on the patch grid (one value per
    ``patch_extent(params)``² image pixels; :func:`upsample_patches` brings it to the image's
    grid), averaged over (2 smooth_radius + 1)² patches. NaN where z - k < 0 or no patch of the
    window has content in both sections (empty / missing regions).
    """
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.ndimage import gaussian_filter

    p = _params(params)
    image = _check_image(image)
    x, zero = _working(image, p)
    s = p.highpass_sigma_px
    hp = x - gaussian_filter(x, (0, s, s), mode="reflect", truncate=4.0)
    P = p.patch_px
    v = _patches(hp, P).astype(np.float64)
    v -= v.mean(axis=-1, keepdims=True)
    norm = np.sqrt((v * v).sum(axis=-1))                               # (z, py, px)
    empty = _patches(zero, P).mean(axis=-1) > p.empty_fraction
    ok = (~empty) & (norm / np.sqrt(P * P) > p.min_std)
    nz, py, px = norm.shape
    K, r = p.max_distance, p.smooth_radius
    out = np.full((K, nz, py, px), np.nan, np.float32)
    for k in range(1, min(K, nz - 1) + 1):                            # K <= a handful: loop over distances
        a, b = v[k:], v[:-k]
        valid = ok[k:] & ok[:-k]
        with np.errstate(invalid="ignore", divide="ignore"):
            c = (a * b).sum(axis=-1) / (norm[k:] * norm[:-k])
        c = np.where(valid, c, 0.0)
        cnt = valid.astype(np.float64)
        if r:
            pad = ((0, 0), (r, r), (r, r))
            w = (2 * r + 1, 2 * r + 1)
            c = sliding_window_view(np.pad(c, pad), w, axis=(1, 2)).sum(axis=(-2, -1))
            cnt = sliding_window_view(np.pad(cnt, pad), w, axis=(1, 2)).sum(axis=(-2, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k - 1, k:] = np.where(cnt > 0, c / np.maximum(cnt, 1), np.nan)
    return out


def _check_maps(maps) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim < 2 or not np.issubdtype(maps.dtype, np.floating):
        raise InputError(f"misalignment maps must be a float array (K, z, ...), got {maps.dtype} of shape "
                         f"{maps.shape}")
    return maps


def misaligned(maps, params: MisalignmentParams | None = None) -> np.ndarray:
    """Where pairs are misaligned: ``maps < params.threshold`` (bool, same shape as ``maps``;
    False where the map is NaN — no answer is not a misalignment)."""
    p = _params(params)
    maps = _check_maps(maps)
    with np.errstate(invalid="ignore"):
        return maps < p.threshold


def classify_regions(maps, params: MisalignmentParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Slip and step locations from misalignment maps.

    Parameters
    ----------
    maps : float (K, z, ...) as from :func:`misalignment_maps` (K >= 2), or a reduction of
        them (e.g. one value per section pair: (K, z)).
    params : threshold.

    Returns
    -------
    (slip, step) : bool arrays (z, ...). ``slip[z]``: section z aligned to neither z - 1 nor
    z + 1 while z - 1 and z + 1 are not misaligned (``threshold_far``). ``step[z]``: the pair (z - 1, z) misaligned, neither
    (z - 2, z - 1) nor (z, z + 1) misaligned (see the module docstring). With
    ``params.slip_margin``, z is also a slip where both its neighbour correlations are below
    the (z - 1, z + 1) correlation by more than the margin (and below ``slip_relative_factor``
    times the threshold). On patch maps (K, z, py, px) slip
    regions are then filled in (``slip_fill_radius``, ``slip_fill_fraction``).
    """
    p = _params(params)
    maps = _check_maps(maps)
    if maps.shape[0] < 2:
        raise InputError(f"classification needs maps of distance 1 and 2 (K >= 2), got K = {maps.shape[0]}")
    m1, m2 = maps[0], maps[1]
    with np.errstate(invalid="ignore"):
        mis = m1 < p.threshold                                   # (z - 1, z) misaligned
    nan = np.full((1, *maps.shape[2:]), np.nan, maps.dtype)
    false = np.zeros((1, *maps.shape[2:]), bool)
    mis_next = np.concatenate([mis[1:], false])                  # (z, z + 1) misaligned
    mis_prev = np.concatenate([false, mis[:-1]])                 # (z - 2, z - 1) misaligned
    m2_next = np.concatenate([m2[1:], nan])                      # (z - 1, z + 1)
    with np.errstate(invalid="ignore"):
        # the neighbours (z - 1, z + 1) are not shown to be misaligned: tissue two sections
        # apart correlates weakly even when aligned (phantoms: ~0.15 on average, down to ~0 in
        # places), so the distance-2 pair vetoes a slip only where it is below threshold_far
        skip_better = ~(m2_next < p.threshold_far)
    slip = mis & mis_next & skip_better
    if p.slip_margin is not None:
        m1_next = np.concatenate([m1[1:], nan])                  # (z, z + 1)
        with np.errstate(invalid="ignore"):
            # both neighbour pairs clearly worse than the pair that skips z (NaN: no answer, no slip)
            worst = np.fmax(m1, m1_next)
            slip |= (worst < m2_next - p.slip_margin) & (worst < p.slip_relative_factor * p.threshold)
    step = mis & ~mis_prev & ~mis_next
    if p.slip_fill_radius and maps.ndim == 4:
        slip |= _fill(slip, p.slip_fill_radius, p.slip_fill_fraction)
    if maps.shape[1]:
        slip[0] = False
        step[0] = False
    return slip, step


def _fill(a: np.ndarray, r: int, fraction: float) -> np.ndarray:
    """Where at least ``fraction`` of the (2r + 1)² patches around (inside the grid) are True."""
    from numpy.lib.stride_tricks import sliding_window_view

    pad = ((0, 0), (r, r), (r, r))
    w = (2 * r + 1, 2 * r + 1)
    hits = sliding_window_view(np.pad(a.astype(np.float64), pad), w, axis=(1, 2)).sum(axis=(-2, -1))
    inside = sliding_window_view(np.pad(np.ones(a.shape[1:]), pad[1:]), w).sum(axis=(-2, -1))
    return hits >= fraction * inside[None] - 1e-9


def classify_misalignments(maps, params: MisalignmentParams | None = None) -> dict:
    """Sections with a slip or a step, from whole-section agreement.

    Parameters
    ----------
    maps : float (K, z, py, px) from :func:`misalignment_maps` — each pair is then summarised
        by the median of its map over the section (NaN-aware) — or already one value per pair
        (K, z).
    params : threshold.

    Returns
    -------
    ``{"slips": [z, ...], "steps": [z, ...]}``: a slip at z is section z shifted against both
    neighbours; a step at z lies between sections z - 1 and z (every section from z on moved).
    """
    import warnings

    maps = _check_maps(maps)
    if maps.ndim > 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)           # all-NaN pairs stay NaN
            maps = np.nanmedian(maps.reshape(*maps.shape[:2], -1), axis=-1)
    slip, step = classify_regions(maps, params)
    return {"slips": [int(z) for z in np.flatnonzero(slip)], "steps": [int(z) for z in np.flatnonzero(step)]}


def upsample_patches(a: np.ndarray, shape, params: MisalignmentParams | None = None) -> np.ndarray:
    """Bring an array on the patch grid (z, py, px) to the image's grid ``shape`` (z, y, x) by
    repeating each patch over the image pixels it covers."""
    ext = patch_extent(params)
    a = np.asarray(a)
    return np.repeat(np.repeat(a, ext, axis=1), ext, axis=2)[:, :shape[1], :shape[2]]
