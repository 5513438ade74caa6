"""emkit.inference: global patch grid, blending, masks, chunked == single pass, layers, resume, CLI.

Real tiny nets (emkit.nets.RSUNet with widths (4, 8), and plain Conv3d nets following the model
interface), real Precomputed layers on file:// under tmp_path, a real 2-worker dask LocalCluster.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emkit.errors import InputError, LayerExistsError
from emkit.geometry import Bbox
from emkit.inference import (PatchGrid, blend_weight, channel_names, infer_layers, output_kind, predict,
                             predict_box)
from emkit.inference.blend import axis_starts, resolve_overlap
from emkit.inference.chunked import default_chunk_size, load_model_cached
from emkit.io import Layer
from emkit.nets import HeadSpec, NetConfig, RSUNet, boundary_heads, save
from emkit.runtime import Markers, markers_url

SHAPE = (16, 96, 96)
STORAGE = (8, 32, 32)
PATCH = (8, 32, 32)


class ConvNet(torch.nn.Module):
    """A plain two-layer Conv3d net that follows emkit's model interface (not an RSUNet)."""

    def __init__(self, heads=(("affinity", 3), ("myelin", 1)), width=4, kernel=3, patch=PATCH,
                 resolution=(40, 8, 8)):
        super().__init__()
        c = sum(n for _, n in heads)
        self.in_channels = 1
        self.input_multiple = (1, 2, 2)
        self.config = SimpleNamespace(patch_size=patch, resolution=resolution, in_channels=1)
        self.head_slices, s = {}, 0
        for name, n in heads:
            self.head_slices[name] = slice(s, s + n)
            s += n
        pad = kernel // 2
        self.c1 = torch.nn.Conv3d(1, width, kernel, padding=pad)
        self.c2 = torch.nn.Conv3d(width, c, kernel, padding=pad)

    def forward(self, x):
        return self.c2(torch.relu(self.c1(x)))


def affine_net(scale: float, bias: float) -> ConvNet:
    """1x1x1 net computing logit = scale * x + bias on every channel (output independent of context)."""
    net = ConvNet(heads=(("affinity", 3),), width=1, kernel=1)
    with torch.no_grad():
        net.c1.weight.fill_(1.0)
        net.c1.bias.fill_(0.0)
        net.c2.weight.fill_(scale)
        net.c2.bias.fill_(bias)
    return net


def tiny_rsunet(heads=None, seed=0) -> RSUNet:
    torch.manual_seed(seed)
    cfg = NetConfig(widths=(4, 8), heads=heads or boundary_heads(myelin=True, long_range=False),
                    patch_size=PATCH, resolution=(40, 8, 8))
    return RSUNet(cfg).eval()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(7)
    from scipy import ndimage

    img = ndimage.gaussian_filter(rng.random(SHAPE), (0.5, 2, 2))
    img = (255 * (img - img.min()) / np.ptp(img)).astype(np.uint8)
    return img


@pytest.fixture(scope="module")
def net():
    return tiny_rsunet()


@pytest.fixture(scope="module")
def single(net, image):
    return predict(net, image, heads="all", progress=False)


def write_image(tmp_path, image, name="image", offset=(3, 5, 7), resolution=(40, 8, 8)):
    lay = Layer.create(tmp_path / name, "image", image.shape, chunk_size=STORAGE, voxel_offset=offset,
                       resolution=resolution)
    lay.write(image)
    return lay


def write_mask(tmp_path, mask, name, offset=(3, 5, 7), resolution=(40, 8, 8)):
    lay = Layer.create(tmp_path / name, "mask", mask.shape, chunk_size=STORAGE, voxel_offset=offset,
                       resolution=resolution)
    lay.write(mask.astype(np.uint8))
    return lay


def defect_masks():
    m_in = np.zeros(SHAPE, np.uint8)
    m_in[5] = 1                      # a missing section
    m_in[:, 40:60, 10:30] = 1        # a fold-like block
    m_out = np.zeros(SHAPE, np.uint8)
    m_out[9:12, 60:90, 50:70] = 1
    return m_in, m_out


