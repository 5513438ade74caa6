"""Region graph and constrained mean-affinity agglomeration: hand cases, slow references, cuts."""
import numpy as np
import pytest

from emkit.errors import InputError
from emkit.segment import (
    VETO_SEMANTIC,
    VETO_SIZE,
    AgglomerationParams,
    MergeHistory,
    RegionGraph,
    WatershedParams,
    agglomerate,
    region_graph,
    watershed,
)
from emkit.segment.agglomerate import _run
from helpers_cells import voronoi

NO_CONSTRAINTS = AgglomerationParams(constraints=False)


# ------------------------------------------------------------------ region graph ---------------
def test_region_graph_matches_brute_force(rng):
    sv = rng.integers(0, 5, size=(4, 5, 6)).astype(np.uint64) * 10  # ids 0, 10, ..., 40
    aff = rng.random((3, 4, 5, 6)).astype(np.float32)
    sem = rng.integers(0, 6, size=sv.shape)
    g = region_graph(sv, aff, semantic=sem)
    want = {}
    Z, Y, X = sv.shape
    for c, (dz, dy, dx) in enumerate([(1, 0, 0), (0, 1, 0), (0, 0, 1)]):
        for z in range(dz, Z):
            for y in range(dy, Y):
                for x in range(dx, X):
                    a, b = int(sv[z, y, x]), int(sv[z - dz, y - dy, x - dx])
                    if a and b and a != b:
                        s, n = want.get((min(a, b), max(a, b)), (0.0, 0))
                        want[(min(a, b), max(a, b))] = (s + float(aff[c, z, y, x]), n + 1)
    got = {(int(u), int(v)): (s, n) for (u, v), s, n in zip(g.edges, g.aff_sum, g.count)}
    assert got.keys() == want.keys()
    for k in want:
        assert got[k][1] == want[k][1] and got[k][0] == pytest.approx(want[k][0], rel=1e-9)
    assert g.ids.tolist() == [10, 20, 30, 40]
    assert g.sizes.tolist() == [int((sv == i).sum()) for i in g.ids]
    for i, node in enumerate(g.ids):
        assert g.semantic[i].tolist() == [float(((sv == node) & (sem == c)).sum()) for c in range(6)]
    # probabilities (5 channels = classes 1..5) are summed per node
    prob = rng.random((5,) + sv.shape)
    gp = region_graph(sv, aff, semantic=prob)
    assert gp.semantic[:, 0].tolist() == [0.0] * 4
    assert gp.semantic[1, 3] == pytest.approx(prob[2][sv == 20].sum())


def test_region_graph_checks():
    sv = np.ones((2, 3, 4), np.uint64)
    with pytest.raises(InputError, match="does not match"):
        region_graph(sv, np.zeros((3, 2, 3, 5), np.float32))
    with pytest.raises(InputError, match="semantic"):
        region_graph(sv, np.zeros((3, 2, 3, 4), np.float32), semantic=np.zeros((4, 2, 3, 4)))
    with pytest.raises(InputError, match="u < v"):
        RegionGraph(ids=[1, 2], sizes=[1, 1], edges=[[2, 1]], aff_sum=[0.5], count=[1])
    with pytest.raises(InputError, match="more than once"):
        RegionGraph(ids=[1, 2], sizes=[1, 1], edges=[[1, 2], [1, 2]], aff_sum=[0.5, 0.5], count=[1, 1])
    with pytest.raises(InputError, match="not in RegionGraph.ids"):
        agglomerate(RegionGraph(ids=[1, 2], sizes=[1, 1], edges=[[1, 3]], aff_sum=[0.5], count=[1]))
    empty = region_graph(np.zeros((2, 3, 4), np.uint64), np.zeros((3, 2, 3, 4), np.float32))
    assert empty.n_nodes == 0 and len(agglomerate(empty).affinities) == 0


