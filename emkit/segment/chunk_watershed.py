"""Watershed of one chunk, cut into *fragments* that glue exactly into the global basins.

The global watershed (:mod:`emkit.segment.watershed`) makes every voxel point along its
steepest edge; basins are the connected components of those pointers (plus the plateau edges of
regional maxima). Pointers are local — a voxel's steepest edges and whether they are plateau
edges need the affinities one voxel around it — except on plateaus, where the breadth-first
search from the plateau's exits decides. So, per chunk (affinities read with a 2-voxel halo):

* every voxel's steepest-edge bits are computed exactly on the chunk grown by 1;
* exits point along the non-plateau steepest edge chosen as in the global run (the far end's
  steepest affinity, which the 2-voxel halo also covers, then direction order); plateaus that lie inside the chunk
  are divided by the same FIFO search as the global run (a plateau's division depends only on
  its own exits, in raster order — other plateaus' entries in the global queue do not matter);
  plateaus at the high threshold never have exits and are whole basins (seeds);
* *fragments* are the connected components of the pointers (and seed plateau edges) inside the
  chunk. A pointer or seed plateau edge that crosses a chunk face is a *glue* flag on that face;
* plateaus below ``high`` that cross a chunk face are exported voxel by voxel
  (:func:`resolve_plateaus` divides them with the global search order afterwards — these are
  ties between affinities, small in practice).

Basins are then the unions of fragments along glue. Everything is exact (no approximation), so
the fragments' unions equal the global watershed's basins voxel for voxel.
"""
from __future__ import annotations

import numba
import numpy as np

from emkit.segment.region_graph import N_CLASSES, quantize
from emkit.segment.watershed import _exit_direction, _steepest
from emkit.segment._unionfind import find as _find

__all__ = ["chunk_fragments", "resolve_plateaus", "HALO", "FRAG_SHIFT"]

#: voxels of affinity context read around a chunk
HALO = 2
#: fragment id = leaf index << FRAG_SHIFT | local id (local ids 1..2**32-1)
FRAG_SHIFT = 32


@numba.njit(cache=True, nogil=True)
def _union(parent, a, b):
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra != rb:
        if ra < rb:
            parent[rb] = ra
        else:
            parent[ra] = rb


@numba.njit(cache=True, nogil=True)
def _edge_value(aff, d, z, y, x):
    if d == 0:
        return aff[0, z, y, x]
    if d == 1:
        return aff[1, z, y, x]
    if d == 2:
        return aff[2, z, y, x]
    if d == 3:
        return aff[0, z + 1, y, x]
    if d == 4:
        return aff[1, z, y + 1, x]
    return aff[2, z, y, x + 1]


