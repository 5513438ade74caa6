"""README.md is a test: its tour runs as written, in order, each output feeding the next.

The bash blocks of "A short tour" (except one marked as needing a GPU) run line by line in a
temporary folder that plays the repository root (tests/helpers_tour.py), with only the sizes of
helpers_tour.SUBSTITUTIONS shrunk; any non-zero exit fails. The Python snippet runs too.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from helpers_tour import (README, SUBSTITUTIONS, commands, failure_message, run_tour, substitute, tour_blocks,
                          tour_python)


def test_substitutions_only_shrink_sizes_that_the_readme_has():
    text = README.read_text()
    blocks = "\n".join(tour_blocks(text) + tour_python(text))
    _, used = substitute(blocks)
    # every substitution of the table that names a README size is used (the rest serve --help examples)
    assert {"--size 64,512,512", "--iterations 200", "--bbox 0:32,0:512,0:512"} <= set(used)
    for a, b in SUBSTITUTIONS:
        same_option = a.split()[0] == b.split()[0] or a.split("=")[0] == b.split("=")[0]   # --opt V / field=V
        assert same_option or a.startswith("("), (a, b)  # same option, smaller value


def test_tour_runs_as_written(tmp_path_factory):
    root, records = run_tour(tmp_path_factory.getbasetemp())
    lines = [ln for b in tour_blocks() for ln in commands(b)]
    assert records and all(r["rc"] == 0 for r in records), failure_message(records)
    assert len(records) == len(lines)  # every line ran
    # the chain held: infer wrote affinities that segment took, on the image's grid
    from emkit.io import Layer

    for ds in ("ph", "sstem"):
        img, aff = Layer.open(root / "data" / ds / "image"), Layer.open(root / "data" / ds / "affinities")
        assert aff.kind.name == "affinities" and aff.num_channels == 3
        assert (aff.size, aff.voxel_offset, aff.resolution) == (img.size, img.voxel_offset, img.resolution)
        seg = Layer.open(root / "data" / ds / "seg" / "segmentation")
        assert seg.size == img.size and np.unique(seg.read()).size > 3
    assert Layer.open(root / "data" / "sstem" / "image").resolution == (50, 4, 4)
    assert (root / "runs" / "mine" / "best.pt").is_file() and (root / "runs" / "tuned" / "best.pt").is_file()
    assert Layer.open(root / "data" / "ph" / "affinities_mine").kind.name == "affinities"
    # masks wrote mask layers on the image's grid that infer took
    ph_img = Layer.open(root / "data" / "ph" / "image")
    for name in ("mask_in", "mask_out"):
        m = Layer.open(root / "data" / "ph" / "masks_found" / name)
        assert m.kind.name == "mask" and (m.size, m.resolution) == (ph_img.size, ph_img.resolution)
    assert Layer.open(root / "data" / "ph" / "affinities_masked").kind.name == "affinities"
    # tune wrote a parameter file that segment used
    tuned = json.loads((root / "data" / "ph" / "tuned.json").read_text())
    used = json.loads((root / "data" / "ph" / "seg_tuned" / "params.json").read_text())
    assert used["watershed"] == tuned["watershed"] and used["threshold"] == tuned["threshold"]
    # synapses: found on the segmentation, on the image's grid, with a table, edge list and provenance
    syn = root / "data" / "ph" / "synapses"
    clefts = Layer.open(syn / "clefts")
    assert (clefts.size, clefts.resolution) == (ph_img.size, ph_img.resolution)
    import pandas as pd

    table, edges = pd.read_parquet(syn / "synapses.parquet"), pd.read_parquet(syn / "edges.parquet")
    assert int(edges["synapse_count"].sum()) == len(table)
    prov = json.loads((syn / "synapses.json").read_text())
    assert prov["layers"]["segmentation"].endswith("data/ph/seg/segmentation") and prov["command"].startswith(
        "emkit synapses")
    (scored,) = [r for r in records if r["line"].startswith("emkit evaluate --synapses")]
    out = json.loads(scored["output"][scored["output"].index("{"):])
    assert out["n_pred"] == len(table) and {"precision", "recall", "partner_accuracy", "edges_found"} <= set(out)
    # the view lines printed a link and stopped on Ctrl-C
    views = [r for r in records if r["line"].startswith("emkit view")]
    assert len(views) == 4 and all("http" in r["output"] for r in views)


def test_readme_python_snippet_runs(tmp_path):
    (code,) = tour_python()
    code, used = substitute(code)
    assert used
    p = subprocess.run([sys.executable, "-c", code + "\nassert float(evaluate(seg, gt)['arand']) < 0.5\n"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
