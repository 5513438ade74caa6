"""Organelles inside neurites: mitochondria and tubules of endoplasmic reticulum.

They are drawn as tubes restricted to their host cell, so they never cross a cell boundary and
never become part of the segmentation (they are not cell boundaries).
"""
from __future__ import annotations

import numpy as np

from .neurites import PhantomObject, Tubes, _arclength, _perpendicular, _unit
from .params import PhantomParams

__all__ = ["ORGANELLE", "organelle_tubes"]

ORGANELLE = {"none": 0, "mito": 1, "er": 2}


def _follow(pts, s, i, length):
    j = int(np.searchsorted(s, s[i] + length))
    return min(j, len(pts) - 1)


def organelle_tubes(objects: list[PhantomObject], extent_nm, rng, params: PhantomParams) -> Tubes:
    """Tubes of mitochondria (part code 1) and ER (part code 2); ``obj`` is the host object."""
    p = params
    t = Tubes()
    extent = np.asarray(extent_nm, float)
    for o, ob in enumerate(objects):
        if ob.kind in ("glia", "vessel"):
            continue
        for pts, radii in ob.paths:
            if len(pts) < 3:
                continue
            s = _arclength(pts)
            inner = radii - ob.shell_nm
            rate = p.mito_per_um * (0.25 if ob.kind == "axon" else 1.0)
            for _ in range(rng.poisson(rate * s[-1] / 1000.0)):
                i = int(rng.integers(0, len(pts) - 2))
                j = _follow(pts, s, i, rng.uniform(*p.mito_length_nm))
                if j <= i:
                    continue
                rh = float(inner[i:j + 1].min())
                if rh < 45.0:
                    continue
                rm = min(rng.uniform(*p.mito_radius_nm), 0.6 * rh)
                u = _perpendicular(rng, _unit(pts[j] - pts[i]))
                off = rng.uniform(0, max(0.0, rh - rm - 20.0)) * 0.6
                seg = pts[i:j + 1] + u * off
                if len(seg) < 2:
                    seg = np.vstack([seg, seg])
                t.add_path(seg, np.full(len(seg), rm), 0.0, o, ORGANELLE["mito"], int(rng.integers(1, 256)))
            if ob.kind in ("dendrite", "soma"):
                for _ in range(rng.poisson(p.er_per_um * s[-1] / 1000.0)):
                    i = int(rng.integers(0, len(pts) - 1))
                    _wiggly(t, rng, pts[i] + _perpendicular(rng, _unit(pts[min(i + 1, len(pts) - 1)] - pts[max(i - 1, 0)]))
                            * rng.uniform(0, 0.7) * radii[i], rng.uniform(250, 700), p.er_radius_nm, o)
        if ob.kind == "soma" and ob.nucleus is not None:
            nuc_c, rn = ob.nucleus
            R = rn / p.nucleus_fraction
            # organelles in the perikaryon, between the nucleus and the cell surface
            n_in = 0
            for _ in range(400):
                q = nuc_c + _unit(rng.normal(size=3)) * rng.uniform(rn + 80, R - 80)
                if np.any(q < -200) or np.any(q > extent + 200):
                    continue
                n_in += 1
                if rng.random() < 0.35:
                    d = _unit(rng.normal(size=3))
                    L = rng.uniform(250, 800)
                    t.add(q, q + d * L, rng.uniform(55, 95), rng.uniform(55, 95), 0.0, o, ORGANELLE["mito"], int(rng.integers(1, 256)))
                else:
                    _wiggly(t, rng, q, rng.uniform(300, 900), p.er_radius_nm * 1.2, o)
                if n_in >= 90:
                    break
    return t


def _wiggly(t: Tubes, rng, start, length, radius, host):
    d = _unit(rng.normal(size=3) * np.array([0.5, 1.0, 1.0]))
    pts = [np.asarray(start, float)]
    for _ in range(max(2, int(length / 40.0))):
        d = _unit(d + 0.5 * rng.normal(size=3))
        pts.append(pts[-1] + 40.0 * d)
    pts = np.array(pts)
    t.add_path(pts, np.full(len(pts), radius), 0.0, host, ORGANELLE["er"], 0)
