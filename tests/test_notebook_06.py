"""notebooks/06_synapses.ipynb runs top to bottom with small parameters and shows what it says:
the cleft sliders with live scores, the synapse table, the connectivity matrix as a picture, the
chunked table equal to the array one, and Neuroglancer centred on a synapse."""
from helpers_notebooks import code_cells, errors, outputs_with, run_notebook, text

# models not installed under these names: the notebook's ground-truth stand-ins run (seconds; the shipped
# nets' path is exercised by the README tour, the demo and tests/test_synapse_pipeline.py)
OVERRIDE = ("SIZE = (16, 192, 192)\nSEED = 1\nOUT_DIR = {tmp!r}\nSERVE = True\nCLEFT_MODEL = 'oracle'\n"
            "PARTNER_MODEL = 'oracle'\n")


def test_notebook_06_runs(tmp_path):
    nb, probe = run_notebook("06_synapses.ipynb", OVERRIDE.format(tmp=str(tmp_path / "data")), tmp_path,
                             probe="{'n': int(len(table)), 'scores': tuner.scores(), 'summary': graph_summary(table),"
                                   " 'shape': list(matrix.shape), 'ids': len(ids)}")
    assert not errors(nb)
    cells = code_cells(nb)
    assert all(c.get("execution_count") for c in cells)
    # the cleft tuner widget was displayed and scores (live numbers come from the library)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for c in cells
               for o in c.get("outputs", []))
    assert probe["scores"]["n_true"] >= 1 and 0 <= probe["scores"]["precision"] <= 1
    # the connectivity matrix is a picture, square over the segments with synapses
    assert any("adjacency_matrix" in c.source for c in outputs_with(nb, "image/png"))
    assert probe["shape"] == [probe["ids"], probe["ids"]] and probe["summary"]["synapses"] == probe["n"]
    # the table is shown, the chunked run equals the array form, the viewer was centred on a synapse
    shown = next(text(c) for c in cells if c.source.startswith("table = res['table']"))
    assert "pre_id" in shown and "post_id" in shown
    chunked = next(text(c) for c in cells if "synapses_layers(" in c.source)
    assert "same table as the array form: True" in chunked
    if probe["n"]:
        viewed = next(text(c) for c in cells if "center_on_synapse(viewer" in c.source)
        assert "centred on synapse" in viewed and "http://127.0.0.1:" in viewed
