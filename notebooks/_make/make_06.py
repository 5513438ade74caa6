"""Write notebooks/06_synapses.ipynb (narrative + library calls only).

Run from anywhere: ``python notebooks/_make/make_06.py [OUT.ipynb]``.
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md, code = new_markdown_cell, new_code_cell
cells = [
    md("# Synapses and the wiring diagram\n\n"
       "The last step of the reconstruction (paper: *Synapse detection and partner assignment*, Fig. 1b). "
       "A **cleft net** predicts, per voxel, the probability of a synaptic cleft; thresholding it and taking "
       "**connected components** (across chunks, for big volumes) gives the clefts, with their size, bounding "
       "box and centroid. A **partner net**, shown the image and one cleft, paints the presynaptic and the "
       "postsynaptic side; the segments with the largest mean painted weight are the partners. Clefts within "
       "**700 nm** with the same partners are merged and **autapses** (pre = post) dropped. The result is a "
       "synapse table and a directed graph between segments: the wiring diagram.\n\n"
       "Where a shipped net is not installed, the phantom's ground truth stands in for it (`truth:DIR`, an "
       "*oracle*, said so below)."),
    code("# parameters: small by default so the notebook runs in a minute or two\n"
         "SIZE = (24, 256, 256)   # voxels, z, y, x, at 40 x 8 x 8 nm\n"
         "SEED = 2\n"
         "OUT_DIR = None          # None: a temporary folder; or a path\n"
         "SERVE = True            # open the result in Neuroglancer\n"
         "CLEFT_MODEL = 'cleft'   # shipped cleft net (or a checkpoint)\n"
         "PARTNER_MODEL = 'partner'",
         metadata={"tags": ["parameters"]}),
    code("import tempfile\n"
         "import matplotlib.pyplot as plt\n"
         "import pandas as pd\n"
         "from emkit.io import Layer, join_url\n"
         "from emkit.nets import available_models\n"
         "from emkit.phantom import make_phantom, write_phantom\n"
         "from emkit.synapse import (SynapseParams, find_synapses, synapses_layers, edge_list, adjacency_matrix,\n"
         "                           to_networkx, graph_summary)\n"
         "from emkit.synapse.truth import load_truth\n"
         "from emkit.evaluate import synapse_scores\n"
         "from emkit.view import serve, center_on_synapse\n"
         "from emkit_widgets.cleft_tuner import CleftTuner\n"
         "out_dir = OUT_DIR or tempfile.mkdtemp(prefix='emkit-synapses-')"),
    md("## 1. A phantom with synapses\n\n"
       "The phantom places synapses where an axon's bouton touches a dendrite, about one per µm³, and writes "
       "their clefts (`gt/clefts`) and partner table (`gt/synapses.parquet`). The image shows the tissue with "
       "its defects; `load_truth` brings the true clefts into the image's frame."),
    code("ph = make_phantom(SIZE, seed=SEED)\n"
         "write_phantom(ph, out_dir, overwrite=True, progress=False)\n"
         "truth = load_truth(out_dir)\n"
         "image = ph.image\n"
         "segmentation = Layer.open(join_url(out_dir, 'gt/image_frame/segmentation')).read()\n"
         "cleft_model = CLEFT_MODEL if CLEFT_MODEL in available_models() else f'truth:{out_dir}'\n"
         "partner_model = PARTNER_MODEL if PARTNER_MODEL in available_models() else f'truth:{out_dir}'\n"
         "print('cleft:', cleft_model, '| partner:', partner_model)\n"
         "truth.table"),
    md("## 2. Cleft probability, threshold and size\n\n"
       "The cleft net's probability map, then a threshold and a minimum size (paper: 40 voxels at "
       "8 × 8 × 40 nm). Move the sliders: the clefts are found again and scored against the true ones "
       "(a found cleft is right when it overlaps a true one; `emkit.evaluate.cleft_precision_recall`)."),
    code("res = find_synapses(image, segmentation, resolution=ph.resolution, cleft_model=cleft_model,\n"
         "                    partner_model=partner_model, return_all=True)\n"
         "tuner = CleftTuner(res['cleft_prob'], truth.clefts, resolution=ph.resolution)\n"
         "tuner.widget()"),
    code("pd.DataFrame([tuner.scores(t) for t in (0.3, 0.5, 0.7, 0.9)]).round(3)"),
    md("## 3. The synapse table\n\n"
       "One row per synapse after the 700 nm same-partner merge and the autapse filter: partners, centroid "
       "(nm), size, bounding box, cleft score (mean probability) and assignment score, and the cleft "
       "components it was made of. `emkit synapses IMAGE SEG OUT` writes it as `synapses.parquet`."),
    code("table = res['table']\n"
         "table.head(10)"),
    code("scores = synapse_scores(table, res['clefts'], truth.table, truth.clefts, ph.resolution)\n"
         "pd.Series(scores).drop('resolution_nm')"),
    md("## 4. The wiring diagram\n\n"
       "The edge list counts synapses per (pre, post) pair; `adjacency_matrix` gives the same as a sparse "
       "matrix with its segment order, and `to_networkx` a `networkx.DiGraph` for graph analysis."),
    code("edges = edge_list(table)\n"
         "matrix, ids = adjacency_matrix(table)\n"
         "fig, ax = plt.subplots(figsize=(5, 5))\n"
         "ax.imshow(matrix.toarray(), cmap='Blues', interpolation='nearest')\n"
         "ax.set_xticks(range(len(ids)), [str(i) for i in ids], rotation=90)\n"
         "ax.set_yticks(range(len(ids)), [str(i) for i in ids])\n"
         "ax.set_xlabel('postsynaptic segment'); ax.set_ylabel('presynaptic segment')\n"
         "ax.set_title('connectivity matrix (synapse count)')\n"
         "plt.show()\n"
         "graph = to_networkx(table)\n"
         "graph_summary(table)"),
    md("## 5. The same, chunk by chunk\n\n"
       "`synapses_layers` (the `emkit synapses` command) runs each step over Precomputed layers: cleft "
       "inference, connected components merged across chunk faces, partner assignment, then the merge and "
       "the table. The result equals the array form's."),
    code("report = synapses_layers(join_url(out_dir, 'image'), join_url(out_dir, 'gt/image_frame/segmentation'),\n"
         "                         join_url(out_dir, 'synapses'), cleft_model=cleft_model, partner_model=partner_model,\n"
         "                         chunk_size=(SIZE[0] // 2, 128, 128), overwrite=True, progress=False)\n"
         "chunked = pd.read_parquet(f\"{out_dir}/synapses/synapses.parquet\")\n"
         "print(report['n_synapses'], 'synapses; same table as the array form:',\n"
         "      chunked.drop(columns='cleft_ids').round(6).equals(table.drop(columns='cleft_ids').round(6)))"),
    md("## 6. Look at a synapse in Neuroglancer\n\n"
       "Serving the dataset folder shows the synapses as points linked to their partner segments; "
       "`center_on_synapse` moves the view to one and shows its two partners (in the viewer, clicking a "
       "synapse in the annotation list does the same)."),
    code("if SERVE and len(table):\n"
         "    viewer = serve(out_dir)\n"
         "    biggest = int(table.sort_values('size_voxels').iloc[-1]['id'])\n"
         "    print('centred on synapse', biggest, 'at z, y, x voxels', center_on_synapse(viewer, biggest))\n"
         "    print(viewer.url)\n"
         "    display(viewer)"),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"}})
nbformat.validate(nb)
out = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "06_synapses.ipynb"
nbformat.write(nb, str(out))
