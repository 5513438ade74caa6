"""Write notebooks/02_alignment.ipynb (narrative + library calls only).

Run from anywhere: ``python notebooks/_make/make_02_alignment.py [OUT.ipynb]``.
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md, code = new_markdown_cell, new_code_cell
cells = [
    md("# Aligning serial sections\n\n"
       "Sections are cut, collected and imaged one by one, so each lands at its own offset and rotation, "
       "stretched a little, with folds (tissue pushed together) and cracks (pulled apart). Before any net "
       "sees the stack it is aligned (paper: *Image acquisition and alignment*, Fig. 2; Methods: *Rough "
       "alignment*, *Alignment at 1024 nm & 64 nm*): a rigid transform per section, then a displacement "
       "field per section against its previous neighbours — block matching refined by gradient descent on "
       "image similarity plus smoothness, the smoothness relaxed inside fold and crack masks so the field "
       "may tear there — composed along z from the first section, which stays put.\n\n"
       "Here the stack is a phantom moved by known fields, so the result is scored against the truth."),
    code("# parameters: small by default so the notebook runs in a minute or two\n"
         "SIZE = (16, 256, 256)   # voxels, z, y, x, at 40 x 8 x 8 nm\n"
         "SEED = 2\n"
         "OUT_DIR = None          # None: a temporary folder; or a path\n"
         "WORKERS = 0             # 0: in this process; N: a local dask cluster of N workers\n"
         "SERVE = True            # open before and after in Neuroglancer",
         metadata={"tags": ["parameters"]}),
    code("import tempfile\n"
         "import matplotlib.pyplot as plt\n"
         "import pandas as pd\n"
         "from emkit.align.fine import fine_align_layers\n"
         "from emkit.evaluate import alignment_residual_dirs\n"
         "from emkit.io import Layer, join_url, layer_exists\n"
         "from emkit.phantom import make_phantom, make_unaligned, write_phantom\n"
         "from emkit.view import serve\n"
         "from emkit_widgets.alignment_flipper import AlignmentFlipper\n"
         "from emkit_widgets.plots import field_arrows, residual_by_section\n"
         "out_dir = OUT_DIR or tempfile.mkdtemp(prefix='emkit-align-')"),
    md("## 1. An unaligned stack with known fields\n\n"
       "`emkit phantom DIR --unaligned` in the terminal: the phantom's sections get a rigid offset (tens of "
       "pixels, a few degrees), a slow drift along z and a smooth distortion, on top of its folds, cracks, "
       "slips and steps. The true fields are kept in `gt/fields.npz`, the defects in `masks/`."),
    code("ph = make_phantom(SIZE, seed=SEED)\n"
         "moved = make_unaligned(ph, seed=SEED)\n"
         "write_phantom(moved, out_dir, overwrite=True, progress=False)\n"
         "image_url = join_url(out_dir, 'image')\n"
         "print('defects:', ph.summary()['defects'])\n"
         "print(f'sections moved by up to {max(abs(f).max() for f in moved.fields):.1f} px')"),
    md("## 2. Align\n\n"
       "`emkit align IMAGE OUT --masks …` in the terminal. The fold and crack masks (here the phantom's; "
       "`emkit detect` finds them on your data) let the field tear. The quality table says, per section, "
       "which neighbour it was matched to, the similarity before and after, and how far the pair still "
       "disagrees."),
    code("masks = [join_url(out_dir, 'masks', k) for k in ('fold', 'crack') if layer_exists(join_url(out_dir, 'masks', k))]\n"
         "aligned_dir = join_url(out_dir, 'aligned')\n"
         "report = fine_align_layers(image_url, aligned_dir, mask_urls=masks, workers=WORKERS, overwrite=True)\n"
         "pd.DataFrame(report['sections']).set_index('z')"),
    md("## 3. How far from the truth\n\n"
       "The residual is the distance (pixels) between the field `emkit align` found and the true one, over "
       "tissue outside the defect masks, the reference section left out. The red line is where no alignment "
       "leaves it."),
    code("residual = alignment_residual_dirs(join_url(aligned_dir, 'field'), out_dir)\n"
         "print({k: round(residual[k], 2) for k in ('median_px', 'p95_px', 'max_px', 'unaligned_median_px')})\n"
         "residual_by_section(residual)\n"
         "plt.show()"),
    md("## 4. Flip between adjacent sections, before and after\n\n"
       "Section `z - 1` in magenta, `z` in green: where they agree the picture is grey. Switch the stack "
       "between *before* and *after*, or show one section at a time and flip. Folds (magenta) and cracks "
       "(cyan) are drawn over the unaligned sections. The slider starts at the worst section."),
    code("before = Layer.open(image_url).read()\n"
         "after = Layer.open(join_url(aligned_dir, 'image')).read()\n"
         "defects = {k: Layer.open(join_url(out_dir, 'masks', k)).read() > 0 for k in ('fold', 'crack')\n"
         "           if layer_exists(join_url(out_dir, 'masks', k))}\n"
         "flipper = AlignmentFlipper(before, after, residual=residual, defects=defects)\n"
         "flipper"),
    md("## 5. The field as arrows\n\n"
       "Each arrow goes from where a piece of tissue was in the unaligned section to where the aligned "
       "section shows it: rigid offsets look like parallel arrows, rotations like a vortex, the smooth "
       "distortion bends them."),
    code("field = Layer.open(join_url(aligned_dir, 'field')).read()   # (dy, dx), z, y, x\n"
         "z = flipper.z\n"
         "fig, axes = plt.subplots(1, 2, figsize=(10, 5))\n"
         "field_arrows(field[:, z], before[z], ax=axes[0], title=f'section {z}: the field emkit align found')\n"
         "axes[1].imshow(after[z], cmap='gray'); axes[1].set_title('aligned'); axes[1].set_axis_off()\n"
         "plt.show()"),
    md("## 6. Before and after in Neuroglancer\n\n"
       "The unaligned and the aligned image as two layers (toggle them with their names), the field and the "
       "defect masks with them."),
    code("if SERVE:\n"
         "    layers = {'unaligned': image_url, 'aligned': join_url(aligned_dir, 'image'),\n"
         "              'field': join_url(aligned_dir, 'field'), **{f'mask {k}': u.rstrip('/') for k, u in zip(('fold', 'crack'), masks)}}\n"
         "    viewer = serve(layers)\n"
         "    print(viewer.url)\n"
         "    display(viewer)"),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"}})
nbformat.validate(nb)
out = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "02_alignment.ipynb"
nbformat.write(nb, str(out))
