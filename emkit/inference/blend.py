"""The global patch grid and the smooth blending weight of chunked inference.

Why the grid is *global*
------------------------
A net sees one patch at a time; overlapping patches are blended with a weight that is largest at
the patch centre and small (but > 0) at its faces, and the weighted sum is divided by the summed
weight. Chunked inference cuts the volume into chunks that are processed independently. If each
chunk laid out its own patches, a voxel near a chunk face would be blended from other patches
than in a single pass over the whole volume, and the output would show seams.

Here the patch positions depend only on the *volume* (its shape, the patch size and the overlap),
never on the chunk: :class:`PatchGrid` is the one list of patches of the whole volume. A chunk
computes exactly the patches of that grid that intersect it (reading their input, which reaches
up to ``patch_size - 1`` voxels beyond the chunk: the chunk's halo), adds their weighted outputs
in the grid's order, and keeps only its own voxels. Every voxel is therefore the same sum of the
same patch outputs, added in the same order, as in a single pass: chunked output equals the single
pass (bit for bit when the net gives the same output for a patch whatever else is in its batch).
The price is that patches straddling a chunk face are computed by both chunks; with chunks
several patches wide it stays small.

Grid along one axis of length ``L`` with patch ``P`` and overlap ``O`` (stride ``S = P - O``):
starts ``0, S, 2S, …`` while the patch fits, plus a last patch flush with the far face
(``L - P``) when the regular ones do not reach it. When ``L < P`` the patch shrinks to ``L``
rounded up to the net's input multiple, and the part beyond the volume is fed zeros.

All sizes are voxels, axes (z, y, x); positions are relative to the volume's first voxel.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..geometry import Bbox, as_vec3

__all__ = ["PatchGrid", "axis_starts", "blend_weight", "resolve_overlap"]


def axis_starts(length: int, patch: int, stride: int) -> np.ndarray:
    """Patch starts along one axis: ``0, stride, …`` plus one flush with the far face.

    Parameters
    ----------
    length : axis length of the volume (voxels).
    patch : patch size along the axis (voxels); patches may exceed ``length`` only when
        ``patch >= length`` (then the single start is 0).
    stride : distance between consecutive starts (voxels), ``1 <= stride <= patch``.
    """
    if length <= patch:
        return np.zeros(1, dtype=np.int64)
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return np.asarray(starts, dtype=np.int64)


def blend_weight(patch_size: Sequence[int]) -> np.ndarray:
    """Blending weight of a patch: a separable sine window, > 0 everywhere in the patch.

    ``w(z, y, x) = s_z(z) * s_y(y) * s_x(x)`` with ``s(i) = sin(pi * (i + 0.5) / P)`` on an axis
    of ``P`` voxels: 1 near the centre, about ``pi / (2 P)`` at the faces. Strictly positive, so
    dividing the weighted sum by the summed weight is exact wherever one patch covers a voxel.

    Returns
    -------
    float32 array of shape ``patch_size`` (z, y, x).
    """
    p = as_vec3(patch_size, "patch size", positive=True)
    axes = [np.sin(np.pi * (np.arange(n, dtype=np.float64) + 0.5) / n) for n in p]
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return w.astype(np.float32)


def resolve_overlap(overlap, patch_size: Sequence[int]) -> tuple[int, int, int]:
    """Overlap of neighbouring patches in voxels (z, y, x).

    ``overlap`` is a fraction of the patch (a float in [0, 1), scalar or per axis) or voxels
    (ints, scalar or per axis); it must leave a stride of at least one voxel.
    """
    p = as_vec3(patch_size, "patch size", positive=True)
    vals = as_vec3(overlap, "overlap", dtype=float)
    if all(0 <= v < 1 for v in vals) and not all(float(v).is_integer() for v in vals):
        out = tuple(int(round(v * n)) for v, n in zip(vals, p))
    elif all(float(v).is_integer() for v in vals):
        out = tuple(int(v) for v in vals)
    else:
        raise InputError(f"overlap must be fractions of the patch in [0, 1) or whole voxels (z, y, x), got {overlap!r}")
    bad = [f"{ax}: {o} (patch {n})" for ax, o, n in zip("zyx", out, p) if not 0 <= o < n]
    if bad:
        raise InputError(f"overlap must be >= 0 and smaller than the patch on every axis; got {', '.join(bad)}")
    return out


@dataclass(frozen=True)
class PatchGrid:
    """The patches covering a volume, independent of how the volume is chunked.

    Parameters
    ----------
    shape : volume size (z, y, x) in voxels.
    patch_size : nominal patch (z, y, x); on an axis shorter than it, the patch shrinks to the
        axis length rounded up to ``multiple`` (see :attr:`patch`).
    overlap : overlap of neighbouring patches (z, y, x) in voxels, ``0 <= overlap < patch``.
    multiple : the net's input multiple (z, y, x); the patch must be a multiple of it.
    """

    shape: tuple[int, int, int]
    patch_size: tuple[int, int, int]
    overlap: tuple[int, int, int] = (0, 0, 0)
    multiple: tuple[int, int, int] = (1, 1, 1)

    def __post_init__(self):
        shape = as_vec3(self.shape, "volume shape", positive=True)
        patch = as_vec3(self.patch_size, "patch size", positive=True)
        mult = as_vec3(self.multiple, "input multiple", positive=True)
        bad = [f"{ax}: {p} is not a multiple of {m}" for ax, p, m in zip("zyx", patch, mult) if p % m]
        if bad:
            raise InputError(f"patch size {patch} (z, y, x) must be a multiple of the net's input multiple {mult} "
                             f"({'; '.join(bad)})")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "patch_size", patch)
        object.__setattr__(self, "multiple", mult)
        object.__setattr__(self, "overlap", resolve_overlap(self.overlap, patch))

    @property
    def patch(self) -> tuple[int, int, int]:
        """Actual patch (z, y, x): ``patch_size``, or the axis length rounded up to ``multiple``
        where the volume is shorter than the patch."""
        return tuple(p if n >= p else -(-n // m) * m for n, p, m in zip(self.shape, self.patch_size, self.multiple))

    @property
    def stride(self) -> tuple[int, int, int]:
        """Distance between patch starts (z, y, x): ``patch - overlap`` (at least 1)."""
        return tuple(max(1, p - o) for p, o in zip(self.patch, self.overlap))

    def starts(self) -> list[np.ndarray]:
        """Patch starts along z, y and x (voxels from the volume's first voxel)."""
        return [axis_starts(n, p, s) for n, p, s in zip(self.shape, self.patch, self.stride)]

    def __len__(self) -> int:
        return int(np.prod([len(s) for s in self.starts()]))

    def weight(self) -> np.ndarray:
        """The blending weight of one patch, float32 of shape :attr:`patch`."""
        return blend_weight(self.patch)

    def patches(self, box: Bbox | None = None) -> list[Bbox]:
        """Patches (boxes of shape :attr:`patch`) that intersect ``box`` (default: all), in
        C order (z slowest) — the order in which their outputs are added. Boxes may reach
        beyond the volume only on axes shorter than the patch."""
        box = Bbox.from_shape(self.shape) if box is None else box
        per_axis = []
        for st, p, a, b in zip(self.starts(), self.patch, box.start, box.stop):
            per_axis.append(st[(st < b) & (st + p > a)])
        return [Bbox(tuple(int(c) for c in corner), tuple(int(c) + p for c, p in zip(corner, self.patch)))
                for corner in product(*per_axis)]

    def input_box(self, box: Bbox) -> Bbox:
        """Box of input voxels (clipped to the volume) that the patches intersecting ``box`` read."""
        patches = self.patches(box)
        start = np.min([p.start for p in patches], axis=0)
        stop = np.max([p.stop for p in patches], axis=0)
        return Bbox(tuple(start), tuple(stop)).intersect(Bbox.from_shape(self.shape))

    @property
    def halo(self) -> tuple[int, int, int]:
        """Largest distance (z, y, x) the input of a chunk's patches reaches beyond the chunk."""
        return tuple(p - 1 for p in self.patch)
