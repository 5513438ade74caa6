"""One octree box of the chunked segmentation: glue, size merging, dust, agglomeration — frozen
where the box does not see everything.

A box (a leaf chunk, or 2×2×2 boxes of the level below) works on a graph of *units*:

* stage 2 — part of a watershed basin, or a group of basins, whose size-dependent single linkage
  (pass 1) is not finished;
* stage 3 — pass 1 finished, the dust pass (pass 2) not finished;
* stage 4 — finished supervoxels grouped into an object whose agglomeration is not finished.

and edges between units: the best voxel face (affinity >= ``low``, with its global order key) for
the watershed passes, the fixed-point affinity sum and face count for agglomeration. The box:

1. **glues** stage-2 units along glue pairs (pointers and seed plateaus that cross faces):
   connected components, order free;
2. runs **pass 1** (edges with affinity >= ``merge_affinity`` in global order: merge while one
   side is smaller than ``size_threshold``), then **pass 2** (edges >= ``low``, ``dust_size``);
3. turns every unit group that is final into a **supervoxel** (rank = global raster index of its
   first voxel, which orders supervoxels as the global watershed numbers them);
4. runs the **agglomeration** kernel on supervoxels and stage-4 objects;
5. passes up what is frozen.

A unit is *frozen* when it touches an internal face of the box (its bounding box reaches a face
plane that is not the volume's border): it may continue outside. Freezing spreads: an edge that
would be acted on with a frozen end freezes both ends. Size passes refine this: an edge between
two groups already at the threshold is skipped (it never merges, whatever happens outside); a
group at the threshold that meets a frozen group is only *pending* — it keeps merging small
neighbours (those decisions do not depend on the frozen side) and the parent decides the edge;
a small group that meets a frozen one is frozen (the global run merges it there). Frozen groups
are passed up whole and never grow inside a box, so the parent can replay every edge in global
order with the sizes the global run saw. (Merging a small unfrozen group *into* a frozen one —
correct at that edge — would be wrong on replay: earlier edges would see the grown size.) Every decision taken on two unfrozen ends is one the global run takes,
because an unfrozen group lies inside the box with all its edges, and both kinds of merging
commit only edges that are the best of both ends (static order for the size passes; mean
affinity with order-independent tie keys and exact sums for agglomeration — see
:mod:`emkit.segment.agglomerate`). Frozen open units enter the agglomeration with rank -1 so that
an equal-mean edge to them is seen first (conservative). At the top box nothing is frozen.
"""
from __future__ import annotations

import numba
import numpy as np

from emkit.segment.agglomerate import _components, run_kernel
from emkit.segment.region_graph import N_CLASSES
from emkit.segment._unionfind import find as _find

__all__ = ["process_box", "empty_state", "touches", "UNIT_KEYS", "EDGE_KEYS", "FMAP_KEYS"]

UNIT_KEYS = ("u_id", "u_stage", "u_size", "u_minidx", "u_rank", "u_nsv", "u_bbox", "u_sem")
EDGE_KEYS = ("e_a", "e_b", "e_ka", "e_kk", "e_q", "e_cnt")
FMAP_KEYS = ("f_id", "f_unit", "f_bbox")

KIND_UNIT, KIND_SV, KIND_DROP = 0, 1, 2


def empty_state() -> dict:
    return {"u_id": np.zeros(0, np.uint64), "u_stage": np.zeros(0, np.int8), "u_size": np.zeros(0, np.int64),
            "u_minidx": np.zeros(0, np.int64), "u_rank": np.zeros(0, np.int64), "u_nsv": np.zeros(0, np.int64),
            "u_bbox": np.zeros((0, 6), np.int64), "u_sem": np.zeros((0, N_CLASSES), np.float64),
            "e_a": np.zeros(0, np.uint64), "e_b": np.zeros(0, np.uint64), "e_ka": np.zeros(0, np.float32),
            "e_kk": np.zeros(0, np.int64), "e_q": np.zeros(0, np.int64), "e_cnt": np.zeros(0, np.int64),
            "f_id": np.zeros(0, np.uint64), "f_unit": np.zeros(0, np.uint64), "f_bbox": np.zeros((0, 6), np.int64)}


def concat_states(states: list[dict]) -> dict:
    out = empty_state()
    if states:
        out = {k: np.concatenate([s[k] for s in states]) for k in out}
    return out


