"""Write notebooks/02_defects_and_masks.ipynb (narrative + library calls only).

Run from anywhere: ``python notebooks/_make/make_02.py [OUT.ipynb]``.
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md, code = new_markdown_cell, new_code_cell
cells = [
    md("# Defects and segmentation masks: folds, cracks, resin, slips and steps\n\n"
       "Serial sections come with damage: **folds** (tissue folded over: a dark band), **cracks** (torn tissue: a "
       "bright gap), **resin** (areas without tissue) and, after alignment, remaining **misalignments** — a *slip* "
       "(one section off against both neighbours) or a *step* (everything from a section on shifted). The paper "
       "(Methods: *Fold & crack detection*, *Resin detection*, *Segmentation masks*) finds folds, cracks and "
       "resin with a 2D U-Net, misalignments with correlation maps between neighbouring sections, and turns "
       "them into two masks for the boundary net: the **input mask** (slips, folds, cracks, resin: zeroed in "
       "the net's input) and the **output mask** (anything masked in three consecutive sections: affinities "
       "zeroed; steps too only with `MisalignmentParams(output_steps=True)`, the paper's rule — emkit's boundary "
       "net bridges steps, and zeroing them splits every object that crosses one).\n\n"
       "This notebook runs those steps on a phantom whose defects are known, so each can be checked."),
    code("# parameters: small by default so the notebook runs in about a minute\n"
         "SIZE = (16, 256, 256)   # voxels, z, y, x (40 x 8 x 8 nm)\n"
         "SEED = 3\n"
         "DEFECTS = 'fold,crack,resin,slip,step'\n"
         "OUT_DIR = None          # None: a temporary folder; or a path\n"
         "SERVE = True            # open the masks in Neuroglancer",
         metadata={"tags": ["parameters"]}),
    code("import tempfile\n"
         "import numpy as np\n"
         "import pandas as pd\n"
         "import matplotlib.pyplot as plt\n"
         "from emkit.phantom import make_phantom, write_phantom\n"
         "from emkit.detect import (detect_defects, detect_defects_layers, MisalignmentParams, misalignment_maps,\n"
         "                          classify_misalignments, segmentation_masks, segmentation_masks_layers)\n"
         "from emkit_widgets.misalignment_explorer import MisalignmentExplorer, DEFECT_COLORS\n"
         "from emkit_widgets.overlay import to_rgb, blend\n"
         "out_dir = OUT_DIR or tempfile.mkdtemp(prefix='emkit-defects-')"),
    md("## 1. A phantom with known defects\n\n"
       "`make_phantom` damages a clean synthetic volume with `emkit.defects` and keeps a mask per defect kind "
       "(`ph.masks`, in the image frame) and the sections where each was put."),
    code("ph = make_phantom(SIZE, seed=SEED, defects=DEFECTS)\n"
         "ph.defect_sections"),
    md("## 2. Detect folds, cracks and resin with the shipped defect net\n\n"
       "`detect_defects` runs the paper's 2D U-Net (three 3×3 convolutions per level, 16…256 feature maps, "
       "4 poolings, a 256 px field of view) section by section: folds and cracks on the image averaged to about "
       "16 nm per pixel, resin to about 32 nm, in tiles overlapping by half. It returns one boolean mask per "
       "kind on the image's grid. The shipped weights (`emkit/models/defects.pt`) were trained on defects "
       "simulated on other phantoms and on real EM (`emkit train defects`)."),
    code("found = detect_defects(ph.image, resolution=ph.resolution)\n"
         "truth = {'fold': ph.masks['fold'] > 0, 'crack': ph.masks['crack'] > 0,\n"
         "         'resin': (ph.masks.get('resin', 0) > 0) | (ph.masks.get('partial', np.zeros(ph.shape)) > 0)}\n"
         "def iou(a, b):\n"
         "    return float((a & b).sum() / max(1, (a | b).sum()))\n"
         "pd.DataFrame({k: {'true pixels': int(truth[k].sum()), 'detected pixels': int(found[k].sum()),\n"
         "                  'IoU': round(iou(found[k], truth[k]), 3)} for k in found}).T"),
    md("The detected masks over the sections that hold each defect (magenta fold, cyan crack, yellow resin; "
       "the true outline in white):"),
    code("zs = [ph.defect_sections[k][0] for k in ('fold', 'crack', 'resin') if k in ph.defect_sections]\n"
         "fig, axes = plt.subplots(1, len(zs), figsize=(4 * len(zs), 4))\n"
         "for ax, z in zip(np.atleast_1d(axes), zs):\n"
         "    rgb = to_rgb(ph.image[z])\n"
         "    for k, m in found.items():\n"
         "        rgb = blend(rgb, np.array(DEFECT_COLORS[k], np.float32), m[z], 0.5)\n"
         "    ax.imshow(rgb)\n"
         "    for k in truth:\n"
         "        if truth[k][z].any():\n"
         "            ax.contour(truth[k][z], levels=[0.5], colors='white', linewidths=0.7)\n"
         "    ax.set_title(f'z = {z}'); ax.axis('off')\n"
         "plt.show()"),
    md("## 3. Misalignment maps, slips and steps — move the threshold\n\n"
       "For each section and each of the 5 before it, `misalignment_maps` correlates 8×8 px patches of the "
       "high-pass filtered sections (at about 64 nm per pixel) and smooths the result. A pair is *misaligned* "
       "where the correlation is below a threshold; `classify_regions` calls a section a *slip* where it "
       "disagrees with both neighbours while they agree with each other, and a *step* where a pair disagrees "
       "but its neighbours' pairs do not. Move the **threshold** slider: too low and real slips are missed, "
       "too high and aligned tissue counts as misaligned (orange: misaligned patches at distance k; red: slips; "
       "blue: steps). The detector cannot see shifts below about 6 px (8 nm pixels)."),
    code("mparams = MisalignmentParams.for_resolution(ph.resolution[2])\n"
         "maps = misalignment_maps(ph.image, mparams)\n"
         "explorer = MisalignmentExplorer(ph.image, maps, mparams, defects=found, z=ph.defect_sections['slip'][0])\n"
         "print('true slips', ph.defect_sections.get('slip'), 'true steps', ph.defect_sections.get('step'))\n"
         "print('classified', classify_misalignments(maps, mparams))\n"
         "explorer.widget()"),
    code("pd.DataFrame([explorer.classify(t) for t in (0.05, 0.15, 0.25, 0.4, 0.6)]).set_index('threshold')"),
    md("## 4. The boundary net's input and output masks\n\n"
       "`segmentation_masks` combines the slips and steps with the detected defects: the input mask holds "
       "slips, folds, cracks and resin; the output mask steps and anything masked in three consecutive "
       "sections. The chunked forms write them as layers — the same as `emkit detect` and `emkit masks "
       "--defects` on the command line — which `emkit infer --mask-in/--mask-out` take."),
    code("mask_in, mask_out = segmentation_masks(ph.image, mparams, defect_masks=found)\n"
         "{'input mask, sections': sorted(set(np.flatnonzero(mask_in.any(axis=(1, 2))).tolist())),\n"
         " 'output mask, sections': sorted(set(np.flatnonzero(mask_out.any(axis=(1, 2))).tolist()))}"),
    code("urls = write_phantom(ph, out_dir, overwrite=True, progress=False)\n"
         "found_urls = detect_defects_layers(f'{out_dir}/image', f'{out_dir}/defects_found', overwrite=True)\n"
         "mask_urls = segmentation_masks_layers(f'{out_dir}/image', f'{out_dir}/masks_found', defect_mask_urls=found_urls,\n"
         "                                      overwrite=True)\n"
         "from emkit.io import Layer\n"
         "assert (Layer.open(mask_urls[0]).read() == mask_in).all()   # chunked layers = the arrays above\n"
         "found_urls, mask_urls"),
    md("## 5. In Neuroglancer\n\n"
       "The image, the detected defects and the two masks, served on 127.0.0.1."),
    code("if SERVE:\n"
         "    from emkit.view import serve\n"
         "    viewer = serve({'image': f'{out_dir}/image', **{f'detected {k}': u for k, u in found_urls.items()},\n"
         "                    'mask_in': mask_urls[0], 'mask_out': mask_urls[1]})\n"
         "    print(viewer.url)\n"
         "    display(viewer)"),
    md("## What the masks do to segmentation\n\n"
       "`benchmarks/masks_effect.py` segments a damaged phantom with the shipped boundary net three times — "
       "no masks, the predicted masks (`emkit.detect.predicted_masks`), the true masks — and "
       "`benchmarks/detect_defects.py` scores the defect net on fresh phantoms and on real EM with simulated "
       "defects; their results are in `benchmarks/results/`."),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}})
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "02_defects_and_masks.ipynb"
nbformat.write(nb, out)
print(out)