# ------------------------------------------------------------------ slow reference -------------
def reference_agglomerate(g: RegionGraph, p: AgglomerationParams):
    """Naive global greedy: recompute every cluster-pair mean from the original contacts each step."""
    n = g.n_nodes
    idx = g.edge_index()
    cl = list(range(n))
    alive = [True] * g.n_edges
    size = g.sizes.astype(float).copy()
    nsv = g.supervoxels.copy()
    sem = None if g.semantic is None else g.semantic.copy()
    veto = {tuple(sorted(pair)) for pair in p.veto_pairs}

    def cls(a):
        if sem is None or size[a] < p.semantic_min_size or size[a] <= 0:
            return 0
        best = 1 + int(np.argmax(sem[a, 1:]))
        return best if sem[a, best] >= p.semantic_min_fraction * size[a] else 0

    merges, partitions, vetoes = [], [], []
    while True:
        comb = {}
        for k in range(g.n_edges):
            a, b = cl[idx[k, 0]], cl[idx[k, 1]]
            if alive[k] and a != b:
                key = (min(a, b), max(a, b))
                s, c, ks = comb.get(key, (0.0, 0, []))
                comb[key] = (s + g.aff_sum[k], c + g.count[k], ks + [k])
        if not comb:
            break
        (a, b), (s, c, ks) = max(comb.items(), key=lambda kv: kv[1][0] / kv[1][1])
        mean = s / c
        if mean < p.min_affinity:
            break
        if p.constraints and mean < p.constraint_threshold:
            big = nsv[a] > p.size_min_supervoxels_both and nsv[b] > p.size_min_supervoxels_both and \
                max(nsv[a], nsv[b]) > p.size_max_supervoxels_one
            ca, cb = cls(a), cls(b)
            if big or (ca and cb and tuple(sorted((ca, cb))) in veto):
                for k in ks:
                    alive[k] = False
                vetoes.append((mean, VETO_SIZE if big else VETO_SEMANTIC))
                continue
        for i in range(n):
            if cl[i] == b:
                cl[i] = a
        size[a] += size[b]
        nsv[a] += nsv[b]
        if sem is not None:
            sem[a] += sem[b]
        merges.append(mean)
        partitions.append(list(cl))
    return merges, partitions, vetoes


def random_graph(rng, n=30, p_edge=0.25, semantic=False):
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < p_edge]
    count = rng.integers(1, 20, size=len(pairs))
    sem = None
    sizes = rng.integers(20, 80, size=n)
    if semantic:
        sem = np.zeros((n, 6))
        for i in range(n):
            main = rng.integers(1, 6)
            sem[i] = rng.multinomial(sizes[i], [0.02] + [0.98 * (0.8 if c == main else 0.05) for c in range(1, 6)])
    return RegionGraph(ids=np.arange(1, n + 1) * 3, sizes=sizes, edges=np.array(pairs, np.uint64).reshape(-1, 2) * 3 + 3,
                       aff_sum=count * rng.random(len(pairs)), count=count, semantic=sem,
                       supervoxels=rng.integers(1, 6, size=n))


def same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def history_partition(h: MergeHistory, k: int):
    from emkit.segment.agglomerate import _components

    keep = np.zeros(len(h.affinities), bool)
    keep[:k] = True
    return _components(h.ids.size, h.merges[:, 0], h.merges[:, 1], keep)


@pytest.mark.parametrize("seed", range(8))
def test_agglomeration_matches_naive_reference(seed):
    rng = np.random.default_rng(seed)
    constrained = seed % 2 == 1
    g = random_graph(rng, semantic=constrained)
    p = AgglomerationParams(constraints=constrained, semantic_min_size=100, semantic_min_fraction=0.6,
                            size_min_supervoxels_both=6, size_max_supervoxels_one=12,
                            min_affinity=0.05 * (seed % 3))
    h = agglomerate(g, p)
    merges, partitions, vetoes = reference_agglomerate(g, p)
    np.testing.assert_allclose(h.affinities, merges, rtol=1e-9)
    for k in range(1, len(merges) + 1):
        assert same_partition(history_partition(h, k), partitions[k - 1]), k
    assert len(h.veto_reasons) == len(vetoes)
    np.testing.assert_allclose(h.veto_affinities, [v[0] for v in vetoes], rtol=1e-9)
    assert h.veto_reasons.tolist() == [v[1] for v in vetoes]
    if constrained:
        assert len(vetoes) > 0 or seed > 5  # the constraints are exercised
    assert np.all(np.diff(h.affinities) <= 1e-12)  # merges never get better


