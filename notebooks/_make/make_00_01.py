"""Regenerate notebooks/00_quickstart.ipynb and 01_phantom_and_defects.ipynb (run from the repo root)."""
import nbformat as nbf


def nb(cells):
    n = nbf.v4.new_notebook()
    n.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    out = []
    for kind, src, *tags in cells:
        c = nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
        if tags:
            c.metadata["tags"] = tags[0]
        out.append(c)
    n.cells = out
    return n


quick = nb([
    ("md", "# emkit quickstart\n\nThis notebook runs the pipeline as far as emkit builds it today on the built-in **phantom** — "
           "synthetic serial-section EM of neural tissue at 40 × 8 × 8 nm (z, y, x) with dense ground truth:\n\n"
           "phantom → Precomputed layers → affinities → watershed + constrained mean-affinity agglomeration → "
           "scores against ground truth → Neuroglancer.\n\n"
           "Everything here is a call into the library; the same steps run from the command line "
           "(`emkit phantom`, `emkit infer`, `emkit segment`, `emkit evaluate`, `emkit view`, or all at once `emkit demo`) "
           "and scale out over dask for big volumes."),
    ("code", "# parameters: small by default so the notebook runs in seconds; raise SIZE for a bigger volume\n"
             "SIZE = (16, 192, 192)   # voxels, z, y, x\nSEED = 0\nOUT_DIR = None          # None: a temporary folder; or a path / gs:// prefix\n"
             "THRESHOLD = 0.5         # agglomeration threshold (mean affinity)\n"
             "SEMANTIC = 'none'       # semantic input of the agglomeration: 'none', 'net' (shipped semantic net), or\n"
             "                        # 'oracle' (the phantom's true classes: an oracle run, labelled so, not the pipeline)\n"
             "SERVE = True", ["parameters"]),
    ("code", "import tempfile\nfrom emkit.phantom import make_phantom, write_phantom\nfrom emkit.io import Layer, join_url\n"
             "out_dir = OUT_DIR or tempfile.mkdtemp(prefix='emkit-quickstart-')"),
    ("md", "## 1. Generate the phantom\n\n`make_phantom` returns numpy arrays: the EM `image` (with simulated defects), "
           "the ground-truth `segmentation`, `semantic` classes (1 soma, 2 axon, 3 dendrite, 4 glia, 5 vessel), "
           "synaptic `clefts` with a partner table, the defect `masks` and the true `displacement` the defects applied."),
    ("code", "ph = make_phantom(SIZE, seed=SEED)\nph.summary()"),
    ("code", "ph.synapses.head()"),
    ("md", "## 2. Write Precomputed layers\n\nEach array becomes a layer (`image`, `gt/segmentation`, `gt/semantic`, `gt/clefts`, "
           "`gt/image_frame/…`, `masks/<defect>`) that plain CloudVolume and Neuroglancer open unchanged."),
    ("code", "urls = write_phantom(ph, out_dir, progress=False)\nimage = Layer.open(urls['image'])\nimage"),
    ("code", "from emkit_widgets.slice_browser import browse_dataset\nbrowse_dataset(out_dir).widget()"),
    ("md", "## 3. Affinities\n\nThe boundary net predicts, for every voxel, the probability that it belongs to the same cell as its "
           "neighbour below in z, y and x (paper: *Boundary detection*). With the shipped net installed it is used here; "
           "otherwise the affinities are derived from the ground truth with realistic noise, so the next stages can be tried."),
    ("code", "from emkit.demo import dataset_affinities\nprint(dataset_affinities(out_dir, seed=SEED, progress=False))"),
    ("md", "## 4. Segmentation\n\nWatershed on the affinity graph makes supervoxels; mean-affinity agglomeration with the paper's "
           "semantic and size constraints merges them and records its full merge history, so any threshold can be cut later "
           "without recomputing. It runs chunk by chunk (here in this process; `workers=N` for a dask cluster) and the "
           "result is identical to one global run."),
    ("md", "The paper's semantic constraint keeps axons and dendrites apart; it needs semantic labels. By default "
           "(`SEMANTIC = 'none'`) there are none and the constraint is off. `SEMANTIC = 'net'` runs the shipped "
           "**semantic net** (`emkit infer semantic`: five class probabilities per voxel, written to `OUT_DIR/semantic`), "
           "as a user would on their own data; it is trained on phantoms only and not yet good (mean IoU 0.42 on a "
           "fresh phantom: axon 0.82, dendrite 0.85, glia 0; see `emkit/models/README.md`). `SEMANTIC = 'oracle'` feeds "
           "the phantom's true classes instead — an upper bound for experiments, labelled as such, never the "
           "pipeline's score. Only the scores below read the ground truth."),
    ("code", "from emkit.demo import dataset_semantic\nsemantic_url, semantic_source = dataset_semantic(out_dir, SEMANTIC, progress=False)\n"
             "print('semantic input:', semantic_source)"),
    ("code", "from emkit.segment import segment_layers\nreport = segment_layers(join_url(out_dir, 'affinities'), join_url(out_dir, 'seg'),\n"
             "                        semantic_url=semantic_url, threshold=THRESHOLD, workers=0, progress=False)\n"
             "{k: report[k] for k in ('n_supervoxels', 'n_merges', 'n_vetoes', 'seconds')}"),
    ("md", "## 5. Scores\n\nVariation of information (split and merge, bits) and adapted Rand error against the ground truth "
           "in the image frame, with the worst split and merged objects by id to look at in the viewer."),
    ("code", "from emkit.evaluate import evaluate\nseg = Layer.open(report['segmentation']).read()\n"
             "gt = Layer.open(join_url(out_dir, 'gt/image_frame/segmentation')).read()\nscores = evaluate(seg, gt, k=3)\n"
             "if SEMANTIC == 'oracle':\n    print('ORACLE RUN (oracle: ground-truth semantic labels fed to the agglomeration): '\n"
             "          'these scores are not the pipeline\\'s')\n"
             "{'semantic input': semantic_source, **{k: scores[k] for k in ('arand', 'voi_split', 'voi_merge')}}"),
    ("md", "## 6. Look at it in Neuroglancer\n\n`emkit.view.show` serves the layers on 127.0.0.1 and returns a link "
           "(the command line equivalent is `emkit view OUT_DIR`)."),
    ("code", "if SERVE:\n    from emkit.view import show\n    viewer = show(out_dir)\n    print(viewer.url)\n    display(viewer)"),
])

