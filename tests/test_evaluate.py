"""VOI and adapted Rand error against scikit-image; worst objects; the JSON summary."""
import json

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error as sk_arand
from skimage.metrics import variation_of_information as sk_voi

from emkit.errors import InputError
from emkit.evaluate import adapted_rand_error, contingency, evaluate, voi, worst_merges, worst_splits


def random_case(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(2, 6)), int(rng.integers(5, 20)), int(rng.integers(5, 20)))
    gt = rng.integers(0, int(rng.integers(2, 12)), size=shape)
    # a segmentation that partly follows gt, with splits and merges and some 0s
    seg = np.where(rng.random(shape) < 0.7, gt * 3 + rng.integers(0, 2, size=shape), rng.integers(0, 40, size=shape))
    seg = (seg // int(rng.integers(1, 4))).astype(np.uint64)
    if seed % 3 == 0:
        seg = seg * np.uint64(2**40 + 17)  # huge ids
    return seg, gt.astype(np.uint32)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ignore", [(0,), (), (0, 1)])
def test_matches_scikit_image(seed, ignore):
    seg, gt = random_case(seed)
    split, merge = voi(seg, gt, ignore_gt=ignore)
    # scikit-image builds a sparse table indexed by label: give it dense labels (same partition)
    seg_sk = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
    want = sk_voi(gt.astype(np.int64), seg_sk, ignore_labels=ignore)
    assert (split, merge) == pytest.approx(tuple(want), abs=1e-9)
    are, prec, rec = adapted_rand_error(seg, gt, ignore_gt=ignore)
    assert (are, prec, rec) == pytest.approx(sk_arand(gt.astype(np.int64), seg_sk, ignore_labels=ignore), abs=1e-9)


def test_perfect_and_relabelled_segmentation_scores_zero(rng):
    gt = rng.integers(0, 5, size=(3, 10, 10))
    seg = (gt * 7 + 100).astype(np.uint64)  # a relabelling (gt 0 becomes an ordinary object)
    r = evaluate(seg, gt)
    assert r["voi_split"] == pytest.approx(0) and r["voi_merge"] == pytest.approx(0) and r["arand"] == pytest.approx(0)
    assert r["worst_splits"] == [] and r["worst_merges"] == []


def test_worst_lists_name_the_culprits():
    gt = np.zeros((1, 10, 40), np.uint32)
    gt[..., :10] = 1
    gt[..., 10:20] = 2
    gt[..., 20:] = 3
    seg = gt.astype(np.uint64).copy()
    seg[..., 20:30] = 30  # gt 3 split in two equal halves
    seg[..., 30:] = 31
    seg[..., :20] = 12  # gt 1 and 2 merged
    n = gt.size
    splits = worst_splits(seg, gt, k=5)
    assert splits == [{"id": 3, "voi": pytest.approx(200 / n * 1.0), "size": 200, "pieces": 2}]
    merges = worst_merges(seg, gt, k=5)
    assert merges == [{"id": 12, "voi": pytest.approx(200 / n * 1.0), "size": 200, "pieces": 2}]
    r = evaluate(seg, gt, k=1)
    assert r["voi_split"] == pytest.approx(0.5) and r["voi_merge"] == pytest.approx(0.5)
    assert json.loads(json.dumps(r)) == r
    assert r["n_voxels"] == n and r["n_gt"] == 3 and r["n_seg"] == 3


def test_ignored_gt_voxels_are_not_counted():
    gt = np.array([[[0, 0, 1, 1]]])
    seg = np.array([[[5, 6, 7, 7]]])
    assert voi(seg, gt) == (0.0, 0.0)
    assert contingency(seg, gt).n == 2
    assert voi(seg, gt, ignore_gt=())[0] > 0


def test_bad_input():
    with pytest.raises(InputError, match="shape"):
        voi(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(InputError, match="integer"):
        evaluate(np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(InputError, match="alpha"):
        adapted_rand_error(np.zeros(3, np.uint8), np.zeros(3, np.uint8), alpha=2)
