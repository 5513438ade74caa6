"""The Precomputed Layer (emkit.io.layer) on file:// — real CloudVolume, no mocks."""
import hashlib
import os

import numpy as np
import pytest

from emkit.errors import BboxError, InputError, LayerExistsError
from emkit.geometry import Bbox
from emkit.io import KINDS, Layer, join_url, layer_exists, normalize_url

RNG = np.random.default_rng(1)


def tree_hashes(path):
    """{relative path: sha256} of every file under ``path``."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def chunk_files(path):
    return sorted(os.path.relpath(os.path.join(r, f), path) for r, _, fs in os.walk(path) for f in fs
                  if f not in ("info", "provenance"))


def random_for(kind, shape):
    if kind == "segmentation":
        return RNG.integers(0, 2 ** 40, shape, dtype=np.uint64) // np.uint64(1 + RNG.integers(1, 2 ** 30))
    if kind == "mask":
        return RNG.integers(0, 2, shape).astype(np.uint8)
    if kind == "image":
        return RNG.integers(0, 256, shape).astype(np.uint8)
    return RNG.random(shape, dtype=np.float32)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_round_trip_with_offset_and_reopen(tmp_path, kind):
    nch = 2 if kind == "probability" else None
    url = tmp_path / kind
    layer = Layer.create(url, kind, (20, 40, 50), resolution=(30, 6, 5), voxel_offset=(3, -5, 7),
                         chunk_size=(8, 16, 16), num_channels=nch)
    data = random_for(kind, layer.shape)
    assert layer.write(data) == Bbox((3, -5, 7), (23, 35, 57))
    again = Layer.open(url)
    np.testing.assert_array_equal(again.read(), data)
    assert again.kind.name == kind and again.dtype == KINDS[kind].dtype
    assert again.size == (20, 40, 50)
    assert again.resolution == (30.0, 6.0, 5.0)
    assert again.voxel_offset == (3, -5, 7)
    assert again.chunk_size == (8, 16, 16)
    assert again.bbox == Bbox((3, -5, 7), (23, 35, 57))
    expect_ch = {"affinities": 3, "probability": 2}.get(kind, 1)
    assert again.num_channels == expect_ch
    assert again.shape == ((expect_ch,) if expect_ch > 1 or kind == "probability" else ()) + (20, 40, 50)
    assert len(again.channel_names) == expect_ch
    d = again.describe()
    assert d["kind"] == kind and d["size_zyx"] == [20, 40, 50] and d["voxel_offset_zyx"] == [3, -5, 7]
    # a sub-box read returns the matching part of the array
    sub = again.read(Bbox((5, 0, 10), (9, 7, 30)))
    np.testing.assert_array_equal(sub, data[..., 2:6, 5:12, 3:23])


def test_default_encodings_and_channel_names(tmp_path):
    enc = {k: Layer.create(tmp_path / k, k, (4, 8, 8), num_channels=3 if k == "probability" else None).encoding
           for k in KINDS}
    assert enc == {"image": "raw", "affinities": "raw", "probability": "raw",
                   "segmentation": "compressed_segmentation", "mask": "raw"}
    aff = Layer.open(tmp_path / "affinities")
    assert aff.channel_names == ("z", "y", "x")
    p = Layer.create(tmp_path / "p2", "probability", (4, 8, 8), num_channels=2, channel_names=["in", "out"])
    assert Layer.open(p.url).channel_names == ("in", "out")
    # whole-number resolutions give the conventional scale key
    assert Layer.open(tmp_path / "image").info["scales"][0]["key"] == "8_8_40"


@pytest.mark.parametrize("kind,encoding", [("segmentation", "compresso"), ("segmentation", "raw"),
                                           ("affinities", "fpzip"), ("probability", "fpzip"),
                                           ("image", "png"), ("mask", "png")])
def test_other_encodings_round_trip_exactly(tmp_path, kind, encoding):
    layer = Layer.create(tmp_path / "l", kind, (10, 40, 36), chunk_size=(4, 16, 16), encoding=encoding,
                         num_channels=1 if kind == "probability" else None)
    data = random_for(kind, layer.shape)
    layer.write(data)
    assert Layer.open(layer.url).encoding == encoding
    np.testing.assert_array_equal(Layer.open(layer.url).read(), data)


def test_jpeg_image_round_trips_closely(tmp_path):
    layer = Layer.create(tmp_path / "j", "image", (8, 64, 64), chunk_size=(4, 32, 32), encoding="jpeg")
    z, y, x = np.mgrid[0:8, 0:64, 0:64]
    data = (127 + 100 * np.sin(y / 7.0) * np.cos(x / 9.0) + z).astype(np.uint8)
    layer.write(data)
    back = Layer.open(layer.url).read()
    err = np.abs(back.astype(int) - data.astype(int))
    assert err.mean() < 2 and err.max() < 16


def test_write_covering_many_chunks_reads_back_exactly(tmp_path):
    # stack.md pitfall 1: CloudVolume's parallel write corrupted writes covering > 10 chunks
    for kind in ("image", "affinities"):
        layer = Layer.create(tmp_path / kind, kind, (16, 64, 96), chunk_size=(4, 16, 16))
        data = random_for(kind, layer.shape)
        layer.write(data)
        assert len(chunk_files(tmp_path / kind)) == 4 * 4 * 6
        np.testing.assert_array_equal(Layer.open(layer.url).read(), data)


def test_partial_non_aligned_writes_keep_the_rest(tmp_path):
    layer = Layer.create(tmp_path / "s", "segmentation", (12, 30, 30), voxel_offset=(10, 20, 30),
                         chunk_size=(4, 8, 8))
    full = np.zeros(layer.shape, np.uint64)
    a = RNG.integers(1, 1000, (5, 13, 11)).astype(np.uint64)
    b = RNG.integers(1000, 2000, (3, 9, 17)).astype(np.uint64)
    layer.write(a, (11, 23, 33))
    layer.write(b, (13, 30, 41))
    full[1:6, 3:16, 3:14] = a
    full[3:6, 10:19, 11:28] = b
    np.testing.assert_array_equal(Layer.open(layer.url).read(), full)


def test_nan_is_allowed_in_float_layers(tmp_path):
    for enc in ("raw", "fpzip"):
        layer = Layer.create(tmp_path / enc, "probability", (4, 8, 8), num_channels=1, encoding=enc)
        data = RNG.random((1, 4, 8, 8), dtype=np.float32)
        data[0, 1, 2, 3] = np.nan
        layer.write(data[0])  # (z, y, x) for a one-channel probability layer
        back = Layer.open(layer.url).read()
        assert back.shape == (1, 4, 8, 8)
        np.testing.assert_array_equal(np.isnan(back), np.isnan(data))
        np.testing.assert_array_equal(np.nan_to_num(back), np.nan_to_num(data))


def test_layers_open_in_plain_cloudvolume(tmp_path):
    from cloudvolume import CloudVolume

    for kind in ("image", "segmentation", "affinities"):
        layer = Layer.create(tmp_path / kind, kind, (6, 20, 24), voxel_offset=(2, 4, 6), chunk_size=(4, 8, 8))
        data = random_for(kind, layer.shape)
        layer.write(data)
        cv = CloudVolume(layer.url)
        got = np.asarray(cv[:])  # x, y, z, c
        want = data if data.ndim == 4 else data[None]
        np.testing.assert_array_equal(got, want.transpose(3, 2, 1, 0))
        assert tuple(cv.voxel_offset) == (6, 4, 2)
        assert cv.info["type"] == KINDS[kind].layer_type


@pytest.mark.parametrize("dtype,nch,ltype,kind", [("uint8", 1, "image", "image"),
                                                  ("uint64", 1, "segmentation", "segmentation"),
                                                  ("uint32", 1, "segmentation", "segmentation"),
                                                  ("float32", 3, "image", "affinities"),
                                                  ("float32", 2, "image", "probability")])
def test_layer_written_by_plain_cloudvolume_opens_with_inferred_kind(tmp_path, dtype, nch, ltype, kind):
    from cloudvolume import CloudVolume

    info = CloudVolume.create_new_info(num_channels=nch, layer_type=ltype, data_type=dtype, encoding="raw",
                                       resolution=(4, 4, 40), voxel_offset=(0, 0, 0), volume_size=(16, 16, 4),
                                       chunk_size=(8, 8, 4))
    cv = CloudVolume(f"file://{tmp_path}/cv", info=info)
    cv.commit_info()
    data = (RNG.random((16, 16, 4, nch)) * 100).astype(dtype)
    cv[:] = data
    layer = Layer.open(tmp_path / "cv")
    assert layer.kind.name == kind
    assert layer.resolution == (40.0, 4.0, 4.0)
    got = layer.read()
    want = data.transpose(3, 2, 1, 0)
    np.testing.assert_array_equal(got, want if layer.multichannel else want[0])


def test_unknown_dtype_layer_is_refused_on_open(tmp_path):
    from cloudvolume import CloudVolume

    info = CloudVolume.create_new_info(1, "image", "int16", "raw", (1, 1, 1), (0, 0, 0), (8, 8, 8), (8, 8, 8))
    CloudVolume(f"file://{tmp_path}/i16", info=info).commit_info()
    with pytest.raises(InputError, match="int16"):
        Layer.open(tmp_path / "i16")


def test_create_refuses_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="unknown layer kind 'labels'"):
        Layer.create(tmp_path / "a", "labels", (4, 4, 4))
    with pytest.raises(InputError, match="positive"):
        Layer.create(tmp_path / "a", "image", (4, -4, 4))
    with pytest.raises(InputError):
        Layer.create(tmp_path / "a", "image", (4, 4))
    with pytest.raises(InputError, match="num_channels"):
        Layer.create(tmp_path / "a", "probability", (4, 4, 4))
    with pytest.raises(InputError, match="3 channel"):
        Layer.create(tmp_path / "a", "affinities", (4, 4, 4), num_channels=2)
    with pytest.raises(InputError, match="channel_names"):
        Layer.create(tmp_path / "a", "probability", (4, 4, 4), num_channels=2, channel_names=["a"])
    with pytest.raises(InputError, match="encoding 'jpeg'"):
        Layer.create(tmp_path / "a", "segmentation", (4, 4, 4), encoding="jpeg")
    with pytest.raises(InputError, match="encoding"):
        Layer.create(tmp_path / "a", "mask", (4, 4, 4), encoding="compressed_segmentation")
    with pytest.raises(InputError, match="resolution"):
        Layer.create(tmp_path / "a", "image", (4, 4, 4), resolution=(0, 4, 4))
    assert not os.path.exists(tmp_path / "a")


def test_write_refuses_wrong_dtype_dims_channels_and_bbox(tmp_path):
    img = Layer.create(tmp_path / "img", "image", (4, 8, 8))
    aff = Layer.create(tmp_path / "aff", "affinities", (4, 8, 8))
    seg = Layer.create(tmp_path / "seg", "segmentation", (4, 8, 8))
    with pytest.raises(InputError, match="dtype uint16"):
        img.write(np.zeros((4, 8, 8), np.uint16))
    with pytest.raises(InputError, match="dtype float64"):
        aff.write(np.zeros((3, 4, 8, 8)))
    with pytest.raises(InputError, match="dtype int64"):
        seg.write(np.zeros((4, 8, 8), np.int64))
    with pytest.raises(InputError, match="shape"):
        img.write(np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="shape"):
        img.write(np.zeros((2, 4, 8, 8), np.uint8))
    with pytest.raises(InputError, match="c=3"):
        aff.write(np.zeros((2, 4, 8, 8), np.float32))
    with pytest.raises(InputError, match="c=3"):
        aff.write(np.zeros((4, 8, 8), np.float32))
    with pytest.raises(BboxError, match="outside"):
        img.write(np.zeros((4, 8, 8), np.uint8), (1, 0, 0))
    with pytest.raises(BboxError, match="outside"):
        img.write(np.zeros((1, 1, 1), np.uint8), (-1, 0, 0))
    with pytest.raises(InputError, match="offset"):
        img.write(np.zeros((1, 1, 1), np.uint8), (0.5, 0, 0))
    with pytest.raises(BboxError, match="outside"):
        img.read(Bbox((0, 0, 0), (5, 8, 8)))
    with pytest.raises(BboxError, match="empty"):
        img.read(Bbox((0, 0, 0), (0, 8, 8)))
    # nothing was written by the refused calls
    assert chunk_files(tmp_path / "img") == []
    assert not img.read().any()


def test_open_missing_layer_is_input_error(tmp_path):
    with pytest.raises(InputError, match="no Precomputed layer"):
        Layer.open(tmp_path / "nothing")
    (tmp_path / "file.npz").write_bytes(b"PK")
    with pytest.raises(InputError, match="not a Precomputed layer"):
        Layer.open(tmp_path / "file.npz")
    assert not layer_exists(tmp_path / "nothing")


def test_existing_layer_is_never_replaced_without_overwrite(tmp_path):
    layer = Layer.create(tmp_path / "l", "image", (8, 32, 32), chunk_size=(4, 16, 16))
    layer.write(random_for("image", layer.shape))
    before = tree_hashes(tmp_path / "l")
    assert len(before) == 2 + 8
    with pytest.raises(LayerExistsError, match="overwrite"):
        Layer.create(tmp_path / "l", "image", (8, 32, 32))
    with pytest.raises(LayerExistsError):
        Layer.create(str(tmp_path / "l"), "segmentation", (2, 2, 2), resolution=(1, 1, 1))
    assert tree_hashes(tmp_path / "l") == before


def test_overwrite_replaces_cleanly(tmp_path):
    old = Layer.create(tmp_path / "l", "image", (8, 32, 32), chunk_size=(4, 16, 16))
    old.write(np.full(old.shape, 7, np.uint8))
    new = Layer.create(tmp_path / "l", "segmentation", (4, 16, 16), resolution=(30, 4, 4),
                       chunk_size=(4, 8, 8), overwrite=True)
    assert chunk_files(tmp_path / "l") == []  # no stale chunk files, no old scale folder
    assert sorted(os.listdir(tmp_path / "l")) == ["info", "provenance"]
    assert not new.read().any()
    again = Layer.open(tmp_path / "l")
    assert again.kind.name == "segmentation" and again.size == (4, 16, 16)


def test_non_layer_folder_is_not_touched(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    for ow in (False, True):
        with pytest.raises(LayerExistsError, match="not empty"):
            Layer.create(folder, "image", (4, 4, 4), overwrite=ow)
    assert os.listdir(folder) == ["notes.txt"]
    Layer.create(tmp_path / "empty_ok", "image", (4, 4, 4))  # a new folder is fine


def test_urls(tmp_path):
    assert normalize_url(str(tmp_path)) == f"file://{tmp_path}"
    assert normalize_url(f"precomputed://file://{tmp_path}") == f"file://{tmp_path}"
    assert normalize_url("gs://bucket/layer/") == "gs://bucket/layer"
    assert join_url(tmp_path, "gt/segmentation") == f"file://{tmp_path}/gt/segmentation"
    with pytest.raises(InputError, match="scheme"):
        normalize_url("ftp://x/y")


def test_remote_protocols_use_the_same_code():
    # mem:// goes through CloudFiles/CloudVolume like gs:// and s3:// (no local-path shortcuts)
    url = "mem://emkit-test/seg"
    layer = Layer.create(url, "segmentation", (4, 16, 16), chunk_size=(2, 8, 8), overwrite=True)
    data = random_for("segmentation", layer.shape)
    layer.write(data)
    assert layer_exists(url)
    np.testing.assert_array_equal(Layer.open(url).read(), data)
    with pytest.raises(LayerExistsError):
        Layer.create(url, "image", (2, 8, 8))
    Layer.create(url, "image", (2, 8, 8), overwrite=True)
    from cloudfiles import CloudFiles

    assert sorted(CloudFiles(url).list()) == ["info", "provenance"]  # old chunks deleted


def test_default_chunk_follows_resolution(tmp_path):
    from emkit.io.layer import default_chunk_size

    assert default_chunk_size((40, 8, 8)) == (16, 128, 128)
    assert default_chunk_size((10, 10, 10)) == (64, 64, 64)
    assert default_chunk_size((50, 4, 4)) == (16, 256, 256)
    assert all(c <= 256 for c in default_chunk_size((1, 1, 1)))
    iso = Layer.create(tmp_path / "iso", "image", (100, 100, 100), resolution=(10, 10, 10))
    assert iso.chunk_size == (64, 64, 64)
    small = Layer.create(tmp_path / "small", "image", (4, 40, 300), resolution=(40, 8, 8))
    assert small.chunk_size == (4, 40, 128)
