"""Region adjacency graph of supervoxels: what mean-affinity agglomeration works on.

The graph is plain arrays so that the chunked (octree) form can build, concatenate and pass up
parts of it: per edge the *sum* and *count* of the voxel-face affinities (never the mean, so two
partial edges combine exactly by adding; sums are fixed point — each face adds its affinity
rounded to a multiple of 2**-32 — so they are exact whatever the summation order), per node its voxel count, its supervoxel count and its
semantic class histogram.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from emkit.errors import InputError
from emkit.segment.watershed import check_affinities

__all__ = ["RegionGraph", "region_graph", "N_CLASSES"]

#: semantic classes: 0 background, 1 soma, 2 axon, 3 dendrite, 4 glia, 5 vessel
N_CLASSES = 6


@dataclass
class RegionGraph:
    """Region adjacency graph (all arrays; N nodes, E edges).

    Attributes
    ----------
    ids : (N,) uint64
        Node (supervoxel or segment) ids, sorted ascending, no 0.
    sizes : (N,) int64
        Voxel count per node.
    supervoxels : (N,) int64
        Supervoxel count per node (1 for plain supervoxels; larger for pre-merged segments).
    semantic : (N, 6) float64 or None
        Per node, the number of voxels of each semantic class 0..5 (or the summed probabilities).
    edges : (E, 2) uint64
        Node id pairs (u, v) with u < v, each pair once, sorted.
    aff_sum : (E,) float64
        Sum of the affinities of the voxel faces between u and v.
    count : (E,) int64
        Number of those voxel faces; mean affinity = aff_sum / count.
    """

    ids: np.ndarray
    sizes: np.ndarray
    edges: np.ndarray
    aff_sum: np.ndarray
    count: np.ndarray
    semantic: np.ndarray | None = None
    supervoxels: np.ndarray | None = field(default=None)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.uint64)
        n = self.ids.size
        self.sizes = np.asarray(self.sizes, dtype=np.int64)
        self.edges = np.asarray(self.edges, dtype=np.uint64).reshape(-1, 2)
        self.aff_sum = np.asarray(self.aff_sum, dtype=np.float64)
        self.count = np.asarray(self.count, dtype=np.int64)
        if self.supervoxels is None:
            self.supervoxels = np.ones(n, np.int64)
        self.supervoxels = np.asarray(self.supervoxels, dtype=np.int64)
        if self.semantic is not None:
            self.semantic = np.asarray(self.semantic, dtype=np.float64)
            if self.semantic.shape != (n, N_CLASSES):
                raise InputError(f"RegionGraph.semantic must have shape {(n, N_CLASSES)}, got {self.semantic.shape}")
        if self.sizes.shape != (n,) or self.supervoxels.shape != (n,):
            raise InputError(f"RegionGraph sizes/supervoxels must have shape {(n,)}, got {self.sizes.shape}, {self.supervoxels.shape}")
        e = self.edges.shape[0]
        if self.aff_sum.shape != (e,) or self.count.shape != (e,):
            raise InputError(f"RegionGraph aff_sum/count must have shape {(e,)}, got {self.aff_sum.shape}, {self.count.shape}")
        if n > 1 and np.any(self.ids[1:] <= self.ids[:-1]):
            raise InputError("RegionGraph.ids must be sorted ascending and unique")
        if e and np.any(self.edges[:, 0] >= self.edges[:, 1]):
            raise InputError("RegionGraph.edges must have u < v in every row")
        if e > 1:
            o = np.lexsort((self.edges[:, 1], self.edges[:, 0]))
            s = self.edges[o]
            dup = np.flatnonzero(np.all(s[1:] == s[:-1], axis=1))
            if dup.size:
                raise InputError(f"RegionGraph.edges lists the pair {s[dup[0]].tolist()} more than once")

    @property
    def n_nodes(self) -> int:
        return int(self.ids.size)

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])

    @property
    def mean(self) -> np.ndarray:
        """(E,) float64 mean affinity of each edge."""
        return self.aff_sum / np.maximum(self.count, 1)

    def edge_index(self) -> np.ndarray:
        """(E, 2) int64 positions of the edge ends in ``ids``; raises if an end is not a node."""
        idx = np.searchsorted(self.ids, self.edges)
        idx = np.minimum(idx, max(self.n_nodes - 1, 0))
        if self.n_edges and (self.n_nodes == 0 or np.any(self.ids[idx] != self.edges)):
            raise InputError("RegionGraph.edges name ids that are not in RegionGraph.ids")
        return idx.astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _face_pairs(dense, aff, Z, Y, X):
    """Keys lo * n + hi (dense node indices + 1, 0 background) and affinities of boundary faces."""
    n = 0
    for c in range(3):
        for z in range(Z):
            for y in range(Y):
                for x in range(X):
                    if (c == 0 and z == 0) or (c == 1 and y == 0) or (c == 2 and x == 0):
                        continue
                    a = dense[z, y, x]
                    if c == 0:
                        b = dense[z - 1, y, x]
                    elif c == 1:
                        b = dense[z, y - 1, x]
                    else:
                        b = dense[z, y, x - 1]
                    if a != b and a != 0 and b != 0:
                        n += 1
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    w = np.empty(n, np.float64)
    i = 0
    for c in range(3):
        for z in range(Z):
            for y in range(Y):
                for x in range(X):
                    if (c == 0 and z == 0) or (c == 1 and y == 0) or (c == 2 and x == 0):
                        continue
                    a = dense[z, y, x]
                    if c == 0:
                        b = dense[z - 1, y, x]
                    elif c == 1:
                        b = dense[z, y - 1, x]
                    else:
                        b = dense[z, y, x - 1]
                    if a != b and a != 0 and b != 0:
                        if a < b:
                            lo[i] = a
                            hi[i] = b
                        else:
                            lo[i] = b
                            hi[i] = a
                        w[i] = aff[c, z, y, x]
                        i += 1
    return lo, hi, w


#: affinity sums are fixed point: each face adds round(affinity * 2**32) (exact for float32
#: affinities >= 2**-8, within 2**-33 below), so sums are exact integers whatever the order
SUM_SCALE = 4294967296.0


def quantize(w) -> np.ndarray:
    """Face affinities as int64 fixed-point values (units of 2**-32)."""
    return np.rint(np.asarray(w, np.float64) * SUM_SCALE).astype(np.int64)


def sum_affinities(inv, w, n) -> np.ndarray:
    """Per group ``inv`` the exact (order-independent) fixed-point sum of affinities ``w``, as float64."""
    q = np.zeros(n, np.int64)
    inv = np.asarray(inv, np.int64)
    if inv.size:
        o = np.argsort(inv, kind="stable")
        si = inv[o]
        starts = np.flatnonzero(np.r_[True, si[1:] != si[:-1]])
        q[si[starts]] = np.add.reduceat(quantize(w)[o], starts)
    return q / SUM_SCALE


def _dense_labels(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted non-zero ids, int64 array of 1-based positions in ids, 0 for background)."""
    import fastremap

    ids = fastremap.unique(seg)
    ids = ids[ids != 0].astype(np.uint64)
    if ids.size == 0:
        return ids, np.zeros(seg.shape, np.int64)
    top = int(ids[-1])
    if top <= 4 * seg.size + 1024:
        lut = np.zeros(top + 1, np.int64)
        lut[ids.astype(np.int64)] = np.arange(1, ids.size + 1)
        return ids, lut[seg]
    dense = np.searchsorted(ids, seg.ravel()).astype(np.int64) + 1
    dense[seg.ravel() == 0] = 0
    return ids, dense.reshape(seg.shape)


