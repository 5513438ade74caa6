"""Pyramids: the factor rule, averaging / mode per block, chunked layers equal to the array form."""
import numpy as np
import pytest

from emkit.errors import InputError, LayerExistsError
from emkit.io import Layer
from emkit.pyramid import downsample, mip_factors, pyramid, pyramid_layers


def read_mip(url, mip):
    from cloudvolume import CloudVolume

    cv = CloudVolume(url, mip=mip, fill_missing=False, progress=False)
    return np.asarray(cv[:]).transpose(3, 2, 1, 0)


def test_mip_factor_rule():
    assert mip_factors((40, 8, 8), 4) == [(1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert mip_factors((10, 10, 10), 2) == [(2, 2, 2), (2, 2, 2)]
    assert mip_factors((50, 4, 4), 4) == [(1, 2, 2)] * 3 + [(2, 2, 2)]
    with pytest.raises(InputError, match="mips"):
        mip_factors((40, 8, 8), -1)


def test_downsample_averages_images_and_takes_the_mode_of_labels():
    img = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    out = downsample(img, (1, 2, 2), "image")
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    assert out[1, 0, 2] == pytest.approx(img[1, 0:2, 4:6].mean())
    odd = downsample(np.ones((3, 5, 7), np.uint8) * 9, (2, 2, 2), "image")
    assert odd.shape == (2, 3, 4) and (odd == 9).all()  # partial blocks at the high end: ceil(shape / f)

    seg = np.zeros((1, 4, 4), np.uint64)
    seg[0, :2, :2] = [[5, 5], [5, 7]]          # 5 is the mode
    seg[0, 2:, 2:] = [[7, 9], [9, 9]]          # 9 is the mode
    out = downsample(seg, (1, 2, 2), "segmentation")
    assert out.dtype == np.uint64 and out[0, 0, 0] == 5 and out[0, 1, 1] == 9
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 50, (6, 16, 16)).astype(np.uint64) * 1000003
    ids = set(np.unique(labels).tolist())
    assert set(np.unique(downsample(labels, (2, 2, 2), "segmentation")).tolist()) <= ids  # ids never mix
    with pytest.raises(InputError, match="kind"):
        downsample(img, (1, 2, 2), "histogram")
    with pytest.raises(InputError, match="factor"):
        downsample(img, (1, 0, 2), "image")


@pytest.mark.parametrize("kind,one_mip_per_pass", [("image", False), ("image", True), ("segmentation", False),
                                                    ("segmentation", True)])
def test_chunked_pyramid_equals_array_pyramid(tmp_path, monkeypatch, kind, one_mip_per_pass):
    """Tasks make several mips from one read (default), or one mip per pass (a tiny read budget)."""
    import emkit.pyramid
    from emkit.phantom import make_phantom

    if one_mip_per_pass:
        monkeypatch.setattr(emkit.pyramid, "TASK_READ_BYTES", 1)

    ph = make_phantom((16, 128, 128), seed=2, defects=None)
    arr = ph.image if kind == "image" else ph.segmentation.astype(np.uint64)
    arr = np.ascontiguousarray(arr[:, :100, :76])  # sizes that leave partial blocks and chunks
    layer = Layer.create(tmp_path / kind, kind, arr.shape, chunk_size=(8, 32, 32))
    layer.write(arr)
    rep = pyramid_layers(layer.url, mips=3, task_size=(8, 32, 32), workers=0, progress=False)
    assert rep.factors == [[1, 2, 2], [1, 2, 2], [2, 2, 2]]
    assert rep.chunks == (8 + 2 + 1 if one_mip_per_pass else 1)  # tasks of 8,32,32 at the last mip of a pass
    expect = pyramid(arr, rep.factors, kind)
    info = Layer.open(layer.url).info
    assert [s["resolution"] for s in info["scales"]] == [[8, 8, 40], [16, 16, 40], [32, 32, 40], [64, 64, 80]]
    for mip, ref in enumerate(expect, start=1):
        got = read_mip(layer.url, mip)[0]
        assert got.shape == ref.shape == tuple(-(-s // c) for s, c in zip(arr.shape, np.prod(rep.factors[:mip], axis=0)))
        assert np.array_equal(got, ref), f"mip {mip} differs"
    assert np.array_equal(read_mip(layer.url, 0)[0], arr)  # mip 0 untouched


def test_existing_scales_are_refused_unless_overwrite(tmp_path):
    layer = Layer.create(tmp_path / "img", "image", (8, 64, 64), chunk_size=(8, 32, 32))
    layer.write(np.full((8, 64, 64), 7, np.uint8))
    pyramid_layers(layer.url, mips=2, workers=0, progress=False)
    with pytest.raises(LayerExistsError, match="already has 2 scale"):
        pyramid_layers(layer.url, mips=1, workers=0, progress=False)
    layer.write(np.full((8, 64, 64), 3, np.uint8))
    rep = pyramid_layers(layer.url, mips=1, workers=0, progress=False, overwrite=True)
    assert len(Layer.open(layer.url).info["scales"]) == 2 and rep.sizes == [[8, 32, 32]]
    assert (read_mip(layer.url, 1) == 3).all()

    off = Layer.create(tmp_path / "off", "image", (8, 64, 64), voxel_offset=(0, 3, 0), chunk_size=(8, 32, 32))
    with pytest.raises(InputError, match="voxel offset"):
        pyramid_layers(off.url, mips=1, workers=0, progress=False)


def test_several_tasks_each_making_several_mips(tmp_path):
    rng = np.random.default_rng(3)
    arr = (rng.integers(1, 6, (16, 100, 76)) * 7).astype(np.uint64)
    layer = Layer.create(tmp_path / "seg", "segmentation", arr.shape, chunk_size=(8, 32, 32))
    layer.write(arr)
    rep = pyramid_layers(layer.url, mips=2, workers=0, progress=False)
    assert rep.chunks == 2  # mip 2 is 16 x 25 x 19 in chunks of 8 x 25 x 19: two tasks, each writing mips 1 and 2
    for mip, ref in enumerate(pyramid(arr, rep.factors, "segmentation"), start=1):
        assert np.array_equal(read_mip(layer.url, mip)[0], ref), mip
