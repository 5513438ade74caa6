"""notebooks/04_semantic_labels.ipynb runs top to bottom with small parameters and shows what it says:
semantic targets, a live training run with its loss curve, prediction (the shipped semantic net when
installed, else the tiny net), a per-class IoU table of the five classes and the figures and slice view.

The test phantom is smaller than the 375 voxels in y and x a soma and a vessel need, so some classes
may be absent; the table still lists all five."""
import math

import pytest

from helpers_notebooks import code_cells, errors, outputs_with, run_notebook, text
from helpers_require import require

require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")

ITERATIONS = 6
TEST_SIZE = (12, 128, 128)
OVERRIDE = (f"SIZE = (12, 160, 160)\nTEST_SIZE = {TEST_SIZE}\nSEED = 5\nITERATIONS = {ITERATIONS}\n"
            "WIDTHS = (4, 8)\nPATCH = (8, 48, 48)\nUSE_SHIPPED = True\nTHREADS = 1\nOUT_DIR = {tmp!r}\n")
PROBE = ("{'loss': result.log['train']['loss'], 'validation': result.log['validation'], "
         "'prob_shape': list(prob.shape), 'prob_range': [float(prob.min()), float(prob.max())], "
         "'pred_classes': sorted(int(c) for c in set(pred.ravel().tolist())), 'iou': iou, "
         "'shipped': bool(shipped), 'shipped_available': 'semantic' in available_models(), "
         "'output_1x1': bool(result.model.config.output_1x1), "
         "'run_files': sorted(p.name for p in (out_dir / 'run').iterdir()), "
         "'saved': __import__('numpy').savez_compressed(str(out_dir / 'probe_arrays.npz'), pred=pred, "
         "gt=gt)}")
CLASSES = ["soma", "axon", "dendrite", "glia", "vessel"]


def test_notebook_04_runs(tmp_path):
    nb, got = run_notebook("04_semantic_labels.ipynb", OVERRIDE.format(tmp=str(tmp_path / "data")), tmp_path, PROBE)
    assert not errors(nb)
    assert all(c.get("execution_count") for c in code_cells(nb))
    # the live training: one finite loss per iteration, validation with a mean IoU, checkpoints
    assert len(got["loss"]) == ITERATIONS and all(math.isfinite(v) and v > 0 for v in got["loss"])
    val = got["validation"][-1]
    assert val["iteration"] == ITERATIONS and math.isfinite(val["loss"]) and 0 <= val["mean_iou"] <= 1
    assert got["output_1x1"] and {"last.pt", "best.pt", "log.json"} <= set(got["run_files"])
    # prediction with the shipped net exactly when it is installed: 5 probabilities, classes 1..5
    assert got["shipped"] == got["shipped_available"]
    assert got["prob_shape"] == [5, *TEST_SIZE] and 0 <= got["prob_range"][0] <= got["prob_range"][1] <= 1
    assert got["pred_classes"] and set(got["pred_classes"]) <= {1, 2, 3, 4, 5}
    # the IoU table: five classes, IoUs in [0, 1] (None only for a class absent from both)
    per = got["iou"]["per_class"]
    assert list(per) == CLASSES
    # the table's IoUs are those of the predicted and true classes, computed here with numpy alone
    import numpy as np

    arrays = np.load(tmp_path / "data" / "probe_arrays.npz")
    pred, gt = arrays["pred"], arrays["gt"]
    counted = gt != 0
    want = []
    for c, name in enumerate(CLASSES, start=1):
        inter = int(((pred == c) & (gt == c) & counted).sum())
        union = int((((pred == c) | (gt == c)) & counted).sum())
        assert per[name]["union"] == union and per[name]["gt_voxels"] == int((gt == c).sum()), name
        assert per[name]["iou"] == (None if union == 0 else pytest.approx(inter / union, abs=1e-12)), name
        if union:
            want.append(inter / union)
    assert got["iou"]["mean_iou"] == pytest.approx(float(np.mean(want)), abs=1e-12)
    assert got["iou"]["n_voxels"] == int(counted.sum()) > 0
    print({k: v["iou"] for k, v in per.items()})
    if got["shipped"]:   # the shipped net tells axons from dendrites (IoU ~0.8 on a fresh 64x256x256 phantom)
        assert per["axon"]["iou"] > 0.5 and per["dendrite"]["iou"] > 0.5, per
    by_src = {c.source: text(c) for c in code_cells(nb)}
    table = next(t for s, t in by_src.items() if "semantic_iou(" in s)
    assert all(name in table for name in CLASSES) and "mean IoU" in table and "gt_voxels" in table
    # figures: targets, loss curve, predicted channels, prediction beside ground truth; the slice view
    figs = [c.source for c in outputs_with(nb, "image/png")]
    for call in ("semantic_channels(train_ph", "loss_curve", "semantic_channels(test_ph", "semantic_vs_truth"):
        assert any(call in s for s in figs), f"no figure from {call}"
    widgets = [c.source for c in outputs_with(nb, "application/vnd.jupyter.widget-view+json")]
    assert any("browser.widget()" in s for s in widgets)
