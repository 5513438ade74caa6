"""Synapses in Neuroglancer: the annotation layer (points at centroids, partners as relationships
linked to the segmentation), ``emkit view`` of a synapse output folder, centring the viewer on a
synapse — in the real Neuroglancer server and, for the drawing, a real headless Chromium."""
import numpy as np
import pandas as pd
import pytest

from emkit.errors import InputError
from emkit.view import center_on_synapse, find_synapse_folders, serve
from helpers_require import require, require_that
from helpers_view import chromium_page, find_chromium, poll, screenshot_array


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from emkit.phantom import PhantomParams, make_phantom, write_phantom
    from emkit.synapse import synapses_layers

    root = tmp_path_factory.mktemp("synview") / "ph"
    ph = make_phantom((16, 128, 128), seed=1, defects="none",
                      params=PhantomParams(synapses_per_um3=8.0, min_synapse_distance_nm=250))
    write_phantom(ph, str(root), progress=False)
    synapses_layers(root / "image", root / "gt/image_frame/segmentation", root / "synapses",
                    cleft_model=f"truth:{root}", partner_model=f"truth:{root}", progress=False)
    table = pd.read_parquet(root / "synapses" / "synapses.parquet")
    assert len(table) >= 2
    return {"root": root, "table": table}


def test_annotation_layer_in_the_viewer(ds):
    root, table = ds["root"], ds["table"]
    assert find_synapse_folders(root) == {"synapses": str(root / "synapses")}  # gt/synapses.parquet is truth, not output
    with serve(root) as h:
        assert list(h.synapses) == ["synapses"]
        layer = h.viewer.state.layers["synapses"]  # Neuroglancer's own parse of the state
        assert layer.type == "annotation" and len(layer.annotations) == len(table)
        assert dict(layer.linked_segmentation_layer) == {"pre": "gt/image_frame/segmentation",
                                                         "post": "gt/image_frame/segmentation"}
        a = layer.annotations[0]
        r = table.iloc[0]
        assert a.id == str(r.id) and [list(s) for s in a.segments] == [[r.pre_id], [r.post_id]]
        np.testing.assert_allclose(a.point, [r.centroid_x_nm / 8, r.centroid_y_nm / 8, r.centroid_z_nm / 40],
                                   rtol=1e-6)
        assert a.props[0] == r.id and a.props[1] == r.size_voxels
        # centring on a synapse: position at its centroid, its partners shown
        last = table.iloc[-1]
        pos = center_on_synapse(h, int(last.id))
        np.testing.assert_allclose(h.viewer.state.position,
                                   [last.centroid_x_nm / 8, last.centroid_y_nm / 8, last.centroid_z_nm / 40], rtol=1e-6)
        assert pos[0] == pytest.approx(last.centroid_z_nm / 40)
        assert set(h.viewer.state.layers["gt/image_frame/segmentation"].segments) == {int(last.pre_id),
                                                                                      int(last.post_id)}
        with pytest.raises(InputError, match="no synapse 9999"):
            center_on_synapse(h, 9999)
        with pytest.raises(InputError, match="no synapse layer"):
            center_on_synapse(h, 1, layer="nope")


def test_synapse_folder_alone_brings_its_image_and_segmentation(ds, capsys):
    from emkit.cli.main import main

    with serve(ds["root"] / "synapses") as h:
        names = [r.name for r in h.layers]
        assert names[:2] == ["cleft_prob", "clefts"] and {"image", "segmentation"} <= set(names)
        assert h.synapses["synapses"]["segmentation_layer"] == "segmentation"
        assert [l["name"] for l in h.state["layers"]][-1] == "synapses"
    assert main(["view", str(ds["root"]), str(ds["root"] / "synapses"), "--no-block"]) == 0
    assert capsys.readouterr().out.startswith("http://127.0.0.1:")
    with serve(ds["root"] / "image") as h:
        assert h.synapses == {}
        with pytest.raises(InputError, match="shows no synapses"):
            center_on_synapse(h, 1)


@pytest.mark.browser
def test_synapse_points_render_in_headless_chromium(ds, tmp_path):
    require_that(find_chromium() is not None,
                 "Debian's chromium (`make system-deps` / .ci/system-deps.sh) for the Neuroglancer rendering test")
    require("playwright.sync_api", "playwright (the 'test' extra) for the Neuroglancer rendering test")
    table = ds["table"]
    h = serve(ds["root"], layout="xy")
    try:
        with h.viewer.txn() as s:  # the image and the synapses only (segment colours could be magenta)
            for layer in s.layers:
                layer.visible = layer.name in ("image", "synapses")
        sid = int(table.iloc[0].id)
        center_on_synapse(h, sid, select_partners=False)
        with chromium_page(h.url, tmp_path / "profile") as page:
            shot = tmp_path / "synapse.png"

            def magenta(path=shot):  # the markers' colour (emkit.view.synapses.SHADER); nothing else is magenta
                rgb = screenshot_array(page, path).astype(int)
                m = (rgb[..., 0] > 200) & (rgb[..., 2] > 200) & (rgb[..., 1] < 80)
                return int(m.sum())

            assert poll(lambda: magenta() > 15, 40), f"no synapse marker drawn; see {shot}"
            with h.viewer.txn() as s:
                s.layers["synapses"].visible = False
            hidden = tmp_path / "synapse_hidden.png"
            assert poll(lambda: magenta(hidden) < 3, 20), f"the marker did not go with its layer; see {hidden}"
    finally:
        h.stop()
