"""Write notebooks/03_boundary_detection.ipynb (narrative + library calls only).

Run from anywhere: ``python notebooks/_make/make_03.py [OUT.ipynb]``.
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md, code = new_markdown_cell, new_code_cell
cells = [
    md("# Boundary detection: a Residual Symmetric U-Net that predicts affinities\n\n"
       "The first net of the reconstruction (paper: *Cell segmentation*; Methods: *Boundary Detection*, "
       "*Dataset augmentation*). It reads serial-section EM and predicts, for every voxel, **affinities**: "
       "the probability that the voxel and its neighbour belong to the same cell.\n\n"
       "* **Nearest-neighbour affinities** (3 channels z, y, x): channel *d* of voxel *v* links *v* and "
       "*v − e_d*. Inside a cell they are 1, across a membrane 0. Watershed and agglomeration "
       "(notebook 05) turn them into a segmentation.\n"
       "* **Long-range affinities** (9 channels): the same question for voxels 2, 3, 4 sections apart in z "
       "and 5, 10, 15 voxels apart in y and x (the paper's offsets). They are an auxiliary task during "
       "training only — they make the net look further — and are discarded at inference.\n\n"
       "This notebook walks through the paper's recipe on the built-in phantom: the training data, every "
       "augmentation, a few live training iterations of a tiny net, chunked inference, and the "
       "segmentation scored against ground truth. The shipped boundary net (`emkit/models/boundary.pt`, "
       "trained for thousands of iterations by `emkit train boundary --preset phantom`) is used for "
       "inference when it is installed; otherwise the tiny net trained here."),
    code("# parameters: small by default so the notebook runs in about a minute on a laptop CPU\n"
         "SIZE = (24, 192, 192)        # training phantom, voxels (z, y, x)\n"
         "TEST_SIZE = (32, 256, 256)   # held-out phantom (validation, inference, scores)\n"
         "SEED = 3                     # training phantom; the held-out phantom uses SEED + 1000\n"
         "ITERATIONS = 20              # live training iterations (the shipped net trained for thousands)\n"
         "WIDTHS = (4, 8, 16)          # feature maps per U-Net level of the tiny net\n"
         "PATCH = (8, 64, 64)          # training patch (z, y, x)\n"
         "USE_SHIPPED = True           # infer with the shipped boundary net when it is installed\n"
         "THREADS = None               # torch CPU threads (None: torch's default)\n"
         "OUT_DIR = None               # None: a temporary folder; or a path",
         metadata={"tags": ["parameters"]}),
    code("import tempfile\n"
         "from pathlib import Path\n"
         "import pandas as pd\n"
         "from emkit.phantom import make_phantom, write_phantom\n"
         "from emkit.nets import available_models, load_model\n"
         "from emkit.train import TrainConfig, Trainer\n"
         "from emkit.inference import predict\n"
         "from emkit.segment import segment\n"
         "from emkit.evaluate import evaluate, sweep\n"
         "from emkit_widgets import plots\n"
         "from emkit_widgets.augment_explorer import AugmentExplorer\n"
         "from emkit_widgets.slice_browser import SliceBrowser\n"
         "out_dir = Path(OUT_DIR or tempfile.mkdtemp(prefix='emkit-boundary-'))"),
    md("## 1. Training data: phantoms with defects\n\n"
       "A training set is a *dataset folder*: `image`, `gt/segmentation` and optionally `masks/<name>` as "
       "Precomputed layers — what `emkit phantom` writes, or a user's own annotated volume imported with "
       "`emkit import`. The phantom's image carries the default defects (a fold, a crack, missing, partly "
       "missing and blurred sections, a slip and a step); its ground truth lies in the clean frame and the "
       "sampler warps it into the image frame. A second phantom with another seed is held out: the "
       "training loop validates on it, and we score the segmentation on it below."),
    code("train_ph = make_phantom(SIZE, seed=SEED)\n"
         "test_ph = make_phantom(TEST_SIZE, seed=SEED + 1000)\n"
         "write_phantom(train_ph, out_dir / 'train', progress=False)\n"
         "write_phantom(test_ph, out_dir / 'heldout', progress=False)\n"
         "train_ph.summary()"),
    md("## 2. Augmentations\n\n"
       "The net must see through the defects of real serial-section EM, so every training patch is "
       "augmented (Methods: *Dataset augmentation*), consistently in image and target:\n\n"
       "1. **flip & rotation** — x/y flips and 90° rotations in-plane, and a z flip: 16 configurations;\n"
       "2. **brightness & contrast** — per patch or per section;\n"
       "3. **warping** — rotation, shear, twist, scale and perspective stretch;\n"
       "4. **misalignment** — a *step* (p = 0.7: every section from *z* on shifted) or a *slip* "
       "(p = 0.3: one section shifted), |dy|, |dx| uniform in [0, d_max] with d_max 10, 30 or 50 voxels;\n"
       "5. **missing section** — two consecutive and up to seven single sections, each full or partial;\n"
       "6. **out-of-focus section** — up to seven sections blurred, fully or partly;\n"
       "7. **misalignment + missing section** — both at the same section, so the net learns to "
       "interpolate through it instead of predicting double boundaries;\n"
       "8. **lost section** — one or two sections removed from image *and* target (abrupt content change);\n"
       "9. **lost + missing section** — three sections replaced by one missing section, the middle target kept;\n"
       "10. **slip interpolation** — a slip in the *input only*: the target stays aligned, so the net learns "
       "to ignore slips.\n\n"
       "Misalignment, missing section, misalignment + missing, lost and lost + missing are **mutually "
       "exclusive** — at most one per patch. The explorer shows each one alone on a clean phantom patch, and "
       "`all` — the full `Augmenter` with the paper's probabilities. Left of each pair the image, right the "
       "target: labels in colour, boundaries (a zero nearest-neighbour affinity) black, voxels excluded from "
       "the loss red. Pick an augmentation and move the seed."),
    code("explorer = AugmentExplorer(shape=PATCH, seed=SEED)\n"
         "explorer.widget()"),
    md("The same, all at once (a static figure that also shows in a saved notebook), and what the full "
       "augmenter applied to this patch:"),
    code("plots.augmentation_gallery(explorer, seed=SEED);"),
    code("print(explorer.describe('all', SEED))"),
    md("## 3. The net and its loss\n\n"
       "**Residual Symmetric U-Net** (Lee et al. 2017) as modified in the paper: 3×3×3 convolutions "
       "everywhere except the 5×5×1 input and output convolutions, an extra convolution in every residual "
       "module, Instance Normalization and ReLU; max-pooling down and nearest-neighbour upsampling, with "
       "additive skip connections. Down-sampling is anisotropic — in y and x only at 40 × 8 × 8 nm — and "
       "follows the data's resolution (an isotropic FIB-SEM volume gets isotropic factors).\n\n"
       "**Loss.** Binary cross-entropy with *inverse margin* 0.1 — targets 0.9 and 0.1 instead of 1 and 0 "
       "(soft targets, a regulariser) — and *patch-wise class rebalancing*: in every patch and channel, "
       "boundary and non-boundary edges are weighted inversely to their count, so the rare boundaries carry "
       "half of the weight (the paper found this critical against missing boundaries). The losses of the "
       "nearest-neighbour and long-range heads add up. Edges touching unlabelled voxels or the fold and "
       "crack bands do not count.\n\n"
       "**Optimiser.** AMSGrad (Adam variant) with α = 0.001, β₁ = 0.9, β₂ = 0.999, ε = 10⁻⁸, one patch "
       "per step — the paper's settings.\n\n"
       "Here a *tiny* net (widths `WIDTHS`, patch `PATCH`) so that a few iterations run in seconds on a CPU."),
    code("config = TrainConfig(task='boundary', data=(str(out_dir / 'train'),), val_data=(str(out_dir / 'heldout'),),\n"
         "                     widths=WIDTHS, patch_size=PATCH, iterations=ITERATIONS, val_interval=ITERATIONS,\n"
         "                     checkpoint_interval=ITERATIONS, threads=THREADS, seed=SEED, out_dir=str(out_dir / 'run'))\n"
         "trainer = Trainer(config)\n"
         "print(trainer.net_config)\n"
         "print('parameters:', trainer.model.n_parameters(), '| augmentation:', trainer.augment_note, '|', "
         "trainer.val_note)"),
    md("## 4. A few live training iterations\n\n"
       "Every iteration samples a random patch (respecting the masks), augments it, computes the targets "
       "and takes one AMSGrad step. At the end the loop validates on a crop of the held-out phantom: the "
       "loss of every head, and the adapted Rand error of watershed + agglomeration of the predicted "
       "affinities. Twenty iterations only start the descent — the point is the machinery; "
       "`emkit train boundary --preset phantom` runs the same loop for thousands of iterations, with "
       "checkpoints and resume."),
    code("result = trainer.run()\n"
         "plots.loss_curve(result.log);"),
    code("pd.DataFrame(result.log['validation']).set_index('iteration').round(4)"),
    md("## 5. Chunked inference\n\n"
       "A net sees one patch at a time. `emkit.inference.predict` lays a *global* grid of overlapping "
       "patches over the volume, runs them in batches and blends their outputs with a smooth weight "
       "(largest at the patch centre), so no seams appear; the layer form `emkit infer` (`infer_layers`) "
       "cuts a big volume into chunks on dask workers from the same grid and gives the same result. "
       "Two masks follow the paper (*Segmentation masks*): an **input mask** feeds the net zeros where the "
       "image is useless (folds, cracks, slips — here the phantom's fold), and an **output mask** zeroes "
       "the affinities where the prediction cannot be trusted (steps, three consecutive masked sections), "
       "which biases the segmentation towards splits. Only the nearest-neighbour head is kept: long-range "
       "affinities serve training only.\n\n"
       "The shipped boundary net is used when it is installed (`emkit.nets.available_models()`), "
       "otherwise the tiny net just trained."),
    code("shipped = USE_SHIPPED and 'boundary' in available_models()\n"
         "model = load_model('boundary') if shipped else result.model\n"
         "print('shipped boundary net' if shipped else f'tiny net trained above ({ITERATIONS} iterations)', "
         "'| patch', model.config.patch_size, '| widths', model.config.widths)\n"
         "aff = predict(model, test_ph.image, heads='affinity', mask_in=test_ph.masks.get('fold'), progress=False)\n"
         "aff.shape, aff.dtype"),
    md("## 6. Affinities beside the ground truth\n\n"
       "Nearest-neighbour affinities as colour (red z, green y, blue x): white inside cells, dark on "
       "membranes. The true affinities come from the held-out phantom's ground truth warped into the "
       "image frame (`Phantom.in_image_frame`), which is what the image shows — misalignments included."),
    code("gt = test_ph.in_image_frame(test_ph.segmentation)\n"
         "plots.affinities_vs_truth(test_ph.image, aff, gt);"),
    md("## 7. Segmentation and scores\n\n"
       "Watershed → supervoxels, then constrained mean-affinity agglomeration cut at 0.5 "
       "(`emkit.segment.segment`; notebook 05 explains both). The scores against the image-frame ground "
       "truth (`emkit.evaluate.evaluate`): variation of information (split and merge, bits) and the "
       "adapted Rand error. With the tiny net expect poor figures; the shipped net is meant to reach an "
       "adapted Rand error of about 0.05 on a 64 × 256 × 256 phantom."),
    code("seg, sv, history = segment(aff)\n"
         "scores = evaluate(seg, gt)\n"
         "pd.Series(scores).drop(['worst_splits', 'worst_merges'])"),
    md("The merge history can be cut at other thresholds without recomputing anything:"),
    code("pd.DataFrame(sweep(history, sv, gt, (0.1, 0.3, 0.5, 0.7, 0.9))).set_index('threshold').round(4)"),
    md("Browse the segmentation over the image (toggle the defect masks to see where the defects are):"),
    code("browser = SliceBrowser(test_ph.image, segmentation=seg, masks=test_ph.masks)\n"
         "browser.visible['segmentation'] = True\n"
         "browser.widget()"),
    md("## From the command line\n\n"
       "```\n"
       "emkit phantom data/train --seed 3          # or emkit import your own annotated volume\n"
       "emkit phantom data/test --seed 1003\n"
       "emkit train boundary --data data/train --iterations 2500 --out runs/boundary\n"
       "emkit infer runs/boundary/best.pt data/test/image data/test/affinities --heads affinity \\\n    --mask-in data/test/masks/fold\n"
       "emkit segment data/test/affinities data/test/seg\n"
       "emkit evaluate data/test/seg/segmentation data/test/gt/image_frame/segmentation\n"
       "```"),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"}})
nbformat.validate(nb)
out = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "03_boundary_detection.ipynb"
nbformat.write(nb, str(out))
