"""notebooks/03_boundary_detection.ipynb runs top to bottom with small parameters and shows what it says:
the augmentation explorer and gallery, a live training run with its loss curve, inference (the shipped
boundary net when installed, else the tiny net), affinities beside ground truth, segmentation and scores."""
import math

import pytest

from helpers_notebooks import code_cells, errors, outputs_with, run_notebook, text
from helpers_require import require

require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")

ITERATIONS = 6
TEST_SIZE = (16, 128, 128)
OVERRIDE = (f"SIZE = (16, 144, 144)\nTEST_SIZE = {TEST_SIZE}\nSEED = 3\nITERATIONS = {ITERATIONS}\n"
            "WIDTHS = (4, 8)\nPATCH = (8, 48, 48)\nUSE_SHIPPED = True\nTHREADS = 1\nOUT_DIR = {tmp!r}\n")
PROBE = ("{'loss': result.log['train']['loss'], 'validation': result.log['validation'], "
         "'aff_shape': list(aff.shape), 'aff_range': [float(aff.min()), float(aff.max())], "
         "'seg_shape': list(seg.shape), 'gt_shape': list(gt.shape), "
         "'scores': {k: scores[k] for k in ('voi_split', 'voi_merge', 'arand')}, 'shipped': bool(shipped), "
         "'shipped_available': 'boundary' in available_models(), "
         "'run_files': sorted(p.name for p in (out_dir / 'run').iterdir()), "
         "'datasets': sorted(p.name for p in out_dir.iterdir()), "
         "'saved': __import__('numpy').savez_compressed(str(out_dir / 'probe_arrays.npz'), seg=seg, gt=gt)}")


def test_notebook_03_runs(tmp_path):
    nb, got = run_notebook("03_boundary_detection.ipynb", OVERRIDE.format(tmp=str(tmp_path / "data")), tmp_path,
                           PROBE)
    assert not errors(nb)
    assert all(c.get("execution_count") for c in code_cells(nb))
    # the live training: one finite loss per iteration, validation with segmentation scores, checkpoints
    assert len(got["loss"]) == ITERATIONS and all(math.isfinite(v) and v > 0 for v in got["loss"])
    val = got["validation"][-1]
    assert val["iteration"] == ITERATIONS and math.isfinite(val["loss"]) and 0 <= val["arand"] <= 1
    assert {"last.pt", "best.pt", "log.json"} <= set(got["run_files"])
    assert {"train", "heldout", "run"} <= set(got["datasets"])
    # inference with the shipped net exactly when it is installed; affinities of the held-out volume
    assert got["shipped"] == got["shipped_available"]
    assert got["aff_shape"] == [3, *TEST_SIZE] and got["seg_shape"] == got["gt_shape"] == list(TEST_SIZE)
    assert 0 <= got["aff_range"][0] <= got["aff_range"][1] <= 1 and got["aff_range"][1] > got["aff_range"][0]
    # the scores the notebook shows are scikit-image's on the arrays it segmented (independent code)
    import numpy as np
    from skimage.metrics import adapted_rand_error, variation_of_information

    arrays = np.load(tmp_path / "data" / "probe_arrays.npz")
    seg, gt = arrays["seg"], arrays["gt"].astype(np.int64)
    seg_dense = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
    assert got["scores"]["arand"] == pytest.approx(adapted_rand_error(gt, seg_dense, ignore_labels=(0,))[0], abs=1e-9)
    split, merge = variation_of_information(gt, seg_dense, ignore_labels=(0,))
    assert (got["scores"]["voi_split"], got["scores"]["voi_merge"]) == pytest.approx((split, merge), abs=1e-9)
    if got["shipped"]:   # the shipped boundary net segments a held-out phantom well (ARAND 0.03 at 64x256x256)
        assert got["scores"]["arand"] < 0.25, got["scores"]
    # figures: augmentation gallery, loss curve, affinities beside ground truth
    figs = [c.source for c in outputs_with(nb, "image/png")]
    for call in ("augmentation_gallery", "loss_curve", "affinities_vs_truth"):
        assert any(call in s for s in figs), f"no figure from {call}"
    # widgets: the augmentation explorer and the slice browser
    widgets = [c.source for c in outputs_with(nb, "application/vnd.jupyter.widget-view+json")]
    assert any("explorer.widget()" in s for s in widgets) and any("browser.widget()" in s for s in widgets)
    # tables: the scores and the threshold sweep
    by_src = {c.source: text(c) for c in code_cells(nb)}
    assert "arand" in next(t for s, t in by_src.items() if "evaluate(seg, gt)" in s)
    sweep_table = next(t for s, t in by_src.items() if "sweep(" in s)
    assert all(t in sweep_table for t in ("0.1", "0.5", "0.9")) and "voi_split" in sweep_table
    assert next(t for s, t in by_src.items() if "describe('all'" in s).strip()   # what the augmenter applied
