"""Geometry of the phantom: neurites as tubes along random smooth 3D paths.

Everything here is in nm, axes (z, y, x). The output is a table of tube segments (see
:class:`Tubes`) that :mod:`emkit.phantom.raster` turns into voxels. Paths steer around what is
already placed (a coarse clearance grid), so neurites pack without cutting through each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .params import PhantomParams

__all__ = ["Tubes", "PhantomObject", "build_tissue", "PART", "SEMANTIC"]

# part codes: what a segment (and so a voxel) belongs to
PART = {"shaft": 0, "neck": 1, "head": 2, "bouton": 3, "soma": 4, "vessel": 5, "myelin_axon": 6, "glia": 7}
# semantic classes (design.md): 0 background, 1 soma+nucleus, 2 axon, 3 dendrite, 4 glia, 5 vessel
SEMANTIC = {"background": 0, "soma": 1, "axon": 2, "dendrite": 3, "glia": 4, "vessel": 5}


@dataclass
class PhantomObject:
    """One cell (or vessel) of the phantom, before voxel labelling.

    ``kind`` is axon, myelinated, dendrite, soma, vessel or glia; ``paths`` the centre lines (nm)
    with their radii, used to place organelles; ``shell_nm`` the thickness of the myelin sheath
    or vessel wall (0 if none); ``nucleus`` (centre nm, radius nm) for a soma.
    """

    kind: str
    paths: list = field(default_factory=list)  # list of (points (n,3) nm, radii (n,) nm)
    shell_nm: float = 0.0
    nucleus: tuple | None = None


class Tubes:
    """Growing table of tube segments: ``segs`` (n, 9) = z0,y0,x0,z1,y1,x1,r0,r1,margin (nm),
    with the object index, part code and semantic class of each segment."""

    def __init__(self):
        self._segs, self._obj, self._part, self._sem = [], [], [], []

    def add(self, p0, p1, r0, r1, margin, obj, part, sem):
        p0 = np.atleast_2d(np.asarray(p0, float)); p1 = np.atleast_2d(np.asarray(p1, float))
        n = len(p0)
        r0 = np.broadcast_to(np.asarray(r0, float), (n,)); r1 = np.broadcast_to(np.asarray(r1, float), (n,))
        self._segs.append(np.column_stack([p0, p1, r0, r1, np.full(n, float(margin))]))
        self._obj.append(np.full(n, obj, np.int32))
        part = np.broadcast_to(np.asarray(part, np.int8), (n,))
        self._part.append(part.astype(np.int8))
        self._sem.append(np.full(n, sem, np.uint8))

    def add_path(self, pts, radii, margin, obj, part, sem):
        part = np.asarray(part)
        pp = part[:-1] if part.ndim else part
        self.add(pts[:-1], pts[1:], radii[:-1], radii[1:], margin, obj, pp, sem)

    def arrays(self):
        if not self._segs:
            return (np.zeros((0, 9)), np.zeros(0, np.int32), np.zeros(0, np.int8), np.zeros(0, np.uint8))
        return (np.concatenate(self._segs), np.concatenate(self._obj), np.concatenate(self._part),
                np.concatenate(self._sem))


class _Clearance:
    """Coarse grid (cell ``cell_nm``) of the distance to the nearest placed tube surface."""

    def __init__(self, extent_nm, cell_nm=50.0, reach_nm=450.0):
        from ._kernels import rasterize_segments

        self._kernel = rasterize_segments
        self.cell = float(cell_nm)
        self.reach = reach_nm
        self.shape = tuple(int(np.ceil(e / cell_nm)) + 1 for e in extent_nm)
        self.score = np.full(self.shape, np.inf, np.float32)
        self.owner = np.full(self.shape, -1, np.int32)
        self.res = np.array([cell_nm] * 3)
        self._restrict = np.zeros((1, 1, 1), np.int32)

    def add(self, segs):
        s = np.array(segs, float)
        s[:, 8] = self.reach
        self._kernel(s, np.full(len(s), -1, np.int32), self.res, self.owner, self.score, self._restrict)

    def at(self, pts):
        idx = np.rint(pts / self.cell).astype(int)
        inside = np.all((idx >= 0) & (idx < np.array(self.shape)), axis=1)
        out = np.full(len(pts), self.reach, np.float32)
        i = idx[inside]
        out[inside] = np.minimum(self.score[i[:, 0], i[:, 1], i[:, 2]], self.reach)
        return out


def _unit(v):
    v = np.asarray(v, float)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _random_direction(rng, z_bias):
    return _unit(rng.normal(size=3) * np.array([z_bias, 1.0, 1.0]))


def _grow(rng, start, direction, radius, clearance, lo, hi, step, tortuosity, max_len, gap=20.0):
    """Grow a path both ways from ``start`` until it leaves the box [lo, hi] (nm)."""
    halves = []
    for sign in (1.0, -1.0):
        p = np.array(start, float)
        d = sign * np.asarray(direction, float)
        pts = []
        length = 0.0
        while length < max_len / 2:
            cand = _unit(d + tortuosity * rng.normal(size=(6, 3)) * np.array([[0.3] * 3] + [[1.0] * 3] * 5))
            q = p + step * cand
            c = clearance.at(q) - radius if clearance is not None else np.full(6, np.inf)
            ok = np.nonzero(c >= gap)[0]
            k = int(ok[0]) if len(ok) else int(np.argmax(c))
            d = cand[k]
            p = q[k]
            pts.append(p)
            length += step
            if np.any(p < lo) or np.any(p > hi):
                break
        halves.append(pts)
    pts = halves[1][::-1] + [np.asarray(start, float)] + halves[0]
    return np.array(pts)


def _smooth_radii(rng, n, base, amp=0.15, width=6.0):
    from scipy.ndimage import gaussian_filter1d

    noise = gaussian_filter1d(rng.normal(size=n), width, mode="nearest")
    noise /= max(noise.std(), 1e-6)
    return base * (1.0 + amp * np.clip(noise, -2.5, 2.5))


def _arclength(pts):
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])


def _tube_volume_inside(pts, radii, lo, hi):
    mid = 0.5 * (pts[1:] + pts[:-1])
    seg_len = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    inside = np.all((mid >= lo) & (mid <= hi), axis=1)
    r = 0.5 * (radii[1:] + radii[:-1])
    return float(np.sum(np.pi * r[inside] ** 2 * seg_len[inside]))


def _perpendicular(rng, t):
    u = rng.normal(size=3)
    u -= np.dot(u, t) * t
    return _unit(u)


def build_tissue(shape, resolution, rng, params: PhantomParams):
    """Place soma, vessel, dendrites (with spines), myelinated and thin axons.

    Parameters
    ----------
    shape : (z, y, x) voxels; resolution : (z, y, x) nm per voxel.

    Returns
    -------
    tubes : :class:`Tubes` of every segment; objects : list of :class:`PhantomObject` (index =
    object id used in ``tubes``).
    """
    p = params
    res = np.asarray(resolution, float)
    extent = (np.asarray(shape) - 1) * res
    lo, hi = np.zeros(3), extent
    vol_um3 = float(np.prod(np.asarray(shape) * res)) / 1e9
    clear = _Clearance(extent)
    tubes = Tubes()
    objects: list[PhantomObject] = []
    step = 60.0
    max_len = 3.0 * float(np.linalg.norm(extent)) + 2000.0

    def new_object(kind, **kw):
        objects.append(PhantomObject(kind, **kw))
        return len(objects) - 1

    def register(start_idx):
        segs = tubes.arrays()[0][start_idx:]
        if len(segs):
            clear.add(segs)

    def n_segs():
        return sum(len(s) for s in tubes._segs)

    corners = [np.array([a, b]) for a in (0, 1) for b in (0, 1)]
    rng.shuffle(corners)
    yx_ext = extent[1:]
    # soma with nucleus and a primary dendrite ------------------------------------------------
    if min(yx_ext) >= p.soma_min_extent_nm:
        c = corners.pop()
        R = p.soma_radius_nm
        cyx = np.where(c == 0, -0.3 * R, yx_ext + 0.3 * R)
        centre = np.array([rng.uniform(0.2, 0.8) * extent[0], *cyx])
        nuc_c = centre + rng.normal(size=3) * np.array([0.05, 0.08, 0.08]) * R
        o = new_object("soma", nucleus=(nuc_c, p.nucleus_fraction * R))
        k0 = n_segs()
        tubes.add(centre, centre, R, R, 0.0, o, PART["soma"], SEMANTIC["soma"])
        # primary dendrite towards the middle of the field
        d = _unit(np.array([rng.normal() * 0.3, *(extent[1:] / 2 - cyx)]) / np.array([1.0, extent[1], extent[2]]))
        start = centre + d * (R * 0.9)
        pts = _grow(rng, start, d, 700.0, None, lo - 1500, hi + 1500, step, p.tortuosity * 0.3, max_len)
        pts = pts[np.argmin(np.linalg.norm(pts - start, axis=1)):]  # only the half leaving the soma
        radii = np.maximum(_smooth_radii(rng, len(pts), 650.0, 0.08) * np.exp(-_arclength(pts) / 6000.0), 350.0)
        tubes.add_path(pts, radii, p.packing_margin_nm, o, PART["shaft"], SEMANTIC["dendrite"])
        objects[o].paths.append((pts, radii))
        register(k0)
    # blood vessel (capillary), mostly along z ----------------------------------------------
    if min(yx_ext) >= p.vessel_min_extent_nm:
        c = corners.pop()
        Rv = p.vessel_lumen_radius_nm + p.vessel_wall_nm
        cyx = np.where(c == 0, 0.15 * Rv, yx_ext - 0.15 * Rv)
        start = np.array([extent[0] / 2, *cyx])
        d = _unit(np.array([1.0, rng.normal() * 0.25, rng.normal() * 0.25]))
        pts = _grow(rng, start, d, Rv, None, lo - Rv, hi + Rv, step * 2, p.tortuosity * 0.1, max_len)
        radii = _smooth_radii(rng, len(pts), Rv, 0.04)
        o = new_object("vessel", shell_nm=p.vessel_wall_nm)
        k0 = n_segs()
        tubes.add_path(pts, radii, 0.0, o, PART["vessel"], SEMANTIC["vessel"])
        objects[o].paths.append((pts, radii))
        register(k0)

    box_vol = float(np.prod(extent))

    def fill(kind, fraction, count=None):
        filled = 0.0
        placed = 0
        tries = 0
        while (count is None and filled < fraction * box_vol) or (count is not None and placed < count):
            tries += 1
            if tries > 4000:
                break
            if kind == "axon":
                base = rng.uniform(*p.axon_radius_nm); tort = p.tortuosity
            elif kind == "dendrite":
                base = rng.uniform(*p.dendrite_radius_nm); tort = p.tortuosity * 0.6
            else:  # myelinated
                base = rng.uniform(*p.myelin_axon_radius_nm); tort = p.tortuosity * 0.3
                sheath = rng.uniform(*p.myelin_sheath_nm)
                base_out = base + sheath
            r_for_clear = base_out if kind == "myelinated" else base
            # choose the start with most room among a few candidates
            cands = lo + rng.random((8, 3)) * (hi - lo)
            cl = clear.at(cands)
            start = cands[int(np.argmax(cl))]
            if cl.max() < min(r_for_clear, 150.0):
                continue
            dirn = _random_direction(rng, p.z_bias)
            pad = r_for_clear + 200.0
            pts = _grow(rng, start, dirn, r_for_clear, clear, lo - pad, hi + pad, step, tort, max_len)
            if len(pts) < 3:
                continue
            o = new_object(kind)
            k0 = n_segs()
            s = _arclength(pts)
            if kind == "axon":
                radii = _smooth_radii(rng, len(pts), base, 0.2)
                shaft_radii = radii.copy()
                part = np.full(len(pts), PART["shaft"], np.int8)
                n_b = rng.poisson(s[-1] / p.bouton_spacing_nm)
                for sb in rng.uniform(0, s[-1], n_b):
                    rb = rng.uniform(*p.bouton_radius_nm)
                    sig = rb * rng.uniform(0.9, 1.5)
                    bump = rb * np.exp(-0.5 * ((s - sb) / sig) ** 2)
                    part[bump > radii * 1.3] = PART["bouton"]
                    radii = np.maximum(radii, bump)
                tubes.add_path(pts, radii, p.packing_margin_nm, o, part, SEMANTIC["axon"])
            elif kind == "dendrite":
                radii = _smooth_radii(rng, len(pts), base, 0.12)
                tubes.add_path(pts, radii, p.packing_margin_nm, o, PART["shaft"], SEMANTIC["dendrite"])
                n_sp = rng.poisson(s[-1] / p.spine_spacing_nm)
                for i in rng.integers(1, len(pts) - 1, n_sp):
                    t = _unit(pts[i + 1] - pts[i - 1])
                    u = _perpendicular(rng, t)
                    L = rng.uniform(*p.spine_neck_length_nm)
                    rn = rng.uniform(*p.spine_neck_radius_nm)
                    rh = rng.uniform(*p.spine_head_radius_nm)
                    a = pts[i] + u * radii[i] * 0.7
                    b = pts[i] + u * (radii[i] + L)
                    hc = b + u * rh * 0.7
                    tubes.add(a, b, rn, rn, 25.0, o, PART["neck"], SEMANTIC["dendrite"])
                    tubes.add(hc, hc, rh, rh, 40.0, o, PART["head"], SEMANTIC["dendrite"])
            else:
                radii = _smooth_radii(rng, len(pts), base_out, 0.05)
                objects[o].shell_nm = float(sheath)
                tubes.add_path(pts, radii, 0.0, o, PART["myelin_axon"], SEMANTIC["axon"])
            objects[o].paths.append((pts, radii))
            filled += _tube_volume_inside(pts, shaft_radii if kind == "axon" else radii, lo, hi)
            placed += 1
            register(k0)

    fill("dendrite", p.dendrite_volume_fraction)
    n_my = int(rng.poisson(p.myelinated_per_100um3 * vol_um3 / 100.0))
    if vol_um3 >= 20.0:
        n_my = max(n_my, 1)
    if n_my:
        fill("myelinated", 0.0, count=n_my)
    fill("axon", p.axon_volume_fraction)
    return tubes, objects
