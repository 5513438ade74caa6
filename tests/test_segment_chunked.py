"""Chunked / octree / distributed segmentation: identical to the global run, resumable, on layers."""
import numpy as np
import pytest

from emkit.errors import InputError, LayerExistsError, TaskFailedError
from emkit.segment import AgglomerationParams, WatershedParams, segment, segment_layers
from emkit.segment.chunked import ArraySink, ArraySource, MemoryStore, run_chunked
from helpers_cells import voronoi

THRESHOLDS = (0.95, 0.8, 0.6, 0.5, 0.4, 0.25, 0.1, 0.0)
SMALL_WS = WatershedParams(size_threshold=40, dust_size=10)
CONSTRAINED = AgglomerationParams(semantic_min_size=300, size_min_supervoxels_both=3, size_max_supervoxels_one=8)
PLAIN = AgglomerationParams(constraints=False)


@pytest.fixture(scope="module")
def cells():
    from emkit.affinity import noisy_affinities

    gt = voronoi((16, 96, 96), 60, seed=5)
    sem = (gt % 5 + 1).astype(np.int64)
    return noisy_affinities(gt, 5), sem


@pytest.fixture(scope="module")
def phantom_case():
    from emkit.affinity import noisy_affinities
    from emkit.phantom import make_phantom

    p = make_phantom((16, 96, 96), seed=1, defects=None)
    return noisy_affinities(p.segmentation, 1), p.semantic.astype(np.int64)


def assert_same(glob, chunked):
    (seg, sv, h), (seg2, sv2, h2) = glob, chunked
    assert np.array_equal(sv, sv2)  # same supervoxels, same ids
    assert np.array_equal(seg, seg2)
    assert np.array_equal(h.ids, h2.ids)
    assert sorted(h.affinities.tolist()) == sorted(h2.affinities.tolist())  # same merges, same means
    assert sorted(h.veto_affinities.tolist()) == sorted(h2.veto_affinities.tolist())
    for t in THRESHOLDS:
        assert np.array_equal(h.labels_at(t)[1], h2.labels_at(t)[1]), t


CHUNKS = [(8, 32, 32), (5, 40, 24), (16, 96, 96), (16, 16, 96), (3, 96, 11)]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("constraints", [False, True])
def test_chunked_equals_global_on_voronoi_cells(cells, chunk, constraints):
    aff, sem = cells
    kw = dict(semantic=sem, agglomeration_params=CONSTRAINED) if constraints else dict(agglomeration_params=PLAIN)
    glob = segment(aff, watershed_params=SMALL_WS, **kw)
    if constraints:
        assert len(glob[2].veto_reasons) > 20  # the constraints act
    assert_same(glob, segment(aff, watershed_params=SMALL_WS, chunk_size=chunk, **kw))


@pytest.mark.parametrize("chunk", [(8, 32, 32), (5, 40, 24), (16, 16, 96)])
def test_chunked_equals_global_on_a_phantom_with_constraints(phantom_case, chunk):
    aff, sem = phantom_case
    glob = segment(aff, semantic=sem, watershed_params=SMALL_WS, agglomeration_params=CONSTRAINED)
    assert set(glob[2].veto_reasons.tolist()) == {1, 2}  # size and semantic vetoes both happen
    assert_same(glob, segment(aff, semantic=sem, watershed_params=SMALL_WS, agglomeration_params=CONSTRAINED,
                              chunk_size=chunk))


@pytest.mark.parametrize("wp", [WatershedParams(), WatershedParams(size_threshold=0, dust_size=0, low=0.3, high=0.7),
                                WatershedParams(size_threshold=10, dust_size=3, low=0.2, high=0.8, drop_dust=True)])
def test_chunked_equals_global_with_plateaus_and_ties(wp):
    # affinities on 4 levels: large plateaus below `high` crossing chunk faces, many equal means
    rng = np.random.default_rng(3)
    aff = (np.round(rng.random((3, 10, 30, 30)) * 3) / 3).astype(np.float32)
    glob = segment(aff, watershed_params=wp, agglomeration_params=PLAIN)
    for chunk in [(4, 8, 8), (3, 7, 11)]:
        store = MemoryStore()
        sink = ArraySink(aff.shape[1:])
        h, _ = run_chunked(ArraySource(aff), aff.shape[1:], chunk, watershed_params=wp, agglomeration_params=PLAIN,
                           store=store, sink=sink)
        if wp.low == 0.3:
            assert store.get("plateaus")["a"].size > 0  # crossing plateaus were divided globally
        assert_same(glob, (sink.segmentation, sink.supervoxels, h))


