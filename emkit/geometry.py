"""Bounding boxes and chunk grids, in voxels, axis order (z, y, x).

Everything here is in voxel units unless a name says ``_nm``. A :class:`Bbox` is half-open:
``start <= v < stop`` on each axis.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Iterator, Sequence

import numpy as np

from .errors import BboxError, InputError

__all__ = ["Bbox", "Vec3", "as_vec3", "chunk_grid", "parse_vec3", "parse_bbox"]

Vec3 = tuple[int, int, int]


def as_vec3(value, name: str = "value", *, positive: bool = False, dtype=int) -> tuple:
    """Return ``value`` (a scalar or 3 numbers, z, y, x) as a 3-tuple, or raise InputError.

    With ``dtype=int`` (the default) every entry must be a whole number: ``2.5`` is refused
    rather than truncated. Entries must be finite. ``positive=True`` requires every entry > 0.
    """
    if np.isscalar(value) or (isinstance(value, np.ndarray) and value.ndim == 0):
        value = (value, value, value)
    try:
        items = list(value)
        nums = [float(v) for v in items]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be three numbers (z, y, x), got {value!r}") from None
    if len(nums) != 3:
        raise InputError(f"{name} must have 3 entries (z, y, x), got {len(nums)}: {value!r}")
    if not all(np.isfinite(nums)):
        raise InputError(f"{name} must be finite numbers (z, y, x), got {value!r}")
    if dtype is int and any(not v.is_integer() for v in nums):
        raise InputError(f"{name} must be whole numbers of voxels (z, y, x), got {value!r}")
    vals = tuple(dtype(v) for v in (items if dtype is not int else [int(n) for n in nums]))
    if positive and any(v <= 0 for v in vals):
        raise InputError(f"{name} must be positive on every axis (z, y, x), got {value!r}")
    return vals


def parse_vec3(text: str, name: str = "value", *, positive: bool = False, dtype=int) -> tuple:
    """Parse ``"z,y,x"`` (or a single number) from the command line."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"{name} must look like z,y,x (numbers), got {text!r}") from None
    if dtype is int and any(v != int(v) for v in nums):
        raise InputError(f"{name} must be whole numbers z,y,x, got {text!r}")
    vals = [dtype(v) for v in nums]
    return as_vec3(vals[0] if len(vals) == 1 else vals, name, positive=positive, dtype=dtype)


@dataclass(frozen=True)
class Bbox:
    """Half-open box ``[start, stop)`` in voxels, axes (z, y, x)."""

    start: Vec3
    stop: Vec3

    def __post_init__(self):
        object.__setattr__(self, "start", as_vec3(self.start, "bbox start"))
        object.__setattr__(self, "stop", as_vec3(self.stop, "bbox stop"))

    # construction -------------------------------------------------------------------------
    @classmethod
    def from_shape(cls, shape: Sequence[int], offset: Sequence[int] = (0, 0, 0)) -> "Bbox":
        """Box of ``shape`` (z, y, x) starting at ``offset``."""
        shape = as_vec3(tuple(shape)[-3:], "shape")
        offset = as_vec3(offset, "offset")
        return cls(offset, tuple(o + s for o, s in zip(offset, shape)))

    @classmethod
    def from_slices(cls, slices: Sequence[slice]) -> "Bbox":
        return cls(tuple(s.start for s in slices), tuple(s.stop for s in slices))

    # facts --------------------------------------------------------------------------------
    @property
    def shape(self) -> Vec3:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if not self.empty else 0

    @property
    def empty(self) -> bool:
        return any(b <= a for a, b in zip(self.start, self.stop))

    def slices(self, origin: Sequence[int] = (0, 0, 0)) -> tuple[slice, slice, slice]:
        """Slices of this box inside an array whose first voxel is at ``origin``."""
        return tuple(slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, origin))

    # algebra ------------------------------------------------------------------------------
    def intersect(self, other: "Bbox") -> "Bbox":
        start = tuple(max(a, b) for a, b in zip(self.start, other.start))
        stop = tuple(max(s, min(a, b)) for s, a, b in zip(start, self.stop, other.stop))
        return Bbox(start, stop)

    def contains(self, other: "Bbox") -> bool:
        return all(a <= c and d <= b for a, b, c, d in zip(self.start, self.stop, other.start, other.stop))

    def grow(self, amount) -> "Bbox":
        """Grow by ``amount`` voxels (scalar or z, y, x) on every side."""
        g = as_vec3(amount, "halo")
        return Bbox(tuple(a - d for a, d in zip(self.start, g)), tuple(b + d for b, d in zip(self.stop, g)))

    def translate(self, delta) -> "Bbox":
        d = as_vec3(delta, "delta")
        return Bbox(tuple(a + x for a, x in zip(self.start, d)), tuple(b + x for b, x in zip(self.stop, d)))

    def __str__(self) -> str:
        return ",".join(f"{a}:{b}" for a, b in zip(self.start, self.stop))

    def to_nm(self, resolution_nm) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(start_nm, stop_nm) given a voxel size (z, y, x) in nm."""
        r = as_vec3(resolution_nm, "resolution", dtype=float)
        return tuple(a * x for a, x in zip(self.start, r)), tuple(b * x for b, x in zip(self.stop, r))


def parse_bbox(text: str) -> Bbox:
    """Parse ``"z0:z1,y0:y1,x0:x1"`` (voxels) as given on the command line."""
    try:
        parts = [p.split(":") for p in text.split(",")]
        if len(parts) != 3 or any(len(p) != 2 for p in parts):
            raise ValueError
        return Bbox(tuple(int(p[0]) for p in parts), tuple(int(p[1]) for p in parts))
    except ValueError:
        raise InputError(f"bbox must look like z0:z1,y0:y1,x0:x1 (voxels), got {text!r}") from None


def chunk_grid(bounds: Bbox, chunk_size, origin=None) -> Iterator[Bbox]:
    """Yield the chunks of a grid of ``chunk_size`` (z, y, x) aligned at ``origin`` that
    cover ``bounds``, each clipped to ``bounds``, in C order (z slowest)."""
    cs = as_vec3(chunk_size, "chunk size", positive=True)
    origin = bounds.start if origin is None else as_vec3(origin, "grid origin")
    if bounds.empty:
        raise BboxError(f"cannot chunk an empty bbox {bounds}")
    ranges = []
    for a, b, c, o in zip(bounds.start, bounds.stop, cs, origin):
        first = o + ((a - o) // c) * c
        ranges.append(range(first, b, c))
    for corner in product(*ranges):
        box = Bbox(corner, tuple(x + c for x, c in zip(corner, cs)))
        yield box.intersect(bounds)