def touches(bbox: np.ndarray, box_start, box_stop, volume_shape) -> np.ndarray:
    """(N,) bool: rows of ``bbox`` (z0, y0, x0, z1, y1, x1 inclusive) that reach an internal
    face plane of the box [box_start, box_stop)."""
    t = np.zeros(len(bbox), bool)
    for ax in range(3):
        if box_start[ax] > 0:
            t |= bbox[:, ax] == box_start[ax]
        if box_stop[ax] < volume_shape[ax]:
            t |= bbox[:, 3 + ax] == box_stop[ax] - 1
    return t


# ------------------------------------------------------------------ kernels ---------------------


@numba.njit(cache=True, nogil=True)
def _glue(n, a, b):
    parent = np.arange(n)
    for k in range(a.size):
        ra = _find(parent, a[k])
        rb = _find(parent, b[k])
        if ra != rb:
            if ra < rb:
                parent[rb] = ra
            else:
                parent[ra] = rb
    for i in range(n):
        parent[i] = _find(parent, i)
    return parent


@numba.njit(cache=True, nogil=True)
def _linkage(n, ea, eb, order, size_in, frozen_in, threshold):
    """Size-dependent single linkage along ``order`` with freezing.

    Returns (root per node, open per node): a group is *open* when it is frozen or *pending* (a
    group already at the threshold that met a frozen group: whether they join is decided by the
    parent from the frozen group's size alone, while this group goes on merging small neighbours
    here — its own decisions do not depend on that answer)."""
    parent = np.arange(n)
    size = size_in.copy()
    fz = frozen_in.copy()
    pend = np.zeros(n, np.bool_)
    for k in range(order.size):
        i = order[k]
        ra = _find(parent, ea[i])
        rb = _find(parent, eb[i])
        if ra == rb:
            continue
        if size[ra] >= threshold and size[rb] >= threshold:
            continue  # never merges: sizes only grow (a frozen group's true size is larger)
        if fz[ra] and fz[rb]:
            continue
        if fz[ra] or fz[rb]:
            x = rb if fz[ra] else ra
            if size[x] >= threshold:
                pend[x] = True  # merges iff the frozen group is still small: the parent decides
            else:
                fz[x] = True  # merges into the frozen group; the parent replays it
            continue
        if ra < rb:
            parent[rb] = ra
            size[ra] += size[rb]
            pend[ra] |= pend[rb]
        else:
            parent[ra] = rb
            size[rb] += size[ra]
            pend[rb] |= pend[ra]
    out = np.empty(n, np.bool_)
    for i in range(n):
        parent[i] = _find(parent, i)
    for i in range(n):
        out[i] = fz[parent[i]] or pend[parent[i]]
    return parent, out


# ------------------------------------------------------------------ helpers ---------------------
@numba.njit(cache=True, nogil=True)
def _compact_kernel(root):
    """Labels 0..g-1 of ``root`` values (each in 0..n-1) in increasing order of the value."""
    n = root.size
    lab_of = np.full(n, -1, np.int64)
    for i in range(n):
        lab_of[root[i]] = 0
    g = 0
    for r in range(n):
        if lab_of[r] == 0:
            lab_of[r] = g
            g += 1
    lab = np.empty(n, np.int64)
    for i in range(n):
        lab[i] = lab_of[root[i]]
    return lab, g


def _compact(root: np.ndarray) -> tuple[np.ndarray, int]:
    """As ``np.unique(root, return_inverse=True)`` for roots of a union–find over 0..n-1."""
    root = np.asarray(root, np.int64)
    if root.size and (root.min() < 0 or root.max() >= root.size):  # pragma: no cover - roots are node indices
        u, lab = np.unique(root, return_inverse=True)
        return lab.astype(np.int64), int(u.size)
    lab, g = _compact_kernel(root)
    return lab, int(g)


