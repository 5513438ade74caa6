"""Running a net at its training resolution on an image of another resolution.

A net sees the tissue at the voxel size it was trained at (``config.resolution``, z, y, x nm).
When an image is finer, inference averages it down by a whole factor per axis first — as the paper
did, 4 → 8 nm in-plane before boundary detection (Methods: Boundary detection) — runs the net on
that coarser grid, and interpolates the outputs back (linearly) onto the *image's* grid. Outputs
therefore always have the image's size, voxel offset and resolution, so ``emkit segment``,
``emkit evaluate`` against ground truth and the viewer take them unchanged.

The rule (:func:`plan_resampling`), per axis, with ``q = net nm / image nm``:

- the factor ``f`` is the whole number in ``1 .. max_downsample`` (default
  :data:`MAX_DOWNSAMPLE` = 2) that brings ``f × image nm`` nearest the net's (in ratio; ties →
  the smaller factor);
- after it, the axis must be within ``tolerance`` (default :data:`RESOLUTION_TOLERANCE` = 1.5×)
  of the net's, either way; otherwise the image is refused with a message naming both
  resolutions. Images are never upsampled: an image coarser than the net by more than the
  tolerance is refused.
- within the tolerance but more than 10 % apart, a ``UserWarning`` says outputs may be poorer.

Examples with the shipped 40 × 8 × 8 nm nets: ssTEM at 50 × 4 × 4 nm → factors (1, 2, 2), the net
runs at 50 × 8 × 8 nm (z 1.25× coarser: a warning); isotropic FIB-SEM at 10 nm → z would need
4× averaging (> 2): refused (an isotropic net fits it; ``--max-downsample 4`` forces the
anisotropic one).

Chunk seams: the coarse grid is *global* — coarse voxel ``j`` averages image voxels
``[j f, (j + 1) f)`` counted from the volume's first voxel (the last block of an axis may be
partial: it averages the voxels it has) — and the net's patch grid is laid out on the whole
coarse volume (:class:`emkit.inference.PatchGrid`). A chunk computes the coarse voxels its
interpolation needs (one beyond its faces) from the patches that touch them and interpolates its
own voxels, so every output voxel is the same arithmetic whatever the chunking: chunked output
equals a single pass. Task chunks follow the usual rule (whole storage chunks of the image); they
need not be multiples of the factors.

Interpolation: image voxel ``i`` (centre at ``i + 0.5`` image voxels) sits at coarse coordinate
``(i + 0.5) / f - 0.5``; values are linear between the two nearest coarse voxel centres and
constant beyond the first/last centre.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..geometry import Bbox, as_vec3

__all__ = ["MAX_DOWNSAMPLE", "RESOLUTION_TOLERANCE", "Resampling", "plan_resampling", "block_mean",
           "upsample_linear", "coarse_box"]

#: Largest averaging factor per axis by default (the paper: 4 → 8 nm in-plane, a factor 2).
MAX_DOWNSAMPLE = 2
#: How far (ratio, either way) the resampled image may stay from the net's training resolution.
RESOLUTION_TOLERANCE = 1.5
_WARN_ABOVE = 1.1


def _fmt(res) -> str:
    return "(" + ", ".join(f"{v:g}" for v in res) + ") nm (z, y, x)"


@dataclass(frozen=True)
class Resampling:
    """How an image of ``image_resolution`` is brought to a net trained at ``model_resolution``.

    ``factors`` (z, y, x) are the whole averaging factors; (1, 1, 1) means the net runs on the
    image's own grid. ``model_resolution`` is None when the net does not record one.
    """

    image_resolution: tuple
    model_resolution: tuple | None
    factors: tuple = (1, 1, 1)

    @property
    def identity(self) -> bool:
        return tuple(self.factors) == (1, 1, 1)

    @property
    def net_resolution(self) -> tuple:
        """Voxel size (z, y, x nm) of the grid the net runs on."""
        return tuple(float(r) * f for r, f in zip(self.image_resolution, self.factors))

    def net_shape(self, shape) -> tuple[int, int, int]:
        """Size (z, y, x) of the coarse grid of an image of ``shape`` voxels."""
        return tuple(-(-int(n) // f) for n, f in zip(shape, self.factors))

    def describe(self) -> str:
        if self.model_resolution is None:
            return "the net records no training resolution: run on the image's grid"
        if self.identity:
            return f"the net (trained at {_fmt(self.model_resolution)}) runs on the image's grid"
        return (f"image {_fmt(self.image_resolution)} averaged {'x'.join(map(str, self.factors))} (z, y, x) to "
                f"{_fmt(self.net_resolution)} for the net (trained at {_fmt(self.model_resolution)}); outputs "
                "interpolated back to the image's grid")


def plan_resampling(model_resolution, image_resolution, *, tolerance: float = RESOLUTION_TOLERANCE,
                    max_downsample: int = MAX_DOWNSAMPLE, what: str = "the image", warn: bool = True,
                    hint: str = "") -> Resampling:
    """The averaging factors (z, y, x) that bring ``image_resolution`` to ``model_resolution``.

    Parameters
    ----------
    model_resolution : the net's training voxel size (z, y, x nm), or None (nothing to check:
        identity).
    image_resolution : the image's voxel size (z, y, x nm).
    tolerance : largest ratio (either way, per axis) left after averaging (default 1.5).
    max_downsample : largest averaging factor per axis (default 2).
    what : how messages name the image.
    warn : warn (UserWarning) when an axis stays more than 10 % from the net's.
    hint : appended to the refusal (what to do instead).

    Raises
    ------
    InputError : an axis stays more than ``tolerance`` from the net's (coarser, or finer than
        ``max_downsample`` averaging can fix); names both resolutions and what would fit.
    """
    res = as_vec3(image_resolution, "resolution", positive=True, dtype=float)
    if model_resolution is None:
        return Resampling(res, None, (1, 1, 1))
    mres = as_vec3(model_resolution, "model resolution", positive=True, dtype=float)
    tolerance = float(tolerance)
    max_downsample = int(max_downsample)
    if tolerance < 1:
        raise InputError(f"resolution tolerance must be >= 1, got {tolerance:g}")
    if max_downsample < 1:
        raise InputError(f"max_downsample must be >= 1, got {max_downsample}")
    factors, ratios, problems = [], [], []
    for ax, r, m in zip("zyx", res, mres):
        f = min(range(1, max_downsample + 1), key=lambda k: (abs(math.log(k * r / m)), k))
        ratio = max(f * r / m, m / (f * r))
        factors.append(f)
        ratios.append(ratio)
        if ratio > tolerance * (1 + 1e-9):
            if f * r > m:
                problems.append(f"{ax}: {r:g} nm is {r / m:.2g}x coarser than the net's {m:g} nm (images are never "
                                "upsampled)")
            else:
                need = max(1, round(m / r))
                problems.append(f"{ax}: {r:g} nm would need averaging by {need} to reach the net's {m:g} nm "
                                f"(at most {max_downsample} allowed)")
    if problems:
        raise InputError(f"{what} has resolution {_fmt(res)} but the net was trained at {_fmt(mres)}: "
                         f"{'; '.join(problems)}. Allowed: averaging by whole factors up to {max_downsample} per "
                         f"axis, leaving each axis within {tolerance:g}x of the net's." + (f" {hint}" if hint else ""))
    plan = Resampling(res, mres, tuple(factors))
    if warn and max(ratios) > _WARN_ABOVE:
        warnings.warn(f"{what} has resolution {_fmt(res)}; the net, trained at {_fmt(mres)}, runs at "
                      f"{_fmt(plan.net_resolution)}: outputs may be poorer", UserWarning, stacklevel=3)
    return plan


def block_mean(x: np.ndarray, factors) -> np.ndarray:
    """Average ``x`` ``(c, z, y, x)`` over blocks of ``factors`` (z, y, x) voxels.

    ``x`` must start on a block boundary; a last block cut short (the volume's far face) averages
    the voxels it has. Blocks are summed axis by axis in a fixed order, so a block's mean does
    not depend on what else ``x`` holds (chunked == single pass). Returns float32 of shape
    ``(c, ceil(z / fz), ceil(y / fy), ceil(x / fx))``.
    """
    out = np.asarray(x, dtype=np.float32)
    for axis, f in zip((1, 2, 3), factors):
        f = int(f)
        if f == 1:
            continue
        n = out.shape[axis]
        m = -(-n // f)
        acc = np.zeros(out.shape[:axis] + (m,) + out.shape[axis + 1:], dtype=np.float32)
        count = np.zeros(m, dtype=np.float32)
        for k in range(f):
            part = np.take(out, np.arange(k, n, f), axis=axis)
            sl = [slice(None)] * out.ndim
            sl[axis] = slice(0, part.shape[axis])
            acc[tuple(sl)] += part
            count[:part.shape[axis]] += 1
        shape = [1] * out.ndim
        shape[axis] = m
        out = acc / count.reshape(shape)
    return out


def coarse_box(box: Bbox, factors, coarse_shape) -> Bbox:
    """Coarse voxels (z, y, x, from the volume's start) whose values the linear interpolation of
    the image voxels ``box`` uses: the coarse voxels under the box plus one on each side,
    clipped to the coarse volume."""
    start, stop = [], []
    for a, b, f, n in zip(box.start, box.stop, factors, coarse_shape):
        if f == 1:
            start.append(a)
            stop.append(b)
            continue
        j0 = (2 * a + 1 - f) // (2 * f)       # floor((a + 0.5) / f - 0.5)
        j1 = (2 * (b - 1) + 1 - f) // (2 * f)
        start.append(max(0, j0))
        stop.append(min(n, j1 + 2))
    return Bbox(tuple(start), tuple(stop))


def upsample_linear(values: np.ndarray, factors, values_start, box: Bbox, coarse_shape) -> np.ndarray:
    """Linear interpolation of coarse-grid ``values`` ``(c, z, y, x)`` onto the image voxels of ``box``.

    Parameters
    ----------
    values : coarse values over the coarse box starting at ``values_start`` (it must cover
        :func:`coarse_box` of ``box``).
    factors : averaging factors (z, y, x).
    values_start : first coarse voxel (z, y, x) of ``values``, from the volume's start.
    box : image voxels to produce (z, y, x), from the volume's start.
    coarse_shape : size of the whole coarse volume (for clamping at its faces).

    Returns
    -------
    float32 ``(c, *box.shape)``.
    """
    out = np.asarray(values, dtype=np.float32)
    for axis, (f, a, b, s, n) in enumerate(zip(factors, box.start, box.stop, values_start, coarse_shape), start=1):
        if f == 1:
            out = np.take(out, np.arange(a - s, b - s), axis=axis)
            continue
        i = np.arange(a, b, dtype=np.float64)
        pos = (i + 0.5) / f - 0.5
        j0 = np.floor(pos).astype(np.int64)
        t = (pos - j0).astype(np.float32)
        lo = np.clip(j0, 0, n - 1) - s
        hi = np.clip(j0 + 1, 0, n - 1) - s
        shape = [1] * out.ndim
        shape[axis] = len(i)
        t = t.reshape(shape)
        out = np.take(out, lo, axis=axis) * (np.float32(1) - t) + np.take(out, hi, axis=axis) * t
    return np.ascontiguousarray(out, dtype=np.float32)
