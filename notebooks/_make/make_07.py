"""Write notebooks/07_meshes_skeletons.ipynb (narrative + library calls only).

Run from anywhere: ``python notebooks/_make/make_07.py [OUT.ipynb]``.
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md, code = new_markdown_cell, new_code_cell
cells = [
    md("# Meshes, skeletons and pyramids\n\n"
       "The reconstruction's products are looked at and measured as **image pyramids**, **meshes** and "
       "**skeletons** in Neuroglancer's Precomputed format (paper: *Data access and visualization*: Igneous "
       "downsamples, meshes with marching cubes and quadric simplification — zmesh — and skeletonizes with "
       "Kimimaro, a refined TEASAR). emkit runs each of them chunk by chunk over a segmentation layer "
       "(serially here, or on any dask cluster), writes them beside the layer, and measures each neuron: "
       "path length, branch points, synapses."),
    code("# parameters: small by default so the notebook runs in a minute or two\n"
         "SIZE = (24, 256, 256)   # voxels, z, y, x, at 40 x 8 x 8 nm\n"
         "SEED = 3\n"
         "OUT_DIR = None          # None: a temporary folder; or a path\n"
         "WORKERS = 0             # 0: in this process; N: a local dask cluster of N workers\n"
         "SERVE = True            # open the result in Neuroglancer",
         metadata={"tags": ["parameters"]}),
    code("import tempfile\n"
         "import matplotlib.pyplot as plt\n"
         "import numpy as np\n"
         "from emkit.io import Layer, join_url\n"
         "from emkit.phantom import make_phantom, write_phantom\n"
         "from emkit.pyramid import pyramid_layers\n"
         "from emkit.mesh import mesh_layers, mesh_segments, mesh_volume\n"
         "from emkit.skeleton import skeleton_layers\n"
         "from emkit.view import serve\n"
         "out_dir = OUT_DIR or tempfile.mkdtemp(prefix='emkit-meshes-')"),
    md("## 1. A phantom with known neurons\n\n"
       "The phantom's true segmentation (`gt/segmentation`) stands in for a reconstruction here; every "
       "command below takes any segmentation layer, e.g. the output of `emkit segment`. Its synapse table "
       "(`gt/synapses.parquet`) gives the synapse counts of the neuron table."),
    code("ph = make_phantom(SIZE, seed=SEED)\n"
         "write_phantom(ph, out_dir, overwrite=True, progress=False)\n"
         "image_url, seg_url = join_url(out_dir, 'image'), join_url(out_dir, 'gt/segmentation')\n"
         "Layer.open(seg_url)"),
    md("## 2. Pyramids\n\n"
       "Coarser scales that Neuroglancer switches between as you zoom out: the image averaged, the "
       "segmentation by the most frequent label of each block (tinybrain), halving y and x until the "
       "voxels are about isotropic, then all three axes (`emkit pyramid`)."),
    code("for url in (image_url, seg_url):\n"
         "    print(pyramid_layers(url, workers=WORKERS, progress=False).summary())"),
    md("## 3. Meshes\n\n"
       "Marching cubes and quadric simplification per segment, chunk by chunk, the pieces of each segment "
       "welded into one closed mesh and written as legacy Precomputed meshes (`emkit mesh`). A closed mesh "
       "encloses its segment: its volume is close to the voxel count × voxel volume."),
    code("mesh_report = mesh_layers(seg_url, workers=WORKERS, progress=False)\n"
         "print(mesh_report.summary())\n"
         "seg = Layer.open(seg_url)\n"
         "labels = seg.read()\n"
         "ids, counts = np.unique(labels[labels > 0], return_counts=True)\n"
         "largest = int(ids[np.argmax(counts)])\n"
         "mesh = mesh_segments(labels, seg.resolution, ids=[largest])[largest]\n"
         "voxel_nm3 = float(np.prod(seg.resolution)) * counts.max()\n"
         "print(f'segment {largest}: mesh encloses {mesh_volume(mesh) / 1e9:.4f} µm³, '\n"
         "      f'its voxels fill {voxel_nm3 / 1e9:.4f} µm³ (ratio {mesh_volume(mesh) / voxel_nm3:.3f})')"),
    md("## 4. Skeletons and the neuron table\n\n"
       "TEASAR skeletons per segment (kimimaro), chunked and merged, written as Precomputed skeletons "
       "(`emkit skeleton`), and one row per neuron: path length (µm), branch and end points, synapses as "
       "the presynaptic and the postsynaptic partner (saved as Parquet)."),
    code("skel_report = skeleton_layers(seg_url, workers=WORKERS, progress=False,\n"
         "                              synapses=f'{out_dir}/gt/synapses.parquet',\n"
         "                              table_path=f'{out_dir}/neurons.parquet', overwrite=True)\n"
         "print(skel_report.summary())\n"
         "table = skel_report.table.sort_values('path_length_um', ascending=False)\n"
         "table.head(15)"),
    code("fig, ax = plt.subplots(figsize=(6, 3.5))\n"
         "ax.hist(table['path_length_um'], bins=20, color='tab:blue')\n"
         "ax.set_xlabel('skeleton path length (µm)')\n"
         "ax.set_ylabel('segments')\n"
         "ax.set_title(f'path lengths of {len(table)} skeletons')\n"
         "plt.show()"),
    md("## 5. In 3D\n\n"
       "`emkit view` (here `serve`) selects the largest segments of a segmentation layer that has meshes "
       "and opens a cross-section beside a 3D panel, where their meshes and skeletons are drawn; click "
       "segments in the cross-section (or list them in `segments=`) to add theirs."),
    code("if SERVE:\n"
         "    viewer = serve({'image': image_url, 'segmentation': seg_url})\n"
         "    print('meshes and skeletons of segments', viewer.segments['segmentation'])\n"
         "    print(viewer.url)\n"
         "    display(viewer)"),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"}})
nbformat.validate(nb)
out = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "07_meshes_skeletons.ipynb"
nbformat.write(nb, str(out))
