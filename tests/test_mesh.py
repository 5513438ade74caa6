"""Meshes: closed surfaces enclosing a phantom neurite's voxels, chunked == whole volume, read back
as Neuroglancer reads them (CloudVolume's legacy mesh source), overwrite refused."""
import numpy as np
import pytest

from emkit.errors import InputError, LayerExistsError
from emkit.io import Layer
from emkit.mesh import MeshParams, mesh_area, mesh_layers, mesh_segments, mesh_volume

RES = (40, 8, 8)
VOXEL_NM3 = 40 * 8 * 8
RAW = MeshParams(reduction_factor=0)  # marching cubes only


@pytest.fixture(scope="module")
def seg():
    from emkit.phantom import make_phantom

    return make_phantom((16, 128, 128), seed=0, defects=None).segmentation.astype(np.uint64)


def big_ids(seg, n=5000):
    ids, counts = np.unique(seg, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts) if i != 0 and c >= n}


def open_edges(mesh) -> int:
    f = np.asarray(mesh.faces, np.int64)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return int((counts != 2).sum())


def test_phantom_neurite_meshes_enclose_their_voxels(seg):
    """The volume is padded with background, so every mesh is closed (each edge in two triangles) and
    encloses voxel count x voxel volume within a few % (marching cubes cuts the corners)."""
    big = big_ids(seg)
    assert len(big) >= 3
    raw = mesh_segments(seg, RES, params=RAW, ids=big)
    simplified = mesh_segments(seg, RES, ids=big)  # Igneous' simplification (factor 100, 40 nm)
    assert set(raw) == set(simplified) == set(big)
    for i, count in big.items():
        assert open_edges(raw[i]) == 0 and open_edges(simplified[i]) == 0, i
        assert mesh_volume(raw[i]) / (count * VOXEL_NM3) == pytest.approx(1, abs=0.02), i
        assert mesh_volume(simplified[i]) / (count * VOXEL_NM3) == pytest.approx(1, abs=0.04), i
        assert len(simplified[i].faces) < len(raw[i].faces) / 2
        # marching cubes passes through the voxel faces: the raw mesh's box is the voxels' box (nm, x, y, z)
        z, y, x = np.nonzero(seg == i)
        lo = np.array([x.min(), y.min(), z.min()]) * np.array(RES[::-1])
        hi = (np.array([x.max(), y.max(), z.max()]) + 1) * np.array(RES[::-1])
        assert np.allclose(raw[i].vertices.min(0), lo, atol=1e-3) and np.allclose(raw[i].vertices.max(0), hi, atol=1e-3)
    with pytest.raises(InputError, match="integer"):
        mesh_segments(seg.astype(np.float32), RES)


def test_chunked_meshes_equal_whole_volume_and_neuroglancer_reads_them(tmp_path, seg):
    from cloudvolume import CloudVolume

    offset = (4, 32, 64)
    layer = Layer.create(tmp_path / "seg", "segmentation", seg.shape, voxel_offset=offset, chunk_size=(8, 32, 32))
    layer.write(seg)
    counts = big_ids(seg, 1)
    for params in (RAW, MeshParams()):
        whole = mesh_segments(seg, RES, params=params, offset=offset)
        rep = mesh_layers(layer.url, params=params, task_size=(8, 64, 32), workers=0, progress=False,
                          overwrite=params is not RAW)
        assert rep.chunks == 16 and rep.fragments > rep.segments == len(whole)
        got = CloudVolume(layer.url, progress=False).mesh.get(list(whole), fuse=False)
        assert set(got) == set(whole)
        for i, w in whole.items():
            m = got[i]
            assert open_edges(m) == 0, i  # the pieces are welded into one closed surface
            if params is RAW:  # same marching cubes: the same vertices
                assert len(m.vertices) == len(w.vertices)
                assert np.array_equal(np.unique(np.round(m.vertices, 3), axis=0), np.unique(np.round(w.vertices, 3), axis=0))
            else:  # simplification sees other neighbourhoods near the chunk planes: close, not equal
                rel = 0.04 if counts[i] >= 2000 else 0.15  # tiny segments keep only a few dozen triangles
                assert mesh_volume(m) == pytest.approx(mesh_volume(w), rel=rel), i
                assert mesh_area(m) == pytest.approx(mesh_area(w), rel=rel), i
    info = Layer.open(layer.url).info
    assert info["mesh"] == "mesh"
    files = [p.name for p in (tmp_path / "seg" / "mesh").iterdir()]
    assert "info" in files and not any(f.endswith(".gz") for f in files)  # uncompressed: the static server shows them
    assert not (tmp_path / "seg" / ".emkit" / "mesh_fragments").exists() or not any((tmp_path / "seg" / ".emkit" / "mesh_fragments").iterdir())


def test_existing_meshes_are_refused_unless_overwrite(tmp_path):
    labels = np.zeros((8, 32, 32), np.uint64)
    labels[2:6, 4:20, 4:20] = 3
    layer = Layer.create(tmp_path / "seg", "segmentation", labels.shape)
    layer.write(labels)
    mesh_layers(layer.url, workers=0, progress=False)
    with pytest.raises(LayerExistsError, match="already has meshes"):
        mesh_layers(layer.url, workers=0, progress=False)
    labels[:] = 0
    labels[1:3, 1:5, 1:5] = 4
    layer.write(labels)
    rep = mesh_layers(layer.url, workers=0, progress=False, overwrite=True)
    assert rep.segments == 1
    names = {p.name for p in (tmp_path / "seg" / "mesh").iterdir()}
    assert names == {"info", "4:0", "4:0:1"}  # the old segment's files are gone
    img = Layer.create(tmp_path / "img", "image", (8, 32, 32))
    with pytest.raises(InputError, match="segmentation"):
        mesh_layers(img.url, workers=0, progress=False)


@pytest.mark.slow
def test_mesh_and_skeleton_on_a_dask_cluster_equal_serial(tmp_path, seg):
    """One real LocalCluster (2 workers) runs the chunk tasks and the per-segment merges."""
    from cloudvolume import CloudVolume

    from emkit.runtime import Cluster
    from emkit.skeleton import skeleton_layers

    seg = np.ascontiguousarray(seg[:, :64])  # 4 tasks of 8 x 64 x 64
    layers = {}
    for name in ("serial", "dask"):
        layers[name] = Layer.create(tmp_path / name, "segmentation", seg.shape, chunk_size=(8, 64, 64))
        layers[name].write(seg)
    kw = dict(params=RAW, task_size=(8, 64, 64), progress=False)
    mesh_layers(layers["serial"].url, workers=0, **kw)
    sk_serial = skeleton_layers(layers["serial"].url, task_size=(8, 64, 64), workers=0, progress=False)
    with Cluster(n_workers=2, quiet=True) as cluster:
        mesh_layers(layers["dask"].url, client=cluster, **kw)
        sk_dask = skeleton_layers(layers["dask"].url, task_size=(8, 64, 64), client=cluster, progress=False)
    ids = sorted(big_ids(seg, 1))
    a = CloudVolume(layers["serial"].url, progress=False).mesh.get(ids, fuse=False)
    b = CloudVolume(layers["dask"].url, progress=False).mesh.get(ids, fuse=False)
    assert set(a) == set(b) == set(ids)
    for i in ids:
        assert np.array_equal(np.unique(a[i].vertices, axis=0), np.unique(b[i].vertices, axis=0)), i
    assert sk_serial.table.equals(sk_dask.table)
