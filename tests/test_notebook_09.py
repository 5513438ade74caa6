"""notebooks/09_evaluation.ipynb runs the shipped phantom pipeline small and shows every result: the
status table, seconds per stage (a plot), the segmentation scores equal to the run's scores file, the
worst objects, synapse scores, the neuron table and the path-length histogram."""
import json

from helpers_notebooks import code_cells, errors, outputs_with, run_notebook, text

OVERRIDE = "RUN_DIR = None\nSHAPE = (16, 128, 128)\nSEED = 1\nOUT_DIR = {tmp!r}\n"


def test_notebook_09_runs(tmp_path):
    nb, probe = run_notebook("09_evaluation.ipynb", OVERRIDE.format(tmp=str(tmp_path / "data")), tmp_path,
                             probe="{'seg': res['segmentation'], 'stages': res['stages']['stage'].tolist(),"
                                   " 'status': res['stages']['status'].tolist(), 'neurons': len(res['neurons']),"
                                   " 'syn': res['synapse_scores'] is not None}")
    assert not errors(nb)
    cells = code_cells(nb)
    assert all(c.get("execution_count") for c in cells)
    status = next(text(c) for c in cells if "format_status(" in c.source)
    assert "stage(s) done" in status
    assert set(probe["status"]) == {"done"} and {"boundary", "segment", "synapses", "evaluate"} <= set(probe["stages"])
    scores = json.loads((tmp_path / "data" / "run" / "evaluation" / "scores.json").read_text())
    assert probe["seg"]["arand"] == scores["segmentation"]["arand"] and 0 <= probe["seg"]["arand"] < 0.5
    assert probe["syn"] and probe["neurons"] > 0
    plotted = {src for c in outputs_with(nb, "image/png") for src in ("seconds per stage", "voi_split", "path_length_um")
               if src in c.source}
    assert plotted == {"seconds per stage", "voi_split", "path_length_um"}