@pytest.mark.parametrize("wp", [WatershedParams(low=0.0, high=0.99, size_threshold=40, dust_size=10),
                                WatershedParams(low=0.0, high=0.7, size_threshold=0, dust_size=0)])
def test_chunked_equals_global_on_a_saturated_boundary_map(wp):
    # a pixel classifier's map: exact 0 inside cells and exact 1 on membranes, as in real data. Every
    # edge of a membrane voxel is 0: exits choose by the two-step ascent, and membrane plateaus (with
    # low = 0 they exist) cross chunk faces
    from emkit.affinity import boundary_mask, boundary_to_affinities

    gt = voronoi((12, 40, 40), 12, seed=7)
    rng = np.random.default_rng(7)
    b = np.clip(boundary_mask(gt) + 0.4 * rng.random(gt.shape) * (rng.random(gt.shape) < 0.3), 0, 1)
    aff = boundary_to_affinities(np.round(b, 1).astype(np.float32))
    glob = segment(aff, watershed_params=wp, agglomeration_params=PLAIN)
    assert not np.any(glob[1] == 0)  # low = 0: no voxel is left as background
    for chunk in [(4, 16, 16), (5, 13, 22)]:
        assert_same(glob, segment(aff, watershed_params=wp, agglomeration_params=PLAIN, chunk_size=chunk))


class RecordingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.reads = []

    def get(self, key):
        self.reads.append(key)
        return super().get(key)


def test_levels_above_the_leaves_carry_only_boundary_graphs(cells):
    from emkit.segment import chunked

    aff, _ = cells
    store = RecordingStore()
    plan = chunked.ChunkPlan((16, 96, 96), (8, 32, 32))
    assert plan.grid == (2, 3, 3) and plan.top == 2
    h, executed = run_chunked(ArraySource(aff), aff.shape[1:], (8, 32, 32), watershed_params=SMALL_WS,
                              agglomeration_params=PLAIN, store=store, sink=None)
    assert {k: v for k, v in executed.items() if k != "seconds"} == {
        "leaves": 18, "plateaus": 1, "level0": 18, "level1": 4, "level2": 1}
    # octree levels read only the children's boundary graphs and the 2D face arrays, never voxels
    level_reads = store.reads[store.reads.index("plateaus"):]
    level_reads = level_reads[:min(i for i, k in enumerate(level_reads) if k.startswith("result/"))]  # history
    assert not any(k.startswith("frag/") for k in level_reads)
    assert {k.split("/")[0] for k in level_reads} <= {"plateaus", "leaf", "state", "face"}
    assert all(v.ndim <= 2 for k, v in store.data.items() if k.startswith("face/") for v in v.values())
    up = [sum(v["u_id"].size for k, v in store.data.items() if k.startswith(f"state/{L}/")) for L in range(3)]
    frags = sum(v["ids"].size for k, v in store.data.items() if k.startswith("leaf/"))
    assert frags > up[0] > up[1] > up[2] == 0  # nothing frozen at the top


# ------------------------------------------------------------------ layers, dask, resume --------
@pytest.fixture
def aff_layer(tmp_path, cells):
    from emkit.io import Layer

    aff, sem = cells
    url = str(tmp_path / "aff")
    Layer.create(url, "affinities", aff.shape[1:], chunk_size=(8, 48, 48), voxel_offset=(2, 0, 5)).write(aff)
    Layer.create(str(tmp_path / "sem"), "segmentation", aff.shape[1:], voxel_offset=(2, 0, 5)).write(sem.astype(np.uint64))
    return url


def read(url):
    from emkit.io import Layer

    return Layer.open(url).read()


def test_layers_serial_and_dask_equal_the_array_result(tmp_path, aff_layer, cells):
    from emkit.runtime import Cluster
    from emkit.segment import load_history

    aff, sem = cells
    seg, sv, h = segment(aff, semantic=sem, threshold=0.4, watershed_params=SMALL_WS, agglomeration_params=CONSTRAINED)
    kw = dict(semantic_url=str(tmp_path / "sem"), threshold=0.4, chunk_size=(8, 48, 48), watershed_params=SMALL_WS,
              agglomeration_params=CONSTRAINED, progress=False)
    rep = segment_layers(aff_layer, tmp_path / "serial", workers=0, **kw)
    assert np.array_equal(read(rep["supervoxels"]), sv) and np.array_equal(read(rep["segmentation"]), seg)
    assert rep["n_supervoxels"] == sv.max() and rep["executed"]["leaves"] == 8
    with Cluster(n_workers=2, quiet=True) as cluster:
        rep2 = segment_layers(aff_layer, tmp_path / "dask", client=cluster, **kw)
    assert np.array_equal(read(rep2["supervoxels"]), sv) and np.array_equal(read(rep2["segmentation"]), seg)
    h2 = load_history(tmp_path / "dask")
    for t in THRESHOLDS:
        assert np.array_equal(h2.labels_at(t)[1], h.labels_at(t)[1])
    from emkit.io import Layer

    assert Layer.open(rep2["segmentation"]).voxel_offset == (2, 0, 5)