def region_graph(supervoxels, affinities, semantic=None) -> RegionGraph:
    """Region adjacency graph of a supervoxel volume.

    Parameters
    ----------
    supervoxels : (z, y, x) integer array
        Supervoxel ids (any non-negative integers; 0 is background and not a node).
    affinities : (3, z, y, x) float array in [0, 1]
        Nearest-neighbour affinities, channels (z, y, x); channel d of voxel v links v and v − e_d.
        Each voxel face between two different supervoxels adds its affinity to their edge.
    semantic : (z, y, x) integer class labels 0..5, or (5 | 6, z, y, x) float probabilities, optional
        Semantic classes (0 background, 1 soma, 2 axon, 3 dendrite, 4 glia, 5 vessel); with 5
        probability channels they are classes 1..5. Gives the (N, 6) class histograms.

    Returns
    -------
    RegionGraph
    """
    seg = np.asarray(supervoxels)
    if seg.ndim != 3 or not np.issubdtype(seg.dtype, np.integer):
        raise InputError(f"supervoxels must be a (z, y, x) integer array, got shape {seg.shape}, dtype {seg.dtype}")
    if np.issubdtype(seg.dtype, np.signedinteger) and seg.size and seg.min() < 0:
        raise InputError("supervoxels must be non-negative ids")
    aff = check_affinities(affinities)
    if aff.shape[1:] != seg.shape:
        raise InputError(f"affinities shape {aff.shape} does not match supervoxels {seg.shape} (expected (3,) + {seg.shape})")
    ids, dense = _dense_labels(seg)
    n = ids.size
    Z, Y, X = seg.shape
    lo, hi, w = _face_pairs(np.ascontiguousarray(dense), aff, Z, Y, X)
    keys = lo * (n + 1) + hi
    ukeys, inv = np.unique(keys, return_inverse=True)
    aff_sum = sum_affinities(inv, w, ukeys.size)
    count = np.bincount(inv, minlength=ukeys.size).astype(np.int64)
    u = ukeys // (n + 1) - 1
    v = ukeys % (n + 1) - 1
    edges = np.stack([ids[u], ids[v]], axis=1) if ukeys.size else np.zeros((0, 2), np.uint64)
    flat = dense.ravel()
    sizes = np.bincount(flat, minlength=n + 1)[1:].astype(np.int64)
    sem = None
    if semantic is not None:
        sem = _semantic_counts(np.asarray(semantic), flat, n, seg.shape)
    return RegionGraph(ids=ids, sizes=sizes, edges=edges, aff_sum=aff_sum, count=count, semantic=sem)


