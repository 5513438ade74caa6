"""Segmentation scores from one contingency table: VOI, adapted Rand error, worst objects.

Definitions are those of scikit-image (tested against it):

* ``voi(seg, gt)`` returns ``(split, merge)`` = (H(seg | gt), H(gt | seg)) in bits, equal to
  ``skimage.metrics.variation_of_information(gt, seg, ignore_labels=ignore_gt)``.
* ``adapted_rand_error(seg, gt)`` returns ``(error, precision, recall)`` equal to
  ``skimage.metrics.adapted_rand_error(gt, seg, ignore_labels=ignore_gt)`` (note: emkit puts the
  segmentation first, scikit-image the ground truth).

Voxels whose ground-truth label is in ``ignore_gt`` (default: 0, unlabelled) are left out of every
score; segmentation label 0 is an ordinary label (an unassigned voxel counts as one big object).

The table is built without sorting the voxels: both volumes are renumbered densely
(``fastremap.renumber``) and the pairs counted in a numba hash table, so 10^8 voxels take a few
seconds on one core.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from emkit.errors import InputError

__all__ = ["Contingency", "contingency", "voi", "adapted_rand_error", "worst_splits", "worst_merges", "evaluate"]


@dataclass
class Contingency:
    """Sparse contingency table of a segmentation against ground truth (ignored voxels removed).

    Attributes
    ----------
    seg_ids, gt_ids : (S,), (G,) uint64
        The labels present among the counted voxels.
    seg, gt : (K,) int64
        Row positions in ``seg_ids`` and ``gt_ids`` of each non-zero entry.
    counts : (K,) int64
        Voxels carrying that (seg, gt) pair.
    """

    seg_ids: np.ndarray
    gt_ids: np.ndarray
    seg: np.ndarray
    gt: np.ndarray
    counts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def seg_sizes(self) -> np.ndarray:
        return np.bincount(self.seg, weights=self.counts, minlength=self.seg_ids.size).astype(np.int64)

    @property
    def gt_sizes(self) -> np.ndarray:
        return np.bincount(self.gt, weights=self.counts, minlength=self.gt_ids.size).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _count_pairs(a, b, nb, cap):
    """Count distinct values of a * nb + b with an open-addressing hash; returns keys, counts."""
    mask = cap - 1
    keys = np.full(cap, -1, np.int64)
    cnts = np.zeros(cap, np.int64)
    used = 0
    for i in range(a.size):
        k = np.int64(a[i]) * nb + np.int64(b[i])
        h = ((k * np.int64(-7046029254386353131)) ^ (k >> 31)) & mask
        while True:
            kk = keys[h]
            if kk == k:
                cnts[h] += 1
                break
            if kk == -1:
                keys[h] = k
                cnts[h] = 1
                used += 1
                break
            h = (h + 1) & mask
        if used * 2 > cap:
            # grow: rehash into a table twice as large
            cap2 = cap * 2
            mask = cap2 - 1
            k2 = np.full(cap2, -1, np.int64)
            c2 = np.zeros(cap2, np.int64)
            for j in range(cap):
                if keys[j] != -1:
                    kj = keys[j]
                    h = ((kj * np.int64(-7046029254386353131)) ^ (kj >> 31)) & mask
                    while k2[h] != -1:
                        h = (h + 1) & mask
                    k2[h] = kj
                    c2[h] = cnts[j]
            keys = k2
            cnts = c2
            cap = cap2
    sel = keys != -1
    return keys[sel], cnts[sel]


def _renumber(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense labels 0..k-1 of a flat integer array and the original id of each."""
    import fastremap

    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.signedinteger):
        if x.size and x.min() < 0:
            raise InputError("labels must be non-negative integers")
        x = x.astype(np.uint64)
    dense, mapping = fastremap.renumber(x, start=0, preserve_zero=False, in_place=False)
    ids = np.zeros(len(mapping), np.uint64)
    ids[np.fromiter(mapping.values(), np.int64, len(mapping))] = np.fromiter(mapping.keys(), np.uint64, len(mapping))
    return dense, ids


