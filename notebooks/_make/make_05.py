"""Write notebooks/05_segmentation.ipynb (narrative + library calls only).

Run from anywhere: ``python notebooks/_make/make_05.py [OUT.ipynb]``.
"""
import sys
from pathlib import Path
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md, code = new_markdown_cell, new_code_cell
cells = [
    md("# Segmentation: watershed, agglomeration and a threshold you can tune\n\n"
       "The heart of the reconstruction (paper: *Cell segmentation*; Methods: *Watershed*, *Agglomeration*). "
       "A boundary net predicts **affinities** — for every voxel and each axis (z, y, x), the probability that it "
       "and its neighbour belong to the same cell. A **watershed** on that affinity graph cuts the volume into "
       "small, reliable *supervoxels*; **mean-affinity agglomeration** then merges them, best pair first, "
       "and records every merge. Cutting that merge history at a threshold gives the segmentation at that "
       "threshold in milliseconds — which is what the slider below does.\n\n"
       "Until emkit's boundary net is trained, the affinities come from the phantom's ground truth with "
       "realistic damage: blurred membranes, noise, *leaks* (erased membrane patches, which cause merges) "
       "and *false boundaries* (which cause splits) — `emkit.affinity.noisy_affinities`."),
    code("# parameters: small by default so the notebook runs in seconds; raise SIZE for a bigger volume\n"
         "SIZE = (32, 192, 192)   # voxels, z, y, x\n"
         "SEED = 1\n"
         "OUT_DIR = None          # None: a temporary folder; or a path\n"
         "SERVE = True            # open the result in Neuroglancer\n"
         "THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7)",
         metadata={"tags": ["parameters"]}),
    code("import tempfile\n"
         "import pandas as pd\n"
         "from emkit.phantom import make_phantom\n"
         "from emkit.affinity import noisy_affinities\n"
         "from emkit.segment import WatershedParams, AgglomerationParams, watershed, region_graph, agglomerate\n"
         "from emkit.evaluate import evaluate, sweep, best_threshold\n"
         "from emkit_widgets.threshold_tuner import ThresholdTuner\n"
         "out_dir = OUT_DIR or tempfile.mkdtemp(prefix='emkit-segmentation-')"),
    md("## 1. A phantom and its noisy affinities\n\n"
       "The ground truth (`ph.segmentation`) lives in the clean, aligned frame, so we segment against "
       "`ph.clean_image` here (defects and alignment are the subject of other notebooks). Affinities are "
       "float32 `(3, z, y, x)`; channel *d* of voxel *v* links *v* and *v − e_d*."),
    code("ph = make_phantom(SIZE, seed=SEED)\n"
         "aff = noisy_affinities(ph.segmentation, SEED)\n"
         "aff.shape, aff.dtype"),
    md("## 2. Watershed → supervoxels\n\n"
       "Steepest-ascent basins between a high and a low affinity threshold, then size-dependent single "
       "linkage of small basins (Zlateski & Seung 2015). The parameters and their defaults are documented on "
       "`WatershedParams`."),
    code("ws_params = WatershedParams()\n"
         "sv = watershed(aff, ws_params)\n"
         "ws_params, int(sv.max())"),
    md("## 3. Region graph and constrained agglomeration\n\n"
       "The region graph holds, per pair of touching supervoxels, the summed affinity and the contact count; "
       "per supervoxel its size and semantic class histogram (from the phantom's semantic labels). "
       "Agglomeration merges the pair of highest mean affinity first and, below a mean affinity of 0.5, "
       "applies the paper's constraints: no neuron–glia, axon–dendrite or axon–soma merges once an object "
       "has a class (≥ 60 % of its voxels), and no merges of two very large objects. The paper's sizes are "
       "for a cubic millimetre; for this small volume an object takes a class from 2,000 voxels on "
       "instead of 170,000."),
    code("graph = region_graph(sv, aff, semantic=ph.semantic)\n"
         "agg_params = AgglomerationParams(semantic_min_size=2_000)\n"
         "history = agglomerate(graph, agg_params)\n"
         "{'supervoxels': graph.n_nodes, 'edges': graph.n_edges, 'merges': len(history.merges), "
         "'vetoed': len(history.vetoes)}"),
    md("## 4. Tune the threshold\n\n"
       "Move the **threshold** slider: the merge history is cut again and the overlay redrawn (only the shown "
       "section is relabelled). Objects keep their colour while they keep their smallest supervoxel. With "
       "ground truth, VOI (split, merge, in bits) and the adapted Rand error are computed live over the "
       "**whole volume** — exactly, from one supervoxel × ground-truth table whose rows each cut renames. "
       "The button writes the current cut next to the image and ground truth and opens Neuroglancer."),
    code("tuner = ThresholdTuner(ph.clean_image, sv, history, ph.segmentation, resolution=ph.resolution)\n"
         "tuner.widget(folder=out_dir)"),
    md("## 5. Scores at a few thresholds\n\n"
       "`emkit.evaluate.sweep` scores every cut against the ground truth (the same numbers as "
       "`emkit.evaluate.evaluate` on each cut). Low thresholds merge too much (VOI merge, ARAND recall "
       "suffer), high ones split too much (VOI split)."),
    code("rows = sweep(history, sv, ph.segmentation, THRESHOLDS)\n"
         "table = pd.DataFrame(rows).set_index('threshold')\n"
         "table.round(4)"),
    code("table[['voi_split', 'voi_merge', 'arand']].plot(marker='o', title='scores by threshold');"),
    md("The best threshold by adapted Rand error, and the objects that are still split or merged the most "
       "there (ground-truth ids for splits, segmentation ids for merges — look them up in the viewer)."),
    code("best = best_threshold(rows, 'arand')\n"
         "tuner.set_threshold(best['threshold'])\n"
         "result = evaluate(tuner.segmentation(), ph.segmentation, k=5)\n"
         "pd.DataFrame(result['worst_splits']), pd.DataFrame(result['worst_merges'])"),
    md("## 6. Tune the parameters on an annotated crop\n\n"
       "The threshold is not the only choice: the watershed's parameters matter too, and the right values "
       "depend on the affinities (a real pixel classifier's boundary map, saturated at exactly 0 and 1, wants "
       "other values than a net's graded affinities — `benchmarks/RESULTS.md`). With ground truth for part of "
       "your data, `emkit.segment.tune` searches them (a small coordinate search; every cut of each merge "
       "history is scored from one table) and returns the best parameters, the cut and the score table. Tune on "
       "one part, check on another: here the first half of the sections, then the second. "
       "`emkit tune AFFINITIES GT --out tuned.json` does the same on layers, and "
       "`emkit segment AFFINITIES OUT --params tuned.json` uses the file."),
    code("from emkit.segment import segment\n"
         "from emkit.segment.tune import tune, save_params\n"
         "half = SIZE[0] // 2\n"
         "tuned = tune(aff[:, :half], ph.segmentation[:half])\n"
         "save_params(f'{out_dir}/tuned.json', tuned.to_dict(), overwrite=True)\n"
         "held_out = {}\n"
         "for name, (wp, ap, t) in {'defaults': (WatershedParams(), AgglomerationParams(constraints=False), 0.5),\n"
         "                          'tuned': (tuned.watershed, tuned.agglomeration, tuned.threshold)}.items():\n"
         "    seg, _, _ = segment(aff[:, half:], threshold=t, watershed_params=wp, agglomeration_params=ap)\n"
         "    held_out[name] = {'threshold': t, **{k: evaluate(seg, ph.segmentation[half:])[k] for k in ('arand', 'voi_split', 'voi_merge')}}\n"
         "print('tuned on the first half:', tuned.watershed, 'threshold', tuned.threshold)\n"
         "pd.DataFrame(held_out).T.round(4)"),
    md("The search's table (one row per parameter set tried, scored on the half it was tuned on):"),
    code("pd.DataFrame([{**r['watershed'], **r['agglomeration'], 'threshold': r['threshold'], 'arand': r['arand'],\n"
         "               'supervoxels': r['supervoxels']} for r in tuned.table]).round(4).head(12)"),
    md("## 7. Look at it in Neuroglancer\n\n"
       "One call writes the cut as a segmentation layer beside the image and the ground truth, serves them "
       "on 127.0.0.1 and returns the viewer (`emkit evaluate SEG GT` scores such layers from the command line)."),
    code("if SERVE:\n"
         "    viewer = tuner.send_to_neuroglancer(out_dir, overwrite=True)\n"
         "    print(viewer.url)\n"
         "    display(viewer)"),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"}})
nbformat.validate(nb)
out = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "05_segmentation.ipynb"
nbformat.write(nb, str(out))
