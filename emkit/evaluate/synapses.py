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
