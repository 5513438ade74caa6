"""Every notebook runs top to bottom with small parameters (its cell tagged `parameters`)."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from helpers_notebooks import errors, run_notebook, text

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

QUICKSTART = "00_quickstart.ipynb"
# small parameters per notebook (the notebooks' own defaults are already quick)
OVERRIDES = {
    QUICKSTART: "SIZE = (12, 128, 128)\nSEED = 1\nOUT_DIR = {tmp!r}\nTHRESHOLD = 0.5\nSEMANTIC = {semantic!r}\n"
                "SERVE = True\n",
    "01_phantom_and_defects.ipynb": "SIZE = (16, 128, 128)\nSEED = 2\nDEFECTS = 'default'\n",
    "02_alignment.ipynb": "SIZE = (8, 192, 192)\nSEED = 2\nOUT_DIR = None\nWORKERS = 0\nSERVE = True\n",
}
# notebooks with their own test module (it runs them and checks their outputs)
OWN_TEST = {"02_defects_and_masks.ipynb", "03_boundary_detection.ipynb", "04_semantic_labels.ipynb", "05_segmentation.ipynb",
            "06_synapses.ipynb", "07_meshes_skeletons.ipynb", "08_scale_out.ipynb", "09_evaluation.ipynb",
            "10_finetune_your_data.ipynb"}


def test_every_notebook_has_overrides():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(OVERRIDES) | OWN_TEST


@pytest.mark.parametrize("name", sorted(set(OVERRIDES) - {QUICKSTART}))
def test_notebook_runs(name, tmp_path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    params[0].source = OVERRIDES[name].format(tmp=str(tmp_path / "data"))
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    # every code cell ran
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_quickstart_default_has_no_semantic_input():
    """The quickstart's default feeds no semantic labels, and nothing in it names the ground-truth semantic
    layer: the only way to it is ``dataset_semantic(..., 'oracle')``, which labels the run."""
    nb = nbformat.read(NOTEBOOKS / QUICKSTART, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    assert "SEMANTIC = 'none'" in params.source
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "gt/image_frame/semantic" not in code and "gt/semantic" not in code


def test_quickstart_runs_with_the_semantic_net(tmp_path):
    """Run with the shipped semantic net: its probabilities (not the ground truth) reach the agglomeration,
    and the scores equal evaluate() on the written layers."""
    data = tmp_path / "data"
    nb, probed = run_notebook(QUICKSTART, OVERRIDES[QUICKSTART].format(tmp=str(data), semantic="net"), tmp_path,
                              probe="{'semantic_url': semantic_url, 'source': semantic_source, "
                                    "'arand': scores['arand'], 'seg': report['segmentation']}")
    assert not errors(nb)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    assert probed["semantic_url"].endswith("data/semantic") and probed["source"].startswith("semantic net")
    assert not any("ORACLE" in text(c) for c in nb.cells if c.cell_type == "code")
    from emkit.evaluate import evaluate
    from emkit.io import Layer

    seg = Layer.open(probed["seg"]).read()
    gt = Layer.open(data / "gt/image_frame/segmentation").read()
    assert probed["arand"] == evaluate(seg, gt)["arand"]
    assert Layer.open(data / "semantic").num_channels == 5


def test_quickstart_oracle_is_labelled(tmp_path):
    nb, probed = run_notebook(QUICKSTART, OVERRIDES[QUICKSTART].format(tmp=str(tmp_path / "data"), semantic="oracle")
                              .replace("SERVE = True", "SERVE = False"), tmp_path,
                              probe="{'source': semantic_source}")
    assert not errors(nb)
    assert probed["source"].startswith("oracle: ground-truth semantic labels")
    assert any("ORACLE RUN" in text(c) for c in nb.cells if c.cell_type == "code")

