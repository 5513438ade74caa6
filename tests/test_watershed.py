"""Watershed: hand-checkable cases and agreement with a slow pure-Python reference."""
from collections import deque

import numpy as np
import pytest

from emkit.errors import InputError
from emkit.segment import WatershedParams, watershed

DIRS = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (1, 0, 0), (0, 1, 0), (0, 0, 1)]


def reference_watershed(aff, p: WatershedParams, mask=None):
    """Slow, literal implementation of the algorithm in emkit.segment.watershed's docstring."""
    _, Z, Y, X = aff.shape
    voxels = [(z, y, x) for z in range(Z) for y in range(Y) for x in range(X)]
    inside = (lambda v: True) if mask is None else (lambda v: bool(mask[v]))

    def raw(v, d):  # affinity of the edge from v along direction d, None if absent
        u = tuple(a + b for a, b in zip(v, DIRS[d]))
        if not all(0 <= c < n for c, n in zip(u, (Z, Y, X))) or not inside(v) or not inside(u):
            return None, u
        c = d % 3
        w = aff[c][v] if d < 3 else aff[c][u]
        return float(w), u

    edges = {}
    for v in voxels:
        for d in range(6):
            w, u = raw(v, d)
            if w is not None and w >= p.low:
                edges[(v, d)] = (min(w, p.high), u)
    steep = {}
    for v in voxels:
        vals = [edges[(v, d)][0] for d in range(6) if (v, d) in edges]
        if vals:
            m = max(vals)
            steep[v] = [d for d in range(6) if (v, d) in edges and edges[(v, d)][0] == m]

    def plateau(v, d):
        u = edges[(v, d)][1]
        return (d + 3) % 6 in steep.get(u, [])

    def top(u):  # steepest clamped affinity of u
        return max(edges[(u, d)][0] for d in steep[u])

    target = {}
    queue = deque()
    for v in voxels:
        if v in steep:
            non = [d for d in steep[v] if not plateau(v, d)]
            if non:
                # exit: the non-plateau steepest edge whose far end ascends most (first in direction order)
                best = max(top(edges[(v, d)][1]) for d in non)
                d = next(d for d in non if top(edges[(v, d)][1]) == best)
                target[v] = edges[(v, d)][1]
                queue.append(v)
    while queue:
        v = queue.popleft()
        for d in steep[v]:
            u = edges[(v, d)][1]
            if plateau(v, d) and u not in target:
                target[u] = v
                queue.append(u)
    label = {}
    n = 0
    for v in voxels:
        if v in steep and v not in target and v not in label:
            n += 1
            stack = [v]
            label[v] = n
            while stack:
                q = stack.pop()
                for d in steep[q]:
                    u = edges[(q, d)][1]
                    if plateau(q, d) and u not in label:
                        label[u] = n
                        stack.append(u)
    for v in voxels:
        if v in steep:
            path = [v]
            while path[-1] not in label:
                path.append(target[path[-1]])
            for q in path:
                label[q] = label[path[-1]]
    # size-dependent single linkage on the basin graph (maximum edge per pair), then dust
    group = {b: b for b in range(1, n + 1)}

    def find(b):
        while group[b] != b:
            b = group[b]
        return b

    size = {b: 0 for b in range(1, n + 1)}
    for v in label:
        size[label[v]] += 1
    for min_aff, threshold in ((p.merge_affinity, p.size_threshold), (p.low, p.dust_size)):
        best = {}
        for (v, d), (w, u) in edges.items():
            a, b = find(label[v]), find(label[u])
            wr = raw(v, d)[0]
            if a != b and wr >= max(min_aff, p.low):
                key = (min(a, b), max(a, b))
                best[key] = max(best.get(key, -1), wr)
        for (a, b), w in sorted(best.items(), key=lambda kv: -kv[1]):
            ra, rb = find(a), find(b)
            if ra != rb and (size[ra] < threshold or size[rb] < threshold):
                group[ra] = rb
                size[rb] += size[ra]
    out = np.zeros((Z, Y, X), np.int64)
    for v, b in label.items():
        r = find(b)
        if not (p.drop_dust and size[r] < p.dust_size):
            out[v] = r
    return out


