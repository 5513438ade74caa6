"""`emkit run` on an unaligned phantom: the align stage first, scored against the true fields."""
from __future__ import annotations

import json

import numpy as np
import pytest

from emkit.cli.main import main as cli
from emkit.errors import InputError


def test_alignment_residual_is_the_distance_to_the_truth():
    from emkit.evaluate import alignment_residual

    rng = np.random.default_rng(0)
    truth = rng.normal(0, 5, (4, 2, 16, 16)).astype(np.float32)
    off = truth.copy()
    off[:, 0] += 3.0
    off[:, 1] += 4.0  # 5 px away everywhere
    r = alignment_residual(off, truth)
    assert r["median_px"] == pytest.approx(5.0, abs=1e-4) and r["max_px"] == pytest.approx(5.0, abs=1e-4)
    assert r["section_median_px"][0] is None  # the reference section is not scored by default
    where = np.zeros((4, 16, 16), bool)
    where[2] = True
    off[2] = truth[2]
    r = alignment_residual(off, truth, where)
    assert r["median_px"] == 0.0 and r["worst_section"] == 2 and r["n_pixels"] == 256
    with pytest.raises(InputError, match=r"\(z, 2, y, x\)"):
        alignment_residual(truth[:, 0], truth[:, 0])
    with pytest.raises(InputError, match="differ"):
        alignment_residual(truth, truth[:3])
    with pytest.raises(InputError, match="no pixel"):
        alignment_residual(truth, truth, np.zeros((4, 16, 16), bool))


def _config(tmp_path, **unaligned):
    import yaml

    cfg = {"input": {"phantom": {"shape": [8, 192, 192], "seed": 2, "defects": "none", "unaligned": unaligned}},
           "output": str(tmp_path / "run"),
           "stages": {"align": {}, "boundary": {}, "segment": {}, "evaluate": {}}}
    path = tmp_path / "unaligned.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_run_aligns_an_unaligned_phantom_and_reports_the_residual(tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(["run", _config(tmp_path), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    run = tmp_path / "run"
    # the phantom stage wrote an unaligned phantom with its true fields
    assert (run / "gt" / "fields.npz").is_file() and (run / "align" / "field" / "info").is_file()
    scores = json.loads((run / "evaluation" / "scores.json").read_text())
    a = scores["alignment"]
    # the sections moved by several px; the align stage's residual is reported next to it (how small it
    # gets is benchmarks/align.py's business and tests/test_align*.py's)
    assert a["unaligned_median_px"] > 4.0
    assert np.isfinite(a["median_px"]) and a["p95_px"] >= a["median_px"] and a["section_median_px"][0] is None
    # the score itself: the true fields as an aligner's output score ~0, and a field 2 px off scores 2
    from emkit.align.fields import invert
    from emkit.evaluate import alignment_residual_dirs
    from emkit.io import Layer

    with np.load(run / "gt" / "displacement.npz") as z:
        truth = invert(np.stack([z["dy"], z["dx"]], axis=1).astype(np.float32), iterations=60)
    field = Layer.open(str(run / "align" / "field"))
    perfect = Layer.create(str(tmp_path / "perfect"), "probability", field.size, resolution=field.resolution,
                           num_channels=2, channel_names=("dy", "dx"))
    perfect.write(np.ascontiguousarray(truth.transpose(1, 0, 2, 3)))
    assert alignment_residual_dirs(perfect.url, str(run))["median_px"] < 0.05
    perfect = Layer.create(str(tmp_path / "off"), "probability", field.size, resolution=field.resolution,
                           num_channels=2, channel_names=("dy", "dx"))
    perfect.write(np.ascontiguousarray((truth + np.float32(2.0) * np.array([0, 1], np.float32)[:, None, None])
                                       .transpose(1, 0, 2, 3)))
    assert alignment_residual_dirs(perfect.url, str(run))["median_px"] == pytest.approx(2.0, abs=0.05)
    with pytest.raises(InputError, match="not a phantom folder"):
        alignment_residual_dirs(perfect.url, str(tmp_path))
    assert scores["ground_truth"].endswith("gt/segmentation")  # scored in the clean frame
    prov = json.loads((run / "provenance" / "evaluate.json").read_text())
    assert "alignment_median_px" in json.dumps(prov)
    assert json.loads((run / "provenance" / "phantom.json").read_text())
    # another amount of movement is another phantom: refused, naming the field
    capsys.readouterr()
    rc = cli(["run", _config(tmp_path, shift_px=5.0), "--quiet"])
    assert rc != 0
    assert "input.phantom.unaligned.shift_px" in capsys.readouterr().err