@numba.njit(cache=True, nogil=True)
def _fragments_kernel(bits, top, aff, oz, oy, ox, cz, cy, cx, high):
    """Fragments of the chunk [o, o + c) of the region whose steepest bits are ``bits``.

    Returns (lab int64 chunk-flat 1..F, F, cross uint8 (glue bits per direction), plateau mask
    uint8, exit bool, export bool (voxel of a plateau below high that crosses the chunk))."""
    _, RZ, RY, RX = aff.shape
    N = cz * cy * cx
    offr = np.array([-RY * RX, -RX, -1, RY * RX, RX, 1], np.int64)
    offc = np.array([-cy * cx, -cx, -1, cy * cx, cx, 1], np.int64)
    opp = np.array([8, 16, 32, 1, 2, 4], np.uint8)
    pm = np.zeros(N, np.uint8)      # plateau edges
    inside = np.zeros(N, np.uint8)  # directions whose neighbour lies in the chunk
    ptr = np.full(N, -1, np.int8)
    isexit = np.zeros(N, np.bool_)
    ishigh = np.zeros(N, np.bool_)
    b_ = np.zeros(N, np.uint8)
    for z in range(cz):
        for y in range(cy):
            for x in range(cx):
                i = (z * cy + y) * cx + x
                ins = 0
                if z > 0:
                    ins |= 1
                if y > 0:
                    ins |= 2
                if x > 0:
                    ins |= 4
                if z + 1 < cz:
                    ins |= 8
                if y + 1 < cy:
                    ins |= 16
                if x + 1 < cx:
                    ins |= 32
                inside[i] = ins
                r = ((z + oz) * RY + (y + oy)) * RX + (x + ox)
                b = bits[r]
                b_[i] = b
                if b == 0:
                    continue
                p = 0
                first = -1
                for d in range(6):
                    if b & (1 << d):
                        if first < 0:
                            first = d
                        if bits[r + offr[d]] & opp[d]:
                            p |= 1 << d
                ptr[i] = _exit_direction(bits, top, r, offr, opp)
                pm[i] = p
                isexit[i] = ptr[i] >= 0
                ishigh[i] = _edge_value(aff, first, z + oz, y + oy, x + ox) >= high
    # plateau components inside the chunk
    comp = np.arange(N)
    for i in range(N):
        p = pm[i] & inside[i]
        if p:
            for d in range(3, 6):  # each inside edge once
                if p & (1 << d):
                    _union(comp, i, i + offc[d])
    crossing = np.zeros(N, np.bool_)
    hasexit = np.zeros(N, np.bool_)
    for i in range(N):
        if b_[i] == 0:
            continue
        r = _find(comp, i)
        if pm[i] & ~inside[i]:
            crossing[r] = True
        if isexit[i]:
            hasexit[r] = True
    export = np.zeros(N, np.bool_)
    for i in range(N):
        if b_[i] != 0:
            r = _find(comp, i)
            export[i] = crossing[r] and not ishigh[i] and pm[i] != 0
    # BFS from exits (raster order) through plateau edges, inside components that are not exported
    frag = np.arange(N)
    cross = np.zeros(N, np.uint8)
    seen = np.zeros(N, np.bool_)
    queue = np.empty(N, np.int64)
    qt = 0
    for i in range(N):
        if isexit[i]:
            seen[i] = True
            d = ptr[i]
            if inside[i] & (1 << d):
                _union(frag, i, i + offc[d])
            else:
                cross[i] |= 1 << d
            if not export[i]:
                queue[qt] = i
                qt += 1
    qh = 0
    while qh < qt:
        p = queue[qh]
        qh += 1
        m = pm[p] & inside[p]
        for d in range(6):
            if m & (1 << d):
                q = p + offc[d]
                if not seen[q] and not export[q]:
                    seen[q] = True
                    _union(frag, q, p)
                    queue[qt] = q
                    qt += 1
    # seeds: plateaus without exits (in the chunk) that are not exported: whole basins
    for i in range(N):
        if b_[i] == 0 or seen[i] or export[i]:
            continue
        r = _find(comp, i)
        if hasexit[r]:
            continue  # pragma: no cover - reached by the BFS above
        for d in range(6):
            if pm[i] & (1 << d):
                if inside[i] & (1 << d):
                    _union(frag, i, i + offc[d])
                else:
                    cross[i] |= 1 << d
    lab = np.zeros(N, np.int64)
    ids = np.zeros(N, np.int64)
    n = 0
    for i in range(N):
        if b_[i] == 0:
            continue
        r = _find(frag, i)
        if ids[r] == 0:
            n += 1
            ids[r] = n
        lab[i] = ids[r]
    return lab, n, cross, pm, isexit, export


@numba.njit(cache=True, nogil=True)
def _chunk_faces(lab, aff, oz, oy, ox, cz, cy, cx, gz0, gy0, gx0, Y, X, N):
    """In-chunk face pairs between different fragments: (lo, hi, a, order key, q)."""
    n = 0
    for z in range(cz):
        for y in range(cy):
            for x in range(cx):
                a = lab[z, y, x]
                if a == 0:
                    continue
                if z > 0 and lab[z - 1, y, x] != 0 and lab[z - 1, y, x] != a:
                    n += 1
                if y > 0 and lab[z, y - 1, x] != 0 and lab[z, y - 1, x] != a:
                    n += 1
                if x > 0 and lab[z, y, x - 1] != 0 and lab[z, y, x - 1] != a:
                    n += 1
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    w = np.empty(n, np.float32)
    key = np.empty(n, np.int64)
    k = 0
    for z in range(cz):
        for y in range(cy):
            for x in range(cx):
                a = lab[z, y, x]
                if a == 0:
                    continue
                v = ((z + gz0) * Y + (y + gy0)) * X + (x + gx0)
                for c in range(3):
                    if c == 0:
                        if z == 0:
                            continue
                        b = lab[z - 1, y, x]
                    elif c == 1:
                        if y == 0:
                            continue
                        b = lab[z, y - 1, x]
                    else:
                        if x == 0:
                            continue
                        b = lab[z, y, x - 1]
                    if b == 0 or b == a:
                        continue
                    lo[k] = min(a, b)
                    hi[k] = max(a, b)
                    w[k] = aff[c, z + oz, y + oy, x + ox]
                    key[k] = c * N + v
                    k += 1
    return lo, hi, w, key


