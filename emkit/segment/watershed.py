"""Affinity-graph watershed with size-dependent single linkage (Zlateski & Seung 2015).

The voxels are the nodes of a graph whose edges are the 6-neighbour pairs, weighted by the
affinity (channel d of voxel v links v and v − e_d; see :mod:`emkit.affinity`). The algorithm,
exactly as implemented here (and in the slow reference of ``tests/test_watershed.py``):

1. **Edges.** An edge with affinity < ``low`` does not exist; affinities above ``high`` are
   clamped to ``high``. Edges leaving the volume or the ``mask`` do not exist. A voxel with no
   edge left is *background* (label 0): it is part of no basin (documented choice; zwatershed
   does the same).
2. **Steepest ascent.** Each voxel points along every edge whose clamped affinity equals its
   largest one. An edge pointed at from both ends is a *plateau* edge; all edges >= ``high``
   are plateau edges, so voxels joined by them always share a basin.
3. **Plateau division.** Voxels with an outgoing non-plateau edge are *exits* and keep only one
   such edge: the one to the neighbour whose own steepest (clamped) affinity is largest, i.e. the
   steepest two-step ascent (ties: direction order −z, −y, −x, +z, +y, +x). On a boundary map
   turned into affinities (:func:`emkit.affinity.boundary_to_affinities`) every edge of a voxel
   with boundary probability 1 is 0, so its first step carries no information; the second step
   sends it to the side that is less boundary instead of always to the −z side (measured on the
   gala FIB-SEM crop: the best agglomeration of the supervoxels reaches adapted Rand 0.0134
   instead of 0.0163; ``benchmarks/segment.py``). A breadth-first search from all
   exits (raster order, FIFO) through plateau edges points each plateau voxel at the voxel it was
   reached from. Plateaus without exits are regional maxima: each connected plateau becomes the
   seed of one basin (seeds are numbered in raster order).
4. **Basins.** Every other voxel follows its single pointer (the affinity never decreases and
   strictly increases on leaving a plateau, so there are no cycles) to a seed.
5. **Size-dependent single linkage.** Edges between basins with affinity >= ``merge_affinity``
   are visited in order of decreasing affinity (ties: channel, then raster order of the voxel);
   the two basins merge when either has fewer than ``size_threshold`` voxels. Visiting every
   voxel edge is equivalent to visiting the region graph's maximum edges, since sizes only grow.
6. **Dust.** Supervoxels still smaller than ``dust_size`` voxels are merged the same way along
   any edge >= ``low`` (highest first): a fragment joins the neighbour it is most strongly
   connected to, however weakly. With ``drop_dust`` those still smaller afterwards (no edge at
   all) become background 0; otherwise they are kept.
7. Supervoxels are numbered 1..K in raster order of their first voxel (uint64).

All loops are numba kernels, linear in the voxels apart from one sort of the inter-basin edges.
The result is deterministic.
"""
from __future__ import annotations

import numba
import numpy as np

from emkit.errors import InputError
from emkit.segment.params import WatershedParams
from emkit.segment._unionfind import find as _find

__all__ = ["watershed", "check_affinities"]