@numba.njit(cache=True, nogil=True)
def _group_kernel(lab, g, uid, size, minidx, rank, nsv, stage, bbox, sem):
    oid = np.full(g, np.iinfo(np.uint64).max, np.uint64)
    osize = np.zeros(g, np.int64)
    ominidx = np.full(g, np.iinfo(np.int64).max, np.int64)
    orank = np.full(g, -1, np.int64)
    onsv = np.zeros(g, np.int64)
    ostage = np.zeros(g, np.int8)
    obb = np.empty((g, 6), np.int64)
    obb[:, :3] = np.iinfo(np.int64).max
    obb[:, 3:] = -1
    osem = np.zeros((g, sem.shape[1]), np.float64)
    for i in range(lab.size):
        k = lab[i]
        if uid[i] < oid[k]:
            oid[k] = uid[i]
        osize[k] += size[i]
        if minidx[i] < ominidx[k]:
            ominidx[k] = minidx[i]
        if rank[i] > orank[k]:
            orank[k] = rank[i]
        onsv[k] += nsv[i]
        if stage[i] > ostage[k]:
            ostage[k] = stage[i]
        for j in range(3):
            if bbox[i, j] < obb[k, j]:
                obb[k, j] = bbox[i, j]
            if bbox[i, 3 + j] > obb[k, 3 + j]:
                obb[k, 3 + j] = bbox[i, 3 + j]
        for j in range(sem.shape[1]):
            osem[k, j] += sem[i, j]
    return oid, osize, ominidx, orank, onsv, ostage, obb, osem


def _group(lab, g, u: dict) -> dict:
    """Aggregate unit rows by group labels ``lab`` (0..g-1): smallest id, summed size, nsv and
    semantic counts, smallest first voxel, largest rank and stage, union of bounding boxes."""
    r = _group_kernel(np.asarray(lab, np.int64), int(g), np.asarray(u["id"], np.uint64),
                      np.asarray(u["size"], np.int64), np.asarray(u["minidx"], np.int64),
                      np.asarray(u["rank"], np.int64), np.asarray(u["nsv"], np.int64),
                      np.asarray(u["stage"], np.int8), np.ascontiguousarray(u["bbox"], np.int64),
                      np.ascontiguousarray(u["sem"], np.float64).reshape(len(lab), N_CLASSES))
    return dict(zip(("id", "size", "minidx", "rank", "nsv", "stage", "bbox", "sem"), r))


@numba.njit(cache=True, nogil=True)
def _reduce_pairs(o, lo, hi, ka, kk, q, cnt):
    """Rows visited in order ``o`` (grouped by (lo, hi)) to one row per pair: the best key
    (largest ka, then smallest kk), summed q and cnt."""
    m = 0
    for j in range(o.size):
        i = o[j]
        if j == 0 or lo[i] != lo[o[j - 1]] or hi[i] != hi[o[j - 1]]:
            m += 1
    rlo = np.empty(m, lo.dtype)
    rhi = np.empty(m, hi.dtype)
    rka = np.empty(m, ka.dtype)
    rkk = np.empty(m, kk.dtype)
    rq = np.zeros(m, q.dtype)
    rc = np.zeros(m, cnt.dtype)
    k = -1
    for j in range(o.size):
        i = o[j]
        if j == 0 or lo[i] != lo[o[j - 1]] or hi[i] != hi[o[j - 1]]:
            k += 1
            rlo[k] = lo[i]
            rhi[k] = hi[i]
            rka[k] = ka[i]
            rkk[k] = kk[i]
        elif ka[i] > rka[k] or (ka[i] == rka[k] and kk[i] < rkk[k]):
            rka[k] = ka[i]
            rkk[k] = kk[i]
        rq[k] += q[i]
        rc[k] += cnt[i]
    return rlo, rhi, rka, rkk, rq, rc


def _aggregate_edges(a, b, ka, kk, q, cnt):
    """Drop self edges, order ends (a < b), merge duplicate pairs (best key, summed q and cnt).

    ``a``, ``b``: node indices (0..n-1). Returns the pairs sorted by (lo, hi)."""
    keep = a != b
    a, b, ka, kk, q, cnt = a[keep], b[keep], ka[keep], kk[keep], q[keep], cnt[keep]
    lo = np.minimum(a, b)
    hi = np.maximum(a, b)
    if lo.size == 0:
        return lo, hi, ka, kk, q, cnt
    from emkit.segment.chunk_watershed import _pair_order

    lo64, hi64 = lo.astype(np.int64), hi.astype(np.int64)
    o = _pair_order(lo64, hi64, int(hi64.max()))
    return _reduce_pairs(o, lo, hi, ka, kk, q, cnt)


