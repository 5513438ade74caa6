"""Synapses of the phantom: clefts where a presynaptic axon touches a postsynaptic dendrite.

Sites are chosen among axon–dendrite contacts (boutons onto spine heads first), at least
``min_synapse_distance_nm`` apart, at most one per (pre, post) pair. Each synapse gets a cleft
label (the voxels on both sides of the contact within the active-zone disc), a postsynaptic
density (dark, on the dendrite side) and a vesicle cloud (on the axon side) for rendering.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .neurites import PART, SEMANTIC
from .params import PhantomParams
from .raster import Tissue

__all__ = ["Synapses", "place_synapses", "SYNAPSE_COLUMNS"]

SYNAPSE_COLUMNS = ["cleft_id", "pre_id", "post_id", "centroid_z_nm", "centroid_y_nm", "centroid_x_nm", "size_voxels"]


@dataclass
class Synapses:
    """clefts : uint64 (z, y, x) cleft ids; psd : bool (z, y, x) postsynaptic densities;
    vesicles : int64 (n, 3) vesicle centres (z, y, x voxels); table : pandas DataFrame."""

    clefts: np.ndarray
    psd: np.ndarray
    vesicles: np.ndarray
    table: object


def _contacts(t: Tissue, myelinated: np.ndarray):
    """Axon→dendrite contact voxel pairs in-plane: (z, y, x of the pre voxel, pre id, post id, bonus)."""
    out = []
    seg, sem, part, obj = t.seg, t.sem, t.part, t.obj
    for axis in (1, 2):
        n = seg.shape[axis]
        lo = [slice(None)] * 3; hi = [slice(None)] * 3
        lo[axis] = slice(0, n - 1); hi[axis] = slice(1, n)
        lo, hi = tuple(lo), tuple(hi)
        a, b = seg[lo], seg[hi]
        m = (a != b) & (a > 0) & (b > 0)
        sa, sb = sem[lo], sem[hi]
        for pre_first in (True, False):
            sp, sq = (sa, sb) if pre_first else (sb, sa)
            hit = m & (sp == SEMANTIC["axon"]) & (sq == SEMANTIC["dendrite"])
            idx = np.nonzero(hit)
            if not len(idx[0]):
                continue
            pre_sl = lo if pre_first else hi
            post_sl = hi if pre_first else lo
            pre_obj = obj[pre_sl][idx]
            ok = ~myelinated[pre_obj]
            pp = part[pre_sl][idx]; qp = part[post_sl][idx]
            ok &= qp != PART["neck"]
            bonus = 1.0 * (pp == PART["bouton"]) + 1.5 * (qp == PART["head"])
            zyx = np.column_stack(idx).astype(np.int64)
            if not pre_first:
                zyx[:, axis] += 1
            out.append((zyx[ok], seg[pre_sl][idx][ok], seg[post_sl][idx][ok], bonus[ok]))
    if not out:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0)
    return tuple(np.concatenate(x) for x in zip(*out))


def place_synapses(t: Tissue, resolution, rng, params: PhantomParams) -> Synapses:
    """Choose synapse sites and draw their clefts (see module docstring)."""
    import cc3d
    import pandas as pd
    from scipy.ndimage import binary_dilation, distance_transform_edt

    p = params
    res = np.asarray(resolution, float)
    shape = t.seg.shape
    clefts = np.zeros(shape, np.uint64)
    psd = np.zeros(shape, bool)
    vesicles = []
    rows = []
    myelinated = np.array([o.kind == "myelinated" for o in t.objects] + [False])
    zyx, pre, post, bonus = _contacts(t, myelinated)
    vol_um3 = float(np.prod(np.asarray(shape) * res)) / 1e9
    n_target = int(round(p.synapses_per_um3 * vol_um3))
    if len(pre) and n_target:
        if len(pre) > 50000:
            sub = rng.choice(len(pre), 50000, replace=False)
            zyx, pre, post, bonus = zyx[sub], pre[sub], post[sub], bonus[sub]
        order = np.argsort(-(rng.random(len(pre)) + bonus), kind="stable")
        accepted = np.zeros((0, 3))
        pairs = set()
        inplane = np.zeros((1, 3, 3), bool); inplane[0, 1, :] = True; inplane[0, :, 1] = True
        for c in order:
            if len(rows) >= n_target:
                break
            key = (int(pre[c]), int(post[c]))
            if key in pairs:
                continue
            site_nm = zyx[c] * res
            if len(accepted) and np.min(np.linalg.norm(accepted - site_nm, axis=1)) < p.min_synapse_distance_nm:
                continue
            R = rng.uniform(*p.cleft_radius_nm)
            reach = R + p.vesicle_cloud_nm
            half = np.ceil(reach / res).astype(int) + 2
            lo = np.maximum(zyx[c] - half, 0); hi = np.minimum(zyx[c] + half + 1, shape)
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            crop = t.seg[box]
            A = crop == pre[c]; D = crop == post[c]
            grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1) * res
            dist_site = np.linalg.norm(grid - site_nm, axis=-1)
            core = (A & binary_dilation(D, inplane)) | (D & binary_dilation(A, inplane))
            cleft = binary_dilation(core, inplane) & (A | D) & (dist_site <= R)
            if cleft.sum() < 8:
                continue
            lab = cc3d.connected_components(cleft.astype(np.uint8), connectivity=26)
            here = tuple(zyx[c] - lo)
            keep = lab[here] if lab[here] else np.argmax(np.bincount(lab.ravel())[1:]) + 1
            cleft = lab == keep
            if cleft.sum() < 8 or clefts[box][cleft].any():
                continue
            cid = len(rows) + 1
            clefts[box][cleft] = cid
            dA = distance_transform_edt(~A, sampling=res)
            dD = distance_transform_edt(~D, sampling=res)
            psd[box] |= D & (dA <= p.psd_thickness_nm) & (dist_site <= R * 1.1)
            cloud = A & (dD >= 2 * p.vesicle_radius_nm) & (dD <= p.vesicle_cloud_nm) & (dist_site <= reach)
            per_vox = res[1] * res[2] / 1e6 * p.vesicles_per_um2
            cz, cy, cx = np.nonzero(cloud)
            n_v = rng.poisson(per_vox * len(cz))
            if n_v and len(cz):
                pick = rng.choice(len(cz), min(n_v, len(cz)), replace=False)
                vesicles.append(np.column_stack([cz[pick], cy[pick], cx[pick]]) + lo)
            vz, vy, vx = np.nonzero(cleft)
            cen = (np.array([vz.mean(), vy.mean(), vx.mean()]) + lo) * res
            rows.append((cid, key[0], key[1], *cen, int(len(vz))))
            pairs.add(key)
            accepted = np.vstack([accepted, site_nm])
    table = pd.DataFrame(rows, columns=SYNAPSE_COLUMNS)
    table = table.astype({"cleft_id": "uint64", "pre_id": "uint64", "post_id": "uint64", "centroid_z_nm": "float64",
                          "centroid_y_nm": "float64", "centroid_x_nm": "float64", "size_voxels": "int64"})
    ves = np.concatenate(vesicles) if vesicles else np.zeros((0, 3), np.int64)
    return Synapses(clefts=clefts, psd=psd, vesicles=ves.astype(np.int64), table=table)
