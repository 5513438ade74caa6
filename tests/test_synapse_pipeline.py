"""The synapse stage end to end: chunked over layers (``synapses_layers``, ``emkit synapses``) equals
the array form (``find_synapses``); resumes; refuses to overwrite; runs on a dask LocalCluster;
``emkit evaluate --synapses`` prints the one-call scores.

Models here are the phantom's ground truth (``truth:DIR``: the true clefts as the probability map,
the true partners by overlap) so the tests check the stage's plumbing, merge and table; the shipped
cleft and partner nets are exercised in the README tour and the demo."""
import json

import numpy as np
import pandas as pd
import pytest

from emkit.errors import InputError, LayerExistsError
from emkit.io import Layer
from emkit.synapse import SynapseParams, find_synapses, synapses_layers
from emkit.synapse.pipeline import RUN_FILE


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from emkit.phantom import PhantomParams, make_phantom, write_phantom

    root = tmp_path_factory.mktemp("synds") / "ph"
    ph = make_phantom((16, 192, 192), seed=1, defects="default",
                      params=PhantomParams(synapses_per_um3=6.0, min_synapse_distance_nm=250))
    write_phantom(ph, str(root), progress=False)
    img = Layer.open(root / "image").read()
    seg = Layer.open(root / "gt/image_frame/segmentation").read()
    return {"root": root, "truth": f"truth:{root}", "image": img, "seg": seg, "n_true": len(ph.synapses)}


@pytest.fixture(scope="module")
def serial(ds, tmp_path_factory):
    """One serial chunked run, shared (tests that change it work on a copy)."""
    out = tmp_path_factory.mktemp("synserial") / "syn"
    return out, _run(ds, out)


def _run(ds, out, **kw):
    kw.setdefault("chunk_size", (8, 64, 64))
    kw.setdefault("cleft_model", ds["truth"])
    kw.setdefault("partner_model", ds["truth"])
    return synapses_layers(ds["root"] / "image", ds["root"] / "gt/image_frame/segmentation", out, progress=False,
                           **kw)


def _table(out):
    return pd.read_parquet(out / "synapses.parquet")


def test_chunked_equals_array_and_scores(ds, serial):
    out, rep = serial
    arr = find_synapses(ds["image"], ds["seg"], resolution=(40, 8, 8), cleft_model=ds["truth"],
                        partner_model=ds["truth"], return_all=True)
    t = _table(out)
    assert len(t) >= 5 and rep["n_synapses"] == len(t) == len(arr["table"])
    pd.testing.assert_frame_equal(t.drop(columns="cleft_ids"), arr["table"].drop(columns="cleft_ids"),
                                  check_exact=False, rtol=1e-12)
    assert t["cleft_ids"].map(list).tolist() == arr["table"]["cleft_ids"].tolist()
    np.testing.assert_array_equal(Layer.open(out / "clefts").read(), arr["clefts"])
    assert (t["pre_id"] != t["post_id"]).all() and (t["pre_id"] > 0).all()
    edges = pd.read_parquet(out / "edges.parquet")
    assert edges["synapse_count"].sum() == len(t) and rep["summary"]["edges"] == len(edges)
    prov = json.loads((out / "synapses.json").read_text())
    assert prov["models"]["cleft"]["oracle"] and prov["layers"]["segmentation"].endswith("gt/image_frame/segmentation")
    assert prov["params"]["merge_distance_nm"] == 700.0 and prov["chunk_size"] == [8, 64, 64]
    # the oracle finds every true synapse with its partners (clefts lost to defects aside)
    from emkit.evaluate import synapse_scores_dirs

    s = synapse_scores_dirs(out, ds["root"])
    assert s["precision"] == 1.0 and s["partner_accuracy"] == 1.0 and s["recall"] >= 0.8
    assert s["edges_spurious"] == 0 and s["edges_found"] == len(edges)
    # the command prints the same numbers
    from emkit.cli.main import main

    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["evaluate", "--synapses", str(out), str(ds["root"])]) == 0
    cli = json.loads(buf.getvalue())
    assert {k: cli[k] for k in ("precision", "recall", "partner_accuracy", "edges_found", "edges_missed")} == \
        {k: s[k] for k in ("precision", "recall", "partner_accuracy", "edges_found", "edges_missed")}


