"""`emkit demo` runs the pipeline on the phantom, prints scores and a viewer link, and never
overwrites silently."""
import json
import urllib.request

from emkit.cli.main import main
from emkit.io import Layer


def test_demo_runs_pipeline_and_reuses(tmp_path, capsys):
    out2 = tmp_path / "demo2"
    assert main(["demo", str(out2), "--size", "12,128,128", "--seed", "3", "--serve", "no"]) == 0
    text = capsys.readouterr().out
    assert "Neuroglancer: http://127.0.0.1:" in text and "adapted Rand error" in text
    img = Layer.open(out2 / "image")
    seg = Layer.open(out2 / "seg/segmentation")
    assert img.size == seg.size == (12, 128, 128)
    assert len(set(seg.read().ravel().tolist())) > 5
    before = (out2 / "seg/segmentation/info").stat().st_mtime_ns
    assert main(["demo", str(out2), "--size", "12,128,128", "--serve", "no"]) == 0
    assert "reused from" in capsys.readouterr().out
    assert (out2 / "seg/segmentation/info").stat().st_mtime_ns == before


def test_demo_scores_and_link(tmp_path):
    from emkit.demo import run_demo
    from emkit.evaluate import evaluate
    from emkit.view import serve

    res = run_demo(str(tmp_path / "d"), size=(12, 128, 128), seed=3, defects="none", progress=False)
    assert {"image", "affinities", "seg/segmentation", "gt/image_frame/segmentation"} <= set(res.layers)
    aff = Layer.open(res.layers["affinities"])
    assert aff.kind.name == "affinities" and 0.05 < float(aff.read().mean()) < 0.99
    seg = Layer.open(res.layers["seg/segmentation"]).read()
    gt = Layer.open(res.layers["gt/image_frame/segmentation"]).read()
    want = evaluate(seg, gt, k=5)
    assert res.scores["arand"] == want["arand"] and res.scores["voi_split"] == want["voi_split"]
    assert json.dumps(res.scores, allow_nan=True)
    with serve(res.out_dir) as handle:
        page = urllib.request.urlopen(handle.url, timeout=10).read()
        assert b"<html" in page.lower() or b"<!doctype" in page.lower()