def check_affinities(affinities, name="affinities") -> np.ndarray:
    """Validate a (3, z, y, x) affinity array and return it as C-contiguous float32."""
    a = np.asarray(affinities)
    if a.ndim != 4 or a.shape[0] != 3:
        raise InputError(f"{name} must have shape (3, z, y, x) (channels z, y, x), got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{name} must be floating point in [0, 1], got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


@numba.njit(cache=True, nogil=True, inline="always")
def _clamp(v, low, high):
    if v < low:
        return -1.0
    return high if v > high else v


@numba.njit(cache=True, nogil=True)
def _steepest(aff, mask, use_mask, low, high):
    """Bit d (0..5 = −z, −y, −x, +z, +y, +x) of out[v] set when edge d of v exists and is (one
    of) its steepest after clamping; 0 for a voxel without edges. Also returns ``top[v]``, the
    steepest clamped affinity of v (−1 without edges)."""
    _, Z, Y, X = aff.shape
    out = np.zeros(Z * Y * X, np.uint8)
    top = np.full(Z * Y * X, -1.0, np.float32)
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                if use_mask and not mask[z, y, x]:
                    continue
                v0 = _clamp(aff[0, z, y, x], low, high) if z > 0 else -1.0
                v1 = _clamp(aff[1, z, y, x], low, high) if y > 0 else -1.0
                v2 = _clamp(aff[2, z, y, x], low, high) if x > 0 else -1.0
                v3 = _clamp(aff[0, z + 1, y, x], low, high) if z + 1 < Z else -1.0
                v4 = _clamp(aff[1, z, y + 1, x], low, high) if y + 1 < Y else -1.0
                v5 = _clamp(aff[2, z, y, x + 1], low, high) if x + 1 < X else -1.0
                if use_mask:
                    if v0 >= 0 and not mask[z - 1, y, x]:
                        v0 = -1.0
                    if v1 >= 0 and not mask[z, y - 1, x]:
                        v1 = -1.0
                    if v2 >= 0 and not mask[z, y, x - 1]:
                        v2 = -1.0
                    if v3 >= 0 and not mask[z + 1, y, x]:
                        v3 = -1.0
                    if v4 >= 0 and not mask[z, y + 1, x]:
                        v4 = -1.0
                    if v5 >= 0 and not mask[z, y, x + 1]:
                        v5 = -1.0
                m = max(max(max(v0, v1), max(v2, v3)), max(v4, v5))
                if m < 0.0:
                    continue
                top[(z * Y + y) * X + x] = m
                out[(z * Y + y) * X + x] = ((v0 == m) | ((v1 == m) << 1) | ((v2 == m) << 2)
                                            | ((v3 == m) << 3) | ((v4 == m) << 4) | ((v5 == m) << 5))
    return out, top


@numba.njit(cache=True, nogil=True, inline="always")
def _exit_direction(bits, top, v, off, opp):
    """The outgoing non-plateau steepest edge of voxel v whose far end has the largest steepest
    affinity (ties: direction order); -1 when v is not an exit."""
    b = bits[v]
    best = -1
    bt = np.float32(-2.0)
    for d in range(6):
        if b & (1 << d):
            u = v + off[d]
            if not (bits[u] & opp[d]) and top[u] > bt:
                bt = top[u]
                best = d
    return best


@numba.njit(cache=True, nogil=True)
def _basins(bits, top, Z, Y, X):
    """Plateau division and basin labelling; returns int64 basin ids (0 background), count."""
    N = Z * Y * X
    off = np.array([-Y * X, -X, -1, Y * X, X, 1], np.int64)
    opp = np.array([8, 16, 32, 1, 2, 4], np.uint8)  # bit of the opposite direction
    ptr = np.full(N, -1, np.int8)
    queue = np.empty(N, np.int64)
    qh = 0
    qt = 0
    # exits: an outgoing edge that is not a plateau edge
    for v in range(N):
        if bits[v] == 0:
            continue
        ptr[v] = _exit_direction(bits, top, v, off, opp)
        if ptr[v] >= 0:
            queue[qt] = v
            qt += 1
    # BFS from exits through plateau edges
    while qh < qt:
        p = queue[qh]
        qh += 1
        b = bits[p]
        for d in range(6):
            if b & (1 << d):
                q = p + off[d]
                if (bits[q] & opp[d]) and ptr[q] < 0:
                    ptr[q] = (d + 3) % 6
                    queue[qt] = q
                    qt += 1
    # seeds: plateaus without exit, labelled by flood fill over plateau edges
    label = np.zeros(N, np.int64)
    n = 0
    for v in range(N):
        if bits[v] == 0 or ptr[v] >= 0 or label[v] != 0:
            continue
        n += 1
        label[v] = n
        qh = 0
        qt = 1
        queue[0] = v
        while qh < qt:
            p = queue[qh]
            qh += 1
            b = bits[p]
            for d in range(6):
                if b & (1 << d):
                    q = p + off[d]
                    if (bits[q] & opp[d]) and label[q] == 0:
                        label[q] = n
                        queue[qt] = q
                        qt += 1
    # everybody else follows its pointer to a labelled voxel
    for v in range(N):
        if bits[v] == 0 or label[v] != 0:
            continue
        k = 0
        p = v
        while label[p] == 0:
            queue[k] = p
            k += 1
            p = p + off[ptr[p]]
        lab = label[p]
        for i in range(k):
            label[queue[i]] = lab
    return label, n


@numba.njit(cache=True, nogil=True)
def _basin_edges(label, aff, min_aff, Z, Y, X, roots, root_size, small):
    """Voxel edges between different regions (``roots[label]``) with affinity >= min_aff where
    one region has fewer than ``small`` voxels (small <= 0: all): (a, b, affinity, order key)."""
    n = 0
    for c in range(3):
        for z in range(Z):
            for y in range(Y):
                for x in range(X):
                    a = aff[c, z, y, x]
                    if a < min_aff:
                        continue
                    v = (z * Y + y) * X + x
                    if c == 0:
                        if z == 0:
                            continue
                        u = v - Y * X
                    elif c == 1:
                        if y == 0:
                            continue
                        u = v - X
                    else:
                        if x == 0:
                            continue
                        u = v - 1
                    if label[v] == 0 or label[u] == 0:
                        continue
                    ra = roots[label[v]]
                    rb = roots[label[u]]
                    if ra != rb and (small <= 0 or root_size[ra] < small or root_size[rb] < small):
                        n += 1
    ea = np.empty(n, np.int64)
    eb = np.empty(n, np.int64)
    ew = np.empty(n, np.float32)
    vox = np.empty(n, np.int64)
    i = 0
    for c in range(3):
        for z in range(Z):
            for y in range(Y):
                for x in range(X):
                    a = aff[c, z, y, x]
                    if a < min_aff:
                        continue
                    v = (z * Y + y) * X + x
                    if c == 0:
                        if z == 0:
                            continue
                        u = v - Y * X
                    elif c == 1:
                        if y == 0:
                            continue
                        u = v - X
                    else:
                        if x == 0:
                            continue
                        u = v - 1
                    if label[v] == 0 or label[u] == 0:
                        continue
                    ra = roots[label[v]]
                    rb = roots[label[u]]
                    if ra != rb and (small <= 0 or root_size[ra] < small or root_size[rb] < small):
                        ea[i] = ra
                        eb[i] = rb
                        ew[i] = a
                        vox[i] = v * 3 + c
                        i += 1
    return ea, eb, ew, vox


@numba.njit(cache=True, nogil=True)
def _size_merge(parent, sizes, ea, eb, order, size_threshold):
    """Single linkage along ``order`` while one side is smaller than size_threshold (in place)."""
    n = parent.size - 1
    size = sizes.copy()
    for k in range(order.size):
        i = order[k]
        ra = _find(parent, ea[i])
        rb = _find(parent, eb[i])
        if ra == rb:
            continue
        if size[ra] < size_threshold or size[rb] < size_threshold:
            if ra < rb:
                ra, rb = rb, ra
            parent[ra] = rb
            size[rb] += size[ra]
    roots = np.empty(n + 1, np.int64)
    for a in range(n + 1):
        roots[a] = _find(parent, a)
    return roots, size


@numba.njit(cache=True, nogil=True)
def _relabel(label, roots, root_size, dust_size):
    N = label.size
    new = np.zeros(roots.size, np.uint64)
    out = np.zeros(N, np.uint64)
    k = 0
    for v in range(N):
        b = label[v]
        if b == 0:
            continue
        r = roots[b]
        if root_size[r] < dust_size:
            continue
        if new[r] == 0:
            k += 1
            new[r] = k
        out[v] = new[r]
    return out, k


def watershed(affinities, params: WatershedParams | None = None, mask=None) -> np.ndarray:
    """Supervoxels of an affinity map: watershed basins merged by size-dependent single linkage.

    Parameters
    ----------
    affinities : (3, z, y, x) float array in [0, 1]
        Nearest-neighbour affinities, channels (z, y, x); channel d of voxel v links v and v − e_d.
    params : WatershedParams, optional
        Thresholds (defaults: :class:`~emkit.segment.params.WatershedParams`).
    mask : (z, y, x) bool array, optional
        Voxels outside the mask are background and carry no edges.

    Returns
    -------
    (z, y, x) uint64
        Supervoxel ids 1..K in raster order of their first voxel; 0 is background (voxels with
        no edge >= ``low``, masked voxels, dust).
    """
    params = params or WatershedParams()
    if not isinstance(params, WatershedParams):
        raise InputError(f"params must be a WatershedParams, got {type(params).__name__}")
    aff = check_affinities(affinities)
    _, Z, Y, X = aff.shape
    use_mask = mask is not None
    if use_mask:
        mask = np.ascontiguousarray(mask, dtype=bool)
        if mask.shape != (Z, Y, X):
            raise InputError(f"mask must have shape {(Z, Y, X)} (z, y, x), got {mask.shape}")
    else:
        mask = np.ones((1, 1, 1), bool)
    bits, top = _steepest(aff, mask, use_mask, float(params.low), float(params.high))
    label, n = _basins(bits, top, Z, Y, X)
    sizes = np.bincount(label, minlength=n + 1).astype(np.int64)
    sizes[0] = 0
    roots, root_size = np.arange(n + 1), sizes
    passes = ((params.merge_affinity, params.size_threshold), (params.low, params.dust_size))
    for min_aff, size_threshold in passes:
        if size_threshold <= 0 or n <= 1:
            continue
        ea, eb, ew, vox = _basin_edges(label, aff, max(float(min_aff), float(params.low)), Z, Y, X,
                                       roots, root_size, int(size_threshold))
        order = np.argsort(-ew, kind="stable")
        roots, root_size = _size_merge(roots.copy(), root_size, ea, eb, order, int(size_threshold))
    drop = int(params.dust_size) if params.drop_dust else 0
    out, _ = _relabel(label, roots, root_size, drop)
    return out.reshape(Z, Y, X)