def test_resume_recomputes_only_missing_pieces(tmp_path, aff_layer, cells, monkeypatch):
    from emkit.runtime import Markers
    from emkit.segment import chunked

    aff, _ = cells
    seg, sv, _ = segment(aff, watershed_params=SMALL_WS, agglomeration_params=PLAIN)
    calls = {"n": 0}
    original = chunked.BoxTask.__call__

    def flaky(self, box, read_bbox):
        if self.level == 0:
            calls["n"] += 1
            if calls["n"] > 5:
                raise OSError("worker lost")
        return original(self, box, read_bbox)

    monkeypatch.setattr(chunked.BoxTask, "__call__", flaky)
    kw = dict(chunk_size=(5, 40, 40), watershed_params=SMALL_WS, agglomeration_params=PLAIN, workers=0, progress=False)
    with pytest.raises(TaskFailedError, match="worker lost"):
        segment_layers(aff_layer, tmp_path / "out", **kw)
    monkeypatch.setattr(chunked.BoxTask, "__call__", original)
    markers = tmp_path / "out" / ".emkit" / "segment" / "markers"
    assert Markers(markers / "leaves").count() == 36 and Markers(markers / "level0").count() == 5
    rep = segment_layers(aff_layer, tmp_path / "out", **kw)  # same arguments: resumes
    assert rep["executed"]["leaves"] == 0 and rep["executed"]["plateaus"] == 0
    assert rep["executed"]["level0"] == 36 - 5 and rep["executed"]["relabel"] == 36
    assert np.array_equal(read(rep["supervoxels"]), sv) and np.array_equal(read(rep["segmentation"]), seg)
    # a finished run is not overwritten by accident; other parameters on an unfinished run are refused
    with pytest.raises(LayerExistsError, match="overwrite"):
        segment_layers(aff_layer, tmp_path / "out", **kw)
    rep = segment_layers(aff_layer, tmp_path / "out", **{**kw, "chunk_size": (16, 96, 96)}, overwrite=True)
    assert rep["executed"]["leaves"] == 1 and np.array_equal(read(rep["segmentation"]), seg)


