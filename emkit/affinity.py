"""Affinities from labels: exact targets and realistic noisy stand-ins for a boundary net.

Convention (design.md, said once here and tested in ``tests/test_affinity.py``): affinities are
float32 arrays of shape ``(C, z, y, x)`` with values in [0, 1]; channel ``c`` belongs to an offset
``(dz, dy, dx)`` (nearest-neighbour channels are ``(1,0,0), (0,1,0), (0,0,1)``: z, y, x) and the
affinity of voxel ``v`` in that channel links ``v`` and ``v - offset``. Where ``v - offset`` lies
outside the volume the affinity is 0 (so ``aff[0, 0]``, ``aff[1, :, 0]`` and ``aff[2, :, :, 0]`` are
always 0).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from emkit.errors import InputError

__all__ = [
    "NN_OFFSETS",
    "NoisyAffinityParams",
    "affinities_from_labels",
    "noisy_affinities",
    "boundary_mask",
    "boundary_to_affinities",
]

#: nearest-neighbour offsets in channel order (z, y, x)
NN_OFFSETS = ((1, 0, 0), (0, 1, 0), (0, 0, 1))


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"labels must be a (z, y, x) array, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise InputError(f"labels must have an integer dtype, got {labels.dtype}")
    return labels


def _pair_slices(offset, shape):
    """Slices (dst, src) such that ``a[dst]`` is v and ``a[src]`` is v - offset, both in bounds."""
    dst, src = [], []
    for o, n in zip(offset, shape):
        if o >= 0:
            dst.append(slice(o, n))
            src.append(slice(0, max(n - o, 0)))
        else:
            dst.append(slice(0, max(n + o, 0)))
            src.append(slice(-o, n))
    return tuple(dst), tuple(src)


def affinities_from_labels(labels, offsets=NN_OFFSETS) -> np.ndarray:
    """Exact affinities of a label volume.

    Parameters
    ----------
    labels : (z, y, x) integer array
        Object labels, 0 is background.
    offsets : sequence of (dz, dy, dx)
        One offset per output channel (voxels, zyx). Long-range offsets such as ``(0, 9, 0)``
        or negative ones are allowed.

    Returns
    -------
    (len(offsets), z, y, x) float32
        1 where voxel v and v - offset carry the same non-zero label; 0 elsewhere, including
        where v - offset lies outside the volume.
    """
    labels = _check_labels(labels)
    offs = [tuple(int(o) for o in off) for off in offsets]
    if not offs or any(len(o) != 3 for o in offs) or any(o == (0, 0, 0) for o in offs):
        raise InputError(f"offsets must be non-zero (dz, dy, dx) triples, got {offsets!r}")
    out = np.zeros((len(offs),) + labels.shape, dtype=np.float32)
    for c, off in enumerate(offs):
        dst, src = _pair_slices(off, labels.shape)
        a = labels[dst]
        b = labels[src]
        out[c][dst] = (a == b) & (a != 0)
    return out


def boundary_to_affinities(boundary, *, low_side=None) -> np.ndarray:
    """Nearest-neighbour affinities from a boundary-probability map.

    What most pixel classifiers (ilastik, a membrane U-Net, the gala/NeuroProof classifiers) give
    is one probability per voxel that it lies on a cell boundary. The affinity of the edge between
    voxel ``v`` and ``v - e_d`` is the probability that neither end is boundary, taken as
    ``1 - max(b[v], b[v - e_d])``.

    Parameters
    ----------
    boundary : (z, y, x) float array in [0, 1], 1 = boundary. Integer maps (uint8 0..255) are
        scaled by 1/255.
    low_side : optional tuple of three (y, x)-, (z, x)-, (z, y)-shaped planes (or None each): the
        boundary values just below the array's first plane along z, y and x (the chunked form
        passes them so a chunk's affinities equal the whole volume's). Where a plane is not given,
        edges leaving the array are 0 (the module convention).

    Returns
    -------
    (3, z, y, x) float32 affinities, channels (z, y, x).
    """
    b = np.asarray(boundary)
    if b.ndim != 3:
        raise InputError(f"boundary probability must be a (z, y, x) array, got shape {b.shape}")
    if np.issubdtype(b.dtype, np.integer):
        if b.size and (b.min() < 0 or b.max() > 255):
            raise InputError(f"an integer boundary map must hold 0..255, got values in [{b.min()}, {b.max()}]")
        b = b.astype(np.float32) / np.float32(255)
    elif np.issubdtype(b.dtype, np.floating):
        b = b.astype(np.float32, copy=False)
        if b.size and (not np.isfinite(b).all() or b.min() < 0 or b.max() > 1):
            raise InputError("boundary probability must be finite and in [0, 1] (1 = boundary), got values in "
                             f"[{np.nanmin(b):g}, {np.nanmax(b):g}]")
    else:
        raise InputError(f"boundary probability must be float in [0, 1] or uint8, got dtype {b.dtype}")
    out = np.zeros((3,) + b.shape, dtype=np.float32)
    for d in range(3):
        dst, src = _pair_slices(NN_OFFSETS[d], b.shape)
        out[d][dst] = 1.0 - np.maximum(b[dst], b[src])
        if low_side is not None and low_side[d] is not None and b.shape[d] > 0:
            first = [slice(None)] * 3
            first[d] = 0
            plane = np.asarray(low_side[d], dtype=np.float32)
            if np.issubdtype(np.asarray(low_side[d]).dtype, np.integer):
                plane = plane / np.float32(255)
            out[d][tuple(first)] = 1.0 - np.maximum(b[tuple(first)], plane)
    return out


def boundary_mask(labels) -> np.ndarray:
    """Voxels (z, y, x) that have a 6-neighbour with a different label (bool)."""
    labels = _check_labels(labels)
    m = np.zeros(labels.shape, dtype=bool)
    for off in NN_OFFSETS:
        dst, src = _pair_slices(off, labels.shape)
        d = labels[dst] != labels[src]
        m[dst] |= d
        m[src] |= d
    return m


@dataclass(frozen=True)
class NoisyAffinityParams:
    """How ground-truth affinities are degraded to look like a boundary net's output.

    The ground truth's boundary voxels (those with a 6-neighbour of another label, so a membrane
    two voxels thick) are blurred and pushed through a logistic contrast curve into a membrane
    probability ``p`` (a band a few voxels wide, as nets predict for membranes); the affinity of
    the edge (v, u) is ``1 - (p[v] + p[u]) / 2``. Spatially correlated noise is added; then *leaks*
    raise the affinity on boundary patches (missing membrane, the typical cause of merge errors)
    and *false boundaries* lower it in patches inside objects (mitochondria, dark organelles: split
    errors). Background voxels (label 0) count as membrane.
    """

    blur_sigma: tuple[float, float, float] = (0.5, 1.0, 1.0)
    """Gaussian blur of the boundary voxels, voxels (z, y, x)."""
    contrast_center: float = 0.35
    """Blurred boundary value mapped to a membrane probability of 0.5 by the contrast curve."""
    contrast_width: float = 0.08
    """Width of the logistic contrast curve (smaller: sharper boundaries)."""
    noise: float = 0.15
    """Standard deviation of the additive noise (affinity units)."""
    noise_sigma: tuple[float, float, float] = (0.5, 1.0, 1.0)
    """Spatial correlation of the noise: Gaussian sigma, voxels (z, y, x); 0 for white noise."""
    erase_fraction: float = 0.02
    """Fraction of boundary voxels covered by leak patches."""
    erase_radius: tuple[float, float, float] = (1.0, 3.0, 3.0)
    """Radius of leak and false-boundary patches, voxels (z, y, x)."""
    erase_value: tuple[float, float] = (0.5, 0.95)
    """Range of the affinity a leak patch raises its boundary to (drawn per patch)."""
    false_boundary_fraction: float = 0.005
    """Fraction of object voxels covered by false-boundary patches."""
    false_boundary_value: tuple[float, float] = (0.0, 0.3)
    """Range of the affinity a false-boundary patch lowers to (drawn per patch)."""

    def __post_init__(self):
        for name in ("noise", "erase_fraction", "false_boundary_fraction", "contrast_width"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise InputError(f"NoisyAffinityParams.{name} must be >= 0, got {v!r}")
        if self.contrast_width == 0:
            raise InputError("NoisyAffinityParams.contrast_width must be > 0, got 0")
        for name in ("erase_fraction", "false_boundary_fraction"):
            if getattr(self, name) > 1:
                raise InputError(f"NoisyAffinityParams.{name} must be <= 1, got {getattr(self, name)!r}")
        for name in ("blur_sigma", "noise_sigma", "erase_radius"):
            v = getattr(self, name)
            if len(v) != 3 or any((not np.isfinite(s)) or s < 0 for s in v):
                raise InputError(f"NoisyAffinityParams.{name} must be three values >= 0 (z, y, x), got {v!r}")
        for name in ("erase_value", "false_boundary_value"):
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi <= 1):
                raise InputError(f"NoisyAffinityParams.{name} must be a range within [0, 1], got {(lo, hi)!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _patches(candidates: np.ndarray, fraction: float, radius, values, rng) -> tuple[np.ndarray, np.ndarray]:
    """Random ball patches centred on candidate voxels; returns (mask, per-voxel patch value)."""
    from scipy import ndimage

    shape = candidates.shape
    idx = np.flatnonzero(candidates)
    r = np.maximum(np.asarray(radius, dtype=float), 1e-6)
    ball_vol = 4.0 / 3.0 * np.pi * float(np.prod(np.maximum(r, 0.5)))
    n = int(round(fraction * idx.size / ball_vol))
    if n == 0 or idx.size == 0:
        return np.zeros(shape, bool), np.zeros(shape, np.float32)
    centres = rng.choice(idx, size=min(n, idx.size), replace=False)
    seeds = np.ones(shape, dtype=bool)
    seeds.flat[centres] = False
    # distance in units of the patch radius (anisotropic balls)
    dist, inds = ndimage.distance_transform_edt(seeds, sampling=1.0 / r, return_indices=True)
    mask = dist <= 1.0
    vals = rng.uniform(values[0], values[1], size=centres.size).astype(np.float32)
    lut = np.zeros(int(np.prod(shape)), dtype=np.float32)
    lut[centres] = vals
    nearest = np.ravel_multi_index(tuple(inds), shape)
    return mask, lut[nearest]


def noisy_affinities(labels, rng=None, params: NoisyAffinityParams | None = None, **overrides) -> np.ndarray:
    """Realistic noisy nearest-neighbour affinities from a ground-truth label volume.

    Parameters
    ----------
    labels : (z, y, x) integer array
        Ground-truth objects, 0 is background (background voxels get low affinities).
    rng : numpy Generator, int seed or None
        Source of randomness; the same seed gives the same affinities.
    params : NoisyAffinityParams, optional
        Degradation parameters; keyword ``overrides`` replace single fields
        (``noisy_affinities(gt, 0, noise=0.2)``).

    Returns
    -------
    (3, z, y, x) float32 in [0, 1]
        Channels z, y, x (see the module docstring); edges leaving the volume are 0.
    """
    from dataclasses import replace

    from scipy import ndimage

    labels = _check_labels(labels)
    params = params or NoisyAffinityParams()
    if overrides:
        try:
            params = replace(params, **overrides)
        except TypeError as e:
            raise InputError(f"unknown NoisyAffinityParams field in {sorted(overrides)}: {e}") from None
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    bnd = boundary_mask(labels)
    memb = ndimage.gaussian_filter((bnd | (labels == 0)).astype(np.float32), params.blur_sigma, mode="nearest")
    p = 1.0 / (1.0 + np.exp(-(memb - params.contrast_center) / params.contrast_width))
    out = np.empty((3,) + labels.shape, dtype=np.float32)
    for c, off in enumerate(NN_OFFSETS):
        dst, src = _pair_slices(off, labels.shape)
        a = np.zeros(labels.shape, np.float32)
        a[dst] = 1.0 - 0.5 * (p[dst] + p[src])
        if params.noise > 0:
            z = rng.standard_normal(labels.shape).astype(np.float32)
            if any(s > 0 for s in params.noise_sigma):
                z = ndimage.gaussian_filter(z, params.noise_sigma, mode="nearest")
                z /= max(float(z.std()), 1e-12)
            a += params.noise * z
        out[c] = a

    if params.erase_fraction > 0:
        m, v = _patches(bnd, params.erase_fraction, params.erase_radius, params.erase_value, rng)
        for c in range(3):
            out[c] = np.where(m, np.maximum(out[c], v), out[c])
    if params.false_boundary_fraction > 0:
        m, v = _patches(~bnd & (labels != 0), params.false_boundary_fraction, params.erase_radius,
                        params.false_boundary_value, rng)
        for c in range(3):
            out[c] = np.where(m, np.minimum(out[c], v), out[c])

    np.clip(out, 0.0, 1.0, out=out)
    # edges leaving the volume do not exist
    out[0, 0] = 0
    out[1, :, 0] = 0
    out[2, :, :, 0] = 0
    return out.astype(np.float32, copy=False)
