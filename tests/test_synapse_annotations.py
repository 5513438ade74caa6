"""Synapses as a Precomputed annotation layer: written by ``emkit synapses`` beside the table, read back
(positions, properties, pre/post relationships), refused over an existing layer, and drawn by a real
Neuroglancer in headless Chromium from the served files alone."""
import numpy as np
import pandas as pd
import pytest

from emkit.errors import InputError, LayerExistsError
from emkit.synapse import read_synapse_annotations, write_synapse_annotations
from helpers_require import require, require_that
from helpers_view import chromium_page, find_chromium, poll, screenshot_array


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from emkit.phantom import PhantomParams, make_phantom, write_phantom
    from emkit.synapse import synapses_layers

    root = tmp_path_factory.mktemp("synann") / "ph"
    ph = make_phantom((16, 128, 128), seed=1, defects="none",
                      params=PhantomParams(synapses_per_um3=8.0, min_synapse_distance_nm=250))
    write_phantom(ph, str(root), progress=False)
    rep = synapses_layers(root / "image", root / "gt/image_frame/segmentation", root / "synapses",
                          cleft_model=f"truth:{root}", partner_model=f"truth:{root}", progress=False)
    table = pd.read_parquet(root / "synapses" / "synapses.parquet")
    assert len(table) >= 2
    return {"root": root, "table": table, "rep": rep}


def test_the_stage_writes_the_layer_and_it_reads_back(ds, tmp_path):
    table, out = ds["table"], ds["root"] / "synapses" / "annotations"
    assert ds["rep"]["files"]["annotations"].endswith("synapses/annotations")
    back = read_synapse_annotations(out).set_index("id").loc[table["id"].astype("int64")]
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(),
                               table[["centroid_x_nm", "centroid_y_nm", "centroid_z_nm"]].to_numpy() / [8, 8, 40],
                               rtol=1e-6)
    assert back["pre_segment"].tolist() == table["pre_id"].tolist()
    assert back["post_segment"].tolist() == table["post_id"].tolist()
    assert back["size_voxels"].tolist() == table["size_voxels"].tolist()
    np.testing.assert_allclose(back["cleft_score"], table["cleft_score"], rtol=1e-6)
    # a second write is refused; overwrite replaces (here with one synapse fewer)
    with pytest.raises(LayerExistsError, match="annotations"):
        write_synapse_annotations(table, out, (40, 8, 8))
    copy = tmp_path / "ann"
    write_synapse_annotations(table, copy, (40, 8, 8))
    write_synapse_annotations(table.iloc[1:], copy, (40, 8, 8), overwrite=True)
    assert sorted(read_synapse_annotations(copy)["id"]) == sorted(table["id"].iloc[1:])
    with pytest.raises(InputError, match="resolution"):
        write_synapse_annotations(table, tmp_path / "bad", (40, 8))
    with pytest.raises(InputError, match="pre_id"):
        write_synapse_annotations(table.drop(columns="pre_id"), tmp_path / "bad", (40, 8, 8))
    with pytest.raises(InputError, match="no annotation layer"):
        read_synapse_annotations(tmp_path / "nothing")


def test_neuroglancer_draws_the_precomputed_layer(ds, tmp_path):
    require_that(find_chromium() is not None,
                 "Debian's chromium (`make system-deps` / .ci/system-deps.sh) for the Neuroglancer rendering test")
    require("playwright.sync_api", "playwright (the 'test' extra) for the Neuroglancer rendering test")
    import neuroglancer

    from emkit.view import serve
    from emkit.view.synapses import SHADER

    root, table = ds["root"], ds["table"]
    h = serve(root / "image", layout="xy")
    try:
        src = "precomputed://" + h.file_server.url_for(root / "synapses" / "annotations")
        r = table.iloc[0]
        with h.viewer.txn() as s:
            s.layers["stored synapses"] = neuroglancer.AnnotationLayer(source=src, shader=SHADER)
            s.position = [r.centroid_x_nm / 8, r.centroid_y_nm / 8, r.centroid_z_nm / 40]
        with chromium_page(h.url, tmp_path / "profile") as page:
            shot = tmp_path / "stored.png"

            def magenta(path=shot):
                rgb = screenshot_array(page, path).astype(int)
                return int(((rgb[..., 0] > 200) & (rgb[..., 2] > 200) & (rgb[..., 1] < 80)).sum())

            assert poll(lambda: magenta() > 15, 40), f"no stored synapse drawn; see {shot}"
        served = [p for p, status in h.file_server.requests(root / "synapses" / "annotations") if status == 200]
        assert "info" in served and any(p.startswith("spatial0/") for p in served)
    finally:
        h.stop()