@pytest.mark.parametrize("seed", range(3))
def test_cut_equals_rerun_with_stop_threshold(seed):
    rng = np.random.default_rng(50 + seed)
    g = random_graph(rng, n=60, semantic=True)
    p = AgglomerationParams(semantic_min_size=100, size_min_supervoxels_both=6, size_max_supervoxels_one=12)
    full = agglomerate(g, p)
    for t in (0.2, 0.35, 0.5, 0.65, 0.8):
        stopped = agglomerate(g, AgglomerationParams(**{**p.to_dict(), "min_affinity": t, "veto_pairs": p.veto_pairs}))
        assert np.all(stopped.affinities >= t)
        assert np.array_equal(full.labels_at(t)[1], stopped.labels_at(0.0)[1])


# ------------------------------------------------------------------ hand cases ----------------
def test_two_cubes_merge_only_below_the_face_affinity():
    sv = np.ones((4, 4, 8), np.uint64)
    sv[:, :, 4:] = 2
    aff = np.full((3, 4, 4, 8), 0.9, np.float32)
    aff[2, :, :, 4] = 0.3
    g = region_graph(sv, aff)
    assert g.edges.tolist() == [[1, 2]] and g.count.tolist() == [16]
    h = agglomerate(g)
    assert h.affinities == pytest.approx([0.3])
    assert len(np.unique(h.segmentation(sv, 0.5))) == 2
    assert np.all(h.segmentation(sv, 0.2) == 1)


def graph(sizes, edges, means, semantic=None, supervoxels=None):
    e = np.array(edges, np.uint64)
    return RegionGraph(ids=np.arange(1, len(sizes) + 1), sizes=sizes, edges=e, aff_sum=np.array(means) * 10,
                       count=np.full(len(edges), 10), semantic=semantic, supervoxels=supervoxels)


def sem_rows(*rows):
    out = np.zeros((len(rows), 6))
    for i, (cls, n, frac) in enumerate(rows):
        out[i, cls] = round(n * frac)
        out[i, 0] = n - round(n * frac)
    return out


@pytest.mark.parametrize("classes, vetoed", [((2, 3), True), ((2, 1), True), ((3, 4), True), ((1, 4), True),
                                             ((3, 3), False), ((3, 1), False), ((5, 2), False)])
def test_semantic_veto_pairs(classes, vetoed):
    n = 200_000
    g = graph([n, n], [[1, 2]], [0.4], semantic=sem_rows((classes[0], n, 0.7), (classes[1], n, 0.7)))
    h = agglomerate(g)
    assert (len(h.affinities) == 0) == vetoed
    if vetoed:
        assert h.veto_reasons.tolist() == [VETO_SEMANTIC]


def test_semantic_class_needs_size_and_fraction_and_low_affinity():
    n = 200_000
    axon, dend = (2, n, 0.7), (3, n, 0.7)
    assert len(agglomerate(graph([n, n], [[1, 2]], [0.4], semantic=sem_rows(axon, dend))).affinities) == 0
    # above the constraint threshold the constraint is off
    assert len(agglomerate(graph([n, n], [[1, 2]], [0.6], semantic=sem_rows(axon, dend))).affinities) == 1
    # too few voxels (paper: 170 thousand) -> no class
    small = 150_000
    assert len(agglomerate(graph([small, n], [[1, 2]], [0.4], semantic=sem_rows((2, small, 0.7), dend))).affinities) == 1
    # dominant class below 60 % -> no class
    assert len(agglomerate(graph([n, n], [[1, 2]], [0.4], semantic=sem_rows((2, n, 0.55), dend))).affinities) == 1
    # parameters scale the rule
    p = AgglomerationParams(semantic_min_size=100_000, semantic_min_fraction=0.5)
    assert len(agglomerate(graph([small, n], [[1, 2]], [0.4], semantic=sem_rows((2, small, 0.55), dend)), p).affinities) == 0
    assert len(agglomerate(graph([n, n], [[1, 2]], [0.4], semantic=sem_rows(axon, dend)), NO_CONSTRAINTS).affinities) == 1


def test_semantic_class_is_acquired_by_merging():
    # nodes 1 and 2 are small axon pieces, 3 a dendrite: after 1+2 merge (0.9) the axon is big
    # enough to have a class, and the 0.4 edge to the dendrite is vetoed
    n = 100_000
    sem = sem_rows((2, n, 0.7), (2, n, 0.7), (3, 2 * n, 0.7))
    h = agglomerate(graph([n, n, 2 * n], [[1, 2], [2, 3]], [0.9, 0.4], semantic=sem))
    assert h.affinities.tolist() == pytest.approx([0.9])
    assert h.veto_reasons.tolist() == [VETO_SEMANTIC]