@numba.njit(cache=True, nogil=True)
def _hash_index(ids):
    """Open-addressing table of uint64 ids (their positions); capacity a power of two."""
    cap = 16
    while cap < 2 * ids.size + 2:
        cap *= 2
    keys = np.zeros(cap, np.uint64)
    vals = np.full(cap, -1, np.int64)
    mask = np.uint64(cap - 1)
    for i in range(ids.size):
        h = (ids[i] * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)
        s = h & mask
        while vals[s] >= 0 and keys[s] != ids[i]:
            s = (s + np.uint64(1)) & mask
        if vals[s] < 0:
            keys[s] = ids[i]
            vals[s] = i
    return keys, vals


@numba.njit(cache=True, nogil=True)
def _hash_lookup(keys, vals, q):
    """Positions of ``q`` in the table (-1 when absent)."""
    mask = np.uint64(keys.size - 1)
    out = np.empty(q.size, np.int64)
    for i in range(q.size):
        h = (q[i] * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)
        s = h & mask
        while vals[s] >= 0 and keys[s] != q[i]:
            s = (s + np.uint64(1)) & mask
        out[i] = vals[s]
    return out


@numba.njit(cache=True, nogil=True)
def _sort_ties(o, ka, kk):
    """Within runs of equal ``ka[o]``, order ``o`` by ``kk``."""
    n = o.size
    i = 0
    while i < n:
        j = i + 1
        while j < n and ka[o[j]] == ka[o[i]]:
            j += 1
        if j - i > 1:
            seg = o[i:j].copy()
            oo = np.argsort(kk[seg])
            for t in range(j - i):
                o[i + t] = seg[oo[t]]
        i = j
    return o


def _global_order(idx, ka, kk) -> np.ndarray:
    """``idx`` in the global edge order: affinity descending, then order key ascending (as
    ``idx[np.lexsort((kk[idx], -ka[idx]))]``; order keys are unique)."""
    k = ka[idx]
    o = np.argsort(-k)
    return idx[_sort_ties(o, k, kk[idx])]


class _Index:
    """Positions of unit ids (uint64) in the box's unit array, by hashing (O(1) per look-up)."""

    def __init__(self, ids):
        self.keys, self.vals = _hash_index(np.ascontiguousarray(ids, np.uint64))

    def __call__(self, q) -> np.ndarray:
        q = np.ascontiguousarray(q, np.uint64)
        j = _hash_lookup(self.keys, self.vals, q)
        if q.size and np.any(j < 0):
            raise RuntimeError("octree: an edge or glue pair names a unit that is not in the box")
        return j