# ---- blending and the grid --------------------------------------------------------------------------
def test_blend_weight_positive_smooth_and_symmetric():
    w = blend_weight((6, 16, 10))
    assert w.shape == (6, 16, 10) and w.dtype == np.float32
    assert w.min() > 0 and w.max() <= 1
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1], rtol=1e-6)
    assert w[3, 8, 5] > 0.9 and w[0, 0, 0] < 0.01  # peaked at the centre, small at the corners
    c = w[3, 8, 5]  # separable: w[i,j,k] c^2 == w[i,8,5] w[3,j,5] w[3,8,k]
    outer = np.einsum("i,j,k->ijk", w[:, 8, 5], w[3, :, 5], w[3, 8, :])
    np.testing.assert_allclose(w * c * c, outer, rtol=1e-5)


def test_axis_starts_cover_and_stay_inside():
    assert axis_starts(96, 32, 24).tolist() == [0, 24, 48, 64]
    assert axis_starts(96, 32, 32).tolist() == [0, 32, 64]
    assert axis_starts(10, 32, 24).tolist() == [0]
    for n, p, s in [(97, 32, 24), (33, 32, 1), (50, 8, 7)]:
        st = axis_starts(n, p, s)
        cov = np.zeros(n, int)
        for a in st:
            cov[a:a + p] += 1
        assert cov.min() >= 1 and st.max() + p == n


def test_patch_grid_shrinks_on_short_axes_and_validates():
    g = PatchGrid((5, 96, 40), (8, 32, 64), (2, 8, 16), (1, 2, 2))
    assert g.patch == (5, 32, 40) and g.stride == (3, 24, 24)
    assert len(g) == 1 * 4 * 1
    g2 = PatchGrid((5, 96, 41), (8, 32, 64), 0, (1, 2, 2))
    assert g2.patch == (5, 32, 42)  # rounded up to the input multiple; fed zeros beyond the volume
    with pytest.raises(InputError, match="multiple"):
        PatchGrid((16, 96, 96), (8, 33, 32), 0, (1, 2, 2))
    with pytest.raises(InputError, match="overlap"):
        PatchGrid((16, 96, 96), (8, 32, 32), (8, 0, 0))


def test_resolve_overlap_fraction_and_voxels():
    assert resolve_overlap(0.25, (8, 32, 32)) == (2, 8, 8)
    assert resolve_overlap((0, 0.5, 0.5), (8, 32, 32)) == (0, 16, 16)
    assert resolve_overlap((2, 6, 6), (8, 32, 32)) == (2, 6, 6)
    assert resolve_overlap(0, (8, 32, 32)) == (0, 0, 0)
    with pytest.raises(InputError):
        resolve_overlap((1, 0.5, 0.5), (8, 32, 32))
    with pytest.raises(InputError):
        resolve_overlap(1.5, (8, 32, 32))


def test_normalisation_is_exact_for_a_constant_net():
    """A net whose output does not depend on the input: blending must give exactly that output."""
    net = affine_net(0.0, 0.7)
    img = np.random.default_rng(0).integers(0, 256, (9, 50, 70), dtype=np.uint8)
    out = predict(net, img, patch_size=(4, 16, 16), overlap=(1, 5, 7), progress=False)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-0.7)), rtol=1e-6)


def test_patches_are_placed_where_they_belong():
    """A pointwise net gives sigmoid(scale * image) at every voxel iff patches are put back in place."""
    net = affine_net(3.0, -1.0)
    img = np.random.default_rng(1).integers(0, 256, (9, 50, 70), dtype=np.uint8)
    out = predict(net, img, patch_size=(4, 16, 16), overlap=0.3, progress=False, chunk_size=(4, 20, 33))
    expect = 1 / (1 + np.exp(-(3.0 * img.astype(np.float64) / 255 - 1.0)))
    np.testing.assert_allclose(out, np.broadcast_to(expect, out.shape), atol=1e-6)