@numba.njit(cache=True, nogil=True)
def _fragment_table(lab, n, cz, cy, cx, gz0, gy0, gx0, Y, X):
    """One pass over the chunk's labels (1..n, numbered in raster order of their first voxel):
    sizes, global raster index of the first voxel, inclusive bounding boxes (global)."""
    sizes = np.zeros(n, np.int64)
    minidx = np.full(n, -1, np.int64)
    bbox = np.empty((n, 6), np.int64)
    for z in range(cz):
        for y in range(cy):
            for x in range(cx):
                k = lab[(z * cy + y) * cx + x] - 1
                if k < 0:
                    continue
                gz, gy, gx = z + gz0, y + gy0, x + gx0
                if sizes[k] == 0:
                    minidx[k] = (gz * Y + gy) * X + gx
                    bbox[k, 0] = gz
                    bbox[k, 1] = gy
                    bbox[k, 2] = gx
                    bbox[k, 3] = gz
                    bbox[k, 4] = gy
                    bbox[k, 5] = gx
                else:
                    # z only grows in raster order
                    bbox[k, 3] = gz
                    if gy < bbox[k, 1]:
                        bbox[k, 1] = gy
                    if gy > bbox[k, 4]:
                        bbox[k, 4] = gy
                    if gx < bbox[k, 2]:
                        bbox[k, 2] = gx
                    if gx > bbox[k, 5]:
                        bbox[k, 5] = gx
                sizes[k] += 1
    return sizes, minidx, bbox


@numba.njit(cache=True, nogil=True)
def _pair_order(a, b, n):
    """Row order sorting (a, b) (both integers in 0..n): two stable counting-sort passes, O(rows + n)."""
    m = a.size
    cnt = np.zeros(n + 2, np.int64)
    tmp = np.empty(m, np.int64)
    for i in range(m):
        cnt[b[i] + 1] += 1
    for k in range(n + 1):
        cnt[k + 1] += cnt[k]
    for i in range(m):
        tmp[cnt[b[i]]] = i
        cnt[b[i]] += 1
    cnt[:] = 0
    for i in range(m):
        cnt[a[i] + 1] += 1
    for k in range(n + 1):
        cnt[k + 1] += cnt[k]
    o = np.empty(m, np.int64)
    for j in range(m):
        i = tmp[j]
        o[cnt[a[i]]] = i
        cnt[a[i]] += 1
    return o


