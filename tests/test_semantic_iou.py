"""emkit.evaluate.semantic_iou / semantic_classes: per-class IoU of semantic labels."""
import json

import numpy as np
import pytest

from emkit.errors import InputError
from emkit.evaluate import SEMANTIC_CLASS_NAMES, semantic_classes, semantic_iou


def test_iou_by_hand():
    gt = np.array([[[1, 1, 1, 2, 2, 0, 4, 4]]])
    pred = np.array([[[1, 1, 2, 2, 2, 3, 4, 0]]])
    r = semantic_iou(pred, gt)
    pc = r["per_class"]
    assert list(pc) == list(SEMANTIC_CLASS_NAMES.values())
    # soma: gt {0,1,2}, pred {0,1} -> 2/3; axon: gt {3,4}, pred {2,3,4} -> 2/3; glia: gt {6,7}, pred {6} -> 1/2
    assert pc["soma"]["iou"] == pytest.approx(2 / 3) and pc["soma"]["gt_voxels"] == 3
    assert pc["axon"]["iou"] == pytest.approx(2 / 3) and pc["axon"]["pred_voxels"] == 3
    assert pc["glia"]["iou"] == pytest.approx(1 / 2)
    # the gt-background voxel (index 5) is not counted, so the dendrite prediction there is not either
    assert pc["dendrite"]["iou"] is None and pc["vessel"]["iou"] is None
    assert r["n_voxels"] == 7
    assert r["mean_iou"] == pytest.approx(np.mean([2 / 3, 2 / 3, 1 / 2]))
    json.dumps(r)


def test_perfect_and_mask(rng):
    gt = rng.integers(1, 6, (4, 10, 10))
    assert semantic_iou(gt, gt)["mean_iou"] == 1.0
    pred = gt.copy()
    pred[0] = np.where(pred[0] == 5, 1, 5)          # section 0 wrong everywhere
    assert semantic_iou(pred, gt)["mean_iou"] < 1.0
    mask = np.ones(gt.shape, np.uint8)
    mask[0] = 0
    r = semantic_iou(pred, gt, mask=mask)
    assert r["mean_iou"] == 1.0 and r["n_voxels"] == 300
    # ignore_gt=() counts background too
    gt0 = gt.copy()
    gt0[1] = 0
    assert semantic_iou(gt, gt0, ignore_gt=())["per_class"]["soma"]["iou"] < 1.0
    assert semantic_iou(gt, gt0)["mean_iou"] == 1.0


def test_semantic_classes_and_training_validation_agree(rng):
    from emkit.train.loop import _mean_iou

    prob = rng.random((5, 3, 8, 8)).astype(np.float32)
    cls = semantic_classes(prob)
    assert cls.dtype == np.uint8 and cls.min() >= 1 and cls.max() <= 5
    np.testing.assert_array_equal(cls, prob.argmax(0) + 1)
    gt = rng.integers(0, 6, (3, 8, 8))
    mask = (rng.random((3, 8, 8)) > 0.2).astype(np.uint8)
    assert semantic_iou(cls, gt, mask=mask)["mean_iou"] == pytest.approx(_mean_iou(prob, gt, mask))


def test_bad_input():
    a = np.ones((2, 3, 3), np.uint8)
    with pytest.raises(InputError, match="shape"):
        semantic_iou(a, np.ones((2, 3, 4), np.uint8))
    with pytest.raises(InputError, match="0..5"):
        semantic_iou(a * 7, a)
    with pytest.raises(InputError, match="integer"):
        semantic_iou(a.astype(np.float32), a)
    with pytest.raises(InputError, match=r"\(5, z, y, x\)"):
        semantic_classes(np.zeros((3, 2, 2, 2)))