# ---- array form -------------------------------------------------------------------------------------
def test_predict_shape_and_range(single):
    assert single.shape == (4, *SHAPE) and single.dtype == np.float32
    assert 0 <= single.min() and single.max() <= 1 and single.std() > 0


@pytest.mark.parametrize("chunk", [(8, 32, 32), (5, 40, 70), (16, 96, 96), (3, 17, 50)])
def test_chunked_equals_single_pass_everywhere(net, image, single, chunk):
    out = predict(net, image, heads="all", chunk_size=chunk, progress=False)
    assert np.abs(out - single).max() < 1e-5  # everywhere, the border included: the grid is global


def test_batch_size_does_not_change_the_result(net, image, single):
    for bs in (1, 3, 16):
        assert np.abs(predict(net, image, heads="all", batch_size=bs, progress=False) - single).max() < 1e-5


def test_input_mask_equals_feeding_zeros_and_output_mask_zeros(net, image, single):
    m_in, m_out = defect_masks()
    zeroed = np.where(m_in != 0, 0, image).astype(np.uint8)
    a = predict(net, image, heads="all", mask_in=m_in, progress=False)
    b = predict(net, zeroed, heads="all", progress=False)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - single).max() > 1e-3  # the mask did change something
    c = predict(net, image, heads="all", mask_out=m_out, progress=False)
    assert (c[:, m_out != 0] == 0).all()
    np.testing.assert_array_equal(c[:, m_out == 0], single[:, m_out == 0])


def test_heads_channels_and_kind(net, image, single):
    assert channel_names(net, "all") == ["affinity_z", "affinity_y", "affinity_x", "myelin"]
    # a boundary net writes its affinity head by default: an affinities layer for emkit segment
    assert channel_names(net) == ["affinity_z", "affinity_y", "affinity_x"]
    assert output_kind(net, ["affinity"]) == "affinities" and output_kind(net) == "affinities"
    assert output_kind(net, "all") == "probability" and output_kind(net, "affinity,myelin") == "probability"
    np.testing.assert_array_equal(predict(net, image, progress=False), single[:3])
    my = predict(net, image, heads="myelin", progress=False)
    np.testing.assert_allclose(my[0], single[3], atol=1e-6)
    sem = tiny_rsunet(heads=(HeadSpec("semantic", 5, "semantic"),))
    assert channel_names(sem) == [f"semantic_{c}" for c in ("soma", "axon", "dendrite", "glia", "vessel")]
    assert output_kind(sem) == "probability"  # nets without an affinity head: every head
    with pytest.raises(InputError, match="unknown head.*long_range.*affinity, myelin"):
        predict(net, image, heads=["long_range"], progress=False)


def test_predict_bad_inputs(net, image):
    with pytest.raises(InputError, match="mask_in of shape"):
        predict(net, image, heads="all", mask_in=np.zeros((16, 96, 95), np.uint8), progress=False)
    with pytest.raises(InputError, match="dtype int32"):
        predict(net, image.astype(np.int32), progress=False)
    with pytest.raises(InputError, match="shape"):
        predict(net, image[0], progress=False)
    with pytest.raises(InputError, match="batch_size"):
        predict(net, image, heads="all", batch_size=0, progress=False)
    with pytest.raises(InputError, match="device"):
        predict(net, image, heads="all", device="tpu", progress=False)


def test_predict_restores_training_mode(image):
    net = tiny_rsunet()
    net.train()
    predict(net, image[:8, :32, :32], progress=False)
    assert net.training


def test_predict_box_only_reads_the_halo(net, image, single):
    grid = PatchGrid(SHAPE, PATCH, 0.25, net.input_multiple)
    box = Bbox((8, 32, 40), (16, 64, 72))
    seen = []

    def read(b):
        seen.append(b)
        return (image[b.slices()][None] / np.float32(255)).astype(np.float32)

    out = predict_box(net, read, grid, box, device="cpu")
    assert len(seen) == 1 and box.grow(grid.halo).contains(seen[0])
    assert np.abs(out - single[(slice(None), *box.slices())]).max() < 1e-5


