"""`emkit demo` runs the pipeline on the phantom (`emkit run` of the shipped phantom configuration),
prints scores and a viewer link, never overwrites silently, and never reads the ground-truth semantic
labels unless an oracle run is asked for."""
import json
import shutil
import urllib.request

import numpy as np
import pytest

from emkit.cli.main import main
from emkit.errors import InputError
from emkit.io import Layer


def test_demo_runs_pipeline_and_reuses(tmp_path, capsys):
    out2 = tmp_path / "demo2"
    assert main(["demo", str(out2), "--size", "12,128,128", "--seed", "3", "--serve", "no", "--no-synapses"]) == 0
    text = capsys.readouterr().out
    assert "Neuroglancer: http://127.0.0.1:" in text and "adapted Rand error" in text
    assert "semantic input: none" in text and "oracle" not in text
    assert "synapses: " not in text and not (out2 / "synapses").exists()  # asked not to
    img = Layer.open(out2 / "image")
    seg = Layer.open(out2 / "seg/segmentation")
    assert img.size == seg.size == (12, 128, 128)
    assert len(set(seg.read().ravel().tolist())) > 5
    before = (out2 / "seg/segmentation/info").stat().st_mtime_ns
    assert main(["demo", str(out2), "--size", "12,128,128", "--seed", "3", "--serve", "no", "--no-synapses"]) == 0
    text = capsys.readouterr().out
    assert "reused from" in text and "semantic input: none" in text
    assert (out2 / "seg/segmentation/info").stat().st_mtime_ns == before
    assert "phantom" in text.split("reused from")[1].splitlines()[0] and "segment" in text.split("reused from")[1]
    # the recorded segmentation had no semantic input: asking for another one is refused, not mislabelled
    assert main(["demo", str(out2), "--size", "12,128,128", "--seed", "3", "--serve", "no", "--semantic", "oracle",
                 "--no-synapses"]) != 0
    err = capsys.readouterr().err
    assert "stages.segment.semantic: none -> oracle" in err and "--overwrite" in err
    assert (out2 / "seg/segmentation/info").stat().st_mtime_ns == before
    rec = json.loads((out2 / "provenance" / "segment.json").read_text())
    assert rec["status"] == "done" and rec["config"]["stages"]["segment"]["semantic"] == "none"


def test_demo_scores_and_link(tmp_path):
    from emkit.demo import run_demo
    from emkit.evaluate import evaluate
    from emkit.view import serve

    res = run_demo(str(tmp_path / "d"), size=(12, 128, 128), seed=3, defects="none", synapses=False, progress=False)
    assert {"image", "affinities", "seg/segmentation", "gt/image_frame/segmentation"} <= set(res.layers)
    aff = Layer.open(res.layers["affinities"])
    assert aff.kind.name == "affinities" and 0.05 < float(aff.read().mean()) < 0.99
    seg = Layer.open(res.layers["seg/segmentation"]).read()
    gt = Layer.open(res.layers["gt/image_frame/segmentation"]).read()
    want = evaluate(seg, gt, k=5)
    assert res.scores == json.loads(json.dumps(want))  # as recorded in OUT_DIR/evaluation/scores.json
    # the pipeline's products: meshes and skeletons of the segmentation, a pyramid of the image
    info = json.loads((tmp_path / "d" / "seg/segmentation/info").read_text())
    assert info["mesh"] == "mesh" and info["skeletons"] == "skeletons" and len(info["scales"]) >= 2
    assert "meshes" in res.products and "skeletons" in res.products
    with serve(res.out_dir) as handle:
        page = urllib.request.urlopen(handle.url, timeout=10).read()
        assert b"<html" in page.lower() or b"<!doctype" in page.lower()


def _phantom_without_semantic_gt(d):
    """A phantom dataset folder whose ground-truth semantic layers are gone (renamed away)."""
    from emkit.phantom import make_phantom, write_phantom

    write_phantom(make_phantom((12, 128, 128), seed=3, defects="none"), str(d), progress=False)
    for name in ("gt/image_frame/semantic", "gt/semantic"):
        shutil.move(str(d / name), str(d.parent / (d.name + "-" + name.replace("/", "_"))))
        assert not (d / name).exists()


