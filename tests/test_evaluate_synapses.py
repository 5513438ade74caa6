"""Cleft precision / recall by overlap (emkit.evaluate.synapses)."""
from __future__ import annotations

import numpy as np
import pytest

from emkit.errors import InputError
from emkit.evaluate.synapses import cleft_precision_recall


def _vol():
    return np.zeros((4, 20, 20), np.int64)


def test_hand_made_case():
    gt, pred = _vol(), _vol()
    gt[1, 2:4, 2:4] = 1      # found by pred 10 (1 voxel overlap)
    gt[1, 10:12, 10:12] = 2  # found by pred 11 and 12 (split)
    gt[3, 15:17, 2:4] = 3    # missed (pred 13 is next to it, no overlap)
    pred[1, 3, 3] = 10
    pred[1, 10, 10:12] = 11
    pred[1, 11, 10:12] = 12
    pred[3, 17, 2:4] = 13
    pred[0, 0, 19] = 14      # false positive far away
    s = cleft_precision_recall(pred, gt)
    assert (s.n_pred, s.n_true) == (5, 3)
    assert s.precision == pytest.approx(3 / 5) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * 0.6 * (2 / 3) / (0.6 + 2 / 3))
    assert s.matches.tolist() == [[10, 1, 1], [11, 2, 2], [12, 2, 2]]
    assert s.false_positives.tolist() == [13, 14] and s.false_negatives.tolist() == [3]
    # min_overlap 2 drops the 1-voxel match
    s2 = cleft_precision_recall(pred, gt, min_overlap=2)
    assert s2.false_positives.tolist() == [10, 13, 14] and s2.false_negatives.tolist() == [1, 3]


def test_merge_spanning_two_and_centroid_merge():
    gt, pred = _vol(), _vol()
    gt[2, 5, 2:5] = 1
    gt[2, 5, 6:9] = 2
    pred[2, 5, 2:9] = 7               # one prediction over two true clefts: recalls both
    s = cleft_precision_recall(pred, gt)
    assert (s.precision, s.recall) == (1.0, 1.0) and s.matches[:, 1].tolist() == [1, 2]
    # two predicted fragments 40 nm apart (one section) merge within 100 nm but not within 30 nm
    pred2 = _vol()
    pred2[1, 5, 2:5] = 3
    pred2[2, 5, 2:5] = 4
    pred2[0, 18, 18] = 5              # far: stays alone (false positive)
    m = cleft_precision_recall(pred2, gt, merge_within_nm=100, resolution=(40, 8, 8))
    assert m.n_pred == 2 and m.false_positives.tolist() == [5] and m.matches.tolist() == [[3, 1, 3]]
    n = cleft_precision_recall(pred2, gt, merge_within_nm=30, resolution=(40, 8, 8))
    assert n.n_pred == 3 and n.false_positives.tolist() == [3, 5]


def test_empty_and_errors():
    e = _vol()
    s = cleft_precision_recall(e, e)
    assert (s.precision, s.recall, s.n_pred) == (1.0, 1.0, 0)
    gt = _vol()
    gt[0, 0, 0] = 1
    s = cleft_precision_recall(e, gt)
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    with pytest.raises(InputError, match="shape"):
        cleft_precision_recall(e, e[:2])
    with pytest.raises(InputError, match="min_overlap"):
        cleft_precision_recall(e, e, min_overlap=0)
    with pytest.raises(InputError, match="merge_within_nm"):
        cleft_precision_recall(e, e, merge_within_nm=-1)
    with pytest.raises(InputError, match="integer"):
        cleft_precision_recall(e.astype(float), e)