# ---- layers -----------------------------------------------------------------------------------------
def test_default_chunk_size():
    assert default_chunk_size((8, 32, 32), (16, 96, 96), (8, 32, 32)) == (16, 96, 96)
    cs = default_chunk_size((8, 32, 32), (16, 96, 96), (8, 32, 32), min_tasks=2)
    assert all(c % s == 0 for c, s in zip(cs, (8, 32, 32)))
    assert np.prod([-(-n // c) for n, c in zip((16, 96, 96), cs)]) >= 2


def test_infer_layers_serial_equals_single_pass(tmp_path, net, image, single):
    img = write_image(tmp_path, image)
    rep = infer_layers(net, img.url, tmp_path / "aff", heads=["affinity"], chunk_size=(8, 64, 64), workers=0,
                       progress=False)
    out = Layer.open(tmp_path / "aff")
    assert out.kind.name == "affinities" and out.voxel_offset == (3, 5, 7) and out.resolution == (40, 8, 8)
    assert rep.chunks == 2 * 2 * 2 and rep.executed == 8 and rep.kind == "affinities"
    assert np.abs(out.read() - single[:3]).max() < 1e-5
    # all heads -> probability layer with named channels
    infer_layers(net, img.url, tmp_path / "all", heads="all", chunk_size=(8, 32, 96), workers=0, progress=False)
    allp = Layer.open(tmp_path / "all")
    assert allp.kind.name == "probability" and allp.channel_names == ("affinity_z", "affinity_y", "affinity_x",
                                                                      "myelin")
    assert np.abs(allp.read() - single).max() < 1e-5


def test_infer_layers_two_workers_checkpoint_and_masks(tmp_path, net, image):
    ckpt = save(net, tmp_path / "net.pt", extra={"test": True})
    assert load_model_cached(str(ckpt)) is load_model_cached(str(ckpt))  # loaded once per process
    img = write_image(tmp_path, image)
    m_in, m_out = defect_masks()
    mi = write_mask(tmp_path, m_in, "mask_in")
    mo = write_mask(tmp_path, m_out, "mask_out")
    rep = infer_layers(str(ckpt), img.url, tmp_path / "out", mask_in_url=mi.url, mask_out_url=mo.url,
                       chunk_size=(8, 64, 32), workers=2, progress=False)
    assert rep.executed == rep.chunks == 2 * 2 * 3
    expect = predict(net, image, mask_in=m_in, mask_out=m_out, progress=False)  # default: the affinity head
    got = Layer.open(tmp_path / "out").read()
    assert np.abs(got - expect).max() < 1e-5
    assert (got[:, m_out != 0] == 0).all()


def test_infer_layers_resumes(tmp_path, net, image, single):
    img = write_image(tmp_path, image)
    url = tmp_path / "out"
    kw = dict(heads="affinity", chunk_size=(8, 32, 32), workers=0, progress=False)
    rep = infer_layers(net, img.url, url, **kw)
    assert rep.executed == 18 and not rep.resumed
    out = Layer.open(url)
    lost = [Bbox((3, 5, 7), (11, 37, 39)), Bbox((11, 69, 71), (19, 101, 103))]
    for b in lost:  # an interrupted run: two chunks never written, their markers missing
        out.write(np.zeros((3, *b.shape), np.float32), b.start)
    Markers(markers_url(out.url, "infer")).clear(lost)
    rep = infer_layers(net, img.url, url, **kw)
    assert rep.resumed and rep.executed == 2 and rep.skipped == 16
    assert np.abs(Layer.open(url).read() - single[:3]).max() < 1e-5
    rep = infer_layers(net, img.url, url, **kw)
    assert rep.executed == 0 and "already complete" in rep.summary()
    # other parameters over the same output: refused, then allowed with overwrite
    with pytest.raises(LayerExistsError, match="other parameters"):
        infer_layers(net, img.url, url, heads="affinity", chunk_size=(8, 64, 64), workers=0, progress=False)
    rep = infer_layers(net, img.url, url, heads="affinity", chunk_size=(8, 64, 64), workers=0, progress=False,
                       overwrite=True)
    assert rep.executed == 8 and not rep.resumed


def test_infer_layers_bad_inputs(tmp_path, net, image):
    img = write_image(tmp_path, image)
    Layer.create(tmp_path / "existing", "affinities", SHAPE)
    with pytest.raises(LayerExistsError, match="already exists"):
        infer_layers(net, img.url, tmp_path / "existing", workers=0, progress=False)
    aff = Layer.create(tmp_path / "aff_in", "affinities", SHAPE)
    with pytest.raises(InputError, match="is a affinities layer; expected an image"):
        infer_layers(net, aff.url, tmp_path / "o1", workers=0, progress=False)
    small = write_mask(tmp_path, np.zeros((16, 96, 64), np.uint8), "small_mask")
    with pytest.raises(InputError, match="input mask .*small_mask has size .*must share size, voxel offset and resolution"):
        infer_layers(net, img.url, tmp_path / "o2", mask_in_url=small.url, workers=0, progress=False)
    shifted = write_mask(tmp_path, np.zeros(SHAPE, np.uint8), "shifted_mask", offset=(0, 0, 0))
    with pytest.raises(InputError, match="voxel_offset"):
        infer_layers(net, img.url, tmp_path / "o3", mask_out_url=shifted.url, workers=0, progress=False)
    with pytest.raises(InputError, match="expected a mask layer"):
        infer_layers(net, img.url, tmp_path / "o4", mask_in_url=img.url, workers=0, progress=False)
    with pytest.raises(InputError, match="multiple of the output layer's storage chunk"):
        infer_layers(net, img.url, tmp_path / "o5", chunk_size=(8, 48, 48), workers=0, progress=False)
    with pytest.raises(InputError, match="unknown head"):
        infer_layers(net, img.url, tmp_path / "o6", heads="vessel", workers=0, progress=False)
    with pytest.raises(InputError, match="no Precomputed layer"):
        infer_layers(net, tmp_path / "nothing", tmp_path / "o7", workers=0, progress=False)
    iso = write_image(tmp_path, image, name="iso", resolution=(8, 8, 8))
    with pytest.raises(InputError, match=r"resolution \(8, 8, 8\) nm.*trained at \(40, 8, 8\) nm"):
        infer_layers(net, iso.url, tmp_path / "o8", workers=0, progress=False)
    near = write_image(tmp_path, image, name="near", resolution=(30, 8, 8))
    with pytest.warns(UserWarning, match="trained at"):
        infer_layers(net, near.url, tmp_path / "o9", workers=0, progress=False)
    with pytest.raises(InputError, match="one of the inputs"):
        infer_layers(net, img.url, img.url, workers=0, progress=False, overwrite=True)
    assert Layer.open(img.url).kind.name == "image"  # never touched


# ---- command line -----------------------------------------------------------------------------------
def test_cli_infer(tmp_path, net, image, single, capsys):
    from emkit.cli.main import main

    ckpt = save(net, tmp_path / "net.pt", extra={})
    img = write_image(tmp_path, image)
    out = tmp_path / "aff"
    rc = main(["infer", str(ckpt), img.url, str(out), "--heads", "affinity", "--chunk", "8,64,64",
               "--workers", "0", "--device", "cpu", "--quiet"])
    assert rc == 0 and "voxels/s" in capsys.readouterr().out
    assert np.abs(Layer.open(out).read() - single[:3]).max() < 1e-5
    rc = main(["infer", str(ckpt), img.url, str(out), "--heads", "all", "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds an interrupted inference with other parameters" in err  # other heads
    rc = main(["infer", "no-such-model", img.url, str(tmp_path / "x"), "--workers", "0", "--quiet"])
    assert rc == 2 and "no-such-model" in capsys.readouterr().err
    from emkit.cli.infer import _overlap

    assert _overlap("0.25") == 0.25 and _overlap("2,8,8") == (2, 8, 8) and _overlap("0,0.5,0.5") == (0, 0.5, 0.5)
    with pytest.raises(InputError):
        _overlap("a lot")
    info = json.loads((out / "info").read_text())
    assert info["emkit"]["channels"] == ["affinity_z", "affinity_y", "affinity_x"]


# ---- resolution: averaging to the net's resolution, outputs on the image's grid -------------------
def test_plan_resampling_rule():
    from emkit.inference import plan_resampling

    net = (40, 8, 8)
    with pytest.warns(UserWarning, match="runs at \\(50, 8, 8\\)"):
        p = plan_resampling(net, (50, 4, 4))  # ssTEM: 2x in y, x (the paper's 4 -> 8 nm); z 50 vs 40 stays
    assert p.factors == (1, 2, 2) and p.net_resolution == (50, 8, 8) and p.net_shape((30, 513, 512)) == (30, 257, 256)
    assert plan_resampling(net, (40, 8, 8)).identity
    with pytest.raises(InputError, match=r"z: 10 nm would need averaging by 4.*at most 2"):
        plan_resampling(net, (10, 10, 10))  # isotropic FIB-SEM through the anisotropic net
    assert plan_resampling(net, (10, 10, 10), max_downsample=4, warn=False).factors == (4, 1, 1)
    with pytest.raises(InputError, match=r"y: 16 nm is 2x coarser.*never upsampled"):
        plan_resampling(net, (40, 16, 16))
    assert plan_resampling(net, (40, 5, 5), warn=False).factors == (1, 2, 2)  # 10 nm: nearer 8 than 5 is
    assert plan_resampling(net, (40, 6.5, 6.5), warn=False).factors == (1, 1, 1)  # 6.5 nm: nearer 8 than 13
    assert plan_resampling(None, (3, 3, 3)).identity  # a net without a recorded resolution: unchecked


def test_block_mean_and_linear_upsampling():
    from emkit.inference.resample import block_mean, coarse_box, upsample_linear

    x = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)
    m = block_mean(x, (1, 2, 3))
    assert m.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(m[1, 2, 0, 0], x[1, 2, 0:2, 0:3].mean())
    np.testing.assert_allclose(m[0, 1, 2, 2], x[0, 1, 4:5, 6:7].mean())  # partial last blocks: their own voxels
    # a linear ramp averaged 2x is sampled at block centres; interpolating back gives the ramp itself
    ramp = np.broadcast_to(np.arange(40, dtype=np.float32)[None, None, None, :], (1, 2, 3, 40))
    coarse = block_mean(ramp, (1, 1, 2))
    box = Bbox((0, 0, 3), (2, 3, 37))
    cb = coarse_box(box, (1, 1, 2), coarse.shape[1:])
    up = upsample_linear(coarse[(slice(None), *cb.slices())], (1, 1, 2), cb.start, box, coarse.shape[1:])
    np.testing.assert_allclose(up, ramp[(slice(None), *box.slices())], atol=1e-5)
    full = upsample_linear(coarse, (1, 1, 2), (0, 0, 0), Bbox((0, 0, 0), (2, 3, 40)), coarse.shape[1:])
    assert full[0, 0, 0, 0] == coarse[0, 0, 0, 0] and full[0, 0, 0, -1] == coarse[0, 0, 0, -1]  # flat beyond centres


def test_predict_resampled_is_the_net_on_the_averaged_image(net, image):
    """At 40x4x4 nm, a 40x8x8 net runs on the image averaged 2x in y, x; outputs come back at 4 nm."""
    from emkit.inference.resample import upsample_linear

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 40x4x4 -> 40x8x8 is exact: no warning
        out = predict(net, image, resolution=(40, 4, 4), progress=False)
    assert out.shape == (3, *SHAPE)
    coarse_img = image.astype(np.float32).reshape(16, 48, 2, 48, 2).mean(axis=(2, 4)) / 255
    coarse = predict(net, coarse_img, progress=False)
    expect = upsample_linear(coarse, (1, 2, 2), (0, 0, 0), Bbox.from_shape(SHAPE), coarse.shape[1:])
    assert np.abs(out - expect).max() < 1e-4
    assert np.abs(out - predict(net, image, progress=False)).max() > 1e-3  # resampling did change the result


@pytest.mark.parametrize("chunk", [(8, 32, 32), (5, 33, 70), (3, 17, 50)])
def test_resampled_chunked_equals_single_pass(net, image, chunk):
    shape = (16, 95, 90)  # odd sizes: partial blocks at the far faces
    img = image[:, :95, :90]
    m_in, m_out = (m[:, :95, :90] for m in defect_masks())
    kw = dict(resolution=(40, 4, 4), mask_in=m_in, mask_out=m_out, heads="all", progress=False)
    single = predict(net, img, **kw)
    out = predict(net, img, chunk_size=chunk, **kw)
    assert out.shape == (4, *shape) and np.abs(out - single).max() < 1e-5
    assert (out[:, m_out != 0] == 0).all()


def test_infer_layers_resampled_on_the_image_grid(tmp_path, net, image):
    img = write_image(tmp_path, image, resolution=(40, 4, 4))
    m_in, m_out = defect_masks()
    mi = write_mask(tmp_path, m_in, "mask_in", resolution=(40, 4, 4))
    mo = write_mask(tmp_path, m_out, "mask_out", resolution=(40, 4, 4))
    rep = infer_layers(net, img.url, tmp_path / "aff", mask_in_url=mi.url, mask_out_url=mo.url, chunk_size=(8, 32, 64),
                       workers=0, progress=False)
    out = Layer.open(tmp_path / "aff")
    assert out.kind.name == "affinities" and rep.factors == (1, 2, 2) and "averaged 1x2x2" in rep.resampling
    assert (out.size, out.voxel_offset, out.resolution) == (img.size, img.voxel_offset, img.resolution)
    expect = predict(net, image, resolution=(40, 4, 4), mask_in=m_in, mask_out=m_out, progress=False)
    assert rep.chunks == 2 * 3 * 2 and np.abs(out.read() - expect).max() < 1e-5
    ssTEM = write_image(tmp_path, image, name="sstem", resolution=(50, 4, 4))
    with pytest.warns(UserWarning, match="outputs may be poorer"):
        infer_layers(net, ssTEM.url, tmp_path / "aff2", workers=0, progress=False)
    fib = write_image(tmp_path, image, name="fib", resolution=(10, 10, 10))
    with pytest.raises(InputError, match=r"z: 10 nm would need averaging by 4.*emkit train boundary --data"):
        infer_layers(net, fib.url, tmp_path / "aff3", workers=0, progress=False)
    with pytest.warns(UserWarning):
        rep = infer_layers(net, fib.url, tmp_path / "aff3", max_downsample=4, workers=0, progress=False)
    assert rep.factors == (4, 1, 1) and Layer.open(tmp_path / "aff3").size == img.size


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    """A folder of 'shipped' models (tiny, untrained) at two resolutions, used instead of emkit/models."""
    d = tmp_path / "models"
    save(tiny_rsunet(heads=boundary_heads(long_range=True)), d / "boundary.pt", extra={"what": "test, 40x8x8"})
    torch.manual_seed(1)
    iso = RSUNet(NetConfig(widths=(4, 8), heads=boundary_heads(long_range=True), patch_size=(16, 32, 32),
                           resolution=(10, 10, 10)))
    save(iso, d / "boundary_iso.pt", extra={"what": "test, 10 nm isotropic"})
    monkeypatch.setenv("EMKIT_MODELS_DIR", str(d))
    return d


def test_shipped_name_resolves_to_the_nearest_resolution(tmp_path, models_dir, image, capsys):
    from emkit.cli.main import main
    from emkit.nets import shipped_models

    assert {n: m["resolution"] for n, m in shipped_models("boundary").items()} == {
        "boundary": (40, 8, 8), "boundary_iso": (10, 10, 10)}
    fib = write_image(tmp_path, image, name="fib", resolution=(10, 10, 10))
    rep = infer_layers("boundary", fib.url, tmp_path / "fib_aff", workers=0, progress=False)
    assert "shipped boundary_iso" in rep.model and rep.factors == (1, 1, 1)
    assert Layer.open(tmp_path / "fib_aff").kind.name == "affinities"  # long-range heads not written
    iso = load_model_cached(str(models_dir / "boundary_iso.pt"))
    np.testing.assert_allclose(Layer.open(tmp_path / "fib_aff").read(), predict(iso, image, progress=False), atol=1e-5)
    sstem = write_image(tmp_path, image, name="sstem", resolution=(50, 4, 4))
    rc = main(["infer", "boundary", sstem.url, str(tmp_path / "sstem_aff"), "--workers", "0", "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0 and "-> shipped boundary, the nearest" in printed and "averaged 1x2x2" in printed
    # a full name is used as given, and refused when it does not fit
    with pytest.raises(InputError, match=r"z: 50 nm is 5x coarser"):
        infer_layers("boundary_iso", sstem.url, tmp_path / "o1", workers=0, progress=False)
    # no shipped model fits: the message names them, their resolutions and how to fine-tune
    (models_dir / "boundary_iso.pt").unlink()
    with pytest.raises(InputError, match=r"no shipped boundary model fits .*boundary \(40, 8, 8\) nm.*"
                                         r"emkit train boundary --data YOUR_DATASET --init boundary"):
        infer_layers("boundary", fib.url, tmp_path / "o2", workers=0, progress=False)


def test_infer_layers_on_a_volume_thinner_than_the_overlap(tmp_path, net, image):
    """z averaged 4x leaves 2 coarse sections: the patch shrinks below the nominal overlap; tasks agree."""
    img = write_image(tmp_path, image[:8], resolution=(10, 8, 8))
    rep = infer_layers(net, img.url, tmp_path / "aff", max_downsample=4, chunk_size=(8, 32, 96), workers=0,
                       progress=False)
    expect = predict(net, image[:8], resolution=(10, 8, 8), max_downsample=4, progress=False)
    assert rep.factors == (4, 1, 1) and rep.executed == 3
    assert np.abs(Layer.open(tmp_path / "aff").read() - expect).max() < 1e-5


def test_shipped_model_judged_at_the_resolution_the_net_will_see(tmp_path, monkeypatch):
    """50x4.6x4.6 nm is averaged 1x2x2: a net at 50x9.2x9.2 then fits exactly and must win over
    the 40x8x8 one, although the raw resolution is nearer 40x8x8."""
    from emkit.inference import choose_model

    d = tmp_path / "models"
    save(tiny_rsunet(heads=boundary_heads(long_range=True)), d / "boundary.pt", extra={"what": "test, 40x8x8"})
    sst = RSUNet(NetConfig(widths=(4, 8), heads=boundary_heads(long_range=True), patch_size=(8, 32, 32),
                           resolution=(50, 9.2, 9.2)))
    save(sst, d / "boundary_sstem.pt", extra={"what": "test, 50x9.2x9.2"})
    monkeypatch.setenv("EMKIT_MODELS_DIR", str(d))
    name, _, note = choose_model("boundary", (50, 4.6, 4.6))
    assert name == "boundary_sstem", note
    assert choose_model("boundary", (40, 8, 8))[0] == "boundary"