def _semantic_counts(semantic: np.ndarray, flat: np.ndarray, n: int, shape) -> np.ndarray:
    out = np.zeros((n, N_CLASSES), np.float64)
    if semantic.ndim == 3:
        if semantic.shape != tuple(shape):
            raise InputError(f"semantic labels must have shape {tuple(shape)} (z, y, x), got {semantic.shape}")
        if not np.issubdtype(semantic.dtype, np.integer):
            raise InputError(f"semantic labels must be integers 0..5, got dtype {semantic.dtype}")
        cls = semantic.ravel().astype(np.int64)
        if cls.size and (cls.min() < 0 or cls.max() >= N_CLASSES):
            raise InputError(f"semantic labels must be in 0..5, got values in [{cls.min()}, {cls.max()}]")
        counts = np.bincount(flat * N_CLASSES + cls, minlength=(n + 1) * N_CLASSES)
        return counts.reshape(n + 1, N_CLASSES)[1:].astype(np.float64)
    if semantic.ndim == 4 and semantic.shape[0] in (5, 6) and semantic.shape[1:] == tuple(shape):
        first = N_CLASSES - semantic.shape[0]
        for c in range(semantic.shape[0]):
            out[:, first + c] = np.bincount(flat, weights=semantic[c].ravel().astype(np.float64), minlength=n + 1)[1:]
        return out
    raise InputError(
        f"semantic must be (z, y, x) class labels or (5 or 6, z, y, x) probabilities matching {tuple(shape)}, "
        f"got shape {semantic.shape}")
