"""``emkit evaluate SEG GT``: JSON scores equal to emkit.evaluate on the arrays; clear refusals."""
import json

import numpy as np
import pytest

from emkit.cli.main import main
from emkit.evaluate import evaluate
from emkit.io import Layer

SHAPE = (6, 20, 24)


def _strict_json(text):
    def bad(name):
        raise AssertionError(f"not valid JSON: {name}")
    return json.loads(text, parse_constant=bad)


def _layer(path, arr, kind="segmentation", offset=(0, 0, 0), resolution=(40, 8, 8)):
    layer = Layer.create(path, kind, arr.shape, voxel_offset=offset, resolution=resolution, chunk_size=(3, 10, 12))
    layer.write(arr)
    return layer


@pytest.fixture
def pair(tmp_path, rng):
    gt = rng.integers(0, 6, SHAPE).astype(np.uint64)
    seg = gt.copy()
    seg[:, :, 12:] += 10          # every object split in two halves
    seg[seg == 3] = 4             # two objects merged
    seg[0] = 99                   # one section lumped together
    _layer(tmp_path / "seg", seg, offset=(5, 0, 100))
    _layer(tmp_path / "gt", gt, offset=(5, 0, 100))
    return tmp_path, seg, gt


def _run(capsys, *argv):
    rc = main(["evaluate", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_scores_match_library(pair, capsys):
    d, seg, gt = pair
    rc, out, _ = _run(capsys, d / "seg", d / "gt", "--worst", "3")
    assert rc == 0
    got = _strict_json(out)
    want = evaluate(seg, gt, k=3)
    for key in ("voi_split", "voi_merge", "voi", "arand", "arand_precision", "arand_recall"):
        assert got[key] == pytest.approx(want[key])
    assert got["voi_split"] > 0.5 and got["voi_merge"] > 0.1
    assert got["worst_splits"] == want["worst_splits"] and len(got["worst_splits"]) == 3
    assert got["worst_merges"] == want["worst_merges"] and got["worst_merges"][0]["id"] == 99
    assert got["n_voxels"] == int((gt != 0).sum())
    assert got["bbox"] == "5:11,0:20,100:124"


def test_bbox_in_layer_coordinates(pair, capsys):
    d, seg, gt = pair
    rc, out, _ = _run(capsys, d / "seg", d / "gt", "--bbox", "6:9,2:18,110:120", "--worst", "0")
    assert rc == 0
    got = _strict_json(out)
    want = evaluate(seg[1:4, 2:18, 10:20], gt[1:4, 2:18, 10:20], k=0)
    assert got["voi_split"] == pytest.approx(want["voi_split"])
    assert got["arand"] == pytest.approx(want["arand"])
    assert got["worst_splits"] == [] and got["worst_merges"] == []


def test_nan_becomes_null(tmp_path, capsys):
    # ground truth all unlabelled: nothing is counted, the adapted Rand error is 0/0
    _layer(tmp_path / "seg", np.ones(SHAPE, np.uint64))
    _layer(tmp_path / "gt", np.zeros(SHAPE, np.uint64))
    rc, out, _ = _run(capsys, tmp_path / "seg", tmp_path / "gt")
    assert rc == 0
    got = _strict_json(out)
    assert got["arand"] is None and got["n_voxels"] == 0


@pytest.mark.parametrize("what, kw, words", [
    ("size", {"shape": (6, 20, 25)}, ["size", "(6, 20, 24)", "(6, 20, 25)"]),
    ("offset", {"offset": (0, 0, 1)}, ["voxel_offset", "(0, 0, 1)", "(0, 0, 0)"]),
    ("resolution", {"resolution": (40, 4, 4)}, ["resolution", "(40, 4, 4) nm", "(40, 8, 8) nm"]),
])
def test_refuses_different_grids(tmp_path, capsys, what, kw, words):
    _layer(tmp_path / "seg", np.ones(SHAPE, np.uint64))
    shape = kw.pop("shape", SHAPE)
    _layer(tmp_path / "gt", np.ones(shape, np.uint64), **kw)
    rc, out, err = _run(capsys, tmp_path / "seg", tmp_path / "gt")
    assert rc == 2 and out == ""
    line = err.strip()
    assert line.startswith("emkit evaluate: error:") and "\n" not in line
    for w in words:
        assert w in line
    assert str(tmp_path / "gt") in line and str(tmp_path / "seg") in line


def test_refuses_bad_input(tmp_path, capsys):
    _layer(tmp_path / "seg", np.ones(SHAPE, np.uint64))
    _layer(tmp_path / "img", np.ones(SHAPE, np.uint8), kind="image")
    rc, _, err = _run(capsys, tmp_path / "seg", tmp_path / "img")
    assert rc == 2 and "image layer; expected a segmentation layer" in err
    _layer(tmp_path / "gt", np.ones(SHAPE, np.uint64))
    rc, _, err = _run(capsys, tmp_path / "seg", tmp_path / "gt", "--bbox", "0:7,0:20,0:24")
    assert rc == 2 and "outside" in err and "0:7,0:20,0:24" in err
    rc, _, err = _run(capsys, tmp_path / "seg", tmp_path / "gt", "--bbox", "0:6,0:20")
    assert rc == 2 and "z0:z1,y0:y1,x0:x1" in err
    rc, _, err = _run(capsys, tmp_path / "seg", tmp_path / "missing")
    assert rc == 2 and "missing" in err
