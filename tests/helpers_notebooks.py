"""Helpers for the notebook tests: run a notebook with its `parameters` cell replaced and a probe cell
appended (it prints a JSON line of values from the kernel), then look at the outputs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PROBE_TAG = "PROBE:"


def run_notebook(name: str, override: str, tmp_path, probe: str | None = None):
    """Execute ``notebooks/<name>`` in ``tmp_path`` with the parameters cell set to ``override`` and
    ``probe`` (an expression giving a JSON-able dict) printed at the end.

    Returns ``(nb, probed)``: the executed notebook (without the probe cell) and the probe's dict.
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    params[0].source = override
    n = len(nb.cells)
    if probe is not None:
        nb.cells.append(nbformat.v4.new_code_cell(f"import json as _json\nprint({PROBE_TAG!r} + _json.dumps({probe}))"))
    # the kernel inherits the environment: conftest's MPLBACKEND=Agg would hide every figure, so the
    # kernel gets Jupyter's inline backend, as in a real notebook
    old = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if old is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old
    probed = None
    if probe is not None:
        cell = nb.cells.pop()
        line = next(ln for o in cell.outputs if o.output_type == "stream" for ln in o.text.splitlines()
                    if ln.startswith(PROBE_TAG))
        probed = json.loads(line[len(PROBE_TAG):])
    assert len(nb.cells) == n
    return nb, probed


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def errors(nb) -> list:
    return [o for c in code_cells(nb) for o in c.get("outputs", []) if o.output_type == "error"]


def outputs_with(nb, mime: str) -> list:
    """Code cells with at least one output of MIME type ``mime`` (e.g. image/png)."""
    return [c for c in code_cells(nb) if any(mime in o.get("data", {}) for o in c.get("outputs", []))]


def text(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            parts.append(o.text)
        elif "data" in o:
            parts.append(o.data.get("text/plain", "") + o.data.get("text/html", ""))
    return "\n".join(parts)
