"""The synapse table (700 nm same-partner merge, autapse and unassigned filters), the wiring
diagram (edge list, networkx, adjacency matrix) and the synapse scores against truth."""
import json

import numpy as np
import pandas as pd
import pytest

from emkit.errors import InputError
from emkit.evaluate import connectivity_scores, segment_map, synapse_scores
from emkit.synapse import (SYNAPSE_COLUMNS, CleftParams, SynapseParams, adjacency_matrix, build_synapse_table,
                           cleft_components, edge_list, graph_summary, read_synapse_table, to_networkx)
from emkit.synapse.table import provenance_record, write_synapse_table


def _clefts(rows):
    """A cleft table from (id, size, centroid z, y, x nm, mean_prob)."""
    out = []
    for cid, size, z, y, x, p in rows:
        out.append({"id": cid, "size_voxels": size, "bbox_z0": int(z // 40), "bbox_y0": int(y // 8),
                    "bbox_x0": int(x // 8), "bbox_z1": int(z // 40) + 1, "bbox_y1": int(y // 8) + 2,
                    "bbox_x1": int(x // 8) + 2, "centroid_z_nm": z, "centroid_y_nm": y, "centroid_x_nm": x,
                    "mean_prob": p})
    return pd.DataFrame(out).astype({"id": np.uint64})


def _partners(rows):
    return pd.DataFrame(rows, columns=["cleft_id", "pre_id", "post_id", "assignment_score"])


def test_merge_within_700nm_same_partners_and_filters():
    clefts = _clefts([
        (1, 100, 400, 400, 400, 0.9),     # 1, 2: same partners, 500 nm apart -> merged
        (2, 300, 400, 900, 400, 0.7),
        (3, 50, 400, 1500, 400, 0.8),     # same partners, 600 nm from 2 -> chained into 1-2 (single linkage)
        (4, 80, 400, 400, 3000, 0.6),     # same partners, far away -> separate synapse
        (5, 60, 400, 450, 450, 0.9),      # close to 1 but other partners -> separate
        (6, 70, 800, 800, 800, 0.9),      # autapse -> dropped
        (7, 90, 800, 800, 2000, 0.9),     # unassigned (post 0) -> dropped
        (8, 40, 900, 900, 2500, 0.9),     # no partner row -> dropped
    ])
    partners = _partners([(1, 10, 20, 1.0), (2, 10, 20, 0.5), (3, 10, 20, 0.5), (4, 10, 20, 0.9), (5, 20, 10, 0.8),
                          (6, 30, 30, 0.9), (7, 31, 0, 0.2)])
    t = build_synapse_table(clefts, partners)
    assert list(t.columns) == list(SYNAPSE_COLUMNS)
    assert t["id"].tolist() == [1, 2, 3]
    assert t["cleft_ids"].tolist() == [[1, 2, 3], [4], [5]]
    assert t[["pre_id", "post_id"]].values.tolist() == [[10, 20], [10, 20], [20, 10]]
    s = t.iloc[0]
    assert s.size_voxels == 450 and s.n_clefts == 3
    assert s.centroid_y_nm == pytest.approx((100 * 400 + 300 * 900 + 50 * 1500) / 450)
    assert s.cleft_score == pytest.approx((100 * 0.9 + 300 * 0.7 + 50 * 0.8) / 450)
    assert s.assignment_score == pytest.approx((100 * 1.0 + 300 * 0.5 + 50 * 0.5) / 450)
    assert (s.bbox_y0, s.bbox_y1) == (50, 1500 // 8 + 2)
    # the merge distance is a parameter (0: off); autapses and unassigned can be kept
    t0 = build_synapse_table(clefts, partners, SynapseParams(merge_distance_nm=0))
    assert len(t0) == 5
    t400 = build_synapse_table(clefts, partners, SynapseParams(merge_distance_nm=400))
    assert t400["cleft_ids"].tolist()[:2] == [[1], [2]]
    keep = build_synapse_table(clefts, partners, SynapseParams(drop_autapses=False, drop_unassigned=False))
    assert {6, 7, 8} <= {c for cl in keep["cleft_ids"] for c in cl}
    hi = build_synapse_table(clefts, partners, SynapseParams(min_assignment_score=0.6))
    assert [c for cl in hi["cleft_ids"] for c in cl] == [1, 4, 5]


def test_table_ids_follow_cleft_order_and_empty_cases():
    clefts = _clefts([(1, 10, 0, 0, 0, 0.9), (2, 10, 0, 0, 5000, 0.9)])
    t = build_synapse_table(clefts, _partners([(2, 1, 2, 1.0), (1, 3, 4, 1.0)]))
    assert t["cleft_ids"].tolist() == [[1], [2]] and t["pre_id"].tolist() == [3, 1]
    empty = build_synapse_table(clefts, _partners([(1, 5, 5, 1.0)]))
    assert len(empty) == 0 and list(empty.columns) == list(SYNAPSE_COLUMNS)
    assert graph_summary(empty)["synapses"] == 0 and len(edge_list(empty)) == 0
    with pytest.raises(InputError, match="several rows for cleft 1"):
        build_synapse_table(clefts, _partners([(1, 1, 2, 1.0), (1, 2, 3, 1.0)]))
    with pytest.raises(InputError, match="lacks column"):
        build_synapse_table(clefts.drop(columns="mean_prob"), _partners([(1, 1, 2, 1.0)]))
    for bad in (dict(merge_distance_nm=-1), dict(min_assignment_score=2), dict(drop_autapses="yes"),
                dict(cleft=0.5)):
        with pytest.raises(InputError):
            SynapseParams(**bad)
    p = SynapseParams(cleft=CleftParams(threshold=0.3), merge_distance_nm=500)
    assert SynapseParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_graph_edge_list_networkx_adjacency():
    t = pd.DataFrame({"pre_id": np.array([5, 5, 5, 7, 9], np.uint64), "post_id": np.array([7, 7, 9, 5, 7], np.uint64),
                      "size_voxels": [10, 20, 5, 8, 1]})
    e = edge_list(t)
    assert e.values.tolist() == [[5, 7, 2, 30], [5, 9, 1, 5], [7, 5, 1, 8], [9, 7, 1, 1]]
    g = to_networkx(t)
    assert g.number_of_nodes() == 3 and g.number_of_edges() == 4
    assert g[5][7] == {"synapse_count": 2, "total_size": 30} and not g.has_edge(7, 9)
    m, ids = adjacency_matrix(t)
    assert ids.tolist() == [5, 7, 9]
    assert m.toarray().tolist() == [[0, 2, 1], [1, 0, 0], [0, 1, 0]]
    m2, ids2 = adjacency_matrix(e, ids=[9, 5], weight="total_size")
    assert ids2.tolist() == [9, 5] and m2.toarray().tolist() == [[0, 0], [5, 0]]
    s = graph_summary(t)
    assert s == {"synapses": 5, "edges": 4, "neurons": 3, "presynaptic": 3, "postsynaptic": 3,
                 "max_synapses_per_edge": 2, "mean_synapses_per_edge": 1.25}
    with pytest.raises(InputError):
        adjacency_matrix(t, weight="volume")


def _blobs(shape, boxes):
    a = np.zeros(shape, np.uint64)
    for i, (z, y, x) in enumerate(boxes, 1):
        a[z:z + 2, y:y + 3, x:x + 3] = i
    return a


def test_synapse_scores_detection_partners_connectivity():
    shape = (8, 64, 64)
    gt_clefts = _blobs(shape, [(1, 5, 5), (1, 5, 40), (4, 40, 5), (4, 40, 40)])
    gt_table = pd.DataFrame({"cleft_id": [1, 2, 3, 4], "pre_id": [1, 1, 2, 3], "post_id": [2, 2, 3, 1]})
    # predictions: clefts 1, 2 found (correct partners), 3 found with pre/post swapped, 4 missed, one spurious
    pred_clefts = _blobs(shape, [(1, 6, 6), (1, 6, 41), (4, 41, 6), (6, 20, 20)])
    labels, ctable = cleft_components(pred_clefts > 0, params=CleftParams(min_size_voxels=1))
    partners = _partners([(1, 1, 2, 1.0), (2, 1, 2, 1.0), (3, 3, 2, 1.0), (4, 2, 1, 1.0)])
    pred = build_synapse_table(ctable, partners, SynapseParams(merge_distance_nm=0))
    s = synapse_scores(pred, labels, gt_table, gt_clefts)
    assert (s["n_pred"], s["n_true"]) == (4, 4)
    assert s["precision"] == pytest.approx(3 / 4) and s["recall"] == pytest.approx(3 / 4)
    assert (s["partners_matched"], s["partners_correct"], s["partners_swapped"]) == (3, 2, 1)
    assert s["partner_accuracy"] == pytest.approx(2 / 3)
    # edges: true {1->2 (x2), 2->3, 3->1}; predicted {1->2 (x2), 3->2, 2->1}
    assert (s["edges_true"], s["edges_pred"], s["edges_found"], s["edges_missed"], s["edges_spurious"]) == (3, 3, 1, 2, 2)
    assert s["weighted_recall"] == pytest.approx(2 / 4) and s["weighted_precision"] == pytest.approx(2 / 4)
    # the 700 nm merge joins the two 1->2 clefts (280 nm apart in x): one synapse spanning both true ones
    merged = build_synapse_table(ctable, partners)
    sm = synapse_scores(merged, labels, gt_table, gt_clefts)
    assert sm["n_pred"] == 3 and sm["recall"] == pytest.approx(3 / 4)
    # partner ids of another segmentation are mapped to the true segments they overlap most
    seg_gt = np.repeat(np.arange(1, 5, dtype=np.uint64), 16)[None, None, :].repeat(8, 0).repeat(64, 1)
    seg = seg_gt + 100
    assert segment_map(seg, seg_gt) == {101: 1, 102: 2, 103: 3, 104: 4}
    shifted = pred.copy()
    shifted["pre_id"] += 100
    shifted["post_id"] += 100
    assert synapse_scores(shifted, labels, gt_table, gt_clefts, segmentation=seg,
                          gt_segmentation=seg_gt)["partners_correct"] == 2
    assert synapse_scores(shifted, labels, gt_table, gt_clefts)["partners_correct"] == 0
    c = connectivity_scores(pred, gt_table)
    assert c["edge_recall"] == pytest.approx(1 / 3)


def test_write_and_read_table_with_provenance(tmp_path):
    clefts = _clefts([(1, 100, 400, 400, 400, 0.9), (2, 50, 400, 4000, 400, 0.7)])
    t = build_synapse_table(clefts, _partners([(1, 10, 20, 1.0), (2, 20, 30, 0.5)]))
    prov = provenance_record(command="emkit synapses a b c", models={"cleft": {"model": "cleft"}},
                             layers={"image": "file:///x"}, params=SynapseParams())
    files = write_synapse_table(t, str(tmp_path), prov, edges=edge_list(t))
    back = read_synapse_table(tmp_path)
    pd.testing.assert_frame_equal(back.drop(columns="cleft_ids"), t.drop(columns="cleft_ids"))
    assert back["cleft_ids"].tolist() == [[1], [2]] and back["id"].dtype == np.uint64
    rec = json.loads((tmp_path / "synapses.json").read_text())
    assert rec["command"] == "emkit synapses a b c" and rec["params"]["merge_distance_nm"] == 700.0
    assert rec["params"]["cleft"]["threshold"] is None and rec["emkit_version"]  # None: the model's, else 0.5
    assert "git_revision" in rec and files["edges"].endswith("edges.parquet")
    assert pd.read_parquet(tmp_path / "edges.parquet")["synapse_count"].tolist() == [1, 1]
    with pytest.raises(InputError, match="no synapse table"):
        read_synapse_table(tmp_path / "nope")


def test_truth_partners_oracle_in_another_segmentation():
    from emkit.synapse.truth import truth_partners

    shape = (8, 64, 64)
    gt_clefts = _blobs(shape, [(2, 10, 10), (2, 40, 40)])
    gt_table = pd.DataFrame({"cleft_id": [1, 2], "pre_id": [1, 3], "post_id": [2, 4]})
    gseg = np.zeros(shape, np.uint64)
    gseg[:, :32, :12], gseg[:, :32, 12:], gseg[:, 32:, :42], gseg[:, 32:, 42:] = 1, 2, 3, 4
    pred = _blobs(shape, [(2, 11, 11), (6, 1, 60), (2, 41, 41)])  # the 2nd overlaps no true cleft
    p = truth_partners(pred, gt_clefts, gt_table)
    assert p[["cleft_id", "pre_id", "post_id"]].values.tolist() == [[1, 1, 2], [2, 0, 0], [3, 3, 4]]
    assert p["assignment_score"].tolist()[0] == pytest.approx(8 / 18) and p["assignment_score"][1] == 0
    seg = gseg + 10  # another segmentation of the same cells: partners follow its ids
    seg[:, 32:, 42:] = 99
    q = truth_partners(pred, gt_clefts, gt_table, segmentation=seg, gt_segmentation=gseg)
    assert q[["pre_id", "post_id"]].values.tolist() == [[11, 12], [0, 0], [13, 99]]
    with pytest.raises(InputError, match="both"):
        truth_partners(pred, gt_clefts, gt_table, segmentation=seg)


def test_cleft_tuner_widget_scores_follow_sliders():
    from emkit.evaluate import cleft_precision_recall
    from emkit_widgets.cleft_tuner import CleftTuner

    shape = (8, 64, 64)
    gt = _blobs(shape, [(1, 5, 5), (1, 5, 40), (4, 40, 5)])
    prob = np.where(gt > 0, 0.9, 0.0).astype(np.float32)
    prob[(gt == 3)] = 0.6  # a weak cleft: found at 0.5, lost at 0.7
    prob[6, 50:53, 50:53] = 0.8  # a spurious blob of 9 voxels
    tuner = CleftTuner(prob, gt, min_size=5)
    s = tuner.scores()
    assert (s["n_pred"], s["n_true"], s["recall"]) == (4, 3, 1.0) and s["precision"] == pytest.approx(3 / 4)
    assert tuner.scores(0.7)["recall"] == pytest.approx(2 / 3)
    assert tuner.scores(0.5, 10)["precision"] == 1.0  # the 9-voxel blob goes below the size
    labels, _ = cleft_components(prob, params=CleftParams(threshold=0.7, min_size_voxels=5))
    assert tuner.scores(0.7)["f1"] == cleft_precision_recall(labels, gt).f1
    box = tuner.widget()
    c = tuner._controls
    c["threshold"].value = 0.7
    assert "recall <b>0.667</b>" in c["score"].value and tuner.threshold == 0.7
    c["min_size"].value = 10
    assert tuner.min_size == 10 and len(box.children) == 3
