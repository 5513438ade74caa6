"""Write notebooks/10_finetune_your_data.ipynb (narrative + library calls only).

Run from anywhere: ``python notebooks/_make/make_10.py [OUT.ipynb]``.
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md, code = new_markdown_cell, new_code_cell
cells = [
    md("# Fine-tune the boundary net on your own annotated crop\n\n"
       "The shipped nets were trained on emkit's phantom (and `boundary_iso` on one real FIB-SEM crop): on "
       "your microscope, your tissue and your staining they are a starting point. The paper's nets were "
       "trained on the volume they segmented; the user's way to get there is to annotate a small crop — "
       "every body in it labelled — and fine-tune on it (paper, Methods: *Boundary detection*, where the "
       "training set was ~1,000 µm³ of annotated EM).\n\n"
       "This notebook walks through it with two TIFF stacks, an image and its labels (same shape, "
       "z, y, x; 0 = unlabelled):\n\n"
       "1. import them as a *dataset folder* (what `emkit import` writes);\n"
       "2. keep a part of the crop out of training, to score on;\n"
       "3. score the shipped net on that part (**before**);\n"
       "4. fine-tune with `--init boundary` (the ETA is printed after ten iterations);\n"
       "5. score the fine-tuned net on the same part (**after**), at three agglomeration thresholds.\n\n"
       "By default it uses a small crop of real FIB-SEM (Drosophila, Janelia FlyEM, 10 nm isotropic; "
       "`tests/data/gala_fib`, BSD-style licence, see its ATTRIBUTION.md) so that it runs in a minute or "
       "two. Set `IMAGE_TIFF`, `LABELS_TIFF` and `RESOLUTION` to your own files, and `ITERATIONS` to "
       "a few thousand for a real fine-tune."),
    code("# parameters: small by default so the notebook runs in a minute or two on a laptop CPU\n"
         "import emkit\n"
         "from pathlib import Path\n"
         "EXAMPLE = Path(emkit.__file__).resolve().parents[1] / 'tests' / 'data' / 'gala_fib'\n"
         "IMAGE_TIFF = EXAMPLE / 'gala_fib_tiny_crop_24x128x80_image.tif'    # your EM stack (z, y, x)\n"
         "LABELS_TIFF = EXAMPLE / 'gala_fib_tiny_crop_24x128x80_labels.tif'  # its labels, 0 = unlabelled\n"
         "RESOLUTION = (10, 10, 10)     # voxel size in nm (z, y, x): your microscope's\n"
         "HELDOUT_FRACTION = 0.375      # the last part of y is kept out of training and scored\n"
         "INIT = 'boundary'             # start from the shipped boundary net nearest RESOLUTION\n"
         "ITERATIONS = 60               # gradient steps (a real fine-tune: thousands)\n"
         "PATCH = (16, 32, 32)          # training patch (z, y, x); larger is better if your crop allows\n"
         "LR = 1e-3                     # AMSGrad learning rate (paper: 0.001)\n"
         "THRESHOLDS = (0.3, 0.5, 0.7)  # agglomeration cuts to score\n"
         "THREADS = None                # torch CPU threads (None: torch's default)\n"
         "OUT_DIR = None                # None: a temporary folder; or a path",
         metadata={"tags": ["parameters"]}),
    code("import tempfile\n"
         "import pandas as pd\n"
         "from emkit.io import Layer, import_volume\n"
         "from emkit.train import TrainConfig, Trainer, adapted_model\n"
         "from emkit.train.sampler import crop_dataset\n"
         "from emkit.nets import load\n"
         "from emkit.inference import predict\n"
         "from emkit.segment import segment\n"
         "from emkit.evaluate import evaluate, sweep\n"
         "from emkit_widgets import plots\n"
         "out_dir = Path(OUT_DIR or tempfile.mkdtemp(prefix='emkit-finetune-'))"),
    md("## 1. Your crop as a dataset folder\n\n"
       "A dataset folder holds `image` and `gt/segmentation` as Precomputed layers (optionally "
       "`masks/<name>` for regions to leave out of the loss). `import_volume` is what "
       "`emkit import` runs; the command-line equivalent of this cell is\n\n"
       "```bash\n"
       "emkit import image.tif mine/image --kind image --resolution 10,10,10\n"
       "emkit import labels.tif mine/gt/segmentation --kind segmentation --resolution 10,10,10\n"
       "```\n\n"
       "Label 0 means *unlabelled*. If your annotation draws membranes as 0 between the bodies (no two "
       "bodies touch, as in FlyEM's ground truth), training sees that and treats label 0 as boundary "
       "(`background='auto'`); otherwise edges touching label 0 are left out of the loss."),
    code("mine = out_dir / 'mine'\n"
         "image_layer = import_volume(IMAGE_TIFF, mine / 'image', 'image', resolution=RESOLUTION, progress=False)\n"
         "labels_layer = import_volume(LABELS_TIFF, mine / 'gt' / 'segmentation', 'segmentation',\n"
         "                             resolution=RESOLUTION, progress=False)\n"
         "image_layer.size, labels_layer.size, image_layer.resolution"),
    md("## 2. Keep a part out of training\n\n"
       "Scores on the voxels a net was trained on say little. The last `HELDOUT_FRACTION` of the crop in "
       "y becomes `heldout/` and is never trained on; the rest becomes `train/` (the training loop itself "
       "holds out the last 20 % of *that* in y to choose the best checkpoint)."),
    code("Z, Y, X = image_layer.size\n"
         "split = int(round(Y * (1 - HELDOUT_FRACTION)))\n"
         "train_ds = crop_dataset(mine, out_dir / 'train', (0, 0, 0), (Z, split, X))\n"
         "heldout_ds = crop_dataset(mine, out_dir / 'heldout', (0, split, 0), (Z, Y, X))\n"
         "image = Layer(heldout_ds + '/image').read()\n"
         "gt = Layer(heldout_ds + '/gt/segmentation').read()\n"
         "{'train (z, y, x)': (Z, split, X), 'held out (z, y, x)': image.shape}"),
    md("## 3. Before: the shipped net on the held-out part\n\n"
       "`adapted_model(INIT, RESOLUTION)` is exactly the net fine-tuning starts from: the shipped boundary "
       "net trained nearest your resolution; when that resolution is not yours, its weights are kept and "
       "its down-sampling and long-range offsets are re-derived for your voxel size (every weight keeps its "
       "shape). We run it over the held-out image, segment the affinities (watershed + mean-affinity "
       "agglomeration) and score against the labels: adapted Rand error (0 is perfect) and variation of "
       "information (split / merge, bits), at several cuts of the merge history."),
    code("def scores(model, name):\n"
         "    aff = predict(model, image, resolution=RESOLUTION, progress=False)\n"
         "    seg, sv, history = segment(aff, threshold=0.5)\n"
         "    rows = sweep(history, sv, gt, THRESHOLDS)\n"
         "    table = pd.DataFrame([{'net': name, **{k: r[k] for k in ('threshold', 'arand', 'voi_split', 'voi_merge')}}\n"
         "                          for r in rows])\n"
         "    return aff, seg, table\n"
         "\n"
         "start, note = adapted_model(INIT, RESOLUTION, patch_size=PATCH)\n"
         "print(note or f'{INIT}: trained at this resolution, used as is')\n"
         "aff_before, seg_before, before = scores(start, 'before')\n"
         "before"),
    md("## 4. Fine-tune\n\n"
       "`TrainConfig(init=INIT, …)` is `emkit train boundary --data train/ --init boundary`: the same net, "
       "the paper's loss (binary cross-entropy with class rebalancing) and optimiser (AMSGrad), and "
       "augmentations suited to the data (for isotropic voxels: flips, intensity, warps and mild slice "
       "defects). After ten iterations it prints an **ETA** for the whole run, and again after the first "
       "validation. The command-line form:\n\n"
       "```bash\n"
       "emkit train boundary --data train --init boundary --iterations 2000 --patch 16,32,32 --out runs/tuned\n"
       "```"),
    code("cfg = TrainConfig(task='boundary', data=(train_ds,), init=INIT, iterations=ITERATIONS, patch_size=PATCH,\n"
         "                  lr=LR, val_interval=max(ITERATIONS // 3, 1), checkpoint_interval=ITERATIONS,\n"
         "                  threads=THREADS, out_dir=str(out_dir / 'run'), progress=False)\n"
         "result = Trainer(cfg).run()\n"
         "{'background': result.log['background'], 'augment': result.log['augment'],\n"
         " 'validation': result.log['validation_source'], 'eta printed': result.log.get('eta'),\n"
         " 'seconds': result.log['wall_seconds']}"),
    code("plots.loss_curve(result.log);"),
    md("## 5. After: the fine-tuned net on the same held-out part\n\n"
       "`best.pt` is the checkpoint with the best validation score (`last.pt` the final one). Use it for "
       "the rest of your volume with `emkit infer runs/tuned/best.pt image affinities`, then "
       "`emkit segment`."),
    code("tuned = load(result.best or result.last)\n"
         "aff_after, seg_after, after = scores(tuned, 'after')\n"
         "table = pd.concat([before, after], ignore_index=True)\n"
         "table"),
    code("plots.affinities_vs_truth(image, aff_after, gt);"),
    md("## What to expect, and what next\n\n"
       "* With the defaults (a 24 × 128 × 80 crop, sixty iterations) the numbers move little and noisily: "
       "this is a walk-through. On the project's 1 M-voxel FIB-SEM crop, fine-tuning for ~1,500 iterations "
       "(about an hour on a 2-core CPU) is what made `boundary_iso`; its held-out scores are in "
       "`emkit/models/README.md`.\n"
       "* Annotate densely: every body in the crop, membranes either as 0 or as the border between labels. "
       "Mark what you did not annotate as a mask (`masks/ignore`): it is left out of the loss.\n"
       "* Tune the agglomeration on the held-out part (notebook 05 and `emkit tune`), then segment the "
       "whole volume with those parameters."),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}})
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "10_finetune_your_data.ipynb"
nbformat.write(nb, out)
print(f"wrote {out}")
