"""Reading files (emkit.io.formats) and importing/exporting layers (emkit.io.convert)."""
import hashlib
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from emkit.errors import BboxError, InputError, LayerExistsError
from emkit.io import Layer
from emkit.io.convert import DEFAULT_RESOLUTION, ImportNote, _block_plan, export_volume, import_volume
from emkit.io.formats import detect_format, list_arrays, natural_key, open_volume, read_volume, write_npz

RNG = np.random.default_rng(7)
REAL_EM = Path(__file__).parent / "data" / "real_em"
VOL = RNG.integers(0, 256, (9, 20, 23)).astype(np.uint8)
BLOCK = (slice(2, 7), slice(3, 17), slice(5, 6))


def tree_hashes(path):
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def imp(*args, **kw):
    """import_volume with notes silenced and no progress bar."""
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportNote)
        return import_volume(*args, **kw)


def make_cremi(path, raw, ids, clefts=None, res=(40.0, 4.0, 4.0), label_offset_nm=(0.0, 0.0, 0.0)):
    with h5py.File(path, "w") as f:
        d = f.create_dataset("volumes/raw", data=raw)
        d.attrs["resolution"] = res
        d = f.create_dataset("volumes/labels/neuron_ids", data=ids, chunks=True, compression="gzip")
        d.attrs["resolution"] = res
        d.attrs["offset"] = label_offset_nm
        if clefts is not None:
            f.create_dataset("volumes/labels/clefts", data=clefts).attrs["resolution"] = res
    return path


# --- reading each format ---------------------------------------------------------------------------
def check_source(path, expect, key=None, fmt=None):
    with open_volume(path, key=key) as src:
        if fmt:
            assert src.format == fmt
        assert src.shape == expect.shape and src.dtype == expect.dtype
        np.testing.assert_array_equal(src.read(), expect)
        np.testing.assert_array_equal(src.read(BLOCK), expect[(Ellipsis, *BLOCK)])
    np.testing.assert_array_equal(read_volume(path, key=key), expect)


def test_npy_and_npz(tmp_path):
    np.save(tmp_path / "v.npy", VOL)
    check_source(tmp_path / "v.npy", VOL, fmt="npy")
    np.savez(tmp_path / "one.npz", anything=VOL)
    check_source(tmp_path / "one.npz", VOL, fmt="npz")
    np.savez_compressed(tmp_path / "two.npz", raw=VOL, seg=VOL.astype(np.uint32), meta=np.arange(3))
    check_source(tmp_path / "two.npz", VOL.astype(np.uint32), key="seg")
    with pytest.raises(InputError, match=r"raw \(9, 20, 23\) uint8.*seg.*--key"):
        open_volume(tmp_path / "two.npz")
    with pytest.raises(InputError, match="no array 'nope'.*raw"):
        open_volume(tmp_path / "two.npz", key="nope")
    assert {a.key for a in list_arrays(tmp_path / "two.npz")} == {"raw", "seg", "meta"}


