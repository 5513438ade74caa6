"""notebooks/02_defects_and_masks.ipynb runs top to bottom with small parameters and shows what it says."""
from helpers_notebooks import code_cells, errors, run_notebook
from helpers_require import require

NAME = "02_defects_and_masks.ipynb"
# the same string the lead's tests/test_notebooks.py OVERRIDES could hold for this notebook
OVERRIDE = "SIZE = (8, 256, 256)\nSEED = 3\nDEFECTS = 'fold,crack,resin,slip,step'\nOUT_DIR = {tmp!r}\nSERVE = True\n"


def test_notebook_02_runs(tmp_path):
    require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")
    nb, probed = run_notebook(NAME, OVERRIDE.format(tmp=str(tmp_path / "data")), tmp_path,
                              probe="{'iou': {k: iou(found[k], truth[k]) for k in found}, "
                                    "'classes': explorer.classify(), 'low': explorer.classify(-0.2), "
                                    "'mask_in_sum': int(mask_in.sum()), 'urls': list(found_urls.values())}")
    assert not errors(nb)
    assert all(c.get("execution_count") for c in code_cells(nb))
    # the defects were found, the widget shown, the viewer started, the layers written
    assert probed["iou"]["fold"] > 0.3 and probed["iou"]["crack"] > 0.05
    outs = [o for c in code_cells(nb) for o in c.get("outputs", [])]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs)
    assert any("image/png" in o.get("data", {}) for o in outs)
    assert any("http://127.0.0.1:" in (o.get("text", "") or "") for o in outs)
    assert probed["mask_in_sum"] > 0 and all((tmp_path / "data" / "defects_found" / "masks" / k / "info").exists()
                                            for k in ("fold", "crack", "resin"))
    # the slider's threshold changes the classification: at -0.2 nothing is misaligned
    assert probed["low"]["slips"] == [] and probed["low"]["steps"] == []
    assert probed["classes"]["slips"] or probed["classes"]["steps"]