# ------------------------------------------------------------------ the box ---------------------
def process_box(box_start, box_stop, volume_shape, state: dict, glue_a, glue_b, wparams, aparams,
                use_sem: bool) -> tuple[dict, dict]:
    """Run one octree box.

    Parameters
    ----------
    box_start, box_stop : the box (z, y, x), volume coordinates, half-open.
    volume_shape : (z, y, x).
    state : units, edges (unit ids) and fragment map (see :func:`empty_state`) of the box: its
        children's passed-up states plus the edges across their shared faces.
    glue_a, glue_b : unit ids to glue (watershed pointers / seed plateaus crossing faces).
    wparams, aparams : WatershedParams, AgglomerationParams.
    use_sem : semantic counts are meaningful.

    Returns
    -------
    (passed-up state, result) where result has the unit map (``map_in``, ``map_kind``,
    ``map_out``), the new supervoxels (``sv_rank``, ``sv_size``) and the agglomeration decisions
    (``m_a``, ``m_b``, ``m_w`` as supervoxel ranks; ``v_a``, ``v_b``, ``v_w``, ``v_r``).
    """
    u = {k[2:]: state[k] for k in UNIT_KEYS}
    n = u["id"].size
    index = _Index(u["id"])
    ea = index(state["e_a"])
    eb = index(state["e_b"])
    ka, kk, q, cnt = state["e_ka"], state["e_kk"], state["e_q"], state["e_cnt"]

    # 1. glue
    root = _glue(n, index(glue_a), index(glue_b))
    lab1, g1 = _compact(root)
    n1 = _group(lab1, g1, u)
    t1 = touches(n1["bbox"], box_start, box_stop, volume_shape)
    a1, b1 = lab1[ea], lab1[eb]
    st1 = n1["stage"]

    # 2. size-dependent single linkage (pass 1) on stage-2 groups
    T = int(wparams.size_threshold)
    if T > 0:
        sel = (st1[a1] == 2) & (st1[b1] == 2) & (ka >= max(float(wparams.merge_affinity), float(wparams.low))) & (a1 != b1)
        # an edge whose ends both start at the threshold never merges (sizes only grow): not sorted
        # ... nor one between two frozen units (frozen groups never merge)
        fz1 = t1 & (st1 == 2)
        sel &= ((n1["size"][a1] < T) | (n1["size"][b1] < T)) & ~(fz1[a1] & fz1[b1])
        idx = np.flatnonzero(sel)
        o = _global_order(idx, ka, kk)
        root2, fz2 = _linkage(g1, a1, b1, o, n1["size"], fz1, T)
    else:
        root2, fz2 = np.arange(g1), t1.copy()
    fz2 &= st1 == 2
    lab2, g2 = _compact(root2)
    n2 = _group(lab2, g2, n1)
    f2 = np.zeros(g2, bool)
    np.logical_or.at(f2, lab2, fz2)
    t2 = touches(n2["bbox"], box_start, box_stop, volume_shape)
    a2, b2 = lab2[a1], lab2[b1]
    st2 = n2["stage"]

    # 3. dust pass (pass 2) on stage <= 3 groups
    D = int(wparams.dust_size)
    init3 = (f2 | t2) & (st2 <= 3)
    if D > 0:
        sel = (st2[a2] <= 3) & (st2[b2] <= 3) & (ka >= float(wparams.low)) & (a2 != b2)
        sel &= ((n2["size"][a2] < D) | (n2["size"][b2] < D)) & ~(init3[a2] & init3[b2])
        idx = np.flatnonzero(sel)
        o = _global_order(idx, ka, kk)
        root3, fz3 = _linkage(g2, a2, b2, o, n2["size"], init3, D)
    else:
        root3, fz3 = np.arange(g2), init3.copy()
    lab3, g3 = _compact(root3)
    n3 = _group(lab3, g3, n2)
    f3 = np.zeros(g3, bool)
    np.logical_or.at(f3, lab3, fz3 & (st2 <= 3))
    p2open = np.zeros(g3, bool)  # still in pass 1 (a frozen pass-1 group stays alone in pass 2)
    np.logical_or.at(p2open, lab3, f2)
    st3 = n3["stage"]
    is_sv = (st3 <= 3) & ~f3
    drop = is_sv & bool(wparams.drop_dust) & (n3["size"] < D) if D > 0 else np.zeros(g3, bool)
    is_sv &= ~drop
    is_open = (st3 <= 3) & f3

    # 4. agglomeration on supervoxels (new ones and stage-4 objects); open units frozen
    keep = ~drop
    p4 = np.cumsum(keep) - 1
    n4 = int(keep.sum())
    rank0 = np.where(is_sv, n3["minidx"], np.where(st3 == 4, n3["rank"], -1))[keep]
    nsv0 = np.where(is_sv | is_open, 1, n3["nsv"])[keep]
    t3 = touches(n3["bbox"], box_start, box_stop, volume_shape)
    frozen0 = (is_open | t3)[keep]
    a3, b3 = lab3[a2], lab3[b2]
    ok = keep[a3] & keep[b3]
    A4, B4, KA, KK, Q, C = _aggregate_edges(p4[a3[ok]], p4[b3[ok]], ka[ok], kk[ok], q[ok], cnt[ok])
    sem4 = n3["sem"][keep]
    # an edge between two frozen nodes is inert in the kernel (frozen nodes never merge, so it is
    # never acted on, combined or moved): it bypasses the kernel and is passed up as it is
    act = ~(frozen0[A4] & frozen0[B4])
    raw = run_kernel(n4, A4[act], B4[act], Q[act], C[act].astype(np.float64), n3["size"][keep], nsv0, sem4,
                     use_sem, frozen0, rank0, aparams)
    ma, mb, mw, va, vb, vw, vr = raw[:7]
    kfrozen = raw[15]
    alive = np.ones(A4.size, np.bool_)
    eu, ev, esum, ecnt = A4.astype(np.int64), B4.astype(np.int64), Q.astype(np.int64), C.astype(np.float64)
    for full, part in zip((alive, eu, ev, esum, ecnt), raw[7:12]):
        full[act] = part
    root4 = _components(n4, ma, mb, np.ones(ma.size, np.bool_))
    lab4, g4 = _compact(root4)
    f4 = np.zeros(g4, bool)
    np.logical_or.at(f4, lab4, kfrozen)

    result = {"m_a": rank0[ma], "m_b": rank0[mb], "m_w": mw, "v_a": rank0[va], "v_b": rank0[vb],
              "v_w": vw, "v_r": vr, "sv_rank": n3["minidx"][is_sv], "sv_size": n3["size"][is_sv]}

    # 5. pass up the frozen groups
    n3k = {k: v[keep] for k, v in n3.items()}
    n3k["nsv"] = nsv0
    n3k["rank"] = np.where(is_open[keep], -1, rank0)
    up = _group(lab4, g4, n3k)
    open4 = np.zeros(g4, bool)
    np.logical_or.at(open4, lab4, is_open[keep])
    p2o4 = np.zeros(g4, bool)
    np.logical_or.at(p2o4, lab4, p2open[keep])
    stage_up = np.where(open4, np.where(p2o4, 2, 3), 4).astype(np.int8)
    upsel = np.flatnonzero(f4)
    new_id = np.zeros(g4, np.uint64)
    new_id[upsel] = up["id"][upsel]
    out = {"u_id": up["id"][upsel], "u_stage": stage_up[upsel], "u_size": up["size"][upsel],
           "u_minidx": up["minidx"][upsel], "u_rank": up["rank"][upsel], "u_nsv": up["nsv"][upsel],
           "u_bbox": up["bbox"][upsel], "u_sem": up["sem"][upsel]}
    # edges: alive kernel edges between frozen groups; watershed keys between open units
    la, lb = lab4[eu[alive]], lab4[ev[alive]]
    eq, ec = esum[alive], ecnt[alive].astype(np.int64)
    both = f4[la] & f4[lb] & (la != lb)
    la, lb, eq, ec = la[both], lb[both], eq[both], ec[both]
    eka = np.full(la.size, -1, np.float32)
    ekk = np.zeros(la.size, np.int64)
    if la.size and A4.size:
        g_lo, g_hi = np.minimum(la, lb), np.maximum(la, lb)
        # pre-kernel edges between open nodes are unchanged by the kernel: carry their keys
        pk = lab4[A4].astype(np.int64) * g4 + lab4[B4]
        pk2 = lab4[B4].astype(np.int64) * g4 + lab4[A4]
        isopen_edge = is_open[keep][A4] & is_open[keep][B4]
        keys = np.concatenate([pk[isopen_edge], pk2[isopen_edge]])
        vals = np.concatenate([np.flatnonzero(isopen_edge)] * 2)
        ko = np.argsort(keys, kind="stable")
        keys, vals = keys[ko], vals[ko]
        want = g_lo.astype(np.int64) * g4 + g_hi
        if keys.size:
            j = np.minimum(np.searchsorted(keys, want), keys.size - 1)
            hit = keys[j] == want
            eka[hit] = KA[vals[j[hit]]]
            ekk[hit] = KK[vals[j[hit]]]
    out.update(e_a=new_id[la], e_b=new_id[lb], e_ka=eka, e_kk=ekk, e_q=eq.astype(np.int64), e_cnt=ec)
    # fragment map: fragments on the box's internal faces, pointing at their passed-up unit
    fsel = touches(state["f_bbox"], box_start, box_stop, volume_shape)
    fpos = index(state["f_unit"][fsel])
    g4_of_unit = np.full(n, -1, np.int64)
    valid = keep[lab3[lab2[lab1]]]
    g4_of_unit[valid] = lab4[p4[lab3[lab2[lab1]]][valid]]
    fg = g4_of_unit[fpos]
    if fg.size and (np.any(fg < 0) or not np.all(f4[fg])):
        raise RuntimeError("octree: a fragment on a box face is not in a frozen unit")
    out.update(f_id=state["f_id"][fsel], f_unit=new_id[fg] if fg.size else np.zeros(0, np.uint64),
               f_bbox=state["f_bbox"][fsel])
    # unit map (stages <= 3): where each incoming unit went
    g3u = lab3[lab2[lab1]]
    mine = u["stage"] <= 3
    kind = np.where(drop[g3u], KIND_DROP, np.where(is_sv[g3u], KIND_SV, KIND_UNIT)).astype(np.int8)
    dest = np.where(kind == KIND_SV, n3["minidx"][g3u].astype(np.uint64), np.uint64(0))
    um = kind == KIND_UNIT
    dest[um] = new_id[g4_of_unit[um]]
    result.update(map_in=u["id"][mine], map_kind=kind[mine], map_out=dest[mine])
    return out, result
