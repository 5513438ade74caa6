"""Neuroglancer views: the file server, state/link builders, ``emkit view``, and a real headless
Chromium rendering the layers."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from emkit.errors import InputError
from emkit.view import (FileServer, find_layers, neuroglancer_link, neuroglancer_state, resolve_layers, serve,
                        show)
from helpers_require import require, require_that
from helpers_view import (chromium_page, distinct_colours, find_chromium, make_view_dataset, poll,
                          screenshot_array)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewdata")
    data = make_view_dataset(str(root))
    data["root"] = str(root)
    return data


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --- the file server -------------------------------------------------------------------------
def test_file_server_serves_info_and_gzip_chunks_with_cors(dataset):
    aff = dataset["paths"]["affinities"]
    gz = sorted(f for f in os.listdir(os.path.join(aff, "8_8_40")) if f.endswith(".gz"))
    assert gz, "affinities chunks should be gzipped on disk (emkit.io.kinds)"
    with FileServer() as srv:
        base = srv.url_for(aff)
        assert base.startswith("http://127.0.0.1:")
        status, headers, body = _get(base + "/info")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
        info = json.loads(body)
        assert info["num_channels"] == 3 and info["data_type"] == "float32"

        # a chunk stored as foo.gz is served at foo, gzip-encoded, and holds the right voxels
        name = "0-64_0-64_0-8"
        assert name + ".gz" in gz and not os.path.exists(os.path.join(aff, "8_8_40", name))
        status, headers, body = _get(f"{base}/8_8_40/{name}", {"Accept-Encoding": "gzip"})
        assert status == 200
        assert headers["Content-Encoding"] == "gzip" and headers["Access-Control-Allow-Origin"] == "*"
        raw = np.frombuffer(gzip.decompress(body), np.float32).reshape(3, 8, 64, 64)  # c, z, y, x (F order xyzc)
        np.testing.assert_array_equal(raw, dataset["affinities"][:, :8, :64, :64])

        # CORS pre-flight, byte ranges (sharded layers), missing files and escapes
        req = urllib.request.Request(base + "/info", method="OPTIONS")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 204 and "GET" in r.headers["Access-Control-Allow-Methods"]
        status, headers, part = _get(base + "/info", {"Range": "bytes=0-9"})
        assert status == 206 and part == _head(os.path.join(aff, "info"), 10)
        assert headers["Content-Range"] == f"bytes 0-9/{os.path.getsize(os.path.join(aff, 'info'))}"
        assert _get(f"{base}/8_8_40/999-1000_0-64_0-8")[0] == 404
        assert _get(base + "/../../../etc/passwd")[0] == 404
        assert _get(base + "/%2e%2e/%2e%2e/image/info")[0] == 404
        assert _get(srv.base_url.rsplit("/", 1)[0] + "/wrongtoken/0/info")[0] == 404
        with pytest.raises(InputError, match="not a folder"):
            srv.url_for(os.path.join(aff, "nope"))
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/info", timeout=2)


def _head(path, n):
    with open(path, "rb") as f:
        return f.read(n)


# --- finding layers, state and links ---------------------------------------------------------
def test_find_layers_expands_a_dataset_folder(dataset, tmp_path):
    layers = find_layers(dataset["root"])
    assert list(layers) == ["image", "affinities", "gt/segmentation", "masks/fold"]  # images, segs, masks
    assert find_layers(dataset["paths"]["image"]) == {"image": "file://" + dataset["paths"]["image"]}
    refs = resolve_layers([dataset["root"], dataset["paths"]["image"]], names=["ds", "em"])
    assert [r.name for r in refs] == ["ds/image", "ds/affinities", "ds/gt/segmentation", "ds/masks/fold", "em"]
    assert [r.kind for r in refs] == ["image", "affinities", "segmentation", "mask", "image"]
    assert refs[0].resolution == (40.0, 8.0, 8.0) and refs[0].size == (16, 128, 128)
    with pytest.raises(InputError, match="no such layer"):
        find_layers(tmp_path / "missing")
    with pytest.raises(InputError, match="no Precomputed layer"):
        find_layers(tmp_path)
    with pytest.raises(InputError, match="2 name"):
        resolve_layers([dataset["root"]], names=["a", "b"])


def test_state_for_local_layers_sets_types_shaders_dimensions_and_centre(dataset):
    state = neuroglancer_state(dataset["root"], sources=lambda r: "precomputed://http://host/" + r.name)
    assert state["dimensions"] == {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [40e-9, "m"]}
    assert state["position"] == [64.0, 64.0, 8.0]  # x, y, z voxels: the centre
    by = {l["name"]: l for l in state["layers"]}
    assert [l["name"] for l in state["layers"]] == ["image", "affinities", "gt/segmentation", "masks/fold"]
    assert by["image"]["type"] == "image" and "shader" not in by["image"] and by["image"].get("visible", True)
    assert by["affinities"]["visible"] is False  # only the first image-like layer shows at first
    assert by["gt/segmentation"]["type"] == "segmentation"
    assert "emitRGB" in by["affinities"]["shader"] and "getDataValue(2)" in by["affinities"]["shader"]
    assert by["masks/fold"]["type"] == "image" and "emitRGBA" in by["masks/fold"]["shader"]
    assert by["gt/segmentation"]["source"] == "precomputed://http://host/gt/segmentation"
    # a local layer cannot be given to a browser without a server
    with pytest.raises(InputError, match="must be served"):
        neuroglancer_state([dataset["paths"]["image"]])


def test_state_and_link_for_remote_layers():
    state = neuroglancer_state({"em": "gs://bucket/em", "seg": "s3://bucket/seg"}, kinds={"em": "image"},
                               layout="xy", fetch_remote=False)  # tests make no outside requests
    assert "dimensions" not in state  # unknown here: Neuroglancer takes them from the data
    by = {l["name"]: l for l in state["layers"]}
    assert by["em"] == {"type": "image", "source": "precomputed://gs://bucket/em", "name": "em", "opacity": 1.0}
    assert by["seg"]["type"] == "segmentation" and by["seg"]["source"] == "precomputed://s3://bucket/seg"
    link = neuroglancer_link(state)
    assert link.startswith("https://neuroglancer-demo.appspot.com/#!")
    assert json.loads(urllib.parse.unquote(link.split("#!", 1)[1])) == state
    assert neuroglancer_link(state, base="http://localhost:8080/").startswith("http://localhost:8080/#!%7B")
    with pytest.raises(InputError):
        neuroglancer_link("not a state")


def test_remote_dataset_is_read_over_http(dataset):
    """An http(s) dataset prefix: info files fetched as a browser would, layers found by name."""
    with FileServer() as srv:
        base = srv.url_for(dataset["root"])
        state = neuroglancer_state([base])
        by = {l["name"]: l for l in state["layers"]}
        assert set(by) == {"image", "affinities", "gt/segmentation"}  # the conventional names (masks/* are not)
        assert by["gt/segmentation"] == {"type": "segmentation", "source": f"precomputed://{base}/gt/segmentation",
                                         "name": "gt/segmentation", "selectedAlpha": 0.45}
        assert state["dimensions"]["z"] == [40e-9, "m"] and state["position"] == [64.0, 64.0, 8.0]


def test_serve_handle_and_notebook_repr(dataset):
    with show(dataset["paths"]["image"]) as h:
        assert h.url.startswith("http://127.0.0.1:") and "/v/" in h.url
        status, _, page = _get(h.url)
        assert status == 200 and b"<html" in page.lower()
        html = h._repr_html_()
        assert h.url in html and "<iframe" in html
        src = h.state["layers"][0]["source"]
        status, _, body = _get(src[len("precomputed://"):] + "/info")
        assert status == 200 and json.loads(body)["data_type"] == "uint8"
        assert h.link().startswith("https://neuroglancer-demo.appspot.com/#!")
        assert h.wait(0.2) is False  # still serving
    assert h.wait() is True  # stopped: returns at once
    with pytest.raises(urllib.error.URLError):  # stopped: the data is no longer served
        urllib.request.urlopen(src[len("precomputed://"):] + "/info", timeout=2)


# --- the command ----------------------------------------------------------------------------
def test_cli_view_no_block_and_errors(dataset, capsys, tmp_path):
    from emkit.cli.main import main

    assert main(["view", dataset["root"], "--no-block"]) == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("http://127.0.0.1:") and "/v/" in out.out
    assert "gt/segmentation" in out.err and "segmentation" in out.err
    assert main(["view", str(tmp_path / "missing"), "--no-block"]) == 2
    assert "no such layer" in capsys.readouterr().err
    assert main(["view", dataset["paths"]["image"], "--name", "a", "b", "--no-block"]) == 2


def test_cli_view_serves_until_ctrl_c(dataset):
    proc = subprocess.Popen([sys.executable, "-m", "emkit.cli.main", "view", dataset["root"]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
        status, _, page = _get(url)
        assert status == 200 and b"<html" in page.lower()
        assert proc.poll() is None  # still serving
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# --- the real thing: headless Chromium ---------------------------------------------------------
@pytest.mark.browser
def test_neuroglancer_renders_layers_in_headless_chromium(dataset, tmp_path):
    require_that(find_chromium() is not None,
                 "Debian's chromium (`make system-deps` / .ci/system-deps.sh) for the Neuroglancer rendering test")
    require("playwright.sync_api", "playwright (the 'test' extra) for the Neuroglancer rendering test")
    handle = serve(dataset["root"])
    try:
        with chromium_page(handle.url, tmp_path / "profile") as page:
            # 1. default view (4 panels): the xy panel (top left) shows the coloured segments
            shot = tmp_path / "neuroglancer_4panel.png"

            def segments_drawn():
                rgb = screenshot_array(page, shot)
                panel = rgb[110:330, 210:430]  # inside the volume in the xy panel
                return distinct_colours(panel) >= 6 and panel.std() > 20

            assert poll(segments_drawn, 40), f"segmentation did not render; see {shot}"

            # 2. the image alone: gray levels with the cells' structure
            with handle.viewer.txn() as s:
                s.layout = "xy"
                for name in ("affinities", "gt/segmentation", "masks/fold"):
                    s.layers[name].visible = False
            shot2 = tmp_path / "neuroglancer_image.png"

            def image_drawn():
                rgb = screenshot_array(page, shot2).astype(int)
                centre = rgb[240:525, 495:785]  # inside the volume (x 483-797, y 227-541 at this zoom)
                gray = np.abs(centre[..., 0] - centre[..., 2]).mean() < 6
                return gray and centre.std() > 25 and (centre[..., 0] < 70).mean() > 0.03  # membranes

            assert poll(image_drawn, 30), f"image layer did not render as gray structure; see {shot2}"

            # 3. affinities alone (served from .gz chunks): channel z red on the left, x blue on the right
            with handle.viewer.txn() as s:
                s.layers["image"].visible = False
                s.layers["affinities"].visible = True
                s.layers["affinities"].opacity = 1.0
            shot3 = tmp_path / "neuroglancer_affinities.png"

            def affinities_drawn():
                rgb = screenshot_array(page, shot3).astype(int)
                left = rgb[240:525, 495:630].reshape(-1, 3).mean(0)
                right = rgb[240:525, 650:785].reshape(-1, 3).mean(0)
                return left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60

            assert poll(affinities_drawn, 30), f"affinities did not render red|blue; see {shot3}"
    finally:
        handle.stop()