def test_hdf5_and_cremi_key_choice(tmp_path):
    ids = RNG.integers(0, 5, VOL.shape).astype(np.uint64)
    path = make_cremi(tmp_path / "sample_A.hdf", VOL, ids, clefts=ids * 0 + 3, label_offset_nm=(40, 8, 0))
    assert detect_format(path) == "hdf5"
    with open_volume(path, kind="image") as src:
        assert src.key == "volumes/raw" and src.resolution == (40.0, 4.0, 4.0) and not src.offset
        np.testing.assert_array_equal(src.read(BLOCK), VOL[BLOCK])
    with open_volume(path, kind="segmentation") as src:
        assert src.key == "volumes/labels/neuron_ids"
        assert src.offset == (1, 2, 0)  # 40, 8, 0 nm at 40, 4, 4 nm
        np.testing.assert_array_equal(src.read(BLOCK), ids[BLOCK])
    check_source(path, ids * 0 + 3, key="volumes/labels/clefts")
    check_source(path, ids * 0 + 3, key="/volumes/labels/clefts")
    with pytest.raises(InputError, match="volumes/labels/clefts.*volumes/raw.*--key"):
        open_volume(path, kind="mask")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("stack", data=VOL)
        f.create_dataset("small", data=np.arange(3))  # not a volume: ignored when choosing
    check_source(tmp_path / "plain.h5", VOL, fmt="hdf5")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_arrays_and_groups(tmp_path, zarr_format):
    a = zarr.create_array(store=tmp_path / "a.zarr", shape=VOL.shape, chunks=(2, 8, 8), dtype=VOL.dtype,
                          zarr_format=zarr_format)
    a[:] = VOL
    check_source(tmp_path / "a.zarr", VOL, fmt="zarr")
    g = zarr.open_group(tmp_path / "g.zarr", mode="w", zarr_format=zarr_format)
    r = g.create_array("volumes/raw", shape=VOL.shape, chunks=(3, 8, 8), dtype=VOL.dtype)
    r[:] = VOL
    r.attrs["resolution"] = [30, 5, 5]
    r.attrs["offset"] = [60, 0, 50]
    s = g.create_array("volumes/labels/neuron_ids", shape=VOL.shape, dtype=np.uint64)
    s[:] = VOL.astype(np.uint64)
    with open_volume(tmp_path / "g.zarr", kind="image") as src:
        assert src.key == "volumes/raw" and src.resolution == (30.0, 5.0, 5.0) and src.offset == (2, 0, 10)
        np.testing.assert_array_equal(src.read(BLOCK), VOL[BLOCK])
    check_source(tmp_path / "g.zarr", VOL.astype(np.uint64), key="volumes/labels/neuron_ids")
    with pytest.raises(InputError, match="--key"):
        open_volume(tmp_path / "g.zarr")


def test_ome_zarr_level_zero_and_scale(tmp_path):
    g = zarr.open_group(tmp_path / "ome.zarr", mode="w", zarr_format=2)
    for lvl, arr in enumerate([VOL, VOL[:, ::2, ::2]]):
        g.create_array(str(lvl), shape=arr.shape, dtype=arr.dtype)[:] = arr
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n, "type": "space", "unit": "micrometer"}
                                                          for n in "zyx"],
                               "datasets": [{"path": "0", "coordinateTransformations": [
                                   {"type": "scale", "scale": [0.05, 0.004, 0.004]}]},
                                   {"path": "1", "coordinateTransformations": [
                                       {"type": "scale", "scale": [0.05, 0.008, 0.008]}]}]}]
    with open_volume(tmp_path / "ome.zarr") as src:
        assert src.key == "0"
        assert np.allclose(src.resolution, (50, 4, 4))
        np.testing.assert_array_equal(src.read(), VOL)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_multipage_tiff(tmp_path, compression):
    tifffile.imwrite(tmp_path / "s.tif", VOL, compression=compression)
    check_source(tmp_path / "s.tif", VOL, fmt="tiff")
    with open_volume(tmp_path / "s.tif") as src:
        assert src.resolution is None


def test_single_page_tiff_is_one_section(tmp_path):
    tifffile.imwrite(tmp_path / "one.tiff", VOL[0])
    check_source(tmp_path / "one.tiff", VOL[:1])


def test_tiff_folder_is_sorted_naturally(tmp_path):
    folder = tmp_path / "sections"
    folder.mkdir()
    for z in range(VOL.shape[0]):  # s_1 ... s_9, but written as 1, 10, 2 ... so the order matters
        tifffile.imwrite(folder / f"s_{z * 5 + 1}.tif", VOL[z])
    (folder / "README.txt").write_text("not a tiff")
    assert sorted(os.listdir(folder), key=natural_key)[0] == "README.txt"
    assert sorted(["s_10.tif", "s_2.tif", "s_1.tif"], key=natural_key) == ["s_1.tif", "s_2.tif", "s_10.tif"]
    check_source(folder, VOL, fmt="tiff-folder")
    tifffile.imwrite(folder / "s_99.tif", VOL[0, :5])  # a section of another size
    with open_volume(folder) as src:
        with pytest.raises(InputError, match="s_99.tif.*differs"):
            src.read()


