"""Every notebook runs top to bottom with small parameters (its cell tagged `parameters`)."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# small parameters per notebook (the notebooks' own defaults are already quick)
OVERRIDES = {
    "00_quickstart.ipynb": "SIZE = (12, 128, 128)\nSEED = 1\nOUT_DIR = {tmp!r}\nTHRESHOLD = 0.5\nSERVE = True\n",
    "01_phantom_and_defects.ipynb": "SIZE = (16, 128, 128)\nSEED = 2\nDEFECTS = 'default'\n",
}
# notebooks with their own test module (it runs them and checks their outputs)
OWN_TEST = {"03_boundary_detection.ipynb", "04_semantic_labels.ipynb", "05_segmentation.ipynb"}


def test_every_notebook_has_overrides():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(OVERRIDES) | OWN_TEST


@pytest.mark.parametrize("name", sorted(OVERRIDES))
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
