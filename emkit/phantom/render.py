"""Render the phantom's tissue like a transmission EM image of a 40 nm section.

Light, finely textured cytoplasm; dark unit membranes where cells meet, smeared where a
membrane runs oblique to the section (a section is a 40 nm projection: where the label changes
between neighbouring sections the membrane is seen at a slant, as a grey band); dark
mitochondria with a darker outer membrane; small ER profiles; nucleus with chromatin clumps and
a double envelope; thick dark myelin; bright, empty vessel lumen; dark postsynaptic densities
and clouds of ~40 nm vesicles; slow staining variation, per-section brightness, point-spread
blur and noise.
"""
from __future__ import annotations

import numpy as np

from .neurites import PART, SEMANTIC
from .organelles import ORGANELLE
from .params import PhantomParams
from .raster import Tissue
from .synapses import Synapses

__all__ = ["render"]


def _smooth_noise(rng, shape, sigma_px, dtype=np.float32):
    from scipy.ndimage import gaussian_filter

    n = rng.standard_normal(shape, dtype=dtype)
    n = gaussian_filter(n, sigma_px, mode="wrap")
    s = float(n.std())
    return n / s if s > 0 else n


def _boundaries(seg):
    """1 where an in-plane 4-neighbour has another id; 0/0.5/1 for the ids above and below."""
    b = np.zeros(seg.shape, np.float32)
    for axis in (1, 2):
        n = seg.shape[axis]
        lo = [slice(None)] * 3; hi = [slice(None)] * 3
        lo[axis] = slice(0, n - 1); hi[axis] = slice(1, n)
        d = seg[tuple(lo)] != seg[tuple(hi)]
        b[tuple(lo)] = np.maximum(b[tuple(lo)], d)
        b[tuple(hi)] = np.maximum(b[tuple(hi)], d)
    bz = np.zeros(seg.shape, np.float32)
    if seg.shape[0] > 1:
        d = (seg[1:] != seg[:-1]).astype(np.float32)
        bz[1:] += 0.5 * d
        bz[:-1] += 0.5 * d
    return b, bz


