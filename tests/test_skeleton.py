"""Skeletons: path length of a tube along a known curve, branches of a Y, chunked == whole volume,
read back as Neuroglancer reads them (CloudVolume), the per-neuron table with synapse counts."""
import json

import numpy as np
import pandas as pd
import pytest

from emkit.errors import InputError, LayerExistsError
from emkit.io import Layer
from emkit.skeleton import SkeletonParams, TABLE_COLUMNS, skeleton_layers, skeleton_table, skeletonize

RES = np.array((40.0, 8.0, 8.0))
SHAPE = (32, 96, 128)


def curve(t):
    """A smooth oblique curve (nm, z, y, x) that enters and leaves the volume through its x faces."""
    return np.stack([100 + 1080 * t, 384 + 220 * np.sin(np.pi * t), -100 + 1224 * t], -1)


def tube(points, radius_nm=70.0, shape=SHAPE):
    """Voxels (uint64 label 1) whose centre lies within ``radius_nm`` of the polyline ``points`` (nm, z, y, x)."""
    from scipy.spatial import cKDTree

    axes = [(np.arange(n) + 0.5) * r for n, r in zip(shape, RES)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    d, _ = cKDTree(points).query(centres)
    return (d.reshape(shape) <= radius_nm).astype(np.uint64)


@pytest.fixture(scope="module")
def neurite():
    """The tube and the true length (µm) of its centreline inside the volume (the tube is cut by the x faces)."""
    pts = curve(np.linspace(0, 1, 4001))
    inside = pts[(pts[:, 2] >= 0) & (pts[:, 2] <= SHAPE[2] * RES[2])]
    return tube(pts[::8]), float(np.linalg.norm(np.diff(inside, axis=0), axis=1).sum()) / 1000  # points 4 nm apart


def test_tube_path_length_matches_its_centreline(neurite):
    labels, true_um = neurite
    skels = skeletonize(labels, RES)
    assert list(skels) == [1]
    row = skeleton_table(skels).iloc[0]
    assert row["path_length_um"] == pytest.approx(true_um, rel=0.10)
    assert row["branch_points"] == 0 and row["endpoints"] == 2
    # the raw lattice path (no smoothing) zig-zags over the anisotropic voxels: far longer
    raw = skeleton_table(skeletonize(labels, RES, params=SkeletonParams(smooth_window=1))).iloc[0]
    assert raw["path_length_um"] > 1.2 * true_um
    v = skels[1].vertices  # nm, x, y, z, inside the volume
    assert (v.min(0) >= 0).all() and (v.max(0) <= np.array(SHAPE[::-1]) * RES[::-1]).all()


def test_branches_of_a_y():
    stem = np.stack([np.full(50, 640.0), np.linspace(80, 400, 50), np.full(50, 512.0)], -1)
    arm1 = np.stack([np.full(50, 640.0), np.linspace(400, 700, 50), np.linspace(512, 200, 50)], -1)
    arm2 = np.stack([np.full(50, 640.0), np.linspace(400, 700, 50), np.linspace(512, 830, 50)], -1)
    labels = tube(np.concatenate([stem, arm1, arm2]), radius_nm=60.0)
    row = skeleton_table(skeletonize(labels, RES, params=SkeletonParams(tick_threshold=100))).iloc[0]
    assert row["branch_points"] == 1 and row["endpoints"] == 3


def test_chunked_skeletons_equal_whole_volume_and_neuroglancer_reads_them(tmp_path, neurite):
    from cloudvolume import CloudVolume

    labels, true_um = neurite
    labels = labels.copy()
    labels[20:30, 4:20, 100:124] = 7          # a second segment, a block in a corner
    labels[0:2, 90:92, 0:4] = 9               # dust: fewer voxels than the threshold, no skeleton
    offset = (0, 16, 32)
    layer = Layer.create(tmp_path / "seg", "segmentation", SHAPE, voxel_offset=offset, chunk_size=(8, 32, 32))
    layer.write(labels)
    whole = skeleton_table(skeletonize(labels, RES, offset=offset))
    rep = skeleton_layers(layer.url, task_size=(16, 32, 32), workers=0, progress=False,
                          table_path=tmp_path / "neurons.parquet")
    assert rep.chunks == 24 and rep.fragments > rep.segments == 2
    chunked = pd.read_parquet(tmp_path / "neurons.parquet")
    assert list(chunked.columns) == TABLE_COLUMNS
    assert chunked["segment_id"].tolist() == whole["segment_id"].tolist() == [1, 7]
    for a, b in zip(chunked.itertuples(), whole.itertuples()):
        assert a.path_length_um == pytest.approx(b.path_length_um, rel=0.05)
    assert chunked.set_index("segment_id").loc[1, "path_length_um"] == pytest.approx(true_um, rel=0.10)
    assert chunked.set_index("segment_id").loc[1, "endpoints"] == 2
    assert chunked["voxels"].tolist() == [int((labels == 1).sum()), int((labels == 7).sum())]
    assert chunked["synapse_count"].isna().all()

    cv = CloudVolume(layer.url, progress=False)
    assert cv.info["skeletons"] == "skeletons"
    s = cv.skeleton.get(1)
    assert s.cable_length() / 1000 == pytest.approx(chunked["path_length_um"][0], rel=1e-4)
    assert s.vertices[:, 1].min() >= offset[1] * RES[1]  # global frame (nm, x, y, z)
    files = [p.name for p in (tmp_path / "seg" / "skeletons").iterdir()]
    assert sorted(files) == ["1", "7", "info"]  # uncompressed, no dust
    # what Neuroglancer's precomputed skeleton source accepts (checked in headless Chromium): no null
    # "sharding", and no uint8 vertex attribute ("Data type not supported by WebGL: UINT8")
    sk_info = json.loads((tmp_path / "seg" / "skeletons" / "info").read_text())
    assert sk_info["@type"] == "neuroglancer_skeletons" and sk_info.get("sharding", {}) is not None
    assert [a["data_type"] for a in sk_info["vertex_attributes"]] == ["float32"]
    assert s.radius.shape == (len(s.vertices),) and (s.radius > 0).all()


def test_synapse_counts_and_overwrite(tmp_path):
    labels = np.zeros((8, 64, 64), np.uint64)
    labels[:, 20:30, :] = 5
    labels[:, 40:50, :] = 6
    layer = Layer.create(tmp_path / "seg", "segmentation", labels.shape)
    layer.write(labels)
    syn = pd.DataFrame({"id": [1, 2, 3, 4], "pre_id": [5, 5, 6, 99], "post_id": [6, 6, 5, 5]})
    params = SkeletonParams(dust_threshold=100)
    rep = skeleton_layers(layer.url, params=params, synapses=syn, table_path=tmp_path / "t.parquet", workers=0,
                          progress=False)
    t = rep.table.set_index("segment_id")
    assert t.loc[5, "synapses_pre"] == 2 and t.loc[5, "synapses_post"] == 2 and t.loc[5, "synapse_count"] == 4
    assert t.loc[6, "synapses_pre"] == 1 and t.loc[6, "synapses_post"] == 2 and t.loc[6, "synapse_count"] == 3
    with pytest.raises(LayerExistsError, match="t.parquet exists"):
        skeleton_layers(layer.url, params=params, table_path=tmp_path / "t.parquet", workers=0, progress=False)
    with pytest.raises(LayerExistsError, match="already has skeletons"):
        skeleton_layers(layer.url, params=params, workers=0, progress=False)
    with pytest.raises(InputError, match="pre_id"):
        skeleton_layers(layer.url, params=params, synapses=syn.drop(columns="pre_id"), overwrite=True, workers=0,
                        progress=False)
    syn.to_csv(tmp_path / "syn.csv", index=False)
    rep = skeleton_layers(layer.url, params=params, synapses=tmp_path / "syn.csv", overwrite=True,
                          table_path=tmp_path / "t.parquet", workers=0, progress=False)
    assert pd.read_parquet(tmp_path / "t.parquet")["synapse_count"].tolist() == [4, 3]
