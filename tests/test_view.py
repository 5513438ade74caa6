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


# --- meshes in the 3D panel ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mesh_dataset(tmp_path_factory):
    """The view dataset with legacy Precomputed meshes of its 12 cells (``emkit mesh``'s output)."""
    from emkit.mesh import mesh_layers

    root = tmp_path_factory.mktemp("viewmesh")
    data = make_view_dataset(str(root))
    data["root"] = str(root)
    seg = data["paths"]["gt/segmentation"]
    rep = mesh_layers(seg, workers=0, progress=False)
    assert rep.segments == 12
    ids, counts = np.unique(data["segmentation"], return_counts=True)
    data["by_size"] = [int(i) for _, i in sorted(zip(-counts, ids))]  # largest first
    return data


def test_file_server_records_requests(dataset):
    with FileServer() as srv:
        base = srv.url_for(dataset["paths"]["image"])
        srv.url_for(dataset["paths"]["affinities"])
        _get(base + "/info")
        _get(base + "/8_8_40/nope")
        assert srv.requests(dataset["paths"]["image"]) == [("info", 200), ("8_8_40/nope", 404)]
        assert srv.requests(dataset["paths"]["affinities"]) == []
        assert [st for _, st in srv.requests()] == [200, 404]


def test_state_selects_the_largest_meshed_segments_and_a_3d_layout(mesh_dataset, dataset, tmp_path):
    from emkit.view.layers import describe_layer
    from emkit.view.segments import largest_segments

    seg = mesh_dataset["paths"]["gt/segmentation"]
    assert describe_layer(seg).mesh == "mesh" and describe_layer(dataset["paths"]["gt/segmentation"]).mesh is None
    top = mesh_dataset["by_size"][:5]
    assert largest_segments(seg) == top
    assert largest_segments(seg, 2) == top[:2] and largest_segments(seg, 0) == []

    src = lambda r: "precomputed://http://host/" + r.name  # noqa: E731
    state = neuroglancer_state(mesh_dataset["root"], sources=src)
    by = {l["name"]: l for l in state["layers"]}
    assert by["gt/segmentation"]["segments"] == [str(i) for i in top]
    assert by["gt/segmentation"].get("visible", True) and by["gt/segmentation"]["notSelectedAlpha"] > 0
    assert state["layout"] == "xy-3d" and state["showSlices"] is False
    assert "segments" not in by["image"]
    # no meshes: nothing selected, the four panels as before
    plain = neuroglancer_state(dataset["root"], sources=src)
    assert plain["layout"] == "4panel" and "showSlices" not in plain
    assert all("segments" not in l for l in plain["layers"])

    # chosen segments, as ids, text or per layer; n_segments=0 selects none
    for given in ([3, 4], "3,4", {"gt/segmentation": ["3", "4"]}):
        st = neuroglancer_state(mesh_dataset["root"], sources=src, segments=given)
        assert next(l for l in st["layers"] if l["name"] == "gt/segmentation")["segments"] == ["3", "4"]
    none = neuroglancer_state(mesh_dataset["root"], sources=src, n_segments=0)
    assert none["layout"] == "4panel" and all("segments" not in l for l in none["layers"])
    with pytest.raises(InputError, match="'x'"):
        neuroglancer_state(mesh_dataset["root"], sources=src, segments="3,x")
    with pytest.raises(InputError, match=r"\[99\].*no mesh"):
        neuroglancer_state(mesh_dataset["root"], sources=src, segments=[3, 99])
    with pytest.raises(InputError, match="not segmentation layers"):
        neuroglancer_state(mesh_dataset["root"], sources=src, segments={"image": [1]})
    with pytest.raises(InputError, match=">= 0"):
        largest_segments(seg, -1)