def test_bad_inputs(tmp_path, aff_layer, cells):
    from emkit.io import Layer

    aff, _ = cells
    with pytest.raises(InputError, match="threshold"):
        segment(aff, threshold=1.5)
    with pytest.raises(InputError, match="threshold"):
        segment_layers(aff_layer, tmp_path / "o", threshold=-0.1, workers=0, progress=False)
    Layer.create(str(tmp_path / "img"), "image", (4, 8, 8)).write(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(InputError, match="affinities layer"):
        segment_layers(str(tmp_path / "img"), tmp_path / "o", workers=0, progress=False)
    Layer.create(str(tmp_path / "sem_small"), "segmentation", (4, 8, 8))
    with pytest.raises(InputError, match="size"):
        segment_layers(aff_layer, tmp_path / "o", semantic_url=str(tmp_path / "sem_small"), workers=0, progress=False)
    with pytest.raises(InputError, match="semantic"):
        segment(aff, semantic=np.zeros((2, 2, 2), np.int64))
    # a foreign layer where an output goes is refused
    Layer.create(str(tmp_path / "taken" / "segmentation"), "segmentation", (4, 8, 8))
    with pytest.raises(LayerExistsError, match="segmentation"):
        segment_layers(aff_layer, tmp_path / "taken", workers=0, progress=False)


def test_semantic_probabilities_act_as_their_classes(tmp_path, aff_layer, cells, rng):
    """The semantic net's 5-channel probabilities (as `emkit infer semantic` writes them) constrain the
    agglomeration exactly as the classes they argmax to, in the array and the layer form."""
    from emkit.io import Layer

    aff, sem = cells
    prob = rng.random((5, *sem.shape)).astype(np.float32) * 0.5
    for c in range(5):   # the true class wins, by a random margin
        prob[c][sem == c + 1] += 0.5
    by_class = segment(aff, semantic=sem, threshold=0.4, watershed_params=SMALL_WS, agglomeration_params=CONSTRAINED)
    by_prob = segment(aff, semantic=prob, threshold=0.4, watershed_params=SMALL_WS, agglomeration_params=CONSTRAINED)
    assert_same(by_class, by_prob)
    assert set(by_prob[2].veto_reasons.tolist()) >= {2}    # the semantic constraint did act
    Layer.create(str(tmp_path / "prob"), "probability", sem.shape, num_channels=5, voxel_offset=(2, 0, 5),
                 chunk_size=(8, 48, 48)).write(prob)
    rep = segment_layers(aff_layer, tmp_path / "o", semantic_url=str(tmp_path / "prob"), threshold=0.4,
                         chunk_size=(8, 48, 48), watershed_params=SMALL_WS, agglomeration_params=CONSTRAINED,
                         workers=0, progress=False)
    assert np.array_equal(read(rep["segmentation"]), by_class[0])
    Layer.create(str(tmp_path / "prob3"), "probability", sem.shape, num_channels=3, voxel_offset=(2, 0, 5)).write(
        prob[:3])
    with pytest.raises(InputError, match="5 float channels"):
        segment_layers(aff_layer, tmp_path / "o3", semantic_url=str(tmp_path / "prob3"), workers=0, progress=False)


# ------------------------------------------------------------------ fast paths = their references ---
def test_edge_reductions_match_their_sorting_references():
    from emkit.segment.chunk_watershed import reduce_edges
    from emkit.segment.octree import _aggregate_edges, _global_order

    rng = np.random.default_rng(3)
    n = 400
    a = rng.integers(1, n, 5000)
    b = rng.integers(1, n, 5000)
    a, b = np.minimum(a, b), np.maximum(a, b)
    a[:40], b[:40] = 7, 9  # one pair with many faces (the bucket sort's large-bucket branch)
    w = np.round(rng.random(5000), 2).astype(np.float32)  # ties between faces
    key = rng.permutation(100000)[:5000].astype(np.int64)
    dense = reduce_edges(a, b, w, key, 0.3)  # dense ids: counting buckets
    ref = reduce_edges(a.astype(np.uint64), b.astype(np.uint64), w, key, 0.3)  # lexsort path
    for x, y in zip(dense, ref):
        assert np.array_equal(np.asarray(x).astype(np.float64), np.asarray(y).astype(np.float64))
    assert (dense[2] == -1).any() and (dense[2] >= 0.3).any()

    q = rng.integers(0, 2**32, 5000)
    cnt = rng.integers(1, 4, 5000)
    got = _aggregate_edges(b, a, w, key, q, cnt)  # ends swapped: ordered inside
    keep = a != b
    lo, hi, ka, kk, qq, cc = a[keep], b[keep], w[keep], key[keep], q[keep], cnt[keep]
    o = np.lexsort((kk, -ka, hi, lo))
    lo, hi, ka, kk, qq, cc = lo[o], hi[o], ka[o], kk[o], qq[o], cc[o]
    s = np.flatnonzero(np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])])
    for x, y in zip(got, (lo[s], hi[s], ka[s], kk[s], np.add.reduceat(qq, s), np.add.reduceat(cc, s))):
        assert np.array_equal(x, y)

    idx = rng.permutation(5000)[:3000]
    assert np.array_equal(_global_order(idx, w, key), idx[np.lexsort((key[idx], -w[idx]))])


def test_unit_index_finds_ids_and_refuses_unknown_ones():
    from emkit.segment.octree import _Index

    ids = (np.uint64(5) << np.uint64(32)) + np.random.default_rng(0).permutation(10000).astype(np.uint64)
    index = _Index(ids)
    q = ids[[17, 0, 9999, 17]]
    assert np.array_equal(ids[index(q)], q)
    with pytest.raises(RuntimeError, match="not in the box"):
        index(np.array([3], np.uint64))


def test_box_of_finds_each_level_box_directly():
    from emkit.segment.chunked import ChunkPlan, plan_boxes

    plan = ChunkPlan((20, 70, 50), (8, 32, 16))
    for L in range(plan.top + 1):
        for leaf in plan_boxes(plan, 0):
            want = [b for b in plan_boxes(plan, L) if all(s <= a < e for a, s, e in zip(leaf.start, b.start, b.stop))]
            assert plan.box_of(leaf.start, L) == want[0]
