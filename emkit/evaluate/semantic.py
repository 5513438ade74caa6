"""Scores of semantic labels: per-class intersection over union (IoU) against ground truth.

Classes follow design.md: 0 background, 1 soma+nucleus, 2 axon, 3 dendrite, 4 glia, 5 blood
vessel. Voxels whose ground-truth class is in ``ignore_gt`` (default 0, unlabelled) are left out,
as in the training loop's validation (:mod:`emkit.train.loop`); the mean IoU is taken over the
classes present in the ground truth or the prediction among the counted voxels.
"""
from __future__ import annotations

import numpy as np

from emkit.errors import InputError

__all__ = ["SEMANTIC_CLASS_NAMES", "semantic_classes", "semantic_confusion", "iou_from_confusion", "semantic_iou"]

SEMANTIC_CLASS_NAMES = {1: "soma", 2: "axon", 3: "dendrite", 4: "glia", 5: "vessel"}
"""Class id → name of the five semantic classes (0 is background)."""


def semantic_classes(probabilities: np.ndarray) -> np.ndarray:
    """Class labels 1..5 from the semantic net's five sigmoid outputs (the most probable class).

    Parameters
    ----------
    probabilities : float array ``(5, z, y, x)``, channels in class order soma, axon, dendrite,
        glia, vessel (as :func:`emkit.inference.predict` returns the ``semantic`` head).

    Returns
    -------
    uint8 ``(z, y, x)`` classes 1..5 (every voxel gets a class; background is not predicted).
    """
    p = np.asarray(probabilities)
    if p.ndim != 4 or p.shape[0] != len(SEMANTIC_CLASS_NAMES):
        raise InputError(f"probabilities must be (5, z, y, x) (one channel per semantic class), got shape {p.shape}")
    return (p.argmax(axis=0) + 1).astype(np.uint8)


def semantic_confusion(pred, gt, ignore_gt=(0,), mask=None) -> np.ndarray:
    """6 × 6 table of voxel counts ``conf[p, g]``: predicted class ``p`` where the truth is ``g``.

    Tables of disjoint blocks add up, so a volume is scored chunk by chunk
    (:func:`semantic_iou_layers`) with the same result as in one piece.

    Parameters
    ----------
    pred, gt : integer arrays ``(z, y, x)`` of the same shape, classes 0..5.
    ignore_gt : ground-truth classes whose voxels are not counted (default: 0, unlabelled).
    mask : optional ``(z, y, x)``; only voxels where it is nonzero are counted.

    Returns
    -------
    int64 ``(6, 6)`` array, rows predicted class, columns true class.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise InputError(f"pred and gt differ in shape: {pred.shape} vs {gt.shape}")
    for name, a in (("pred", pred), ("gt", gt)):
        if not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"{name} must hold integer classes 0..5, got dtype {a.dtype}")
        if a.size and (int(a.min()) < 0 or int(a.max()) > 5):
            raise InputError(f"{name} must hold classes 0..5, found values {int(a.min())}..{int(a.max())}")
    ok = ~np.isin(gt, np.asarray(list(ignore_gt), dtype=np.int64))
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != gt.shape:
            raise InputError(f"mask shape {m.shape} differs from gt shape {gt.shape}")
        ok &= m != 0
    p = pred[ok].astype(np.int64)
    g = gt[ok].astype(np.int64)
    return np.bincount(p * 6 + g, minlength=36).reshape(6, 6)


def iou_from_confusion(conf) -> dict:
    """Per-class IoU and their mean from a :func:`semantic_confusion` table (see :func:`semantic_iou`)."""
    conf = np.asarray(conf, dtype=np.int64)
    if conf.shape != (6, 6):
        raise InputError(f"a semantic confusion table is 6 × 6 (classes 0..5), got shape {conf.shape}")
    per_class, ious = {}, []
    for c, name in SEMANTIC_CLASS_NAMES.items():
        inter = int(conf[c, c])
        pv, gv = int(conf[c].sum()), int(conf[:, c].sum())
        union = pv + gv - inter
        iou = inter / union if union else None
        if iou is not None:
            ious.append(iou)
        per_class[name] = {"class": c, "iou": iou, "intersection": inter, "union": union, "gt_voxels": gv,
                           "pred_voxels": pv}
    return {"per_class": per_class, "mean_iou": float(np.mean(ious)) if ious else None, "n_voxels": int(conf.sum())}


def semantic_iou(pred, gt, ignore_gt=(0,), mask=None) -> dict:
    """Per-class IoU of predicted semantic classes against ground truth (JSON-able dict).

    Parameters
    ----------
    pred, gt : integer arrays ``(z, y, x)`` of the same shape, classes 0..5.
    ignore_gt : ground-truth classes whose voxels are not counted (default: 0, unlabelled).
    mask : optional ``(z, y, x)``; only voxels where it is nonzero are counted.

    Returns
    -------
    dict with ``per_class``: ``{name: {"class", "iou", "intersection", "union", "gt_voxels",
    "pred_voxels"}}`` for the five classes (``iou`` is None for a class absent from both),
    ``mean_iou`` (mean over classes present in either; None if none), ``n_voxels`` (counted).
    """
    return iou_from_confusion(semantic_confusion(pred, gt, ignore_gt=ignore_gt, mask=mask))
