"""emkit.evaluate.sweep: the scores of every cut, from one supervoxel table, equal evaluate()."""
import numpy as np
import pytest

from emkit.errors import InputError
from emkit.evaluate import best_threshold, contingency, cut_contingency, evaluate, sweep
from emkit.segment import AgglomerationParams, agglomerate, region_graph


@pytest.fixture
def case(rng):
    gt = rng.integers(0, 5, (4, 12, 12)).astype(np.uint64)
    sv = rng.integers(0, 30, (4, 12, 12)).astype(np.uint64) * 7   # includes background 0 (not a node)
    aff = rng.random((3, 4, 12, 12)).astype(np.float32)
    hist = agglomerate(region_graph(sv, aff), AgglomerationParams(constraints=False))
    return sv, gt, hist


def test_sweep_equals_evaluate_on_each_cut(case):
    sv, gt, hist = case
    ths = [0.9, 0.1, 0.5, 0.45, 0.0, 2.0]
    rows = sweep(hist, sv, gt, ths, k=3)
    assert [r["threshold"] for r in rows] == ths
    for r in rows:
        want = evaluate(hist.segmentation(sv, r["threshold"]), gt, k=3)
        for key in ("voi_split", "voi_merge", "voi", "arand", "arand_precision", "arand_recall", "n_seg"):
            assert r[key] == pytest.approx(want[key], abs=1e-12), key
        for which in ("worst_splits", "worst_merges"):
            assert [(w["id"], w["size"], w["pieces"]) for w in r[which]] == \
                [(w["id"], w["size"], w["pieces"]) for w in want[which]]
            assert [w["voi"] for w in r[which]] == pytest.approx([w["voi"] for w in want[which]])
    assert len({r["n_seg"] for r in rows}) > 2
    # a table built once gives the same rows; ignore_gt is honoured
    table = contingency(sv, gt, ignore_gt=(0, 1))
    again = sweep(hist, table, None, ths)
    want = evaluate(hist.segmentation(sv, 0.5), gt, ignore_gt=(0, 1))
    assert again[2]["voi_merge"] == pytest.approx(want["voi_merge"]) and "worst_splits" not in again[2]


def test_cut_contingency_rows_are_the_cut_ids(case):
    sv, gt, hist = case
    t = cut_contingency(contingency(sv, gt), hist, 0.5)
    seg = hist.segmentation(sv, 0.5)
    direct = contingency(seg, gt)
    def triples(c):
        return sorted(zip(c.seg_ids[c.seg].tolist(), c.gt_ids[c.gt].tolist(), c.counts.tolist()))

    assert triples(t) == triples(direct)
    assert np.all(np.diff(t.seg_ids.astype(np.int64)) > 0)
    assert 0 in t.seg_ids  # background supervoxel 0 keeps its id
    with pytest.raises(InputError, match="Contingency"):
        cut_contingency(sv, hist, 0.5)


def test_best_threshold():
    rows = [{"threshold": 0.1, "arand": 0.3, "voi": 1.0}, {"threshold": 0.2, "arand": float("nan"), "voi": 0.5},
            {"threshold": 0.3, "arand": 0.2, "voi": 0.9}]
    assert best_threshold(rows)["threshold"] == 0.3
    assert best_threshold(rows, "voi")["threshold"] == 0.2
    with pytest.raises(InputError, match="not a sweep column"):
        best_threshold(rows, "f1")
    with pytest.raises(InputError, match="empty"):
        best_threshold([])