def test_demo_default_never_reads_semantic_ground_truth(tmp_path):
    from emkit.demo import run_demo

    d = tmp_path / "d"
    _phantom_without_semantic_gt(d)
    res = run_demo(str(d), size=(12, 128, 128), seed=3, defects="none", synapses=False, progress=False)
    assert res.reused == ["phantom"] and res.semantic_source == "none" and not res.oracle
    prov = json.loads((d / "provenance" / "segment.json").read_text())
    assert prov["config"]["stages"]["segment"]["semantic"] == "none" and prov["summary"]["semantic_source"] == "none"
    assert not (d / "semantic").exists()
    # the oracle must be asked for (a change of the recorded run, refused without overwrite), and then
    # it needs the ground-truth layer (named in the error)
    with pytest.raises(InputError, match="stages.segment.semantic: none -> oracle"):
        run_demo(str(d), size=(12, 128, 128), seed=3, defects="none", semantic="oracle", synapses=False, progress=False)
    with pytest.raises(InputError, match="gt/image_frame/semantic"):
        run_demo(str(d), size=(12, 128, 128), seed=3, defects="none", semantic="oracle", synapses=False,
                 progress=False, overwrite=True)


def test_demo_semantic_net_feeds_its_probabilities(tmp_path):
    from emkit.demo import run_demo
    from emkit.nets import available_models

    if "semantic" not in available_models():
        pytest.fail("the shipped semantic net is part of the package (emkit/models/semantic.pt)")
    d = tmp_path / "d"
    _phantom_without_semantic_gt(d)
    res = run_demo(str(d), size=(12, 128, 128), seed=3, defects="none", semantic="net", synapses=False,
                   progress=False)
    assert res.semantic_source.startswith("semantic net (semantic)") and not res.oracle
    prob = Layer.open(d / "semantic")
    assert prob.num_channels == 5 and prob.size == (12, 128, 128)
    p = prob.read()
    from emkit.evaluate import semantic_classes

    assert 0.0 <= float(p.min()) and float(p.max()) <= 1.0
    assert len(np.unique(semantic_classes(p))) >= 2  # the net tells classes apart (axon, dendrite, ...)
    prov = json.loads((d / "provenance" / "segment.json").read_text())
    assert prov["config"]["stages"]["segment"]["semantic"] == "net" and "semantic" in prov["config"]["stages"]
    assert prov["summary"]["semantic_source"].startswith("semantic net (semantic)")
    assert "semantic" in res.timings and "seg/segmentation" in res.layers


def test_demo_oracle_is_labelled(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["demo", str(out), "--size", "12,128,128", "--seed", "3", "--defects", "none", "--serve", "no",
                 "--semantic", "oracle", "--no-synapses"]) == 0
    text = capsys.readouterr().out
    assert "semantic input: oracle: ground-truth semantic labels" in text
    assert "[oracle: ground-truth semantic labels; not the pipeline's score]: adapted Rand error" in text
    prov = json.loads((out / "provenance" / "segment.json").read_text())
    assert prov["config"]["stages"]["segment"]["semantic"] == "oracle"
    assert prov["summary"]["semantic_source"].endswith("gt/image_frame/semantic)")
    scores = json.loads((out / "evaluation" / "scores.json").read_text())
    assert scores["oracle"] == "oracle: ground-truth semantic labels"


def test_demo_ends_with_synapses_and_connectivity(tmp_path, capsys):
    """The demo's last numbers: synapses found on its segmentation, scored against the phantom's,
    and the wiring diagram's summary, next to the segmentation scores."""
    import pandas as pd

    from emkit.evaluate import synapse_scores_dirs
    from emkit.nets import available_models

    out = tmp_path / "s"
    assert main(["demo", str(out), "--size", "12,192,192", "--seed", "3", "--serve", "no"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = {key: next(i for i, ln in enumerate(lines) if ln.startswith(key))
          for key in ("segmentation vs ground truth", "clefts: ", "partners: ", "synapses: ", "connectivity: ")}
    assert at["segmentation vs ground truth"] < at["synapses: "] < at["connectivity: "]
    table = pd.read_parquet(out / "synapses" / "synapses.parquet")
    syn, conn = lines[at["synapses: "]], lines[at["connectivity: "]]
    assert syn.startswith(f"synapses: {len(table)} found") and "vs the phantom's 1:" in syn
    s = synapse_scores_dirs(out / "synapses", out)
    assert f"precision {s['precision']:.3f}, recall {s['recall']:.3f}" in syn
    assert f"{s['edges_found']} found, {s['edges_missed']} missed, {s['edges_spurious']} spurious" in conn
    assert f"{len(table)} synapses" in conn
    for what in ("cleft", "partner"):  # a missing net is replaced by the truth, and said so
        line = lines[at[f"{what}s: "]]
        assert line.startswith(f"{what}s: {what} net") if what in available_models() else "oracle" in line
    if "cleft" not in available_models() or "partner" not in available_models():
        assert "[oracle" in syn
    assert main(["demo", str(out), "--size", "12,192,192", "--seed", "3", "--serve", "no"]) == 0
    text = capsys.readouterr().out
    assert "synapses" in text.split("reused from")[1].splitlines()[0] and f"synapses: {len(table)} found" in text
