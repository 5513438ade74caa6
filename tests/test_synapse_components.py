"""Cleft connected components: array form, and the chunked map-reduce form equal to it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from emkit.errors import InputError, LayerExistsError
from emkit.io import Layer
from emkit.synapse import TABLE_COLUMNS, CleftParams, cleft_components, cleft_components_layers, min_size_for

INT_COLS = [c for c in TABLE_COLUMNS if c != "mean_prob"]


def _blobby(shape=(12, 60, 50), seed=0):
    rng = np.random.default_rng(seed)
    p = ndi.gaussian_filter(rng.random(shape), (0.7, 2, 2))
    return ((p - p.min()) / (p.max() - p.min())).astype(np.float32)


def _write(tmp_path, prob, name="prob", resolution=(40, 8, 8), offset=(0, 0, 0)):
    url = str(tmp_path / name)
    Layer.create(url, "probability", prob.shape, num_channels=1, resolution=resolution,
                 voxel_offset=offset).write(prob)
    return url


def _assert_same(res, lab, tab):
    out = Layer.open(res["segmentation"]).read()
    assert out.dtype == np.uint64
    np.testing.assert_array_equal(out, lab)
    t2 = pd.read_parquet(res["table"])
    assert list(t2.columns) == list(TABLE_COLUMNS)
    assert len(t2) == len(tab) == res["n_clefts"]
    pd.testing.assert_frame_equal(t2[INT_COLS], tab[INT_COLS], check_dtype=False)
    np.testing.assert_allclose(t2["mean_prob"], tab["mean_prob"], rtol=1e-12)


def test_params_defaults_and_errors():
    p = CleftParams()
    assert (p.threshold, p.threshold_value, p.min_size_voxels, p.connectivity) == (None, 0.5, None, 26)
    assert p.min_size((40, 8, 8)) == 40 == min_size_for((40, 8, 8))
    assert min_size_for((20, 4, 4)) == 320 and min_size_for((80, 16, 16)) == 5
    for kw, field in [({"threshold": 1.5}, "threshold"), ({"threshold": "x"}, "threshold"),
                      ({"min_size_voxels": 0}, "min_size_voxels"), ({"min_size_voxels": 2.5}, "min_size_voxels"),
                      ({"connectivity": 18}, "connectivity")]:
        with pytest.raises(InputError, match=field):
            CleftParams(**kw)
    with pytest.raises(InputError, match="resolution"):
        min_size_for((0, 8, 8))


def test_array_form_table_and_order():
    prob = np.zeros((4, 10, 10), np.float32)
    prob[1, 5:7, 5:8] = 0.9      # 6 voxels, first voxel (1, 5, 5)
    prob[0, 8, 0:4] = 0.7        # 4 voxels, first (0, 8, 0)
    prob[3, 0, 0] = 0.8          # 1 voxel: dropped by min size 2
    prob[2, 2, 2] = 0.5          # not > threshold
    lab, tab = cleft_components(prob, resolution=(40, 8, 8), params=CleftParams(min_size_voxels=2))
    assert lab.dtype == np.uint64 and lab.shape == prob.shape
    assert list(tab.id) == [1, 2] and list(tab.size_voxels) == [4, 6]   # raster order of first voxel
    assert np.all(lab[0, 8, 0:4] == 1) and np.all(lab[1, 5:7, 5:8] == 2) and lab[3, 0, 0] == 0 and lab[2, 2, 2] == 0
    r = tab.iloc[1]
    assert (r.bbox_z0, r.bbox_y0, r.bbox_x0, r.bbox_z1, r.bbox_y1, r.bbox_x1) == (1, 5, 5, 2, 7, 8)
    np.testing.assert_allclose([r.centroid_z_nm, r.centroid_y_nm, r.centroid_x_nm], [1.5 * 40, 6.0 * 8, 6.5 * 8])
    np.testing.assert_allclose(tab.mean_prob, [0.7, 0.9], rtol=1e-6)
    with pytest.raises(InputError, match="shape"):
        cleft_components(prob[0])
    with pytest.raises(InputError, match="0..1"):
        cleft_components(prob * 3)
    with pytest.raises(InputError, match="NaN"):
        cleft_components(np.full((2, 2, 2), np.nan, np.float32))


def test_connectivity_diagonal():
    prob = np.zeros((2, 4, 4), np.float32)
    prob[0, 1, 1] = prob[1, 2, 2] = 1.0     # corner-touching only
    one = CleftParams(min_size_voxels=1)
    assert cleft_components(prob, params=one)[0].max() == 1
    assert cleft_components(prob, params=CleftParams(min_size_voxels=1, connectivity=6))[0].max() == 2


@pytest.mark.parametrize("connectivity", [26, 6])
def test_chunked_diagonal_across_chunk_corner(tmp_path, connectivity):
    # voxels touching only at a corner, each in another chunk (chunk 2x2x2: the corner at (2,2,2))
    prob = np.zeros((4, 4, 8), np.float32)
    prob[1, 1, 1] = prob[2, 2, 2] = 1.0     # chunks (0,0,0) and (1,1,1): corner-diagonal
    prob[1, 0, 6] = prob[2, 0, 5] = 1.0     # chunks (0,0,3) and (1,0,2): edge-diagonal
    url = _write(tmp_path, prob)
    prm = CleftParams(min_size_voxels=1, connectivity=connectivity)
    lab, tab = cleft_components(prob, params=prm)
    assert lab.max() == (2 if connectivity == 26 else 4)
    res = cleft_components_layers(url, str(tmp_path / "out"), chunk_size=(2, 2, 2), params=prm, progress=False)
    _assert_same(res, lab, tab)


def test_size_filter_after_merge(tmp_path):
    # one cleft of 8 voxels split 4 + 4 across a chunk face: each part < min size 6, the sum survives
    prob = np.zeros((2, 6, 6), np.float32)
    prob[0:2, 2:4, 2] = 0.9
    prob[0:2, 2:4, 3] = 0.9
    prob[1, 0, 5] = 0.9  # alone: dropped
    url = _write(tmp_path, prob)
    prm = CleftParams(min_size_voxels=6)
    lab, tab = cleft_components(prob, params=prm)
    assert list(tab.size_voxels) == [8]
    res = cleft_components_layers(url, str(tmp_path / "out"), chunk_size=(2, 6, 3), params=prm, progress=False)
    assert res["n_components_before_filter"] == 2
    _assert_same(res, lab, tab)


def test_chunked_equals_array_blobby(tmp_path):
    prob = _blobby()
    url = _write(tmp_path, prob, offset=(3, 0, 7))
    prm = CleftParams(threshold=0.6, min_size_voxels=5)
    lab, tab = cleft_components(prob, params=prm)
    assert len(tab) > 10
    # centroids of a layer are in the layer's frame: add its voxel offset
    tab = tab.copy()
    tab["centroid_z_nm"] += 3 * 40
    tab["centroid_x_nm"] += 7 * 8
    for cs in [(5, 40, 24), (3, 17, 11), (12, 60, 50), (64, 64, 64)]:
        res = cleft_components_layers(url, str(tmp_path / "out"), chunk_size=cs, params=prm, progress=False,
                                      overwrite=True)
        t2 = pd.read_parquet(res["table"])
        np.testing.assert_allclose(t2[["centroid_z_nm", "centroid_y_nm", "centroid_x_nm"]],
                                   tab[["centroid_z_nm", "centroid_y_nm", "centroid_x_nm"]], rtol=1e-12)
        _assert_same(res, lab, tab)
    # refuse to overwrite
    with pytest.raises(LayerExistsError, match="overwrite"):
        cleft_components_layers(url, str(tmp_path / "out"), chunk_size=(5, 40, 24), params=prm, progress=False)
    with pytest.raises(InputError, match="chunk_size"):
        cleft_components_layers(url, str(tmp_path / "out2"), chunk_size=(0, 4, 4), params=prm, progress=False)
    assert not (tmp_path / "out" / ".emkit_cleft_work").exists()       # intermediate results removed
    # a table alone (no layer) is not overwritten silently either
    (tmp_path / "lone.parquet").write_bytes(b"x")
    with pytest.raises(LayerExistsError, match="lone.parquet"):
        cleft_components_layers(url, str(tmp_path / "lone"), chunk_size=(5, 40, 24), params=prm, progress=False)
    assert (tmp_path / "lone.parquet").read_bytes() == b"x"
    two = str(tmp_path / "two")
    Layer.create(two, "probability", prob.shape, num_channels=2)
    with pytest.raises(InputError, match="2 channels"):
        cleft_components_layers(two, str(tmp_path / "out4"), chunk_size=(4, 4, 4), progress=False)
    with pytest.raises(InputError, match="nowhere"):
        cleft_components_layers(str(tmp_path / "nowhere"), str(tmp_path / "out3"), chunk_size=(4, 4, 4), progress=False)


@pytest.fixture(scope="module")
def phantom_prob():
    from emkit.phantom import make_phantom

    ph = make_phantom((24, 256, 256), seed=1, defects=None)
    assert len(np.unique(ph.clefts)) - 1 >= 3
    p = ndi.gaussian_filter((ph.clefts > 0).astype(np.float32), (0.5, 1.5, 1.5))
    return (p / p.max()).astype(np.float32)


def test_chunked_equals_array_phantom_serial_and_cluster(tmp_path, phantom_prob):
    from emkit.runtime import Cluster

    url = _write(tmp_path, phantom_prob)
    lab, tab = cleft_components(phantom_prob)           # paper defaults: > 0.5, 40 voxels, 26-connected
    assert len(tab) >= 3

    def crosses(cs):  # some cleft spans a chunk boundary (else the test would not test the merge)
        return any((t[f"bbox_{a}0"] // c) != ((t[f"bbox_{a}1"] - 1) // c) for _, t in tab.iterrows()
                   for a, c in zip("zyx", cs))

    assert crosses((7, 100, 90)) and crosses((10, 128, 77))
    res = cleft_components_layers(url, str(tmp_path / "serial"), chunk_size=(7, 100, 90), progress=False)
    _assert_same(res, lab, tab)
    with Cluster(n_workers=1, quiet=True) as c:
        res = cleft_components_layers(url, str(tmp_path / "dask"), chunk_size=(10, 128, 77), client=c,
                                      progress=False)
    _assert_same(res, lab, tab)


def test_chunked_empty_volume(tmp_path):
    prob = np.zeros((5, 9, 9), np.float32)
    prob[2, 4, 4] = 0.9  # below the size threshold
    url = _write(tmp_path, prob)
    lab, tab = cleft_components(prob)
    assert lab.max() == 0 and len(tab) == 0
    res = cleft_components_layers(url, str(tmp_path / "out"), chunk_size=(2, 4, 4), progress=False)
    assert res["n_clefts"] == 0 and res["n_components_before_filter"] == 1
    _assert_same(res, lab, tab)


def _hysteresis_reference(prob, lo, hi, min_size, connectivity=26):
    """Components of prob > lo (scipy.ndimage.label) holding a voxel > hi, with >= min_size voxels."""
    structure = np.ones((3, 3, 3)) if connectivity == 26 else ndi.generate_binary_structure(3, 1)
    lab, n = ndi.label(prob > lo, structure=structure)
    idx = np.arange(1, n + 1)
    ok = (np.asarray(ndi.maximum(prob, lab, idx)) > hi) & (np.bincount(lab.ravel(), minlength=n + 1)[1:] >= min_size)
    return np.isin(lab, idx[ok])


def test_seed_threshold_hysteresis_array():
    prob = np.zeros((3, 12, 12), np.float32)
    prob[1, 1:5, 1:5] = 0.6        # a cleft's faint rim ...
    prob[1, 2, 2] = 0.96875        # ... around one confident voxel (31/32, exact in float32): kept whole
    prob[1, 7:10, 7:10] = 0.8      # faint everywhere: dropped by the seed test, kept without it
    prm = CleftParams(threshold=0.5, seed_threshold=0.9, min_size_voxels=2)
    lab, tab = cleft_components(prob, params=prm)
    assert list(tab.size_voxels) == [16] and np.all(lab[1, 1:5, 1:5] == 1) and lab.max() == 1
    assert len(cleft_components(prob, params=CleftParams(threshold=0.5, min_size_voxels=2))[1]) == 2
    # the seed test counts a voxel strictly above seed_threshold, as the threshold does
    at_seed = CleftParams(threshold=0.5, seed_threshold=0.96875, min_size_voxels=2)
    assert len(cleft_components(prob, params=at_seed)[1]) == 0
    blob = _blobby(seed=3)
    for conn in (26, 6):
        p = CleftParams(threshold=0.55, seed_threshold=0.7, min_size_voxels=4, connectivity=conn)
        np.testing.assert_array_equal(cleft_components(blob, params=p)[0] > 0,
                                      _hysteresis_reference(blob, 0.55, 0.7, 4, conn))
    assert CleftParams(seed_threshold=0.9).seed_value == 0.9 and CleftParams().seed_value is None
    for kw in [{"seed_threshold": 1.0}, {"seed_threshold": "x"}, {"seed_threshold": 0.4},
               {"threshold": 0.9, "seed_threshold": 0.9}]:
        with pytest.raises(InputError, match="seed_threshold"):
            CleftParams(**kw)


def test_seed_threshold_chunked_equals_array(tmp_path):
    """Hysteresis across chunk faces: a component kept for a seed voxel in one chunk keeps its parts
    in the other chunks (which hold no seed voxel); equal to the array form for any chunk size."""
    prob = _blobby(seed=3)
    url = _write(tmp_path, prob)
    prm = CleftParams(threshold=0.55, seed_threshold=0.7, min_size_voxels=4)
    lab, tab = cleft_components(prob, params=prm)
    n_plain = len(cleft_components(prob, params=CleftParams(threshold=0.55, min_size_voxels=4))[1])
    assert 3 <= len(tab) < n_plain                      # the seed test drops some components, keeps some
    seedless_part = False
    for cs in [(5, 40, 24), (3, 17, 11), (12, 60, 50)]:
        res = cleft_components_layers(url, str(tmp_path / "out"), chunk_size=cs, params=prm, progress=False,
                                      overwrite=True)
        assert res["seed_threshold"] == 0.7
        _assert_same(res, lab, tab)
        for z in range(0, prob.shape[0], cs[0]):
            for y in range(0, prob.shape[1], cs[1]):
                for x in range(0, prob.shape[2], cs[2]):
                    sl = (slice(z, z + cs[0]), slice(y, y + cs[1]), slice(x, x + cs[2]))
                    for i in np.unique(lab[sl][lab[sl] > 0]):
                        seedless_part |= bool(prob[sl][lab[sl] == i].max() <= 0.7)
    assert seedless_part                                # some kept cleft has a part without a seed voxel