def test_largest_segments_skips_segments_without_meshes_and_falls_back_to_mesh_size(mesh_dataset, tmp_path):
    import shutil

    from emkit.view.segments import largest_segments, mesh_segment_ids

    seg = str(tmp_path / "seg")
    shutil.copytree(mesh_dataset["paths"]["gt/segmentation"], seg)
    biggest = mesh_dataset["by_size"][0]
    os.remove(os.path.join(seg, "mesh", f"{biggest}:0"))  # the largest segment lost its mesh
    assert largest_segments(seg, 3) == mesh_dataset["by_size"][1:4]
    # a volume too large to count (here: any) is ranked by the size of its meshes
    sizes = mesh_segment_ids(seg)
    assert biggest not in sizes and len(sizes) == 11
    frag = {i: os.path.getsize(os.path.join(seg, "mesh", f"{i}:0:1")) for i in sizes}
    by_mesh = largest_segments(seg, 4, max_voxels=10)
    assert len(by_mesh) == 4 and frag[by_mesh[0]] == max(frag.values())
    assert [frag[i] for i in by_mesh] == sorted([frag[i] for i in by_mesh], reverse=True)


def test_cli_view_prints_the_meshed_segments(mesh_dataset, capsys):
    from emkit.cli.main import main

    assert main(["view", mesh_dataset["root"], "--no-block"]) == 0
    err = capsys.readouterr().err
    assert "meshes of segments " + ",".join(map(str, mesh_dataset["by_size"][:5])) in err
    assert main(["view", mesh_dataset["paths"]["gt/segmentation"], "--segments", "3,4", "--no-block"]) == 0
    assert "meshes of segments 3,4" in capsys.readouterr().err
    assert main(["view", mesh_dataset["root"], "--segments", "0", "--no-block"]) == 2
    assert "'0'" in capsys.readouterr().err


@pytest.mark.browser
def test_neuroglancer_loads_and_draws_meshes_in_headless_chromium(mesh_dataset, tmp_path):
    """`emkit view` of a layer with meshes: the browser fetches the selected segments' meshes (and
    no others) and draws them in the 3D panel; deselecting them empties the panel."""
    require_that(find_chromium() is not None,
                 "Debian's chromium (`make system-deps` / .ci/system-deps.sh) for the Neuroglancer mesh test")
    require("playwright.sync_api", "playwright (the 'test' extra) for the Neuroglancer mesh test")
    seg = mesh_dataset["paths"]["gt/segmentation"]
    handle = serve(mesh_dataset["root"])
    top = mesh_dataset["by_size"][:5]
    assert handle.segments == {"gt/segmentation": top} and handle.state["layout"] == "xy-3d"
    want = {"mesh/info"} | {f"mesh/{i}:0" for i in top} | {f"mesh/{i}:0:1" for i in top}

    def mesh_files():
        return {p for p, st in handle.file_server.requests(seg) if st == 200 and p.startswith("mesh/")}

    def coloured_3d(rgb):
        panel = rgb[60:700, 660:1270].astype(int)  # the 3D panel (right half of xy-3d), black background
        yellow = (panel[..., 0] > 150) & (panel[..., 1] > 150) & (panel[..., 2] < 100)  # the bounding box
        return ((panel.max(-1) > 50) & ~yellow).mean()

    try:
        with chromium_page(handle.url, tmp_path / "profile") as page:
            assert poll(lambda: mesh_files() >= want, 60), f"mesh files fetched: {sorted(mesh_files())}"
            assert all(not p.startswith(f"mesh/{i}:") for p in mesh_files() for i in mesh_dataset["by_size"][5:])
            shot = tmp_path / "neuroglancer_meshes.png"
            assert poll(lambda: coloured_3d(screenshot_array(page, shot)) > 0.15, 30), \
                f"meshes not drawn in the 3D panel; see {shot}"
            assert distinct_colours(screenshot_array(page, shot)[60:700, 660:1270], 0.01) >= 5

            with handle.viewer.txn() as s:  # control: no segment selected, no mesh drawn
                s.layers["gt/segmentation"].segments = set()
            shot2 = tmp_path / "neuroglancer_no_meshes.png"
            assert poll(lambda: coloured_3d(screenshot_array(page, shot2)) < 0.02, 30), \
                f"3D panel not empty without selected segments; see {shot2}"
    finally:
        handle.stop()