@numba.njit(cache=True, nogil=True)
def _reduce_dense(a, b, w, key, q, cnt, low, n):
    """As ``_reduce_sorted`` for pair ends that are integers 0..n: rows bucketed by ``a`` (one
    counting pass), reduced per bucket through a stamp table indexed by ``b``, each bucket's
    pairs then ordered by ``b``. O(rows + n) plus the (small) per-bucket sorts."""
    m = a.size
    start = np.zeros(n + 2, np.int64)
    for i in range(m):
        start[a[i] + 1] += 1
    for k in range(n + 1):
        start[k + 1] += start[k]
    pos = start[:-1].copy()
    rows = np.empty(m, np.int64)
    for i in range(m):
        rows[pos[a[i]]] = i
        pos[a[i]] += 1
    stamp = np.full(n + 1, -1, np.int64)
    slot = np.empty(n + 1, np.int64)
    ra = np.empty(m, a.dtype)
    rb = np.empty(m, b.dtype)
    rw = np.full(m, -1.0, np.float32)
    rk = np.zeros(m, np.int64)
    rq = np.zeros(m, np.int64)
    rc = np.zeros(m, np.int64)
    j = 0
    for g in range(n + 1):
        s0 = start[g]
        s1 = start[g + 1]
        if s0 == s1:
            continue
        j0 = j
        for t in range(s0, s1):
            i = rows[t]
            bb = b[i]
            if stamp[bb] != g:
                stamp[bb] = g
                slot[bb] = j
                ra[j] = a[i]
                rb[j] = bb
                j += 1
            k = slot[bb]
            rq[k] += q[i]
            rc[k] += cnt[i]
            if w[i] >= low and (w[i] > rw[k] or (w[i] == rw[k] and key[i] < rk[k])):
                rw[k] = w[i]
                rk[k] = key[i]
        c = j - j0
        if c > 1:  # order the bucket's pairs by b (insertion sort: buckets are small; else argsort)
            if c <= 32:
                for x in range(j0 + 1, j):
                    vb, vw, vk, vq, vc = rb[x], rw[x], rk[x], rq[x], rc[x]
                    y = x - 1
                    while y >= j0 and rb[y] > vb:
                        rb[y + 1] = rb[y]
                        rw[y + 1] = rw[y]
                        rk[y + 1] = rk[y]
                        rq[y + 1] = rq[y]
                        rc[y + 1] = rc[y]
                        y -= 1
                    rb[y + 1] = vb
                    rw[y + 1] = vw
                    rk[y + 1] = vk
                    rq[y + 1] = vq
                    rc[y + 1] = vc
            else:
                o = np.argsort(rb[j0:j]) + j0
                tb, tw, tk, tq, tc = rb[o], rw[o], rk[o], rq[o], rc[o]
                rb[j0:j] = tb
                rw[j0:j] = tw
                rk[j0:j] = tk
                rq[j0:j] = tq
                rc[j0:j] = tc
    return ra[:j].copy(), rb[:j].copy(), rw[:j].copy(), rk[:j].copy(), rq[:j].copy(), rc[:j].copy()


@numba.njit(cache=True, nogil=True)
def _reduce_sorted(o, a, b, w, key, q, cnt, low):
    """Reduce face rows (visited in order ``o``, grouped by pair) to one row per pair."""
    n = o.size
    m = 0
    for k in range(n):
        i = o[k]
        if k == 0 or a[i] != a[o[k - 1]] or b[i] != b[o[k - 1]]:
            m += 1
    ra = np.empty(m, a.dtype)
    rb = np.empty(m, b.dtype)
    rw = np.full(m, -1.0, np.float32)
    rk = np.zeros(m, np.int64)
    rq = np.zeros(m, np.int64)
    rc = np.zeros(m, np.int64)
    j = -1
    for k in range(n):
        i = o[k]
        if k == 0 or a[i] != a[o[k - 1]] or b[i] != b[o[k - 1]]:
            j += 1
            ra[j] = a[i]
            rb[j] = b[i]
        rq[j] += q[i]
        rc[j] += cnt[i]
        if w[i] >= low and (w[i] > rw[j] or (w[i] == rw[j] and key[i] < rk[j])):
            rw[j] = w[i]
            rk[j] = key[i]
    return ra, rb, rw, rk, rq, rc


def reduce_edges(a, b, w, key, low, q=None, cnt=None):
    """Per pair (a < b): the best face (max affinity >= low, then smallest order key; -1 if none),
    the fixed-point affinity sum and the face count. Returns the pairs sorted (a, then b)."""
    a = np.asarray(a)
    b = np.asarray(b)
    w = np.asarray(w, np.float32)
    key = np.asarray(key, np.int64)
    if q is None:
        q = quantize(w)
        cnt = np.ones(a.size, np.int64)
    if a.size == 0:
        return a, b, np.zeros(0, np.float32), key, np.zeros(0, np.int64), np.zeros(0, np.int64)
    small = a.dtype.kind == "i" and int(min(a.min(), b.min())) >= 0
    if small and max(int(a.max()), int(b.max())) <= 4 * a.size + 1024:  # dense ids (a chunk's fragments)
        return _reduce_dense(a, b, w, key, np.asarray(q, np.int64), np.asarray(cnt, np.int64), np.float32(low),
                             max(int(a.max()), int(b.max())))
    if small and int(a.max()) < 2**31 and int(b.max()) < 2**31:
        o = np.argsort((a.astype(np.int64) << 31) | b.astype(np.int64), kind="stable")
    else:
        o = np.lexsort((b, a))
    return _reduce_sorted(o, a, b, w, key, np.asarray(q, np.int64), np.asarray(cnt, np.int64), np.float32(low))


