"""Constrained hierarchical mean-affinity agglomeration with a full merge history.

Algorithm (global greedy; paper, Methods: Agglomeration; Lee et al. 2017; Funke et al. 2019)
--------------------------------------------------------------------------------------------
Every edge of the region graph has a mean affinity ``aff_sum / count``. Repeatedly take the edge
with the highest mean, merge its two objects, and combine their edges to a common neighbour by
*adding* sums and counts. Sums are fixed-point integers (units of 2**-32, see
:func:`~emkit.segment.region_graph.region_graph`), so adding them is exact and a combined mean
does not depend on the order in which merges happened. Equal means are ordered by a tie key that
also depends only on the objects, not on history: each object's *rank* is the largest rank
(node position, i.e. id order) of its members, and an edge's key is (larger rank, smaller rank) of
its ends, smaller first. Ranks only grow as objects merge, so a tie key only gets later
(re-queued lazily when popped). Stop when the best mean is below
``min_affinity``. Implementation: a binary heap over arrays with lazy invalidation (an edge's
version is bumped when it changes; stale heap entries are skipped), a hash table from node pairs
to edges, and per-node edge lists that are concatenated in O(1) while only the smaller one is
walked — O(E log E) overall, all in numba.

Mean linkage is *reducible*: merging A and B gives an edge (A∪B, C) whose mean lies between
those of (A, C) and (B, C). Hence the means of successive merges never increase, and the merges
with mean >= t are exactly the merges a run stopped at t would make. :class:`MergeHistory`
stores them in order, and ``cut(t)`` (union of the merges with affinity >= t) equals a rerun
with ``min_affinity=t`` — milliseconds instead of a rerun.

Constraints (paper, Methods: Agglomeration), only for edges whose mean is below
``constraint_threshold`` (0.5):

* An object has a semantic class when it has >= ``semantic_min_size`` voxels and >=
  ``semantic_min_fraction`` of them share one class 1..5 (class histograms are added on merge,
  so the class is re-evaluated as objects grow). Objects whose classes form a pair of
  ``veto_pairs`` (neuron–glia, axon–dendrite, axon–soma) are not merged.
* If both objects contain more than ``size_min_supervoxels_both`` supervoxels and one of them
  more than ``size_max_supervoxels_one``, they are not merged.

A vetoed edge is **removed** and never retried; its contacts are forgotten. If one of its ends
later merges with a third object that also touches the other end, their remaining edge is judged
afresh when it is popped (and its mean, made only of the un-vetoed contacts, is no higher than
before). Vetoes are recorded in the history for inspection.

Do vetoes keep the "mutual-best pairs in any order" property the chunked form relies on?
Yes. (1) A veto, like a merge, is decided only from the popped edge's mean and the states of
its two ends (voxel counts, supervoxel counts, class histograms), which are complete for
segments that are not frozen. (2) Removing an edge, merging, and combining edges never create an
edge whose mean exceeds the one being processed (reducibility holds with removals, since a
combined edge is built from live contacts only). So an edge that is the best edge of both its
ends stays so until it is processed, whatever happens elsewhere, and is processed — merged or
vetoed — with the same end states as in the global run. Processing mutual-best edges in any
order therefore yields the global result; with the (mean, tie key) order above this holds for
equal means too, since a combined edge's key is never earlier than its parts' keys. The alternative of keeping vetoed contacts inside
combined edges was rejected: it can raise a combined edge's mean above the current level, which
breaks both monotone cuts and chunk independence.

The kernel also accepts a ``frozen`` node mask (for the octree form): an edge with a frozen end is
not merged; both of its ends become frozen and the edge is kept for the parent chunk. (Only the
surviving node of a merged object carries a valid flag: an object is frozen when any member's
flag is set.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from emkit.errors import InputError
from emkit.segment.params import AgglomerationParams
from emkit.segment.region_graph import N_CLASSES, RegionGraph

__all__ = ["agglomerate", "MergeHistory", "VETO_SIZE", "VETO_SEMANTIC"]

VETO_SIZE = 1
VETO_SEMANTIC = 2

_EMPTY = -1
_TOMB = -2


# ---------------------------------------------------------------- hash table (pair -> edge) ----
@numba.njit(cache=True, nogil=True, inline="always")
def _slot0(key, mask):
    h = (key * np.int64(-7046029254386353131)) ^ (key >> 29)
    return h & mask


@numba.njit(cache=True, nogil=True)
def _h_find(hk, key):
    mask = hk.size - 1
    i = _slot0(key, mask)
    while True:
        k = hk[i]
        if k == key:
            return i
        if k == _EMPTY:
            return -1
        i = (i + 1) & mask


@numba.njit(cache=True, nogil=True)
def _h_insert(hk, hv, key, val):
    """Insert a key known to be absent; returns 1 if an empty slot was used, 0 for a tombstone."""
    mask = hk.size - 1
    i = _slot0(key, mask)
    while True:
        k = hk[i]
        if k == _EMPTY or k == _TOMB:
            hk[i] = key
            hv[i] = val
            return 1 if k == _EMPTY else 0
        i = (i + 1) & mask


@numba.njit(cache=True, nogil=True)
def _h_build(cap, eu, ev, alive, n):
    hk = np.full(cap, _EMPTY, np.int64)
    hv = np.empty(cap, np.int64)
    used = 0
    for e in range(eu.size):
        if alive[e]:
            used += _h_insert(hk, hv, _pair_key(eu[e], ev[e], n), e)
    return hk, hv, used


@numba.njit(cache=True, nogil=True, inline="always")
def _pair_key(a, b, n):
    if a < b:
        return a * n + b
    return b * n + a


# ---------------------------------------------------------------- heap (max mean, min tie key) -
@numba.njit(cache=True, nogil=True, inline="always")
def _before(k1, a1, b1, k2, a2, b2):
    return k1 > k2 or (k1 == k2 and (a1 < a2 or (a1 == a2 and b1 < b2)))


@numba.njit(cache=True, nogil=True)
def _push(hkey, ht1, ht2, hedge, hver, size, key, t1, t2, e, ver):
    i = size
    while i > 0:
        p = (i - 1) >> 1
        if _before(key, t1, t2, hkey[p], ht1[p], ht2[p]):
            hkey[i] = hkey[p]
            ht1[i] = ht1[p]
            ht2[i] = ht2[p]
            hedge[i] = hedge[p]
            hver[i] = hver[p]
            i = p
        else:
            break
    hkey[i] = key
    ht1[i] = t1
    ht2[i] = t2
    hedge[i] = e
    hver[i] = ver
    return size + 1


@numba.njit(cache=True, nogil=True)
def _pop(hkey, ht1, ht2, hedge, hver, size):
    """Remove the top; the caller has read it. Returns the new size."""
    size -= 1
    key = hkey[size]
    t1 = ht1[size]
    t2 = ht2[size]
    e = hedge[size]
    ver = hver[size]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and _before(hkey[c + 1], ht1[c + 1], ht2[c + 1], hkey[c], ht1[c], ht2[c]):
            c += 1
        if _before(hkey[c], ht1[c], ht2[c], key, t1, t2):
            hkey[i] = hkey[c]
            ht1[i] = ht1[c]
            ht2[i] = ht2[c]
            hedge[i] = hedge[c]
            hver[i] = hver[c]
            i = c
        else:
            break
    if size > 0:
        hkey[i] = key
        ht1[i] = t1
        ht2[i] = t2
        hedge[i] = e
        hver[i] = ver
    return size


# ---------------------------------------------------------------- constraints -------------------
@numba.njit(cache=True, nogil=True)
def _sem_class(sem, size, x, min_size, min_frac):
    if size[x] < min_size or size[x] <= 0:
        return 0
    best = 1
    for c in range(2, sem.shape[1]):
        if sem[x, c] > sem[x, best]:
            best = c
    if sem[x, best] >= min_frac * size[x]:
        return best
    return 0


# ---------------------------------------------------------------- the kernel --------------------
#: affinity sums are fixed-point integers: sum of round(affinity * 2**32) (see region_graph)
SUM_SCALE = 4294967296.0


@numba.njit(cache=True, nogil=True, inline="always")
def _mean(q, c):
    return (np.float64(q) / SUM_SCALE) / c


@numba.njit(cache=True, nogil=True, inline="always")
def _tie(rank, u, v):
    """Tie key of an edge between objects u and v: (larger rank, smaller rank), where an object's
    rank is the largest rank of its members — never decreases as objects merge."""
    if rank[u] >= rank[v]:
        return rank[u], rank[v]
    return rank[v], rank[u]


@numba.njit(cache=True, nogil=True)
def _agglomerate_kernel(n, eu_in, ev_in, esum_in, ecnt_in, size_in, nsv_in, sem_in, use_sem,
                        frozen_in, min_aff, constraints, cthr, sem_min_size, sem_min_frac, veto_mat,
                        both_min, one_max, rank_in):
    E = eu_in.size
    rank = rank_in.copy()
    eu = eu_in.copy()
    ev = ev_in.copy()
    esum = esum_in.copy()
    ecnt = ecnt_in.copy()
    size = size_in.copy()
    nsv = nsv_in.copy()
    sem = sem_in.copy()
    frozen = frozen_in.copy()
    alive = np.ones(E, np.bool_)
    version = np.zeros(E, np.int64)
    passed_up = np.zeros(E, np.bool_)

    # adjacency lists (two slots per edge), linked, with tails for O(1) concatenation
    snext = np.full(2 * E, -1, np.int64)
    sedge = np.empty(2 * E, np.int64)
    head = np.full(n, -1, np.int64)
    tail = np.full(n, -1, np.int64)
    length = np.zeros(n, np.int64)
    for e in range(E):
        for s, node in ((2 * e, eu[e]), (2 * e + 1, ev[e])):
            sedge[s] = e
            if head[node] < 0:
                head[node] = s
            else:
                snext[tail[node]] = s
            tail[node] = s
            length[node] += 1

    cap = 16
    while cap < 4 * E + 16:
        cap *= 2
    hk, hv, used = _h_build(cap, eu, ev, alive, n)

    hkey = np.empty(2 * E + 1, np.float64)
    ht1 = np.empty(2 * E + 1, np.int64)
    ht2 = np.empty(2 * E + 1, np.int64)
    hedge = np.empty(2 * E + 1, np.int64)
    hver = np.empty(2 * E + 1, np.int64)
    hsize = 0
    for e in range(E):
        t1, t2 = _tie(rank, eu[e], ev[e])
        hsize = _push(hkey, ht1, ht2, hedge, hver, hsize, _mean(esum[e], ecnt[e]), t1, t2, e, 0)

    m_a = np.empty(n, np.int64)
    m_b = np.empty(n, np.int64)
    m_w = np.empty(n, np.float64)
    nm = 0
    v_a = np.empty(E, np.int64)
    v_b = np.empty(E, np.int64)
    v_w = np.empty(E, np.float64)
    v_r = np.empty(E, np.uint8)
    nv = 0

    while hsize > 0:
        e = hedge[0]
        ver = hver[0]
        key = hkey[0]
        t1 = ht1[0]
        t2 = ht2[0]
        hsize = _pop(hkey, ht1, ht2, hedge, hver, hsize)
        if not alive[e] or ver != version[e]:
            continue
        if key < min_aff:
            break
        u = eu[e]
        v = ev[e]
        c1, c2 = _tie(rank, u, v)
        if c1 != t1 or c2 != t2:  # an end grew since the push: tie keys only get later, re-queue
            hsize = _push(hkey, ht1, ht2, hedge, hver, hsize, key, c1, c2, e, ver)
            continue
        if frozen[u] or frozen[v]:
            frozen[u] = True
            frozen[v] = True
            passed_up[e] = True
            continue
        if constraints and key < cthr:
            reason = 0
            if nsv[u] > both_min and nsv[v] > both_min and (nsv[u] > one_max or nsv[v] > one_max):
                reason = 1
            elif use_sem:
                cu = _sem_class(sem, size, u, sem_min_size, sem_min_frac)
                cv = _sem_class(sem, size, v, sem_min_size, sem_min_frac)
                if cu > 0 and cv > 0 and veto_mat[cu, cv]:
                    reason = 2
            if reason > 0:
                alive[e] = False
                hk[_h_find(hk, _pair_key(u, v, n))] = _TOMB
                v_a[nv] = u
                v_b[nv] = v
                v_w[nv] = key
                v_r[nv] = reason
                nv += 1
                continue
        # merge: walk the shorter edge list (a), keep the other node (s)
        if length[u] <= length[v]:
            a = u
            s = v
        else:
            a = v
            s = u
        alive[e] = False
        hk[_h_find(hk, _pair_key(u, v, n))] = _TOMB
        m_a[nm] = u
        m_b[nm] = v
        m_w[nm] = key
        nm += 1
        size[s] += size[a]
        nsv[s] += nsv[a]
        rank[s] = max(rank[s], rank[a])
        if use_sem:
            for c in range(sem.shape[1]):
                sem[s, c] += sem[a, c]
        slot = head[a]
        while slot >= 0:
            f = sedge[slot]
            if alive[f]:
                o = ev[f] if eu[f] == a else eu[f]
                hk[_h_find(hk, _pair_key(a, o, n))] = _TOMB
                i = _h_find(hk, _pair_key(s, o, n))
                if i >= 0:
                    g = hv[i]
                    esum[g] += esum[f]
                    ecnt[g] += ecnt[f]
                    alive[f] = False
                    version[g] += 1
                    t1, t2 = _tie(rank, eu[g], ev[g])
                    hsize = _push(hkey, ht1, ht2, hedge, hver, hsize, _mean(esum[g], ecnt[g]), t1, t2, g, version[g])
                else:
                    if eu[f] == a:
                        eu[f] = s
                    else:
                        ev[f] = s
                    used += _h_insert(hk, hv, _pair_key(s, o, n), f)
                    if used * 10 > hk.size * 6:
                        hk, hv, used = _h_build(hk.size, eu, ev, alive, n)
            slot = snext[slot]
        if head[a] >= 0:
            if head[s] < 0:
                head[s] = head[a]
            else:
                snext[tail[s]] = head[a]
            tail[s] = tail[a]
            length[s] += length[a]
        head[a] = -1
        tail[a] = -1
        length[a] = 0
    # edges still alive (not merged, not vetoed) with their current ends: the remaining graph
    return (m_a[:nm], m_b[:nm], m_w[:nm], v_a[:nv], v_b[:nv], v_w[:nv], v_r[:nv],
            alive, eu, ev, esum, ecnt, size, nsv, sem, frozen, passed_up, rank)


@numba.njit(cache=True, nogil=True)
def _components(n, a, b, keep):
    """Union-find over the kept merges; each node's label is the smallest index in its set."""
    parent = np.arange(n)
    for k in range(a.size):
        if not keep[k]:
            continue
        ra = a[k]
        while parent[ra] != ra:
            parent[ra] = parent[parent[ra]]
            ra = parent[ra]
        rb = b[k]
        while parent[rb] != rb:
            parent[rb] = parent[parent[rb]]
            rb = parent[rb]
        if ra == rb:
            continue
        if ra < rb:
            parent[rb] = ra
        else:
            parent[ra] = rb
    for i in range(n):
        r = i
        while parent[r] != r:
            r = parent[r]
        parent[i] = r
    return parent


