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


# ------------------------------------------------------------------ over layers, chunk by chunk ----
def _layers(tmp_path, rng, shape=(7, 30, 26), offset=(3, 0, 11)):
    from emkit.io import Layer

    gt = rng.integers(0, 6, shape)
    prob = rng.random((5, *shape)).astype(np.float32)
    good = rng.random(shape) < 0.7                           # 70 % of voxels predicted right
    for c in range(5):
        prob[c][good & (gt == c + 1)] += 1.0
    mask = (rng.random(shape) < 0.8).astype(np.uint8)
    kw = dict(voxel_offset=offset, chunk_size=(4, 16, 16))
    Layer.create(str(tmp_path / "gt"), "segmentation", shape, **kw).write(gt.astype(np.uint64))
    Layer.create(str(tmp_path / "prob"), "probability", shape, num_channels=5, **kw).write(prob)
    Layer.create(str(tmp_path / "cls"), "segmentation", shape, **kw).write(semantic_classes(prob).astype(np.uint64))
    Layer.create(str(tmp_path / "mask"), "mask", shape, **kw).write(mask)
    return gt, prob, mask


@pytest.mark.parametrize("chunk", [(64, 512, 512), (3, 7, 5), (1, 30, 26)])
def test_layers_equal_the_array_form(tmp_path, rng, chunk):
    from emkit.evaluate.semantic_layers import semantic_iou_layers

    gt, prob, mask = _layers(tmp_path, rng)
    want = semantic_iou(semantic_classes(prob), gt, mask=mask)
    assert 0.3 < want["mean_iou"] < 0.95
    for pred in ("prob", "cls"):
        got = semantic_iou_layers(tmp_path / pred, tmp_path / "gt", mask_url=tmp_path / "mask", chunk_size=chunk)
        assert got["prediction"] == ("probabilities" if pred == "prob" else "classes")
        assert got["per_class"] == want["per_class"] and got["mean_iou"] == want["mean_iou"]


def test_cli_semantic(tmp_path, rng, capsys):
    from emkit.cli.main import main
    from emkit.geometry import Bbox

    gt, prob, _ = _layers(tmp_path, rng)
    assert main(["evaluate", "--semantic", str(tmp_path / "prob"), str(tmp_path / "gt")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["mean_iou"] == pytest.approx(semantic_iou(semantic_classes(prob), gt)["mean_iou"])
    # a box in layer coordinates (voxel offset (3, 0, 11) included)
    assert main(["evaluate", "--semantic", str(tmp_path / "cls"), str(tmp_path / "gt"), "--bbox", "4:6,0:10,11:20"]) == 0
    r = json.loads(capsys.readouterr().out)
    sl = Bbox((1, 0, 0), (3, 10, 9)).slices()
    assert r["n_voxels"] == int((gt[sl] != 0).sum())
    assert r["mean_iou"] == pytest.approx(semantic_iou(semantic_classes(prob)[sl], gt[sl])["mean_iou"])
    # an affinities layer is no semantic prediction; --mask without --semantic is refused
    from emkit.io import Layer

    Layer.create(str(tmp_path / "aff"), "affinities", gt.shape, voxel_offset=(3, 0, 11)).write(prob[:3])
    assert main(["evaluate", "--semantic", str(tmp_path / "aff"), str(tmp_path / "gt")]) != 0
    assert "5 float channels" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "cls"), str(tmp_path / "gt"), "--mask", str(tmp_path / "mask")]) != 0
    assert "--semantic" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["gt", "mask"])
@pytest.mark.parametrize("kw, words", [
    ({"voxel_offset": (3, 0, 12)}, ["voxel_offset", "(3, 0, 12)", "(3, 0, 11)"]),
    ({"voxel_offset": (3, 0, 11), "resolution": (40, 4, 4)}, ["resolution", "(40, 4, 4) nm", "(40, 8, 8) nm"]),
])
def test_layers_on_another_grid_are_refused(tmp_path, rng, which, kw, words):
    """A ground truth or mask shifted by one voxel or at another resolution is refused, naming the value."""
    from emkit.evaluate.semantic_layers import semantic_iou_layers
    from emkit.io import Layer

    gt, _, mask = _layers(tmp_path, rng)
    arr = gt.astype(np.uint64) if which == "gt" else mask
    Layer.create(str(tmp_path / "moved"), "segmentation" if which == "gt" else "mask", gt.shape, **kw).write(arr)
    args = dict(gt_url=tmp_path / ("moved" if which == "gt" else "gt"),
                mask_url=tmp_path / ("moved" if which == "mask" else "mask"))
    with pytest.raises(InputError) as exc:
        semantic_iou_layers(tmp_path / "prob", **args)
    msg = str(exc.value)
    assert all(w in msg for w in words) and "moved" in msg