@pytest.mark.parametrize("nsv, vetoed", [((1001, 10_001), True), ((1001, 10_000), False), ((1000, 20_000), False),
                                         ((5000, 5000), False)])
def test_size_constraint(nsv, vetoed):
    g = graph([10, 10], [[1, 2]], [0.4], supervoxels=list(nsv))
    h = agglomerate(g)
    assert (len(h.affinities) == 0) == vetoed
    if vetoed:
        assert h.veto_reasons.tolist() == [VETO_SIZE]
    assert len(agglomerate(graph([10, 10], [[1, 2]], [0.55], supervoxels=list(nsv))).affinities) == 1


def test_vetoed_edge_is_removed_not_retried():
    # 1-2 vetoed (big objects); 3 merges with 1 first (0.45); the remaining 2-(1+3) edge consists
    # only of the 3-2 contacts and is judged again with the merged object's state
    g = graph([10, 10, 10], [[1, 2], [1, 3], [2, 3]], [0.48, 0.45, 0.2], supervoxels=[2000, 20_000, 1])
    h = agglomerate(g)
    assert h.veto_affinities.tolist() == pytest.approx([0.48, 0.2])
    assert h.merge_ids.tolist() == [[1, 3]]


def test_frozen_nodes_pass_edges_up():
    # chain 1-2-3-4 with node 4 frozen: 3-4 is not merged and 3 becomes frozen, so 2-3 is not
    # merged either, and so on: freezing spreads to whatever would have merged with a frozen node
    g = graph([1, 1, 1, 1], [[1, 2], [2, 3], [3, 4]], [0.5, 0.6, 0.9])
    hist, raw = _run(g, NO_CONSTRAINTS, frozen=[False, False, False, True])
    alive, frozen, passed = raw[7], raw[15], raw[16]
    assert hist.merge_ids.tolist() == [] and frozen.all() and passed.all() and alive.all()
    # a better edge away from the frozen end is still merged: 1-2 (0.9) before 2-3 (0.6)
    g = graph([1, 1, 1, 1], [[1, 2], [2, 3], [3, 4]], [0.9, 0.6, 0.7])
    hist, raw = _run(g, NO_CONSTRAINTS, frozen=[False, False, False, True])
    assert hist.merge_ids.tolist() == [[1, 2]] and raw[15].tolist() == [False, True, True, True]


def test_history_save_load_and_segmentation(tmp_path, rng):
    g = random_graph(rng)
    h = agglomerate(g, NO_CONSTRAINTS)
    h.save(tmp_path / "h.npz")
    h2 = MergeHistory.load(tmp_path / "h.npz")
    assert h2.params == h.params and np.array_equal(h2.merges, h.merges)
    sv = rng.choice(np.concatenate([[0], g.ids]), size=(3, 8, 8)).astype(np.uint64)
    seg = h2.segmentation(sv, 0.5)
    ids, labels = h.labels_at(0.5)
    lut = dict(zip(ids.tolist(), labels.tolist()))
    assert seg.dtype == np.uint64 and np.all(seg[sv == 0] == 0)
    assert all(seg.flat[i] == lut[int(sv.flat[i])] for i in np.flatnonzero(sv))
    assert np.all(labels <= ids)  # an object is named by its smallest supervoxel id
    with pytest.raises(InputError, match="threshold"):
        h.labels_at(float("nan"))


# ------------------------------------------------------------------ end to end ----------------
def test_end_to_end_on_noisy_voronoi_cells():
    from emkit.affinity import boundary_mask, noisy_affinities
    from emkit.evaluate import evaluate

    gt = voronoi((32, 128, 128), 80, seed=7)
    aff = noisy_affinities(gt, 7)
    sv = watershed(aff, WatershedParams())
    g = region_graph(sv, aff)
    h = agglomerate(g, AgglomerationParams(constraints=False))
    seg = h.segmentation(sv, 0.5)
    full = evaluate(seg, gt)
    core = evaluate(seg, np.where(boundary_mask(gt), 0, gt))  # membrane voxels ignored
    assert full["arand"] < 0.12
    assert core["arand"] < 0.02 and core["voi_split"] + core["voi_merge"] < 0.15
    # the hierarchy matters: cutting too low merges cells
    assert evaluate(h.segmentation(sv, 0.02), gt)["voi_merge"] > full["voi_merge"] + 0.5
