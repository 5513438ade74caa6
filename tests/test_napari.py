"""napari views of emkit layers, in a real napari under Xvfb (stack.md pitfall 5: xcb, show=True)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from emkit.errors import InputError
from emkit.geometry import Bbox
from helpers_view import make_view_dataset, xvfb
from helpers_require import require, require_that

# runs inside Xvfb: open the dataset, report the layers, take a canvas screenshot
_SCRIPT = textwrap.dedent("""
    import json, sys
    from napari.qt import get_qapp
    from emkit_widgets.napari_view import open_in_napari

    root, png, out = sys.argv[1:4]
    viewer = open_in_napari(root, show=True)
    app = get_qapp()
    for _ in range(30):
        app.processEvents()
    facts = [dict(name=l.name, type=type(l).__name__, scale=list(map(float, l.scale)),
                  translate=list(map(float, l.translate)), shape=list(l.data.shape)) for l in viewer.layers]
    viewer.screenshot(png, canvas_only=True)
    # the image alone, for a check that gray structure is drawn
    for l in viewer.layers:
        l.visible = l.name == "image"
    for _ in range(10):
        app.processEvents()
    viewer.screenshot(png.replace(".png", "_image.png"), canvas_only=True)
    json.dump(facts, open(out, "w"))
    viewer.close()
""")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("napdata")
    data = make_view_dataset(str(root))
    data["root"] = str(root)
    return data


def _qt_missing() -> str | None:
    """Name of a shared library Qt's xcb plugin needs and cannot find, or None."""
    try:
        import PySide6
    except ImportError:
        return "PySide6"
    plugin = os.path.join(os.path.dirname(PySide6.__file__), "Qt", "plugins", "platforms", "libqxcb.so")
    if not os.path.exists(plugin) or not shutil.which("ldd"):
        return None
    out = subprocess.run(["ldd", plugin], capture_output=True, text=True).stdout
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    return ", ".join(missing) or None


@pytest.mark.gui
def test_napari_shows_layers_at_their_scale_under_xvfb(dataset, tmp_path):
    require("napari", "napari (the 'widgets' extra) for the napari view")
    require_that(shutil.which("Xvfb") is not None, "Debian's xvfb and xauth (`make system-deps`) for the napari view")
    missing = _qt_missing()
    require_that(not missing, f"Qt xcb libraries ({missing}; Debian's libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 …, "
                              "`make system-deps`) for the napari view")
    from PIL import Image

    script = tmp_path / "napari_shot.py"
    script.write_text(_SCRIPT)
    png, facts = tmp_path / "napari.png", tmp_path / "facts.json"
    with xvfb() as display:
        env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb", NAPARI_CONFIG=str(tmp_path / "napari.yaml"),
                   XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_CACHE_HOME=str(tmp_path / "cache"))
        proc = subprocess.run([sys.executable, str(script), dataset["root"], str(png), str(facts)], env=env,
                              capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    layers = {f["name"]: f for f in json.loads(facts.read_text())}
    assert layers["image"]["type"] == "Image" and layers["image"]["shape"] == [16, 128, 128]
    assert layers["gt/segmentation"]["type"] == "Labels"
    assert layers["masks/fold"]["type"] == "Labels"
    assert {"affinities z", "affinities y", "affinities x"} <= set(layers)
    for f in layers.values():
        assert f["scale"] == [40.0, 8.0, 8.0] and f["translate"] == [0.0, 0.0, 0.0]

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert rgb.std() > 20, "napari screenshot is blank"
    q = (rgb.reshape(-1, 3) >> 5)
    colours = np.unique(q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2], return_counts=True)[1]
    assert (colours > 0.01 * len(q)).sum() >= 6, "segments not drawn in distinct colours"

    img = np.asarray(Image.open(str(png).replace(".png", "_image.png")).convert("RGB")).astype(int)
    data = img[(img.sum(-1) > 0)]  # drop the black canvas around the volume
    assert len(data) > 0.2 * img.shape[0] * img.shape[1]
    assert np.abs(data[:, 0] - data[:, 2]).mean() < 3 and data.std() > 25, "image layer not drawn as gray structure"


def test_add_layers_scale_translate_and_bbox_without_a_window(tmp_path):
    """add_layers on napari's (window-less) ViewerModel: offsets and resolutions become nm."""
    require("napari", "napari (the 'widgets' extra)")
    from napari.components import ViewerModel

    from emkit.io import Layer
    from emkit_widgets.napari_view import add_layers, layer_bbox_for

    img = Layer.create(tmp_path / "em", "image", (8, 32, 32), resolution=(40, 8, 8), voxel_offset=(2, 10, 20))
    img.write((np.arange(8 * 32 * 32) % 251).astype(np.uint8).reshape(8, 32, 32))
    seg = Layer.create(tmp_path / "seg", "segmentation", (4, 16, 16), resolution=(80, 16, 16), voxel_offset=(1, 5, 10))
    seg.write(np.arange(4 * 16 * 16, dtype=np.uint64).reshape(4, 16, 16))

    v = ViewerModel()
    added = add_layers(v, [img, seg.url], bbox="2:6,10:26,20:36")
    assert [type(l).__name__ for l in added] == ["Image", "Labels"]
    a, b = added
    assert a.data.shape == (4, 16, 16) and tuple(a.scale) == (40.0, 8.0, 8.0)
    assert tuple(a.translate) == (80.0, 80.0, 160.0)
    np.testing.assert_array_equal(a.data, img.read(Bbox((2, 10, 20), (6, 26, 36))))
    # the same region in nm, in the coarser layer's voxels
    assert b.data.shape == (2, 8, 8) and tuple(b.scale) == (80.0, 16.0, 16.0)
    assert tuple(b.translate) == (80.0, 80.0, 160.0)
    np.testing.assert_array_equal(b.data, seg.read(Bbox((1, 5, 10), (3, 13, 18))))
    assert layer_bbox_for(Bbox((2, 10, 20), (6, 26, 36)), (40, 8, 8), seg) == Bbox((1, 5, 10), (3, 13, 18))
    with pytest.raises(InputError, match="does not overlap"):
        add_layers(ViewerModel(), [img], bbox="100:101,0:1,0:1")
    with pytest.raises(InputError, match="max_voxels"):
        add_layers(ViewerModel(), [img], max_voxels=100)
