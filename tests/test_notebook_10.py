"""notebooks/10_finetune_your_data.ipynb runs top to bottom with small parameters on the real FIB-SEM
crop in tests/data/gala_fib: import two TIFFs, split off a held-out part, score the shipped net,
fine-tune it (the ETA is printed), score again."""
import math

import numpy as np
import pytest

from helpers_notebooks import code_cells, errors, outputs_with, run_notebook, text
from helpers_require import require

require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")

ITERATIONS = 12
OVERRIDE = ("import emkit\nfrom pathlib import Path\n"
            "EXAMPLE = Path(emkit.__file__).resolve().parents[1] / 'tests' / 'data' / 'gala_fib'\n"
            "IMAGE_TIFF = EXAMPLE / 'gala_fib_tiny_crop_24x128x80_image.tif'\n"
            "LABELS_TIFF = EXAMPLE / 'gala_fib_tiny_crop_24x128x80_labels.tif'\n"
            "RESOLUTION = (10, 10, 10)\nHELDOUT_FRACTION = 0.375\nINIT = 'boundary'\n"
            f"ITERATIONS = {ITERATIONS}\nPATCH = (16, 32, 32)\nLR = 1e-3\nTHRESHOLDS = (0.3, 0.5, 0.7)\n"
            "THREADS = 1\nOUT_DIR = {tmp!r}\n")
PROBE = ("{'before': before.to_dict('records'), 'after': after.to_dict('records'), "
         "'loss': result.log['train']['loss'], 'eta': result.log.get('eta'), "
         "'background': result.log['background'], 'augment': result.log['augment'], "
         "'start_resolution': list(start.config.resolution), 'tuned_resolution': list(tuned.config.resolution), "
         "'changed': any(not __import__('torch').equal(a, b) for a, b in "
         "zip(start.state_dict().values(), tuned.state_dict().values())), "
         "'heldout_shape': list(image.shape), 'split': split, "
         "'saved': __import__('numpy').savez_compressed(str(out_dir / 'probe.npz'), seg=seg_after, gt=gt)}")


def test_notebook_10_runs(tmp_path):
    nb, got = run_notebook("10_finetune_your_data.ipynb", OVERRIDE.format(tmp=str(tmp_path / "data")), tmp_path,
                           PROBE)
    assert not errors(nb)
    assert all(c.get("execution_count") for c in code_cells(nb))
    # the crop (24 x 128 x 80) split in y: 80 rows to train on, the last 48 held out and scored
    assert got["split"] == 80 and got["heldout_shape"] == [24, 48, 80]
    # fine-tuning ran, from the shipped net at the data's resolution, and changed the weights
    assert len(got["loss"]) == ITERATIONS and all(math.isfinite(v) and v > 0 for v in got["loss"])
    assert got["start_resolution"] == got["tuned_resolution"] == [10.0, 10.0, 10.0] and got["changed"]
    assert got["background"] == "ignore"            # this crop's bodies touch: label 0 is unlabelled
    assert got["augment"] == "isotropic"
    # the ETA was printed after ten iterations, in the training cell, and logged
    train_cell = next(c for c in code_cells(nb) if "Trainer(cfg).run()" in c.source)
    assert "emkit train: ETA" in text(train_cell)
    assert any(e["iteration"] == 10 and e["iterations_left"] == ITERATIONS - 10 for e in got["eta"])
    # before and after: one row per threshold, scores that the segmentation shown really has
    for rows in (got["before"], got["after"]):
        assert [r["threshold"] for r in rows] == [0.3, 0.5, 0.7]
    from skimage.metrics import adapted_rand_error

    arrays = np.load(tmp_path / "data" / "probe.npz")
    seg, gt = arrays["seg"], arrays["gt"].astype(np.int64)
    dense = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
    at05 = next(r for r in got["after"] if r["threshold"] == 0.5)
    assert at05["arand"] == pytest.approx(adapted_rand_error(gt, dense, ignore_labels=(0,))[0], abs=1e-9)
    # on real FIB-SEM the nets segment the held-out part far better than chance (one segment: ~0.8)
    assert min(r["arand"] for r in got["before"]) < 0.3 and min(r["arand"] for r in got["after"]) < 0.3
    # figures: the loss curve and the affinities beside the truth
    figs = [c.source for c in outputs_with(nb, "image/png")]
    assert any("loss_curve" in s for s in figs) and any("affinities_vs_truth" in s for s in figs)