# ---------------------------------------------------------------- history -----------------------
@dataclass
class MergeHistory:
    """The merges of one agglomeration run, in order, with their mean affinities.

    Attributes
    ----------
    ids : (N,) uint64
        Node ids of the region graph (sorted).
    merges : (M, 2) int64
        Positions in ``ids`` of two nodes (any members of the two objects) merged, in order.
    affinities : (M,) float64
        Mean affinity at each merge (non-increasing up to rounding).
    vetoes : (V, 2) int64
        Positions in ``ids`` of the ends of each vetoed edge (members of the two objects).
    veto_affinities : (V,) float64
        Mean affinity of each vetoed edge.
    veto_reasons : (V,) uint8
        1 (``VETO_SIZE``) or 2 (``VETO_SEMANTIC``).
    params : dict
        The :class:`AgglomerationParams` used, as a dict.
    """

    ids: np.ndarray
    merges: np.ndarray
    affinities: np.ndarray
    vetoes: np.ndarray
    veto_affinities: np.ndarray
    veto_reasons: np.ndarray
    params: dict

    @property
    def merge_ids(self) -> np.ndarray:
        """(M, 2) uint64 node ids of the merges."""
        return self.ids[self.merges] if self.merges.size else np.zeros((0, 2), np.uint64)

    def labels_at(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Object of every node when cut at ``threshold``.

        Returns ``(ids, labels)``: ``labels[i]`` (uint64) is the smallest node id in the object
        of ``ids[i]`` after all merges with mean affinity >= threshold (stable across thresholds,
        which keeps viewer colours steady).
        """
        t = float(threshold)
        if not np.isfinite(t):
            raise InputError(f"threshold must be a finite number, got {threshold!r}")
        keep = self.affinities >= t
        root = _components(self.ids.size, self.merges[:, 0], self.merges[:, 1], keep)
        return self.ids, self.ids[root]

    def segmentation(self, supervoxels, threshold: float) -> np.ndarray:
        """Relabel a supervoxel volume to the objects at ``threshold`` (uint64, same shape).

        Ids that are not nodes of the graph (such as 0) are kept as they are.
        """
        sv = np.asarray(supervoxels)
        ids, labels = self.labels_at(threshold)
        if ids.size == 0:
            return sv.astype(np.uint64)
        top = int(ids[-1])
        if np.issubdtype(sv.dtype, np.integer) and top <= 4 * sv.size + 1024:
            smax = int(sv.max()) if sv.size else 0
            lut = np.arange(max(top, smax) + 1, dtype=np.uint64)
            lut[ids.astype(np.int64)] = labels
            return lut[sv]
        import fastremap

        return fastremap.remap(sv.astype(np.uint64), dict(zip(ids.tolist(), labels.tolist())),
                               preserve_missing_labels=True, in_place=False)

    def save(self, path) -> None:
        """Write the history to an ``.npz`` file."""
        import json

        np.savez_compressed(path, ids=self.ids, merges=self.merges, affinities=self.affinities,
                            vetoes=self.vetoes, veto_affinities=self.veto_affinities,
                            veto_reasons=self.veto_reasons, params=np.array(json.dumps(self.params)))

    @classmethod
    def load(cls, path) -> "MergeHistory":
        """Read a history written by :meth:`save`."""
        import json

        with np.load(path) as z:
            return cls(ids=z["ids"], merges=z["merges"], affinities=z["affinities"], vetoes=z["vetoes"],
                       veto_affinities=z["veto_affinities"], veto_reasons=z["veto_reasons"],
                       params=json.loads(str(z["params"])))


def _veto_matrix(pairs) -> np.ndarray:
    m = np.zeros((N_CLASSES, N_CLASSES), np.bool_)
    for a, b in pairs:
        m[a, b] = m[b, a] = True
    return m


def agglomerate(graph: RegionGraph, params: AgglomerationParams | None = None) -> MergeHistory:
    """Constrained mean-affinity agglomeration of a region graph (see the module docstring).

    Parameters
    ----------
    graph : RegionGraph
        From :func:`~emkit.segment.region_graph.region_graph`. Without ``graph.semantic`` the
        semantic constraint is off; the size constraint uses ``graph.supervoxels``.
    params : AgglomerationParams, optional
        Stop threshold and constraints (paper defaults).

    Returns
    -------
    MergeHistory
        All merges with mean affinity >= ``params.min_affinity``, in order.
    """
    params = params or AgglomerationParams()
    if not isinstance(params, AgglomerationParams):
        raise InputError(f"params must be an AgglomerationParams, got {type(params).__name__}")
    if not isinstance(graph, RegionGraph):
        raise InputError(f"graph must be a RegionGraph, got {type(graph).__name__}")
    res = _run(graph, params, frozen=None)
    return res[0]


def _run(graph: RegionGraph, params: AgglomerationParams, frozen=None, ranks=None):
    """Run the kernel; returns (history, raw kernel outputs) — the raw part is for the octree form.

    ``ranks`` (int64 per node, default the node positions) break ties between equal means; the
    octree form passes ranks that order nodes as their ids would in a global run.
    """
    n = graph.n_nodes
    idx = graph.edge_index()
    cnt = graph.count.astype(np.float64)
    if np.any(cnt <= 0):
        raise InputError("RegionGraph.count must be positive for every edge")
    use_sem = graph.semantic is not None
    sem = graph.semantic if use_sem else np.zeros((n, N_CLASSES), np.float64)
    out = run_kernel(n, idx[:, 0], idx[:, 1], quantize_sums(graph.aff_sum), cnt, graph.sizes,
                     graph.supervoxels, sem, use_sem, frozen, ranks, params)
    ma, mb, mw, va, vb, vw, vr = out[:7]
    hist = MergeHistory(ids=graph.ids.copy(), merges=np.stack([ma, mb], axis=1).astype(np.int64),
                        affinities=mw.copy(), vetoes=np.stack([va, vb], axis=1).astype(np.int64),
                        veto_affinities=vw.copy(), veto_reasons=vr.copy(), params=params.to_dict())
    return hist, out


def quantize_sums(aff_sum) -> np.ndarray:
    """Affinity sums (float64) as the kernel's fixed-point int64 (units of 2**-32)."""
    return np.rint(np.asarray(aff_sum, np.float64) * SUM_SCALE).astype(np.int64)


def run_kernel(n, eu, ev, qsum, count, sizes, nsv, sem, use_sem, frozen, ranks, params: AgglomerationParams):
    """Run the agglomeration kernel on plain arrays (node positions, int64 fixed-point sums).

    Returns the raw kernel tuple: merges (a, b, mean), vetoes (a, b, mean, reason), then per edge
    alive, current ends eu, ev, sums, counts, then per node size, supervoxels, semantic, frozen,
    then per edge passed_up, then per node rank.
    """
    fz = np.zeros(n, np.bool_) if frozen is None else np.asarray(frozen, dtype=np.bool_)
    rk = np.arange(n, dtype=np.int64) if ranks is None else np.asarray(ranks, dtype=np.int64)
    sem = np.zeros((n, N_CLASSES), np.float64) if sem is None else sem
    return _agglomerate_kernel(
        n, np.ascontiguousarray(eu, dtype=np.int64), np.ascontiguousarray(ev, dtype=np.int64),
        np.ascontiguousarray(qsum, dtype=np.int64), np.ascontiguousarray(count, dtype=np.float64),
        np.ascontiguousarray(sizes, dtype=np.float64), np.ascontiguousarray(nsv, dtype=np.int64),
        np.ascontiguousarray(sem, dtype=np.float64), bool(use_sem), fz,
        float(params.min_affinity), bool(params.constraints), float(params.constraint_threshold),
        float(params.semantic_min_size), float(params.semantic_min_fraction), _veto_matrix(params.veto_pairs),
        int(params.size_min_supervoxels_both), int(params.size_max_supervoxels_one), rk)
