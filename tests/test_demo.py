"""`emkit demo` writes the phantom dataset, prints a viewer link, and never overwrites silently."""
import urllib.request

from emkit.cli.main import main
from emkit.io import Layer


def test_demo_writes_dataset_and_link(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out), "--size", "12,128,128", "--seed", "3", "--serve", "no"]) == 0
    text = capsys.readouterr().out
    assert "Neuroglancer: http://127.0.0.1:" in text
    img = Layer.open(out / "image")
    seg = Layer.open(out / "gt/segmentation")
    assert img.size == (12, 128, 128) and seg.kind.name == "segmentation"
    assert img.read().std() > 10 and len(set(seg.read().ravel().tolist())) > 5
    before = (out / "image" / "info").stat().st_mtime_ns
    # a second run reuses the dataset rather than overwriting it
    assert main(["demo", str(out), "--size", "12,128,128", "--serve", "no"]) == 0
    assert "using the dataset already in" in capsys.readouterr().out
    assert (out / "image" / "info").stat().st_mtime_ns == before


def test_demo_link_serves_while_running(tmp_path):
    from emkit.demo import run_demo
    from emkit.view import serve

    res = run_demo(str(tmp_path / "d"), size=(8, 96, 96), defects="none", progress=False)
    assert "image" in res.layers and "gt/segmentation" in res.layers
    with serve(res.out_dir) as handle:
        page = urllib.request.urlopen(handle.url, timeout=10).read()
        assert b"<html" in page.lower() or b"<!doctype" in page.lower()
