"""Write notebooks/09_evaluation.ipynb (narrative + library calls only).

Run from anywhere: ``python notebooks/_make/make_09.py [OUT.ipynb]``.
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md, code = new_markdown_cell, new_code_cell
cells = [
    md("# Every score of a run in one place\n\n"
       "`emkit run` writes each stage's outputs and a record of what made them (`RUN/provenance/`); its "
       "`evaluate` stage scores the segmentation (and, on a phantom, the synapses) against ground truth. This "
       "notebook runs the shipped phantom pipeline — or opens a run folder you already have — and gathers "
       "everything with `emkit.pipeline.report.run_results`: how long each stage took, the segmentation's "
       "split and merge errors with the worst objects, the synapses found against the true ones, and the "
       "neurons' skeletons."),
    code("# parameters: small by default so the notebook runs in a few minutes on a laptop\n"
         "RUN_DIR = None              # an existing run folder to read; None: run the phantom pipeline\n"
         "SHAPE = (24, 192, 192)      # phantom size (z, y, x) when running\n"
         "SEED = 0\n"
         "OUT_DIR = None              # None: a temporary folder",
         metadata={"tags": ["parameters"]}),
    code("import tempfile\n"
         "import pandas as pd\n"
         "from emkit.pipeline import load_config, run_pipeline, pipeline_status, format_status\n"
         "from emkit.pipeline.report import run_results"),
    md("## 1. A run\n\n"
       "The shipped configuration (`emkit/pipeline/configs/phantom.yaml`) with a smaller phantom. The same "
       "from a terminal: `emkit run phantom --output RUN --set input.phantom.shape=24,192,192`. Running it "
       "again skips every finished stage."),
    code("if RUN_DIR is None:\n"
         "    out_dir = OUT_DIR or tempfile.mkdtemp(prefix='emkit-eval-')\n"
         "    cfg = load_config('phantom', output=f'{out_dir}/run',\n"
         "                      overrides={'input': {'phantom': {'shape': list(SHAPE), 'seed': SEED}}})\n"
         "    run_pipeline(cfg, progress=False)\n"
         "    RUN_DIR = cfg.output\n"
         "cfg = load_config(RUN_DIR)    # a run folder holds the configuration it ran with\n"
         "print(format_status(pipeline_status(cfg)))"),
    md("## 2. Where the time went"),
    code("res = run_results(RUN_DIR)\n"
         "res['stages']"),
    code("res['stages'].set_index('stage')['seconds'].plot.barh(title='seconds per stage');"),
    md("## 3. Segmentation against ground truth\n\n"
       "Variation of information (bits): *split* is how much the true objects are cut up, *merge* how much "
       "segments lump true objects together. The adapted Rand error (0 = perfect) weighs both by object size. "
       "The worst objects are where to look first in the viewer (true ids for splits, segment ids for merges)."),
    code("pd.Series(res['segmentation']).to_frame('score')"),
    code("pd.Series({k: res['segmentation'][k] for k in ('voi_split', 'voi_merge')}).plot.bar(\n"
         "    title='variation of information (bits)', rot=0);"),
    code("res['worst_splits']"),
    code("res['worst_merges']"),
    md("## 4. Synapses\n\n"
       "Cleft precision and recall against the phantom's clefts, partner accuracy, and the wiring diagram's "
       "edges found, missed and spurious (`emkit evaluate --synapses` prints the same)."),
    code("syn = res['synapse_scores'] or {}\n"
         "pd.Series({k: v for k, v in syn.items() if not isinstance(v, (list, dict))}, dtype=object).to_frame('score')"),
    code("res['synapses'].head(10) if res['synapses'] is not None else 'no synapse stage in this run'"),
    md("## 5. Neurons\n\n"
       "One row per skeletonized segment: path length (µm), branch points, the synapses it makes and receives."),
    code("neurons = res['neurons']\n"
         "neurons.sort_values('path_length_um', ascending=False).head(10)"),
    code("ax = neurons['path_length_um'].plot.hist(bins=20, title='skeleton path length per segment')\n"
         "ax.set_xlabel('µm');"),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"}})
nbformat.validate(nb)
out = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "09_evaluation.ipynb"
nbformat.write(nb, str(out))
