"""Cleft detection scores against ground truth: precision, recall, F1.

Matching rule (documented choice). The paper "evaluated our final cleft detection model by
analyzing the overlap between the connected components of predictions and the labels" and, before
scoring, "merged connected components together which had centroid coordinates within 700 nm from
one another and were assigned to the same synaptic partners" (Methods, *Synapse detection*;
98.2 % precision and recall on 56 test clefts). Here:

1. optionally (``merge_within_nm``) predicted clefts whose centroids lie within that distance
   (single linkage) are merged first — the paper's 700 nm merge *without* its same-partner
   condition, which this function does not know (give ``groups`` to merge by your own rule);
2. a predicted cleft and a true cleft *match* when they share at least ``min_overlap`` voxels;
3. precision = predicted clefts that match some true cleft / predicted clefts;
   recall = true clefts matched by some predicted cleft / true clefts; F1 their harmonic mean.
   One prediction spanning two true clefts recalls both (a merge error shows up in
   ``matches``, not in the scores); two predictions on one true cleft are both true positives.

An empty side scores 1.0 by convention when the other side is empty too (nothing to find, nothing
found), else 0.0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emkit.errors import InputError

__all__ = ["CleftScores", "cleft_precision_recall"]


@dataclass(frozen=True)
class CleftScores:
    """Result of :func:`cleft_precision_recall`.

    Attributes
    ----------
    precision, recall, f1 : fractions 0..1.
    n_pred, n_true : clefts on each side (after the optional merge of predictions).
    matches : (k, 3) int64 array of ``(pred_id, true_id, overlap_voxels)``, every overlapping pair
        with at least ``min_overlap`` voxels, sorted by pred_id then true_id. ``pred_id`` are the
        input ids (the smallest id of a merged group when predictions were merged).
    false_positives : predicted ids matching no true cleft.
    false_negatives : true ids matched by no predicted cleft.
    """

    precision: float
    recall: float
    f1: float
    n_pred: int
    n_true: int
    matches: np.ndarray = field(repr=False)
    false_positives: np.ndarray = field(repr=False)
    false_negatives: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "n_pred": self.n_pred,
                "n_true": self.n_true, "n_matches": int(len(self.matches)),
                "false_positives": self.false_positives.tolist(), "false_negatives": self.false_negatives.tolist()}


def _merge_by_centroid(pred: np.ndarray, ids: np.ndarray, resolution, dist_nm: float) -> np.ndarray:
    """Map of each id in ``ids`` to the smallest id of its single-linkage group (centroids <= dist_nm)."""
    from scipy.ndimage import center_of_mass
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    cen = np.asarray(center_of_mass(np.ones(pred.shape, np.uint8), pred, ids), np.float64).reshape(-1, 3)
    cen = cen * np.asarray(resolution, np.float64)
    pairs = cKDTree(cen).query_pairs(float(dist_nm), output_type="ndarray") if len(ids) > 1 else np.zeros((0, 2), int)
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(ids), len(ids)))
    _, comp = connected_components(g, directed=False)
    rep = np.full(comp.max() + 1 if comp.size else 0, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(rep, comp, ids.astype(np.int64))
    return rep[comp]


def cleft_precision_recall(pred_labels, gt_labels, *, min_overlap: int = 1, merge_within_nm: float | None = None,
                           resolution=(40, 8, 8)) -> CleftScores:
    """Cleft detection precision and recall by overlap (rule in the module docstring).

    Parameters
    ----------
    pred_labels : (z, y, x) integer labels of predicted clefts (0 = none), e.g. from
        :func:`emkit.synapse.cleft_components`.
    gt_labels : (z, y, x) integer labels of true clefts (0 = none), same shape.
    min_overlap : voxels two clefts must share to match (>= 1).
    merge_within_nm : merge predicted clefts whose centroids lie within this distance (nm) before
        scoring (the paper used 700 nm together with a same-partners condition); None: no merge.
    resolution : voxel size (z, y, x) in nm, for ``merge_within_nm``.

    Returns
    -------
    CleftScores
    """
    from emkit.geometry import as_vec3

    pred = np.asarray(pred_labels)
    gt = np.asarray(gt_labels)
    for name, a in (("pred_labels", pred), ("gt_labels", gt)):
        if a.ndim != 3:
            raise InputError(f"{name} must be a (z, y, x) array, got shape {a.shape}")
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise InputError(f"{name} must hold integer labels, got dtype {a.dtype}")
        if a.size and np.issubdtype(a.dtype, np.signedinteger) and a.min() < 0:
            raise InputError(f"{name} holds negative labels (min {a.min()})")
    if pred.shape != gt.shape:
        raise InputError(f"pred_labels has shape {pred.shape} but gt_labels has {gt.shape}; they must match")
    if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, np.integer)) or min_overlap < 1:
        raise InputError(f"min_overlap must be an integer >= 1, got {min_overlap!r}")
    pred = pred.astype(np.int64)
    gt = gt.astype(np.int64)
    pred_ids = np.unique(pred)
    pred_ids = pred_ids[pred_ids > 0]
    true_ids = np.unique(gt)
    true_ids = true_ids[true_ids > 0]
    if merge_within_nm is not None:
        if not np.isfinite(merge_within_nm) or merge_within_nm < 0:
            raise InputError(f"merge_within_nm must be a distance >= 0 in nm, got {merge_within_nm!r}")
        res = as_vec3(resolution, "resolution", positive=True, dtype=float)
        if pred_ids.size:
            rep = _merge_by_centroid(pred, pred_ids, res, merge_within_nm)
            lut_keys, lut_vals = pred_ids, rep
            idx = np.searchsorted(lut_keys, pred)
            idx = np.minimum(idx, lut_keys.size - 1)
            pred = np.where(pred > 0, lut_vals[idx], 0)
            pred_ids = np.unique(rep)
    both = (pred > 0) & (gt > 0)
    if both.any():
        pairs, counts = np.unique(np.stack([pred[both], gt[both]], axis=1), axis=0, return_counts=True)
        ok = counts >= min_overlap
        matches = np.concatenate([pairs[ok], counts[ok, None]], axis=1).astype(np.int64)
    else:
        matches = np.zeros((0, 3), np.int64)
    tp_pred = np.unique(matches[:, 0])
    tp_true = np.unique(matches[:, 1])
    n_pred, n_true = int(pred_ids.size), int(true_ids.size)
    precision = tp_pred.size / n_pred if n_pred else (1.0 if n_true == 0 else 0.0)
    recall = tp_true.size / n_true if n_true else (1.0 if n_pred == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return CleftScores(precision=float(precision), recall=float(recall), f1=float(f1), n_pred=n_pred, n_true=n_true,
                       matches=matches, false_positives=np.setdiff1d(pred_ids, tp_pred),
                       false_negatives=np.setdiff1d(true_ids, tp_true))


# ------------------------------------------------------------------ synapses, partners, wiring --
#
# Scores of a synapse table (emkit.synapse.build_synapse_table) against the truth:
#
# * detection: the predicted synapses (each the union of its cleft components) against the true
#   synapses (each its cleft) with the overlap rule above; predictions are scored after the
#   pipeline's own 700 nm same-partner merge and filters, as the paper scored its clefts;
# * partner assignment: over predicted synapses that match a true one (the true synapse with most
#   overlap), the share whose (pre, post) equals the truth's — segment ids of the predicted
#   segmentation are first mapped to the true segment they overlap most (identity when the synapses
#   were found on the true segmentation); ``swapped`` counts pre/post reversed;
# * connectivity: the directed edges pre → post of both tables (mapped ids): found (in both),
#   missed (true only), spurious (predicted only), and weighted by synapse count
#   (weighted recall = Σ over true edges of min(predicted count, true count) / true synapses;
#   weighted precision the same over predicted synapses).

__all__ += ["segment_map", "connectivity_scores", "synapse_scores", "synapse_scores_dirs"]


def segment_map(segmentation, gt_segmentation) -> dict:
    """``{segment id: true segment id}``: each segment of ``segmentation`` mapped to the true segment
    it shares most voxels with (true id 0 is not a candidate; segments lying only on 0 map to 0)."""
    a = np.asarray(segmentation)
    b = np.asarray(gt_segmentation)
    if a.shape != b.shape:
        raise InputError(f"segmentation {a.shape} and gt_segmentation {b.shape} must have the same shape")
    m = (a > 0) & (b > 0)
    if not m.any():
        return {}
    pairs, counts = np.unique(np.stack([a[m].astype(np.uint64), b[m].astype(np.uint64)], 1), axis=0,
                              return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
    return {int(p): int(g) for p, g in pairs[first]}


def _mapped(ids, seg_map):
    if seg_map is None:
        return np.asarray(ids, np.uint64)
    return np.array([seg_map.get(int(i), 0) for i in ids], np.uint64)


def _edge_counts(pre, post) -> dict:
    out: dict = {}
    for p, q in zip(pre.tolist(), post.tolist()):
        out[(p, q)] = out.get((p, q), 0) + 1
    return out


def connectivity_scores(pred_table, gt_table, seg_map: dict | None = None) -> dict:
    """Edges found, missed and spurious, plain and weighted by synapse count (rule above).

    Parameters
    ----------
    pred_table : predicted synapse table (``pre_id``, ``post_id``).
    gt_table : true synapse table (``pre_id``, ``post_id``).
    seg_map : ``{predicted segment id: true segment id}`` (:func:`segment_map`); None: the same ids.
    """
    pp = _mapped(pred_table["pre_id"].to_numpy(), seg_map)
    pq = _mapped(pred_table["post_id"].to_numpy(), seg_map)
    pred = _edge_counts(pp, pq)
    true = _edge_counts(gt_table["pre_id"].to_numpy(np.uint64), gt_table["post_id"].to_numpy(np.uint64))
    found = set(pred) & set(true)
    n_pred_syn, n_true_syn = sum(pred.values()), sum(true.values())
    both = sum(min(pred[e], true[e]) for e in found)
    return {"edges_true": len(true), "edges_pred": len(pred), "edges_found": len(found),
            "edges_missed": len(set(true) - found), "edges_spurious": len(set(pred) - found),
            "edge_recall": len(found) / len(true) if true else (1.0 if not pred else 0.0),
            "edge_precision": len(found) / len(pred) if pred else (1.0 if not true else 0.0),
            "weighted_recall": both / n_true_syn if n_true_syn else (1.0 if not n_pred_syn else 0.0),
            "weighted_precision": both / n_pred_syn if n_pred_syn else (1.0 if not n_true_syn else 0.0)}


def _synapse_labels(clefts, table):
    """Cleft component ids → synapse ids of ``table`` (``cleft_ids``); components not in it → 0."""
    a = np.asarray(clefts)
    if "cleft_ids" in table.columns:
        keys = np.array([c for cl in table["cleft_ids"] for c in cl], np.uint64)
        vals = np.array([s for s, cl in zip(table["id"], table["cleft_ids"]) for _ in cl], np.uint64)
    else:  # a phantom table: cleft_id is the synapse
        keys = vals = table["cleft_id"].to_numpy(np.uint64)
    if not keys.size:
        return np.zeros(a.shape, np.uint64)
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    flat = a.ravel().astype(np.uint64)
    idx = np.minimum(np.searchsorted(keys, flat), keys.size - 1)
    return np.where(keys[idx] == flat, vals[idx], np.uint64(0)).reshape(a.shape)


def synapse_scores(pred_table, pred_clefts, gt_table, gt_clefts, resolution=(40, 8, 8), *, segmentation=None,
                   gt_segmentation=None, min_overlap: int = 1) -> dict:
    """Detection, partner assignment and connectivity scores of a synapse table, in one call.

    Parameters
    ----------
    pred_table : predicted synapse table (``id``, ``pre_id``, ``post_id``, ``cleft_ids``).
    pred_clefts : (z, y, x) cleft component ids the table's ``cleft_ids`` refer to.
    gt_table : true synapses: the phantom's ``gt/synapses.parquet`` (``cleft_id``, ``pre_id``,
        ``post_id``) or a synapse table.
    gt_clefts : (z, y, x) true cleft ids on the same grid (image frame).
    resolution : voxel size (z, y, x nm), reported.
    segmentation, gt_segmentation : the segmentation the synapses were found on and the true one
        (same grid): predicted partner ids are mapped to true ones by overlap (:func:`segment_map`).
        None (default): the predicted ids are the true ones (synapses found on the true
        segmentation).
    min_overlap : voxels a predicted and a true synapse must share to match.

    Returns
    -------
    dict: ``precision``, ``recall``, ``f1``, ``n_pred``, ``n_true`` (synapses, detection);
    ``partner_accuracy``, ``partners_matched``, ``partners_correct``, ``partners_swapped``;
    the :func:`connectivity_scores` keys; ``resolution_nm``.
    """
    from emkit.synapse.truth import truth_table

    gt_t = truth_table(gt_table)
    pred_l = _synapse_labels(pred_clefts, pred_table)
    gt_l = _synapse_labels(gt_clefts, gt_t)
    det = cleft_precision_recall(pred_l, gt_l, min_overlap=min_overlap, resolution=resolution)
    seg_map = None
    if segmentation is not None or gt_segmentation is not None:
        if segmentation is None or gt_segmentation is None:
            raise InputError("give both segmentation and gt_segmentation (or neither)")
        seg_map = segment_map(segmentation, gt_segmentation)
    # partner accuracy over matched predicted synapses (each with its most-overlapping true synapse)
    m = det.matches
    correct = swapped = matched = 0
    if len(m):
        order = np.lexsort((m[:, 1], -m[:, 2], m[:, 0]))
        m = m[order]
        best = m[np.r_[True, m[1:, 0] != m[:-1, 0]]]
        pt = pred_table.set_index(pred_table["id"].astype(np.int64))
        gtt = gt_t.set_index(gt_t["id"].astype(np.int64))
        for pid, gid, _ in best.tolist():
            pre, post = _mapped([pt.at[pid, "pre_id"], pt.at[pid, "post_id"]], seg_map)
            tpre, tpost = int(gtt.at[gid, "pre_id"]), int(gtt.at[gid, "post_id"])
            matched += 1
            correct += (int(pre), int(post)) == (tpre, tpost)
            swapped += (int(pre), int(post)) == (tpost, tpre)
    out = {"precision": det.precision, "recall": det.recall, "f1": det.f1, "n_pred": det.n_pred,
           "n_true": det.n_true, "partner_accuracy": correct / matched if matched else None,
           "partners_matched": matched, "partners_correct": correct, "partners_swapped": swapped}
    out.update(connectivity_scores(pred_table, gt_t, seg_map))
    out["segment_ids_mapped"] = seg_map is not None
    out["resolution_nm"] = [float(v) for v in resolution]
    return out


def synapse_scores_dirs(pred_dir, gt, *, gt_segmentation: str | None = None, frame: str = "image") -> dict:
    """:func:`synapse_scores` of an ``emkit synapses`` output folder against the truth.

    Parameters
    ----------
    pred_dir : synapse output folder (``synapses.parquet``, ``clefts`` layer, ``synapses.json``).
    gt : a phantom dataset folder (``gt/synapses.parquet``, ``gt/clefts``; its
        ``gt/image_frame/segmentation`` is the true segmentation), or another synapse output folder.
    gt_segmentation : the true segmentation layer (default: the dataset's
        ``gt/image_frame/segmentation``). When the predicted synapses were found on another
        segmentation (their provenance names it), partner ids are mapped to true ones by overlap.
    frame : ``"image"`` (default) or ``"clean"``: for synapses found on an ``emkit align``
        output, the phantom's truth in its clean frame (:func:`emkit.synapse.truth.load_truth`).
    """
    import json

    from cloudfiles import CloudFiles

    from emkit.io import Layer, check_same_grid, join_url, layer_exists
    from emkit.io.layer import normalize_url
    from emkit.synapse.table import PROVENANCE_FILE, read_synapse_table
    from emkit.synapse.truth import load_truth

    pred_dir = join_url(pred_dir)
    table = read_synapse_table(pred_dir)
    cl_url = join_url(pred_dir, "clefts")
    if not layer_exists(cl_url):
        raise InputError(f"{pred_dir} has no clefts layer (an `emkit synapses` output folder holds one)")
    clefts_layer = Layer.open(cl_url)
    raw = CloudFiles(pred_dir).get(PROVENANCE_FILE)
    prov = json.loads(raw) if raw else {}
    gt = join_url(gt)
    if CloudFiles(gt).exists("gt/synapses.parquet"):
        truth = load_truth(gt, frame=frame)
        gt_table, gt_clefts, gt_seg_url = truth.table, truth.clefts, gt_segmentation or truth.segmentation_url
    elif CloudFiles(gt).exists("synapses.parquet"):
        gt_table = read_synapse_table(gt)
        gl = Layer.open(join_url(gt, "clefts"))
        check_same_grid(clefts_layer, gl, what="true clefts")
        gt_clefts = gl.read()
        gt_seg_url = gt_segmentation
    else:
        raise InputError(f"{gt} holds no synapse truth: give a phantom dataset folder (gt/synapses.parquet, "
                         "gt/clefts) or an `emkit synapses` output folder")
    pred_clefts = clefts_layer.read()
    if pred_clefts.shape != gt_clefts.shape:
        raise InputError(f"the predicted clefts ({cl_url}) have shape {pred_clefts.shape}, the truth "
                         f"{gt_clefts.shape}")
    seg_url = (prov.get("layers") or {}).get("segmentation")
    seg = gseg = None
    if seg_url and gt_seg_url and normalize_url(seg_url).rstrip("/") != normalize_url(gt_seg_url).rstrip("/"):
        sl, gl = Layer.open(seg_url), Layer.open(gt_seg_url)
        check_same_grid(sl, gl, what="true segmentation")
        seg, gseg = sl.read(), gl.read()
    res = synapse_scores(table, pred_clefts, gt_table, gt_clefts, clefts_layer.resolution, segmentation=seg,
                         gt_segmentation=gseg)
    return {"pred": pred_dir, "gt": gt, "segmentation": seg_url, "gt_segmentation": gt_seg_url,
            "models": {k: v.get("model") for k, v in (prov.get("models") or {}).items()}, **res}
