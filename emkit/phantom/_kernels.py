"""Numba kernels of the phantom: tube rasterisation, nearest-seed fill, fragment fill, stamps.

Positions are in nm; voxel ``(i, j, k)`` has its centre at ``(i*rz, j*ry, k*rx)`` nm.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["rasterize_segments", "nearest_seed_fill", "fill_from_neighbours", "stamp"]


@njit(cache=True, nogil=True)
def rasterize_segments(segs, host, res, owner, score, restrict):
    """Label voxels by the tube segment they lie deepest in (additively weighted Voronoi).

    Parameters
    ----------
    segs : float64 (S, 9): z0, y0, x0, z1, y1, x1 (nm), r0, r1 (nm radius at each end),
        margin (nm a segment may claim beyond its radius, for packing).
    host : int32 (S,): when >= 0, segment ``s`` may only claim voxels where ``restrict == host[s]``.
    res : float64 (3,): voxel size (z, y, x) nm.
    owner : int32 (z, y, x), updated in place: index of the winning segment, -1 none.
    score : float32 (z, y, x), updated in place: distance to the tube surface (nm), negative
        inside the tube; initialise with +inf.
    restrict : int32 (z, y, x) or (1, 1, 1) when unused.
    """
    nz, ny, nx = owner.shape
    for s in range(segs.shape[0]):
        z0 = segs[s, 0]; y0 = segs[s, 1]; x0 = segs[s, 2]
        dz = segs[s, 3] - z0; dy = segs[s, 4] - y0; dx = segs[s, 5] - x0
        r0 = segs[s, 6]; r1 = segs[s, 7]; margin = segs[s, 8]
        ext = max(r0, r1) + margin
        l2 = dz * dz + dy * dy + dx * dx
        h = host[s]
        lo_z = max(0, int(math.floor((min(z0, z0 + dz) - ext) / res[0])))
        hi_z = min(nz, int(math.ceil((max(z0, z0 + dz) + ext) / res[0])) + 1)
        lo_y = max(0, int(math.floor((min(y0, y0 + dy) - ext) / res[1])))
        hi_y = min(ny, int(math.ceil((max(y0, y0 + dy) + ext) / res[1])) + 1)
        lo_x = max(0, int(math.floor((min(x0, x0 + dx) - ext) / res[2])))
        hi_x = min(nx, int(math.ceil((max(x0, x0 + dx) + ext) / res[2])) + 1)
        for i in range(lo_z, hi_z):
            pz = i * res[0] - z0
            for j in range(lo_y, hi_y):
                py = j * res[1] - y0
                for k in range(lo_x, hi_x):
                    if h >= 0 and restrict[i, j, k] != h:
                        continue
                    px = k * res[2] - x0
                    t = 0.0
                    if l2 > 0:
                        t = (pz * dz + py * dy + px * dx) / l2
                        t = min(1.0, max(0.0, t))
                    qz = pz - t * dz; qy = py - t * dy; qx = px - t * dx
                    d = math.sqrt(qz * qz + qy * qy + qx * qx)
                    sc = d - (r0 + t * (r1 - r0))
                    if sc < margin and sc < score[i, j, k]:
                        score[i, j, k] = sc
                        owner[i, j, k] = s


@njit(cache=True, nogil=True)
def nearest_seed_fill(labels, todo_value, seeds, seed_labels, res):
    """Give every voxel equal to ``todo_value`` the label of its nearest seed (nm distance).

    ``seeds`` float64 (n, 3) positions in nm (z, y, x); ``seed_labels`` int32 (n,).
    """
    nz, ny, nx = labels.shape
    n = seeds.shape[0]
    for i in range(nz):
        pz = i * res[0]
        for j in range(ny):
            py = j * res[1]
            for k in range(nx):
                if labels[i, j, k] != todo_value:
                    continue
                px = k * res[2]
                best = 1e30
                bl = todo_value
                for s in range(n):
                    a = pz - seeds[s, 0]; b = py - seeds[s, 1]; c = px - seeds[s, 2]
                    d = a * a + b * b + c * c
                    if d < best:
                        best = d
                        bl = seed_labels[s]
                labels[i, j, k] = bl


@njit(cache=True, nogil=True)
def fill_from_neighbours(labels, todo):
    """Fill voxels where ``todo`` is True with a neighbouring label (in-plane first, then z),
    repeating until none is left or no progress is made. Modifies ``labels`` and ``todo``."""
    nz, ny, nx = labels.shape
    changed = True
    while changed:
        changed = False
        for i in range(nz):
            for j in range(ny):
                for k in range(nx):
                    if not todo[i, j, k]:
                        continue
                    lab = -1
                    if j > 0 and not todo[i, j - 1, k]:
                        lab = labels[i, j - 1, k]
                    elif j < ny - 1 and not todo[i, j + 1, k]:
                        lab = labels[i, j + 1, k]
                    elif k > 0 and not todo[i, j, k - 1]:
                        lab = labels[i, j, k - 1]
                    elif k < nx - 1 and not todo[i, j, k + 1]:
                        lab = labels[i, j, k + 1]
                    elif i > 0 and not todo[i - 1, j, k]:
                        lab = labels[i - 1, j, k]
                    elif i < nz - 1 and not todo[i + 1, j, k]:
                        lab = labels[i + 1, j, k]
                    if lab >= 0:
                        labels[i, j, k] = lab
                        todo[i, j, k] = False
                        changed = True


@njit(cache=True, nogil=True)
def stamp(target, points, kernel):
    """Add ``kernel`` (2D, odd size) centred at each integer point (z, y, x) of ``points``."""
    nz, ny, nx = target.shape
    h = kernel.shape[0] // 2
    w = kernel.shape[1] // 2
    for p in range(points.shape[0]):
        z = points[p, 0]; y = points[p, 1]; x = points[p, 2]
        if z < 0 or z >= nz:
            continue
        for a in range(kernel.shape[0]):
            yy = y + a - h
            if yy < 0 or yy >= ny:
                continue
            for b in range(kernel.shape[1]):
                xx = x + b - w
                if 0 <= xx < nx:
                    target[z, yy, xx] += kernel[a, b]