def _check_pair(seg, gt) -> tuple[np.ndarray, np.ndarray]:
    seg = np.asarray(seg)
    gt = np.asarray(gt)
    if seg.shape != gt.shape:
        raise InputError(f"segmentation shape {seg.shape} differs from ground truth shape {gt.shape}")
    for name, a in (("segmentation", seg), ("ground truth", gt)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
            raise InputError(f"{name} must be an integer label array, got dtype {a.dtype}")
    return seg.reshape(-1), gt.reshape(-1)


def contingency(seg, gt, ignore_gt=(0,)) -> Contingency:
    """Contingency table of ``seg`` against ``gt`` (same shape), ignoring gt labels ``ignore_gt``."""
    if isinstance(seg, Contingency):
        return seg
    s, g = _check_pair(seg, gt)
    ds, sids = _renumber(s)
    dg, gids = _renumber(g)
    ng = max(gids.size, 1)
    cap = 1 << 12
    keys, counts = _count_pairs(ds, dg, ng, cap)
    si = keys // ng
    gi = keys % ng
    order = np.lexsort((gi, si))
    si, gi, counts = si[order], gi[order], counts[order]
    ignore = np.asarray(list(ignore_gt or ()), dtype=np.uint64)
    if ignore.size:
        keep = ~np.isin(gids[gi], ignore)
        si, gi, counts = si[keep], gi[keep], counts[keep]
    # drop labels that no longer occur, renumber rows
    su, si = np.unique(si, return_inverse=True)
    gu, gi = np.unique(gi, return_inverse=True)
    return Contingency(seg_ids=sids[su], gt_ids=gids[gu], seg=si.astype(np.int64), gt=gi.astype(np.int64),
                       counts=counts.astype(np.int64))


def _entropy_terms(t: Contingency):
    """Per-entry −p_ij log2(n_ij / n_gt_j) (split) and −p_ij log2(n_ij / n_seg_i) (merge)."""
    n = t.n
    if n == 0:
        z = np.zeros(0)
        return z, z
    c = t.counts.astype(np.float64)
    p = c / n
    split = -p * np.log2(c / t.gt_sizes[t.gt])
    merge = -p * np.log2(c / t.seg_sizes[t.seg])
    return split, merge


def voi(seg, gt, ignore_gt=(0,)) -> tuple[float, float]:
    """Variation of information ``(split, merge)`` in bits: (H(seg | gt), H(gt | seg)).

    Parameters
    ----------
    seg, gt : integer arrays of one shape (any axis order, usually (z, y, x)), or ``seg`` a
        :class:`Contingency` (then ``gt`` is ignored).
    ignore_gt : labels of ``gt`` whose voxels are not counted.
    """
    t = contingency(seg, gt, ignore_gt)
    split, merge = _entropy_terms(t)
    return float(split.sum()), float(merge.sum())


def adapted_rand_error(seg, gt, ignore_gt=(0,), alpha: float = 0.5) -> tuple[float, float, float]:
    """Adapted Rand error as in SNEMI3D / scikit-image: ``(error, precision, recall)``.

    ``precision`` and ``recall`` follow scikit-image's naming exactly (precision uses the
    ground-truth pair count, recall the segmentation's). NaN when a denominator is 0.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, got {alpha!r}")
    t = contingency(seg, gt, ignore_gt)
    c = t.counts.astype(np.float64)
    n = c.sum()
    sum_p2 = c @ c - n
    a = t.gt_sizes.astype(np.float64)
    b = t.seg_sizes.astype(np.float64)
    sum_a2 = a @ a - n
    sum_b2 = b @ b - n
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = sum_p2 / sum_a2
        recall = sum_p2 / sum_b2
        f = sum_p2 / (alpha * sum_a2 + (1 - alpha) * sum_b2)
    return float(1.0 - f), float(precision), float(recall)


def _worst(t: Contingency, k: int, which: str) -> list[dict]:
    split, merge = _entropy_terms(t)
    if which == "split":
        rows, terms, ids, sizes = t.gt, split, t.gt_ids, t.gt_sizes
    else:
        rows, terms, ids, sizes = t.seg, merge, t.seg_ids, t.seg_sizes
    per = np.bincount(rows, weights=terms, minlength=ids.size)
    pieces = np.bincount(rows, minlength=ids.size)
    order = np.lexsort((ids, -per))[: max(int(k), 0)]
    return [{"id": int(ids[i]), "voi": float(per[i]), "size": int(sizes[i]), "pieces": int(pieces[i])}
            for i in order if per[i] > 0]


def worst_splits(seg, gt, k: int = 10, ignore_gt=(0,)) -> list[dict]:
    """Ground-truth objects split the most: ``[{"id", "voi", "size", "pieces"}, ...]``.

    ``id`` is the gt id, ``voi`` its contribution (bits) to the split VOI, ``size`` its voxels,
    ``pieces`` the number of segmentation objects it overlaps. Worst first, at most ``k``.
    """
    return _worst(contingency(seg, gt, ignore_gt), k, "split")


def worst_merges(seg, gt, k: int = 10, ignore_gt=(0,)) -> list[dict]:
    """Segmentation objects that merge the most: like :func:`worst_splits`, ``id`` a seg id."""
    return _worst(contingency(seg, gt, ignore_gt), k, "merge")


def evaluate(seg, gt, k: int = 10, ignore_gt=(0,)) -> dict:
    """All scores from one contingency table, as a JSON-able dict.

    Keys: ``voi_split``, ``voi_merge``, ``voi`` (their sum), ``arand`` (adapted Rand error),
    ``arand_precision``, ``arand_recall``, ``n_voxels`` (counted), ``n_seg``, ``n_gt``,
    ``worst_splits``, ``worst_merges`` (see :func:`worst_splits`).
    """
    t = contingency(seg, gt, ignore_gt)
    vs, vm = voi(t, None)
    are, prec, rec = adapted_rand_error(t, None)
    return {
        "voi_split": vs, "voi_merge": vm, "voi": vs + vm,
        "arand": are, "arand_precision": prec, "arand_recall": rec,
        "n_voxels": t.n, "n_seg": int(t.seg_ids.size), "n_gt": int(t.gt_ids.size),
        "worst_splits": _worst(t, k, "split"), "worst_merges": _worst(t, k, "merge"),
    }