def test_resume_overwrite_and_refusals(ds, serial, tmp_path):
    import shutil

    out = tmp_path / "syn"
    shutil.copytree(serial[0], out)
    before = _table(out)
    clefts_info = (out / "clefts" / "info").stat().st_mtime_ns
    # interrupted after the components: the partner step and the table are redone, the rest skipped
    run = json.loads((out / RUN_FILE).read_text())
    run["done"] = ["cleft_prob", "clefts"]
    (out / RUN_FILE).write_text(json.dumps(run))
    (out / "synapses.json").unlink()
    (out / "synapses.parquet").unlink()
    rep = _run(ds, out)
    assert rep["skipped"] == ["cleft_prob", "clefts"] and set(rep["seconds"]) == {"partners", "synapses"}
    assert (out / "clefts" / "info").stat().st_mtime_ns == clefts_info
    pd.testing.assert_frame_equal(_table(out), before)
    # a finished output is never overwritten silently; other arguments are refused too
    with pytest.raises(LayerExistsError, match="finished synapse output"):
        _run(ds, out)
    with pytest.raises(LayerExistsError, match="other arguments.*params"):
        _run(ds, out, params=SynapseParams(merge_distance_nm=100))
    # a folder with someone else's files is refused before anything is written
    other = tmp_path / "other"
    other.mkdir()
    Layer.create(other / "clefts", "segmentation", (4, 8, 8))
    with pytest.raises(LayerExistsError, match="already holds clefts"):
        _run(ds, other)
    assert not (other / "synapses.json").exists()
    # overwrite recomputes
    rep = _run(ds, out, overwrite=True, params=SynapseParams(merge_distance_nm=100))
    assert rep["skipped"] == [] and len(_table(out)) >= len(before)  # a smaller merge distance merges less
    assert json.loads((out / "synapses.json").read_text())["params"]["merge_distance_nm"] == 100
    # bad inputs name the bad value
    with pytest.raises(InputError, match="expected a segmentation layer"):
        synapses_layers(ds["root"] / "image", ds["root"] / "image", tmp_path / "x", cleft_model=ds["truth"],
                        partner_model=ds["truth"], progress=False)
    with pytest.raises(InputError, match="no model 'nope'"):
        synapses_layers(ds["root"] / "image", ds["root"] / "gt/image_frame/segmentation", tmp_path / "y",
                        cleft_model="nope", partner_model=ds["truth"], progress=False)
    with pytest.raises(InputError, match="no such dataset folder"):
        _run(ds, tmp_path / "z", cleft_model="truth:" + str(tmp_path / "missing"))


def test_local_cluster_equals_serial(ds, serial, tmp_path):
    serial = serial[0]
    out = tmp_path / "dask"
    rep = _run(ds, out, workers=2)
    assert rep["runner"].startswith("local dask cluster, 2 worker")
    pd.testing.assert_frame_equal(_table(out), _table(serial))
    np.testing.assert_array_equal(Layer.open(out / "clefts").read(), Layer.open(serial / "clefts").read())


def test_cli_synapses(ds, tmp_path, capsys):
    from emkit.cli.main import main

    out = tmp_path / "cli"
    args = ["synapses", str(ds["root"] / "image"), str(ds["root"] / "gt/image_frame/segmentation"), str(out),
            "--cleft-model", ds["truth"], "--partner-model", ds["truth"], "--quiet", "--min-size", "10",
            "--cleft-threshold", "0.4", "--workers", "0"]
    assert main(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_synapses"] == len(_table(out)) and rep["summary"]["synapses"] == rep["n_synapses"]
    prov = json.loads((out / "synapses.json").read_text())
    assert prov["params"]["cleft"] == {"threshold": 0.4, "min_size_voxels": 10, "connectivity": 26}
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_nets_path_chunked_equals_array(ds, tmp_path):
    """The net path (cleft inference over layers, the partner net chunk by chunk) with small
    untrained nets saved as checkpoints: the layers' table equals the array form's. (The shipped
    nets' quality is measured elsewhere; here only the plumbing between the stages.)"""
    import torch

    from emkit.nets import NetConfig, RSUNet, save
    from emkit.nets.config import cleft_heads
    from emkit.synapse import CleftParams
    from emkit.synapse.partners import PartnerParams, build_partner_net

    torch.manual_seed(0)
    cleft = save(RSUNet(NetConfig(in_channels=1, widths=(4, 8, 8), heads=cleft_heads(), resolution=(40, 8, 8))),
                 tmp_path / "cleft.pt")
    partner = save(build_partner_net((40, 8, 8), PartnerParams(widths=(4, 8, 8))), tmp_path / "partner.pt")
    # an untrained net's output spreads over 0..1: a high threshold leaves a few clefts. It is the
    # one recorded beside the checkpoint (as for shipped models), used when none is given.
    (tmp_path / "cleft.json").write_text(json.dumps({"cleft_threshold": 0.9}))
    params = SynapseParams(cleft=CleftParams(min_size_voxels=5))
    out = tmp_path / "nets"
    rep = _run(ds, out, cleft_model=str(cleft), partner_model=str(partner), params=params, chunk_size=(16, 96, 96))
    arr = find_synapses(ds["image"], ds["seg"], cleft_model=str(cleft), partner_model=str(partner), params=params,
                        return_all=True)
    assert rep["n_clefts"] == len(arr["cleft_table"]) >= 2
    np.testing.assert_allclose(Layer.open(out / "cleft_prob").read()[0], arr["cleft_prob"], atol=1e-6)
    parts = pd.read_parquet(out / "partners.parquet")
    pd.testing.assert_frame_equal(parts.reset_index(drop=True), arr["partners"].reset_index(drop=True),
                                  check_exact=False, rtol=1e-6)
    t = _table(out)
    pd.testing.assert_frame_equal(t.drop(columns="cleft_ids"), arr["table"].drop(columns="cleft_ids"),
                                  check_exact=False, rtol=1e-9)
    prov = json.loads((out / "synapses.json").read_text())
    assert prov["models"]["cleft"]["path"] == str(cleft) and len(prov["models"]["partner"]["weights"]) == 16
    assert prov["params"]["cleft"]["threshold"] == 0.9