phantom = nb([
    ("md", "# The phantom and its defects\n\nSerial-section EM has defects the pipeline must survive (paper: *Alignment*, *Dataset augmentation*): "
           "folds and cracks, missing and partial sections, out-of-focus sections, step and slip misalignments, lost and thick sections, "
           "resin. `emkit.defects` simulates each of them on any image — the same code the training augmentations use — and returns "
           "the mask of what it damaged and the displacement it applied, so that alignment and masking can be scored."),
    ("code", "SIZE = (24, 192, 192)\nSEED = 3\nDEFECTS = 'default'", ["parameters"]),
    ("code", "from emkit.phantom import make_phantom\nfrom emkit_widgets.slice_browser import browse_phantom\nph = make_phantom(SIZE, seed=SEED, defects=DEFECTS)\n"
             "{name: int(m.sum()) for name, m in ph.masks.items()}"),
    ("md", "## Slice browser\n\nMove through sections with the slider; toggle the ground-truth segmentation, the semantic labels "
           "and each defect mask."),
    ("code", "browser = browse_phantom(ph)\nbrowser.widget()"),
    ("md", "## Clean versus damaged\n\nThe phantom keeps the clean image too; the true in-plane displacement (dy, dx in voxels) "
           "shows where folds pushed tissue together, cracks pulled it apart and misalignments shifted whole sections."),
    ("code", "from emkit_widgets.plots import clean_vs_damaged\nclean_vs_damaged(ph);"),
    ("md", "## One defect at a time\n\nEach defect kind applied alone to the clean volume, with its mask."),
    ("code", "from emkit_widgets.plots import defect_gallery\ndefect_gallery(ph.clean_image, seed=0);"),
])

nbf.write(quick, "notebooks/00_quickstart.ipynb")
nbf.write(phantom, "notebooks/01_phantom_and_defects.ipynb")