def same_partition(a, b):
    """True if a and b are the same partition (0 maps to 0) up to relabelling."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def two_cubes(face=0.3, inside=0.9):
    lab = np.ones((4, 4, 8), np.uint8)
    lab[:, :, 4:] = 2
    from emkit.affinity import affinities_from_labels

    aff = affinities_from_labels(lab) * inside
    aff[2, :, :, 4] = face  # the x-face between the cubes
    return aff


def test_two_cubes_weak_face():
    aff = two_cubes()
    sv = watershed(aff, WatershedParams(size_threshold=0, dust_size=0))
    assert sv.dtype == np.uint64 and sv.shape == (4, 4, 8)
    assert set(np.unique(sv)) == {1, 2}
    assert np.all(sv[:, :, :4] == 1) and np.all(sv[:, :, 4:] == 2)
    # both basins (64 voxels) are below the size threshold and the face clears merge_affinity
    merged = watershed(aff, WatershedParams(size_threshold=100, merge_affinity=0.2, dust_size=0))
    assert np.all(merged == 1)
    # ... but not when the face is below merge_affinity or the basins are big enough
    assert len(np.unique(watershed(aff, WatershedParams(size_threshold=100, merge_affinity=0.5, dust_size=0)))) == 2
    assert len(np.unique(watershed(aff, WatershedParams(size_threshold=64, merge_affinity=0.2, dust_size=0)))) == 2


def test_high_threshold_plateau_and_low_threshold_background():
    aff = np.zeros((3, 1, 1, 6), np.float32)
    aff[2, 0, 0, 1:] = [0.995, 0.999, 0.5, 0.995, 0.005]
    sv = watershed(aff, WatershedParams(low=0.01, size_threshold=0, dust_size=0))
    # x0-x1-x2 joined by edges >= high; x3-x4 too (0.995 beats x3's 0.5 edge to x2);
    # x5 has only an edge < low: background
    assert sv[0, 0].tolist() == [1, 1, 1, 2, 2, 0]
    # with size merging the two plateaus join along 0.5
    assert watershed(aff, WatershedParams(low=0.01, size_threshold=3, merge_affinity=0.4,
                                          dust_size=0))[0, 0].tolist() == [1] * 5 + [0]


def test_exit_follows_the_steeper_two_step_ascent():
    # x2 is a membrane voxel (boundary probability 1): both its edges are 0, so its first step is a
    # tie; it joins the side whose next edge is higher (x3-x4 at 0.8), not the first direction (-x)
    aff = np.zeros((3, 1, 1, 5), np.float32)
    aff[2, 0, 0, 1:] = [0.5, 0.0, 0.0, 0.8]
    p = WatershedParams(low=0.0, size_threshold=0, dust_size=0)
    assert watershed(aff, p)[0, 0].tolist() == [1, 1, 2, 2, 2]
    aff[2, 0, 0, 4] = 0.3  # now the -x side ascends more
    assert watershed(aff, p)[0, 0].tolist() == [1, 1, 1, 2, 2]
    # with low > 0 those zero edges do not exist: x2 is background
    assert watershed(aff, WatershedParams(low=0.01, size_threshold=0, dust_size=0))[0, 0].tolist() == [1, 1, 0, 2, 2]


def test_mask_and_all_low():
    aff = np.full((3, 3, 4, 4), 0.8, np.float32)
    mask = np.ones((3, 4, 4), bool)
    mask[:, :, 0] = False
    sv = watershed(aff, mask=mask)
    assert np.all(sv[:, :, 0] == 0) and np.all(sv[:, :, 1:] > 0)
    assert np.all(watershed(np.zeros((3, 3, 4, 4), np.float32), WatershedParams(low=0.01)) == 0)


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_with_plateaus(seed):
    rng = np.random.default_rng(seed)
    # quantised affinities: many ties and plateaus, some edges above high and below low
    aff = (rng.integers(0, 6, size=(3, 4, 5, 6)) / 5.0).astype(np.float32)
    p = WatershedParams(high=0.99, low=0.1, size_threshold=0, dust_size=0)
    mask = rng.random((4, 5, 6)) > 0.1 if seed % 2 else None
    fast = watershed(aff, p, mask=mask)
    ref = reference_watershed(aff, p, mask)
    assert same_partition(fast, ref)


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_with_size_merging(seed):
    rng = np.random.default_rng(100 + seed)
    aff = rng.random((3, 5, 6, 7)).astype(np.float32)
    aff[rng.random(aff.shape) < 0.05] = 1.0
    p = WatershedParams(high=0.95, low=0.05, merge_affinity=0.3, size_threshold=int(rng.integers(2, 8)),
                        dust_size=int(rng.integers(0, 12)), drop_dust=bool(seed % 2))
    fast = watershed(aff, p)
    ref = reference_watershed(aff, p)
    assert same_partition(fast, ref)
    ids = np.unique(fast[fast > 0])
    assert np.array_equal(ids, np.arange(1, ids.size + 1))  # consecutive ids


def test_deterministic_and_checks(rng):
    aff = rng.random((3, 6, 20, 20)).astype(np.float32)
    np.testing.assert_array_equal(watershed(aff), watershed(aff.copy()))
    with pytest.raises(InputError, match="shape"):
        watershed(aff[:2])
    with pytest.raises(InputError, match="dtype"):
        watershed((aff * 255).astype(np.uint8))
    with pytest.raises(InputError, match="mask"):
        watershed(aff, mask=np.ones((6, 20, 21), bool))
    with pytest.raises(InputError, match="low"):
        WatershedParams(low=0.9, high=0.5)
    assert WatershedParams.from_dict(WatershedParams().to_dict()) == WatershedParams()