def test_tiff_resolution_metadata(tmp_path):
    tifffile.imwrite(tmp_path / "ij.tif", VOL, imagej=True, resolution=(1 / 0.004, 1 / 0.004),
                     metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"})
    with open_volume(tmp_path / "ij.tif") as src:
        assert np.allclose(src.resolution, (50, 4, 4))
        np.testing.assert_array_equal(src.read(), VOL)
    tifffile.imwrite(tmp_path / "ome.ome.tif", VOL, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 8, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 8,
                               "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 0.04, "PhysicalSizeZUnit": "µm"})
    with open_volume(tmp_path / "ome.ome.tif") as src:
        assert np.allclose(src.resolution, (40, 8, 8))


def test_imagej_hyperstack_channels_come_first(tmp_path):
    aff = RNG.random((3, 4, 10, 12), dtype=np.float32)
    tifffile.imwrite(tmp_path / "aff.tif", aff.transpose(1, 0, 2, 3), imagej=True, metadata={"axes": "ZCYX"})
    check_source(tmp_path / "aff.tif", aff)


def test_detect_format_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        detect_format(tmp_path / "missing.h5")
    (tmp_path / "x.bin").write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="cannot read"):
        detect_format(tmp_path / "x.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither"):
        detect_format(tmp_path / "empty")
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(InputError, match="HDF5"):
        open_volume(tmp_path / "bad.h5")
    np.save(tmp_path / "v.npy", VOL)
    with pytest.raises(InputError, match="single array"):
        open_volume(tmp_path / "v.npy", key="raw")
    Layer.create(tmp_path / "layer", "image", (2, 2, 2))
    with pytest.raises(InputError, match="Precomputed layer"):
        detect_format(tmp_path / "layer")


def test_write_npz(tmp_path):
    p = write_npz(tmp_path / "o.npz", VOL, resolution=(40, 8, 8), offset=(1, 2, 3), kind="image")
    with np.load(p) as z:
        np.testing.assert_array_equal(z["data"], VOL)
        assert z["resolution"].tolist() == [40, 8, 8] and z["offset"].tolist() == [1, 2, 3]
        assert str(z["kind"]) == "image"
    with pytest.raises(LayerExistsError):
        write_npz(tmp_path / "o.npz", VOL[:1], resolution=(1, 1, 1))
    with pytest.raises(InputError, match=".npz"):
        write_npz(tmp_path / "o.npy", VOL, resolution=(1, 1, 1))
    with pytest.raises(InputError, match="does not exist"):
        write_npz(tmp_path / "no" / "o.npz", VOL, resolution=(1, 1, 1))
    assert sorted(os.listdir(tmp_path)) == ["o.npz"]  # no temporary files left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask


# --- import: dtype rules per kind -----------------------------------------------------------------------
def test_image_import_refuses_non_uint8_unless_rescaled(tmp_path):
    ramp = np.linspace(1000, 5000, 4 * 16 * 16).reshape(4, 16, 16).astype(np.uint16)
    np.save(tmp_path / "u16.npy", ramp)
    with pytest.raises(InputError, match="dtype uint16.*--rescale"):
        imp(tmp_path / "u16.npy", tmp_path / "img", "image")
    assert not os.path.exists(tmp_path / "img")
    out = imp(tmp_path / "u16.npy", tmp_path / "img", "image", rescale="minmax").read()
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert (np.diff(out.ravel().astype(int)) >= 0).all()  # monotone
    expect = np.rint((ramp.astype(np.float64) - 1000) / 4000 * 255).astype(np.uint8)
    assert np.abs(out.astype(int) - expect).max() <= 1
    pct = imp(tmp_path / "u16.npy", tmp_path / "img2", "image", rescale=True).read()
    assert pct.min() == 0 and pct.max() == 255 and (np.diff(pct.ravel().astype(int)) >= 0).all()
    f = RNG.normal(0, 1, (4, 16, 16))
    f[0, 0, 0] = np.nan
    np.save(tmp_path / "f.npy", f)
    got = imp(tmp_path / "f.npy", tmp_path / "img3", "image", rescale="percentile").read()
    assert got[0, 0, 0] == 0 and got.std() > 30
    with pytest.raises(InputError, match="rescale"):
        imp(tmp_path / "u16.npy", tmp_path / "img4", "image", rescale="log")
    with pytest.raises(InputError, match="image layers only"):
        imp(tmp_path / "f.npy", tmp_path / "aff", "probability", rescale=True)


def test_segmentation_import_dtype_rules(tmp_path):
    ids = RNG.integers(0, 30000, (5, 12, 14)).astype(np.int16)
    np.save(tmp_path / "i16.npy", ids)
    seg = imp(tmp_path / "i16.npy", tmp_path / "s1", "segmentation")
    assert seg.dtype == np.uint64 and seg.encoding == "compressed_segmentation"
    np.testing.assert_array_equal(seg.read(), ids.astype(np.uint64))
    neg = ids.astype(np.int64)
    neg[3, 4, 5] = -7
    np.save(tmp_path / "neg.npy", neg)
    with pytest.raises(InputError, match="negative value -7"):
        imp(tmp_path / "neg.npy", tmp_path / "s2", "segmentation")
    frac = ids.astype(np.float64)
    frac[1, 1, 1] = 2.5
    np.save(tmp_path / "frac.npy", frac)
    with pytest.raises(InputError, match="non-integer value 2.5"):
        imp(tmp_path / "frac.npy", tmp_path / "s3", "segmentation")
    np.save(tmp_path / "whole.npy", ids.astype(np.float32))
    np.testing.assert_array_equal(imp(tmp_path / "whole.npy", tmp_path / "s4", "segmentation").read(),
                                  ids.astype(np.uint64))
    big = np.full((2, 4, 4), 2 ** 63 + 5, np.uint64)
    np.save(tmp_path / "big.npy", big)
    np.testing.assert_array_equal(imp(tmp_path / "big.npy", tmp_path / "s5", "segmentation",
                                      encoding="compresso").read(), big)
    for name in ("s2", "s3"):
        assert not os.path.exists(tmp_path / name)


def test_mask_import_dtype_rules(tmp_path):
    m = RNG.random((4, 10, 10)) > 0.5
    np.save(tmp_path / "b.npy", m)
    np.testing.assert_array_equal(imp(tmp_path / "b.npy", tmp_path / "m1", "mask").read(), m.astype(np.uint8))
    np.save(tmp_path / "i.npy", m.astype(np.int32))
    np.testing.assert_array_equal(imp(tmp_path / "i.npy", tmp_path / "m2", "mask").read(), m.astype(np.uint8))
    np.save(tmp_path / "u255.npy", m.astype(np.uint8) * 255)
    with pytest.raises(InputError, match=r"values \[255.0\].*0 or 1"):
        imp(tmp_path / "u255.npy", tmp_path / "m3", "mask")
    np.save(tmp_path / "half.npy", m * 0.5)
    with pytest.raises(InputError, match="0 or 1"):
        imp(tmp_path / "half.npy", tmp_path / "m4", "mask")


def test_float_kinds_import(tmp_path):
    aff = RNG.random((3, 4, 10, 12))
    np.save(tmp_path / "aff64.npy", aff)
    layer = imp(tmp_path / "aff64.npy", tmp_path / "aff", "affinities")
    np.testing.assert_array_equal(layer.read(), aff.astype(np.float32))
    np.save(tmp_path / "aff_u8.npy", (aff * 255).astype(np.uint8))
    with pytest.raises(InputError, match="dtype uint8.*float"):
        imp(tmp_path / "aff_u8.npy", tmp_path / "a2", "affinities")
    np.save(tmp_path / "two.npy", aff[:2].astype(np.float32))
    with pytest.raises(InputError, match=r"2 channel\(s\).*\(3, z, y, x\)"):
        imp(tmp_path / "two.npy", tmp_path / "a3", "affinities")
    with pytest.raises(InputError, match=r"\(3, z, y, x\)"):  # (z, y, x) has no channel axis
        imp(_save(tmp_path / "zyx.npy", aff[0]), tmp_path / "a4", "affinities")
    p = imp(tmp_path / "two.npy", tmp_path / "p2", "probability")
    assert p.num_channels == 2
    p1 = imp(tmp_path / "zyx.npy", tmp_path / "p1", "probability")
    assert p1.num_channels == 1 and p1.read().shape == (1, 4, 10, 12)
    nan = aff[0].copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="finite"):
        imp(_save(tmp_path / "nan.npy", nan), tmp_path / "p3", "segmentation")