def _global_ids(local, base) -> np.ndarray:
    """Fragment ids (uint64, 0 stays 0) of local labels."""
    return np.where(local > 0, np.asarray(local).astype(np.uint64) + base, np.uint64(0))


def chunk_fragments(aff_region, region_start, chunk_start, chunk_shape, volume_shape, params,
                    leaf_index: int, semantic=None) -> dict:
    """Fragments of one chunk and everything the octree needs from it.

    Parameters
    ----------
    aff_region : (3, z, y, x) float32 affinities of the chunk grown by :data:`HALO` voxels and
        clipped to the volume.
    region_start, chunk_start : first voxel (z, y, x) of the region and of the chunk, in volume
        coordinates (0-based).
    chunk_shape, volume_shape : (z, y, x) sizes.
    params : WatershedParams.
    leaf_index : C-order index of the chunk in the chunk grid (the high bits of fragment ids).
    semantic : (z, y, x) integer class labels 0..5 of the chunk, optional.

    Returns
    -------
    dict of arrays: ``labels`` (chunk, uint32 local ids), fragment table (``ids`` uint64, ``sizes``,
    ``minidx`` (global raster index of the first voxel), ``bbox`` (F, 6) z0, y0, x0, z1, y1, x1
    inclusive, ``sem`` (F, 6) or absent), in-chunk edges (``ea``, ``eb``, ``ka``, ``kk``, ``q``,
    ``cnt``), faces (``face_lab_<ax><lo|hi>``, ``face_glue_<ax><lo|hi>``, ``face_aff_<ax>lo``)
    and the exported plateau voxels (``px_v``, ``px_pm``, ``px_exit``, ``px_frag``).
    """
    aff = np.ascontiguousarray(aff_region, dtype=np.float32)
    Z, Y, X = (int(s) for s in volume_shape)
    cz, cy, cx = (int(s) for s in chunk_shape)
    oz, oy, ox = (int(c - r) for c, r in zip(chunk_start, region_start))
    gz0, gy0, gx0 = (int(c) for c in chunk_start)
    bits, top = _steepest(aff, np.ones((1, 1, 1), bool), False, float(params.low), float(params.high))
    lab, n, cross, pm, isexit, export = _fragments_kernel(bits, top, aff, oz, oy, ox, cz, cy, cx, float(params.high))
    lab3 = lab.reshape(cz, cy, cx)
    base = np.uint64(int(leaf_index) << FRAG_SHIFT)
    out: dict = {"labels": lab3.astype(np.uint32), "n": np.int64(n)}
    ids = base + np.arange(1, n + 1, dtype=np.uint64)
    flat = lab
    out["ids"] = ids
    sizes, minidx, bbox = _fragment_table(lab, n, cz, cy, cx, gz0, gy0, gx0, Y, X)
    out["sizes"], out["minidx"], out["bbox"] = sizes, minidx, bbox
    if semantic is not None:
        cls = np.asarray(semantic).reshape(-1).astype(np.int64)
        counts = np.bincount(flat * N_CLASSES + cls, minlength=(n + 1) * N_CLASSES)
        out["sem"] = counts.reshape(n + 1, N_CLASSES)[1:].astype(np.float64)
    lo, hi, w, key = _chunk_faces(lab3, aff, oz, oy, ox, cz, cy, cx, gz0, gy0, gx0, Y, X, Z * Y * X)
    ea, eb, ka, kk, q, cnt = reduce_edges(lo, hi, w, key, float(params.low))
    out.update(ea=ids[ea - 1] if ea.size else np.zeros(0, np.uint64),
               eb=ids[eb - 1] if eb.size else np.zeros(0, np.uint64), ka=ka, kk=kk, q=q, cnt=cnt)
    cross3 = cross.reshape(cz, cy, cx)
    for ax, name in enumerate("zyx"):
        if chunk_start[ax] > 0:
            sl = [slice(None)] * 3
            sl[ax] = 0
            out[f"face_lab_{name}lo"] = _global_ids(lab3[tuple(sl)], base)
            out[f"face_glue_{name}lo"] = (cross3[tuple(sl)] & (1 << ax)) != 0
            asl = [ax, slice(oz, oz + cz), slice(oy, oy + cy), slice(ox, ox + cx)]
            asl[1 + ax] = (oz, oy, ox)[ax]
            out[f"face_aff_{name}lo"] = aff[tuple(asl)]
        if chunk_start[ax] + (cz, cy, cx)[ax] < (Z, Y, X)[ax]:
            sl = [slice(None)] * 3
            sl[ax] = -1
            out[f"face_lab_{name}hi"] = _global_ids(lab3[tuple(sl)], base)
            out[f"face_glue_{name}hi"] = (cross3[tuple(sl)] & (1 << (ax + 3))) != 0
    ex = np.flatnonzero(export)
    ez, ey, exx = np.unravel_index(ex, (cz, cy, cx))
    out["px_v"] = ((ez + gz0) * Y + (ey + gy0)) * X + (exx + gx0)
    out["px_pm"] = pm[ex]
    out["px_exit"] = isexit[ex]
    out["px_frag"] = _global_ids(lab[ex], base)
    return out


