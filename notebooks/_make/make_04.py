"""Write notebooks/04_semantic_labels.ipynb (narrative + library calls only).

Run from anywhere: ``python notebooks/_make/make_04.py [OUT.ipynb]``.
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md, code = new_markdown_cell, new_code_cell
cells = [
    md("# Semantic labels: soma, axon, dendrite, glia, blood vessel\n\n"
       "The second net of the reconstruction (paper: *Cell segmentation*; Methods: *Semantic labeling*). "
       "It labels every voxel with one of five classes:\n\n"
       "| class | label | colour |\n|---|---|---|\n"
       "| soma (with nucleus) | 1 | red |\n| axon | 2 | blue |\n| dendrite | 3 | yellow |\n"
       "| glia | 4 | green |\n| blood vessel | 5 | magenta |\n\n"
       "The paper's annotators used nine categories; soma and nucleus were fused and the unknown, "
       "endothelial-cell and myelin-sheath labels dropped, leaving these five. Semantic labels make the "
       "segmentation better: during agglomeration an object takes the class that dominates its voxels, and "
       "merges of a large object with an object of another class over weak affinities are refused — no "
       "axon–dendrite, axon–soma or neuron–glia merges (notebook 05). They also tell neuropil from "
       "somata and vessels.\n\n"
       "This notebook trains a tiny semantic net for a few iterations on the phantom, predicts a held-out "
       "phantom — with the shipped semantic net (`emkit/models/semantic.pt`, trained on a GPU by "
       "`emkit train semantic --preset phantom --device cuda …`, see `emkit/models/semantic.json`) when it "
       "is installed, else the tiny net — and scores "
       "the prediction by intersection over union (IoU) per class."),
    code("# parameters: a soma and a blood vessel need at least 375 voxels (3 µm) in y and x at 8 nm\n"
         "SIZE = (16, 384, 384)        # training phantom, voxels (z, y, x)\n"
         "TEST_SIZE = (16, 384, 384)   # held-out phantom (validation, prediction, scores)\n"
         "SEED = 5                     # training phantom; the held-out phantom uses SEED + 1000\n"
         "ITERATIONS = 20              # live training iterations (the shipped net trained for thousands)\n"
         "WIDTHS = (4, 8, 16)          # feature maps per U-Net level of the tiny net\n"
         "PATCH = (8, 64, 64)          # training patch (z, y, x)\n"
         "USE_SHIPPED = True           # predict with the shipped semantic net when it is installed\n"
         "THREADS = None               # torch CPU threads (None: torch's default)\n"
         "OUT_DIR = None               # None: a temporary folder; or a path",
         metadata={"tags": ["parameters"]}),
    code("import tempfile\n"
         "from pathlib import Path\n"
         "import pandas as pd\n"
         "from emkit.phantom import make_phantom, write_phantom\n"
         "from emkit.nets import available_models, load_model\n"
         "from emkit.train import TrainConfig, Trainer\n"
         "from emkit.train.targets import semantic_targets\n"
         "from emkit.inference import predict\n"
         "from emkit.evaluate import semantic_classes, semantic_iou\n"
         "from emkit_widgets import plots\n"
         "from emkit_widgets.slice_browser import SliceBrowser\n"
         "out_dir = Path(OUT_DIR or tempfile.mkdtemp(prefix='emkit-semantic-'))"),
    md("## 1. Training data\n\n"
       "Phantoms with the default defects, written as dataset folders (`image`, `gt/semantic`, "
       "`masks/<defect>`; a user's own volume with a `gt/semantic` layer trains the same way). The class "
       "fractions: axons and dendrites fill the neuropil; a soma and a blood vessel appear once the volume "
       "spans 3 µm in y and x, glia as thin processes between neurites."),
    code("train_ph = make_phantom(SIZE, seed=SEED)\n"
         "test_ph = make_phantom(TEST_SIZE, seed=SEED + 1000)\n"
         "write_phantom(train_ph, out_dir / 'train', progress=False)\n"
         "write_phantom(test_ph, out_dir / 'heldout', progress=False)\n"
         "pd.DataFrame({'training': train_ph.summary()['semantic_fraction'], "
         "'held out': test_ph.summary()['semantic_fraction']})"),
    md("## 2. Targets\n\n"
       "One binary target per class (a one-hot volume of 5 channels): the net answers, for every voxel and "
       "class, *is this voxel of that class?* Voxels of class 0 (unlabelled) do not count in the loss; "
       "neither do masked voxels (the fold and crack bands). Here the targets of the training phantom's "
       "middle section (ground truth and clean image, both in the clean frame):"),
    code("target, valid = semantic_targets(train_ph.semantic)\n"
         "print('target', target.shape, '| fraction of voxels that count:', round(float(valid[0].mean()), 4))\n"
         "plots.semantic_channels(train_ph.clean_image, target);"),
    md("## 3. The net, its loss and augmentations\n\n"
       "The paper's semantic net is a Residual Symmetric U-Net too, with five levels (32 … 512 feature "
       "maps), 3×3×3 convolutions except the 5×5×1 input and output convolutions, nearest-neighbour "
       "upsampling, Instance Normalization, and an **extra 1×1×1 convolution at the output** "
       "(`output_1x1=True`), on 224 × 224 × 18 patches. The loss is **plain binary cross-entropy** on each "
       "of the five outputs — no inverse margin, no rebalancing.\n\n"
       "Augmentations: flip & rotation, brightness & contrast, misalignment (d_max 5, 15 or 25 voxels; "
       "step p = 0.7, slip p = 0.3), missing section and misalignment + missing section — the last three "
       "mutually exclusive (notebook 03 shows each one). The paper trained with Adam at a learning rate of "
       "10⁻⁵ for 600 K iterations; emkit uses AMSGrad at 10⁻³, which converges in far fewer iterations on "
       "the phantom.\n\n"
       "Here a tiny net so that a few iterations run in seconds on a CPU."),
    code("config = TrainConfig(task='semantic', data=(str(out_dir / 'train'),), val_data=(str(out_dir / 'heldout'),),\n"
         "                     widths=WIDTHS, patch_size=PATCH, output_1x1=True, iterations=ITERATIONS,\n"
         "                     val_interval=ITERATIONS, checkpoint_interval=ITERATIONS, threads=THREADS, seed=SEED,\n"
         "                     out_dir=str(out_dir / 'run'))\n"
         "trainer = Trainer(config)\n"
         "print(trainer.net_config)\n"
         "print('parameters:', trainer.model.n_parameters(), '| augmentation:', trainer.augment_note, '|', "
         "trainer.val_note)"),
    md("## 4. A few live training iterations\n\n"
       "Each iteration: a random patch, augmented, its one-hot targets, one optimiser step. At the end the "
       "loop validates on a crop of the held-out phantom: the loss and the mean IoU over the classes "
       "present (the paper picked its best model by validation IoU too)."),
    code("result = trainer.run()\n"
         "plots.loss_curve(result.log);"),
    code("pd.DataFrame(result.log['validation']).set_index('iteration').round(4)"),
    md("## 5. Prediction\n\n"
       "Chunked inference as for the boundary net (`emkit.inference.predict`: overlapping patches on a "
       "global grid, blended with a smooth weight): five probability channels, one per class. Each voxel "
       "then takes its most probable class (`emkit.evaluate.semantic_classes`). The shipped semantic net is "
       "used when it is installed (`emkit.nets.available_models()`), otherwise the tiny net just trained."),
    code("shipped = USE_SHIPPED and 'semantic' in available_models()\n"
         "model = load_model('semantic') if shipped else result.model\n"
         "print('shipped semantic net' if shipped else f'tiny net trained above ({ITERATIONS} iterations)', "
         "'| patch', model.config.patch_size, '| widths', model.config.widths)\n"
         "prob = predict(model, test_ph.image, heads='semantic', progress=False)\n"
         "pred = semantic_classes(prob)\n"
         "prob.shape, pred.shape"),
    code("plots.semantic_channels(test_ph.image, prob);"),
    md("## 6. IoU per class\n\n"
       "The ground truth of the held-out phantom, warped into the image frame (`Phantom.in_image_frame`), "
       "against the predicted classes: per class the intersection over union of the voxels labelled with "
       "it, over the labelled voxels (class 0 is left out). The mean runs over the classes present in "
       "either; a class absent from both has no IoU. The shipped net tells axons from dendrites well (IoU "
       "about 0.8 each on a fresh 64 × 256 × 256 phantom) but rarely gets somata, glia and vessels right (mean "
       "IoU 0.42 there, against a goal of 0.8; `emkit/models/README.md` says why); the tiny net trained above "
       "is far weaker."),
    code("gt = test_ph.in_image_frame(test_ph.semantic)\n"
         "iou = semantic_iou(pred, gt)\n"
         "print('mean IoU:', iou['mean_iou'], '| voxels counted:', iou['n_voxels'])\n"
         "pd.DataFrame.from_dict(iou['per_class'], orient='index')"),
    code("plots.semantic_vs_truth(test_ph.image, pred, gt);"),
    md("Browse the prediction over the image section by section (toggle *semantic*; the masks show where "
       "the defects are):"),
    code("browser = SliceBrowser(test_ph.image, semantic=pred, masks=test_ph.masks)\n"
         "browser.visible['semantic'] = True\n"
         "browser.widget()"),
    md("## From the command line\n\n"
       "```\n"
       "emkit phantom data/train --size 16,384,384 --seed 5\n"
       "emkit phantom data/test --size 16,384,384 --seed 1005\n"
       "emkit train semantic --data data/train --val-data data/test --iterations 2500 --out runs/semantic\n"
       "emkit infer runs/semantic/best.pt data/test/image data/test/semantic_probability\n"
       "```\n\n"
       "`emkit infer` writes a probability layer with one channel per class; "
       "`emkit segment AFF OUT --semantic URL` uses semantic labels for the agglomeration constraints."),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"}})
nbformat.validate(nb)
out = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "04_semantic_labels.ipynb"
nbformat.write(nb, str(out))
