"""Voxel labelling of the phantom: tubes → objects → connected, dust-free ground truth.

The labelling is an additively weighted Voronoi diagram of the tubes: each voxel goes to the
tube whose surface it lies deepest behind (``distance to axis − radius``), up to each tube's
packing margin; what no tube claims becomes glia (nearest of random glial seeds). Connected
pieces of an object become separate ids (an axon leaving and re-entering the volume is two
pieces here, as in real ground truth); pieces below ``min_fragment_voxels`` join a neighbour.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .neurites import PART, SEMANTIC, PhantomObject, Tubes
from .params import PhantomParams

__all__ = ["Tissue", "label_tissue"]

_KIND_SEMANTIC = {"axon": 2, "myelinated": 2, "dendrite": 3, "soma": 1, "vessel": 5, "glia": 4}


@dataclass
class Tissue:
    """Voxel arrays (z, y, x) of the phantom before rendering.

    seg : uint64 ids (0 = vessel lumen); sem : uint8 semantic class; part : int8 part code
    (:data:`emkit.phantom.neurites.PART`); obj : int32 object index into ``objects``;
    depth : float32 nm inside the own tube surface (negative in the packing margin);
    org : uint8 organelle code (0 none, 1 mitochondrion, 2 ER); org_depth : float32 nm inside
    the organelle surface; org_tag : uint8 random tag per organelle (orients mitochondrial
    cristae).
    """

    seg: np.ndarray
    sem: np.ndarray
    part: np.ndarray
    obj: np.ndarray
    depth: np.ndarray
    org: np.ndarray
    org_depth: np.ndarray
    objects: list
    org_tag: np.ndarray | None = None


def _raster(tubes: Tubes, shape, res, restrict=None):
    from ._kernels import rasterize_segments

    segs, sobj, _, _ = tubes.arrays()
    owner = np.full(shape, -1, np.int32)
    score = np.full(shape, np.inf, np.float32)
    if restrict is None:
        host = np.full(len(segs), -1, np.int32)
        restrict = np.zeros((1, 1, 1), np.int32)
    else:
        host = sobj.astype(np.int32)
    if len(segs):
        rasterize_segments(np.ascontiguousarray(segs), host, np.asarray(res, float), owner, score, restrict)
    return owner, score


def label_tissue(shape, resolution, tubes: Tubes, org_tubes: Tubes, objects: list[PhantomObject], rng,
                 params: PhantomParams) -> Tissue:
    """Turn the tubes into the voxel arrays of a :class:`Tissue` (see module docstring)."""
    import cc3d
    import fastremap

    from ._kernels import fill_from_neighbours, nearest_seed_fill

    res = np.asarray(resolution, float)
    owner, score = _raster(tubes, shape, res)
    _, sobj, spart, ssem = tubes.arrays()
    claimed = owner >= 0
    own = np.where(claimed, owner, 0)
    obj = np.where(claimed, sobj[own] if len(sobj) else 0, -2).astype(np.int32)
    part = np.where(claimed, spart[own] if len(spart) else 0, PART["glia"]).astype(np.int8)
    sem = np.where(claimed, ssem[own] if len(ssem) else 0, SEMANTIC["glia"]).astype(np.uint8)
    depth = np.where(claimed, -score, 0.0).astype(np.float32)
    del own, score

    # glia fill the space the neurites leave ------------------------------------------------
    gap = np.flatnonzero(~claimed)
    if len(gap):
        vol_um3 = float(np.prod(np.asarray(shape) * res)) / 1e9
        n_glia = int(max(1, min(len(gap), round(params.glia_per_um3 * vol_um3))))
        pick = rng.choice(gap, n_glia, replace=False)
        seeds = np.column_stack(np.unravel_index(pick, shape)).astype(float) * res
        labels = np.arange(len(objects), len(objects) + n_glia, dtype=np.int32)
        objects.extend(PhantomObject("glia") for _ in range(n_glia))
        nearest_seed_fill(obj, np.int32(-2), seeds, labels, res)
    del claimed, gap

    # connected pieces, dust merged into neighbours ------------------------------------------
    cc = cc3d.connected_components(obj.astype(np.uint32) + 1, connectivity=6, out_dtype=np.uint32)
    sizes = np.bincount(cc.ravel())
    dust = sizes[cc] < params.min_fragment_voxels
    if dust.any() and not dust.all():
        lab = cc.astype(np.int64)
        fill_from_neighbours(lab, dust.copy())
        moved = lab != cc
        if moved.any():
            kinds = np.array([_KIND_SEMANTIC[o.kind] for o in objects], np.uint8)
            comp_obj = np.zeros(int(lab.max()) + 1, np.int32)
            keep = ~dust
            comp_obj[cc[keep]] = obj[keep]
            obj[moved] = comp_obj[lab[moved]]
            sem[moved] = kinds[obj[moved]]
            part[moved] = np.where(sem[moved] == SEMANTIC["glia"], PART["glia"], PART["shaft"])
            depth[moved] = 0.0
        cc = lab.astype(np.uint32)
        del lab, moved
    del dust
    seg, _ = fastremap.renumber(cc, preserve_zero=True, in_place=True)
    seg = seg.astype(np.uint64)

    # vessel lumen is not tissue: id 0 (semantic stays "vessel") ------------------------------
    for i, o in enumerate(objects):
        if o.kind == "vessel":
            lumen = (obj == i) & (depth >= o.shell_nm)
            seg[lumen] = 0

    # organelles, each inside its host --------------------------------------------------------
    org_owner, org_score = _raster(org_tubes, shape, res, restrict=obj)
    _, _, opart, otag = org_tubes.arrays()
    inside = (org_owner >= 0) & (org_score <= 0)
    org = np.zeros(shape, np.uint8)
    org[inside] = opart[org_owner[inside]]
    org_depth = np.where(inside, -org_score, 0.0).astype(np.float32)
    org_tag = np.zeros(shape, np.uint8)
    org_tag[inside] = otag[org_owner[inside]]
    return Tissue(seg=seg, sem=sem, part=part, obj=obj, depth=depth, org=org, org_depth=org_depth, objects=objects,
                  org_tag=org_tag)