def render(t: Tissue, syn: Synapses, resolution, rng, params: PhantomParams) -> np.ndarray:
    """The clean (defect-free) uint8 image (z, y, x) of the tissue."""
    from scipy.ndimage import gaussian_filter, zoom

    from ._kernels import stamp

    p = params
    res = np.asarray(resolution, float)
    shape = t.seg.shape
    kinds = np.array([o.kind for o in t.objects])
    shell = np.array([o.shell_nm for o in t.objects], np.float32)

    # cytoplasm level per cell, fine texture ----------------------------------------------------
    n_ids = int(t.seg.max()) + 1
    level = (p.cytoplasm_level + p.object_level_jitter * rng.standard_normal(n_ids)).astype(np.float32)
    img = level[t.seg]
    img[t.sem == SEMANTIC["glia"]] += 10.0                          # astrocytic processes look pale
    img[t.sem == SEMANTIC["soma"]] -= 8.0
    fine = _smooth_noise(rng, shape, (0, 0.9, 0.9))
    mottle = _smooth_noise(rng, shape, (0, 3.0, 3.0))
    img += p.texture_amplitude * (0.8 * fine + 0.45 * mottle)

    # vessel: endothelial wall (darker, granular) and bright empty lumen ------------------------
    vessel = t.part == PART["vessel"]
    if vessel.any():
        wall = vessel & (t.seg > 0)
        img[wall] = 138.0 + 14.0 * fine[wall]
        lumen = vessel & (t.seg == 0)
        img[lumen] = p.lumen_level + 4.0 * mottle[lumen]

    # myelin sheath: thick and very dark --------------------------------------------------------
    my = np.isin(t.obj, np.flatnonzero(kinds == "myelinated"))
    if my.any():
        ring = my & (t.depth < shell[t.obj])
        img[ring] = p.myelin_level + 8.0 * fine[ring]
        inner_edge = my & (np.abs(t.depth - shell[t.obj]) < 10.0)
        img[inner_edge] = 0.5 * (img[inner_edge] + p.membrane_level)

    # nucleus: paler nucleoplasm, chromatin clumps, double envelope ------------------------------
    for i, o in enumerate(t.objects):
        if o.kind != "soma" or o.nucleus is None:
            continue
        cell = t.obj == i
        if not cell.any():
            continue
        idx = np.nonzero(cell)
        pos = np.column_stack(idx) * res
        c, rn = o.nucleus
        d = np.linalg.norm(pos - c, axis=1) - rn          # < 0 inside the nucleus
        inside = d < 0
        vals = img[idx]
        chrom = mottle[idx]
        vals[inside] = p.nucleus_level + 10.0 * fine[idx][inside] - 38.0 * np.clip(chrom[inside] - 0.6, 0, 2)
        near_env = inside & (d > -90)
        vals[near_env] -= 22.0 * np.clip(chrom[near_env] + 0.6, 0, 2)   # heterochromatin under the envelope
        env = (np.abs(d) < 9) | (np.abs(d - 30) < 8)
        vals[env] = 0.35 * vals[env] + 0.65 * p.membrane_level
        img[idx] = vals

    # organelles ------------------------------------------------------------------------------
    mito = t.org == ORGANELLE["mito"]
    if mito.any():
        mz, my, mx = np.nonzero(mito)
        theta = t.org_tag[mito].astype(np.float32) * (np.pi / 256.0)
        phase = (my * np.cos(theta) + mx * np.sin(theta)) * (2 * np.pi / 5.5)   # cristae every ~45 nm
        img[mito] = p.mito_level + 12.0 * fine[mito] + 16.0 * np.sin(phase + 1.3 * mottle[mito])
    mito_mem = mito & (t.org_depth < 12.0)
    img[mito_mem] = 0.45 * img[mito_mem] + 0.55 * p.membrane_level
    er = t.org == ORGANELLE["er"]
    er_mem = er & (t.org_depth < 10.0)
    img[er & ~er_mem] += 18.0
    img[er_mem] = 0.5 * img[er_mem] + 0.5 * (p.membrane_level + 40.0)

    # cell membranes (sharp in-plane, smeared where oblique) ----------------------------------
    b, bz = _boundaries(t.seg)
    m = np.maximum(b, 0.55 * bz)
    m = gaussian_filter(m, (0, 0.55, 0.55))
    img += (p.membrane_level - img) * np.clip(m * p.membrane_strength * 1.25, 0.0, p.membrane_strength)
    del b, bz, m

    # synapses: dark postsynaptic density, vesicle cloud ----------------------------------------
    if syn.psd.any():
        ps = gaussian_filter(syn.psd.astype(np.float32), (0, 0.8, 0.8))
        img += (25.0 - img) * np.clip(1.4 * ps, 0, 0.85)
    if len(syn.vesicles):
        rv = p.vesicle_radius_nm / res[1]
        h = int(np.ceil(rv + 1.5))
        yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
        r = np.hypot(yy, xx)
        kernel = (-np.exp(-0.5 * ((r - rv) / 0.7) ** 2) + 0.15 * (r < rv - 0.8)).astype(np.float64)
        ves = np.zeros(shape, np.float64)
        stamp(ves, syn.vesicles, kernel)
        img += 70.0 * np.clip(ves, -1.2, 0.5).astype(np.float32)

    # staining: slow field, per-section gain and offset ----------------------------------------
    nzc = max(2, shape[0] // 16 + 2)
    coarse = rng.standard_normal((nzc, max(2, shape[1] // 96 + 2), max(2, shape[2] // 96 + 2)))
    planes = zoom(coarse, (1, shape[1] / coarse.shape[1], shape[2] / coarse.shape[2]), order=3,
                  mode="nearest")[:, :shape[1], :shape[2]].astype(np.float32)
    zpos = np.linspace(0, nzc - 1, shape[0])
    z0 = np.minimum(np.floor(zpos).astype(int), nzc - 2)
    wz = (zpos - z0).astype(np.float32)[:, None, None]
    gain = 1.0 + p.section_gain_jitter * rng.standard_normal(shape[0])
    for z in range(shape[0]):   # slow field, linear between coarse planes in z
        f = (1 - wz[z]) * planes[z0[z]] + wz[z] * planes[z0[z] + 1]
        img[z] *= (1.0 + p.staining_variation * f) * np.float32(gain[z])

    # optics and noise --------------------------------------------------------------------------
    if p.blur_px > 0:
        img = gaussian_filter(img, (0, p.blur_px, p.blur_px))
    img += p.noise_sigma * rng.standard_normal(shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
