"""Scores of every cut of a merge history, from one supervoxel contingency table.

A cut of a :class:`~emkit.segment.MergeHistory` at threshold ``t`` only renames supervoxels
(every supervoxel becomes the object it belongs to at ``t``). So the contingency table of the
cut against ground truth is the supervoxel table with its rows renamed and equal (object, gt)
pairs added up — no pass over the voxels. :func:`cut_contingency` does that (milliseconds for
thousands of supervoxels, whatever the volume size), and :func:`sweep` scores a list of
thresholds with it. The scores are exactly those of :func:`emkit.evaluate.evaluate` on
``history.segmentation(supervoxels, t)``.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from emkit.errors import InputError
from emkit.evaluate.metrics import Contingency, contingency, evaluate

__all__ = ["cut_contingency", "sweep", "best_threshold"]

#: the keys of :func:`sweep`'s rows, in order
SWEEP_KEYS = ("threshold", "voi_split", "voi_merge", "voi", "arand", "arand_precision", "arand_recall", "n_seg")


def cut_contingency(table: Contingency, history, threshold: float) -> Contingency:
    """The contingency table of a history's cut, from the supervoxels' table.

    Parameters
    ----------
    table : Contingency
        ``contingency(supervoxels, gt)`` (rows: supervoxel ids).
    history : MergeHistory
        The agglomeration of those supervoxels (``history.ids`` sorted ascending).
    threshold : float
        Cut: merges with mean affinity >= threshold are applied.

    Returns
    -------
    Contingency
        Rows are the cut's object ids (the smallest supervoxel id of each object, as
        ``history.segmentation`` labels them); supervoxel ids that are not nodes of the history
        (such as background 0) keep their id.
    """
    if not isinstance(table, Contingency):
        raise InputError(f"table must be a Contingency, got {type(table).__name__}")
    ids, labels = history.labels_at(threshold)
    sids = table.seg_ids
    if ids.size:
        pos = np.minimum(np.searchsorted(ids, sids), ids.size - 1)
        found = ids[pos] == sids
        new = np.where(found, labels[pos], sids)
    else:
        new = sids
    obj_ids, obj_of_row = np.unique(new, return_inverse=True)
    ng = max(int(table.gt_ids.size), 1)
    key = obj_of_row[table.seg].astype(np.int64) * ng + table.gt
    ukey, inv = np.unique(key, return_inverse=True)
    counts = np.bincount(inv, weights=table.counts, minlength=ukey.size).astype(np.int64)
    return Contingency(seg_ids=obj_ids.astype(np.uint64), gt_ids=table.gt_ids, seg=ukey // ng, gt=ukey % ng,
                       counts=counts)


def sweep(history, supervoxels, gt, thresholds: Iterable[float], *, ignore_gt=(0,), k: int = 0) -> list[dict]:
    """Score the cuts of a merge history at several thresholds against ground truth.

    Parameters
    ----------
    history : MergeHistory
        From :func:`emkit.segment.agglomerate` on the region graph of ``supervoxels``.
    supervoxels : (z, y, x) integer array, or a :class:`Contingency` of it against ``gt``
        (then ``gt`` is ignored; build it once with ``contingency(supervoxels, gt)`` to sweep
        again cheaply).
    gt : (z, y, x) integer array
        Ground truth, same shape.
    thresholds : floats
        Cuts to score (any order; rows come back in the order given).
    ignore_gt : gt labels whose voxels are not counted (default 0, unlabelled).
    k : with ``k > 0`` each row also carries ``worst_splits`` and ``worst_merges`` (k of each).

    Returns
    -------
    list of dict
        One row per threshold: ``threshold``, ``voi_split``, ``voi_merge``, ``voi`` (bits),
        ``arand`` (adapted Rand error), ``arand_precision``, ``arand_recall``, ``n_seg`` (objects
        among the counted voxels) — the values :func:`emkit.evaluate.evaluate` gives on the cut.
    """
    table = supervoxels if isinstance(supervoxels, Contingency) else contingency(supervoxels, gt, ignore_gt)
    rows = []
    for t in thresholds:
        t = float(t)
        res = evaluate(cut_contingency(table, history, t), None, k=k)
        row = {"threshold": t, **{key: res[key] for key in SWEEP_KEYS[1:]}}
        if k > 0:
            row["worst_splits"] = res["worst_splits"]
            row["worst_merges"] = res["worst_merges"]
        rows.append(row)
    return rows


def best_threshold(rows: list[dict], key: str = "arand") -> dict:
    """The row of :func:`sweep` with the smallest ``key`` (``"arand"`` or ``"voi"``; NaN last)."""
    if not rows:
        raise InputError("no rows to choose from (empty sweep)")
    if key not in rows[0]:
        raise InputError(f"key {key!r} is not a sweep column; expected one of {sorted(rows[0])}")
    vals = np.array([r[key] for r in rows], dtype=float)
    vals = np.where(np.isnan(vals), np.inf, vals)
    return rows[int(np.argmin(vals))]