def _save(path, arr):
    np.save(path, arr)
    return path


def test_wrong_dims_and_channels(tmp_path):
    for arr, match in [(VOL[0], r"2 dims.*\(z, y, x\)"), (VOL[None, None], "5 dims"),
                       (np.stack([VOL, VOL]), r"2 channel\(s\).*image")]:
        with pytest.raises(InputError, match=match):
            imp(_save(tmp_path / "x.npy", arr), tmp_path / "l", "image")
    one = imp(_save(tmp_path / "c1.npy", VOL[None]), tmp_path / "c1", "image")  # (1, z, y, x) is fine
    np.testing.assert_array_equal(one.read(), VOL)
    with pytest.raises(InputError, match="unknown layer kind 'raw'"):
        imp(tmp_path / "c1.npy", tmp_path / "k", "raw")


# --- import: geometry, blocks, safety -------------------------------------------------------------------
def test_resolution_and_offset_sources(tmp_path):
    np.save(tmp_path / "v.npy", VOL)
    with pytest.warns(ImportNote, match="default resolution"):
        layer = import_volume(tmp_path / "v.npy", tmp_path / "d", "image", progress=False)
    assert layer.resolution == DEFAULT_RESOLUTION and layer.voxel_offset == (0, 0, 0)
    layer = imp(tmp_path / "v.npy", tmp_path / "g", "image", resolution=(30, 4, 4), offset=(5, -2, 3))
    assert layer.resolution == (30, 4, 4) and layer.voxel_offset == (5, -2, 3)
    np.testing.assert_array_equal(layer.read(), VOL)
    ids = RNG.integers(0, 5, VOL.shape).astype(np.uint64)
    path = make_cremi(tmp_path / "c.hdf", VOL, ids, res=(40, 4, 4), label_offset_nm=(80, 40, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImportNote)
        with pytest.raises(ImportNote, match="resolution"):  # it says where the resolution came from
            import_volume(path, tmp_path / "craw", "image", progress=False)
    raw = imp(path, tmp_path / "craw2", "image")
    assert raw.resolution == (40, 4, 4) and raw.voxel_offset == (0, 0, 0)
    seg = imp(path, tmp_path / "cseg", "segmentation")
    assert seg.resolution == (40, 4, 4) and seg.voxel_offset == (2, 10, 0)
    np.testing.assert_array_equal(seg.read(), ids)
    clefts = imp(path, tmp_path / "ccl", "segmentation", key="volumes/labels/neuron_ids", resolution=(40, 8, 8),
                 offset=(0, 0, 0))
    assert clefts.resolution == (40, 8, 8) and clefts.voxel_offset == (0, 0, 0)


def test_block_plan_bounds_memory():
    assert _block_plan((100, 1000, 1000), (16, 128, 128), 1, 256 * 2 ** 20) == (112, 1024, 1024)  # all of z (in whole chunks)
    bz, by, bx = _block_plan((100, 30000, 30000), (16, 128, 128), 1, 256 * 2 ** 20)
    assert bz == 16 and bz * by * bx <= 256 * 2 ** 20 and by % 128 == 0 and bx % 128 == 0
    assert _block_plan((10, 10, 10), (4, 4, 4), 8, 1) == (4, 4, 4)  # never below one chunk


@pytest.mark.parametrize("fmt", ["tiff-zlib", "tiff", "tiff-folder", "hdf5", "zarr", "npz"])
def test_chunked_import_is_exact(tmp_path, fmt):
    vol = RNG.integers(0, 256, (11, 37, 29)).astype(np.uint8)
    if fmt.startswith("tiff") and fmt != "tiff-folder":
        src = tmp_path / "v.tif"
        tifffile.imwrite(src, vol, compression="zlib" if fmt == "tiff-zlib" else None)
    elif fmt == "tiff-folder":
        src = tmp_path / "secs"
        src.mkdir()
        for z in range(vol.shape[0]):
            tifffile.imwrite(src / f"{z}.tif", vol[z])
    elif fmt == "hdf5":
        src = tmp_path / "v.h5"
        with h5py.File(src, "w") as f:
            f.create_dataset("v", data=vol, chunks=(3, 10, 10))
    elif fmt == "zarr":
        src = tmp_path / "v.zarr"
        zarr.create_array(store=src, shape=vol.shape, chunks=(5, 7, 9), dtype=vol.dtype)[:] = vol
    else:
        src = tmp_path / "v.npz"
        np.savez(src, vol=vol)
    # 2 KiB blocks: many blocks, one chunk (2, 8, 8) high, clipped at the volume's edges
    layer = imp(src, tmp_path / "l", "image", chunk_size=(2, 8, 8), offset=(1, 2, 3), block_bytes=2048)
    np.testing.assert_array_equal(layer.read(), vol)
    assert layer.chunk_size == (2, 8, 8) and layer.bbox.start == (1, 2, 3)


def test_refused_import_leaves_existing_layer_unchanged(tmp_path):
    np.save(tmp_path / "v.npy", VOL)
    imp(tmp_path / "v.npy", tmp_path / "l", "image", chunk_size=(4, 8, 8))
    before = tree_hashes(tmp_path / "l")
    with pytest.raises(LayerExistsError, match="--overwrite"):
        imp(tmp_path / "v.npy", tmp_path / "l", "image")
    np.save(tmp_path / "neg.npy", VOL.astype(np.int8))  # has negative values
    with pytest.raises(InputError, match="negative"):  # refused before the old layer is touched
        imp(tmp_path / "neg.npy", tmp_path / "l", "segmentation", overwrite=True)
    with pytest.raises(InputError, match="no such file"):
        imp(tmp_path / "missing.tif", tmp_path / "l", "image", overwrite=True)
    assert tree_hashes(tmp_path / "l") == before
    new = imp(tmp_path / "v.npy", tmp_path / "l", "segmentation", overwrite=True)
    np.testing.assert_array_equal(Layer.open(new.url).read(), VOL.astype(np.uint64))


def test_export_and_reimport(tmp_path):
    ids = RNG.integers(0, 9, (6, 16, 16)).astype(np.uint64)
    layer = imp(_save(tmp_path / "ids.npy", ids), tmp_path / "seg", "segmentation", resolution=(30, 6, 6),
                offset=(10, 20, 30))
    out = export_volume(layer.url, tmp_path / "all.npz")
    with np.load(out) as z:
        np.testing.assert_array_equal(z["data"], ids)
        assert z["offset"].tolist() == [10, 20, 30] and z["resolution"].tolist() == [30, 6, 6]
        assert str(z["kind"]) == "segmentation"
    part = export_volume(layer.url, tmp_path / "part.npz", bbox="11:13,20:30,40:46")
    with np.load(part) as z:
        np.testing.assert_array_equal(z["data"], ids[1:3, 0:10, 10:16])
        assert z["offset"].tolist() == [11, 20, 40]
    back = imp(part, tmp_path / "back", "segmentation")  # resolution and offset travel with the npz
    assert back.resolution == (30, 6, 6) and back.voxel_offset == (11, 20, 40)
    np.testing.assert_array_equal(back.read(), ids[1:3, 0:10, 10:16])
    with pytest.raises(LayerExistsError):
        export_volume(layer.url, tmp_path / "part.npz")
    export_volume(layer.url, tmp_path / "part.npz", bbox="10:11,20:21,30:31", overwrite=True)
    with pytest.raises(BboxError, match="outside"):
        export_volume(layer.url, tmp_path / "x.npz", bbox="0:5,20:30,30:40")
    with pytest.raises(InputError, match="no Precomputed layer"):
        export_volume(tmp_path / "nothing", tmp_path / "y.npz")
    aff = imp(_save(tmp_path / "aff.npy", RNG.random((3, 2, 4, 4), dtype=np.float32)), tmp_path / "aff",
              "affinities")
    with np.load(export_volume(aff.url, tmp_path / "aff.npz")) as z:
        assert z["data"].shape == (3, 2, 4, 4) and z["channels"].tolist() == ["z", "y", "x"]


@pytest.mark.parametrize("name,res", [("flyem_fib_10nm_crop_8x128x128.tif", (10, 10, 10)),
                                      ("isbi2012_sstem_crop_8x128x128.tif", (50, 4, 4))])
def test_real_em_crops_import(tmp_path, name, res):
    src = REAL_EM / name
    vol = tifffile.imread(src)
    assert vol.shape == (8, 128, 128) and vol.dtype == np.uint8 and vol.std() > 10
    layer = imp(src, tmp_path / "img", "image", resolution=res, chunk_size=(4, 64, 64))
    assert layer.resolution == tuple(float(r) for r in res)
    np.testing.assert_array_equal(layer.read(), vol)
