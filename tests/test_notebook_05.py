"""notebooks/05_segmentation.ipynb runs top to bottom with small parameters and shows what it says."""
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_segmentation.ipynb"
# the same string the lead's tests/test_notebooks.py OVERRIDES should hold for this notebook
OVERRIDE = "SIZE = (16, 128, 128)\nSEED = 1\nOUT_DIR = {tmp!r}\nSERVE = True\nTHRESHOLDS = (0.05, 0.2, 0.5)\n"


def _text(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            parts.append(o.text)
        elif "data" in o:
            parts.append(o.data.get("text/plain", "") + o.data.get("text/html", ""))
    return "\n".join(parts)


def test_notebook_05_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    params[0].source = OVERRIDE.format(tmp=str(tmp_path / "data"))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    assert all(c.get("execution_count") for c in code)
    text = "\n".join(_text(c) for c in code)
    # the tuner widget was displayed, the sweep table has one row per threshold, the viewer started
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in code for o in c.get("outputs", []))
    table = next(_text(c) for c in code if "sweep(" in c.source)
    assert all(t in table for t in ("0.05", "0.2", "0.5")) and "voi_split" in table
    assert "http://127.0.0.1:" in text
    # the tuning section compared defaults and tuned parameters on the held-out half and wrote the file
    held = next(_text(c) for c in code if "tune(" in c.source)
    assert "defaults" in held and "tuned" in held and "arand" in held
    import json

    assert set(json.loads((tmp_path / "data" / "tuned.json").read_text())) >= {"watershed", "agglomeration", "threshold"}
    assert (tmp_path / "data" / "image" / "info").exists() and (tmp_path / "data" / "gt" / "segmentation" / "info").exists()
    assert any(p.name.startswith("segmentation_t") for p in (tmp_path / "data").iterdir())