@numba.njit(cache=True, nogil=True)
def _plateau_glue(v, pm, isexit, nbr):
    """Divide plateaus (sorted voxels v, neighbour rows nbr (n, 6), -1 none) like the global
    watershed; returns rows (child, parent) of pointers and seed plateau edges to glue."""
    n = v.size
    comp = np.arange(n)
    for i in range(n):
        for d in range(6):
            j = nbr[i, d]
            if j >= 0:
                _union(comp, i, j)
    hasexit = np.zeros(n, np.bool_)
    for i in range(n):
        if isexit[i]:
            hasexit[_find(comp, i)] = True
    ga = np.empty(6 * n, np.int64)
    gb = np.empty(6 * n, np.int64)
    k = 0
    seen = isexit.copy()
    queue = np.empty(n, np.int64)
    qt = 0
    for i in range(n):  # rows are in raster order, as the global queue
        if isexit[i]:
            queue[qt] = i
            qt += 1
    qh = 0
    while qh < qt:
        p = queue[qh]
        qh += 1
        for d in range(6):
            q = nbr[p, d]
            if q >= 0 and not seen[q]:
                seen[q] = True
                ga[k] = q
                gb[k] = p
                k += 1
                queue[qt] = q
                qt += 1
    for i in range(n):
        if not hasexit[_find(comp, i)]:
            for d in range(3, 6):
                j = nbr[i, d]
                if j >= 0:
                    ga[k] = i
                    gb[k] = j
                    k += 1
    return ga[:k], gb[:k]


def resolve_plateaus(v, pm, isexit, frag, volume_shape) -> tuple[np.ndarray, np.ndarray]:
    """Glue pairs (fragment a, fragment b) from the exported voxels of plateaus that cross chunk
    faces (all chunks' ``px_*`` concatenated). Returns two uint64 arrays."""
    v = np.asarray(v, np.int64)
    if v.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    Z, Y, X = volume_shape
    o = np.argsort(v, kind="stable")
    v, pm, isexit, frag = v[o], np.asarray(pm)[o], np.asarray(isexit, bool)[o], np.asarray(frag, np.uint64)[o]
    off = np.array([-Y * X, -X, -1, Y * X, X, 1], np.int64)
    nbr = np.full((v.size, 6), -1, np.int64)
    for d in range(6):
        has = (pm & (1 << d)) != 0
        t = v[has] + off[d]
        j = np.searchsorted(v, t)
        j = np.minimum(j, v.size - 1)
        ok = v[j] == t
        if not np.all(ok):  # pragma: no cover - every plateau neighbour is exported too
            raise RuntimeError("plateau export is missing voxels")
        nbr[np.flatnonzero(has), d] = j
    ga, gb = _plateau_glue(v, pm, isexit, nbr)
    return frag[ga], frag[gb]
