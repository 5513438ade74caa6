"""Fine alignment: fields recovered where rough (rigid) alignment cannot, neighbour fallback,
composition from the reference, layers = arrays, the command end to end."""
from __future__ import annotations

import numpy as np
import pytest
from helpers_require import require

from emkit.align import fields as F
from emkit.align.fine import FineParams, compose_pairs, fine_align, fine_align_layers, pair_field, read_report
from emkit.align.rough import rough_align
from emkit.errors import InputError, LayerExistsError
from emkit.phantom import UnalignedParams, make_unaligned

torch = require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")
torch.set_num_threads(1)

SHAPE = (128, 128)
FAST = FineParams(iterations=(60, 40, 20), detrend_sections=0)  # the test stacks' tissue does not move


def _texture(seed=0, shape=SHAPE):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.random(shape), 2.5)
    return (tex - tex.min()) / (tex.max() - tex.min())


@pytest.fixture(scope="module")
def distorted():
    """The same texture in every section (plus noise), moved rigidly and distorted smoothly: the
    rigid part is what rough alignment undoes, the distortion is left for the fine fields."""
    rng = np.random.default_rng(0)
    tex = _texture()
    stack = np.stack([np.clip(40 + 170 * tex + rng.normal(0, 3, SHAPE), 1, 255) for _ in range(5)]).astype(np.uint8)
    return make_unaligned(stack, seed=3, params=UnalignedParams(shift_px=6, rotation_deg=1.0, drift_px=0,
                                                                distortion_px=2.5, distortion_length_px=40))


@pytest.fixture(scope="module")
def aligned(distorted):
    return fine_align(distorted.image, params=FAST)


def _err(fields, u, keep):
    seen = F.warp_labels(u.valid, u.inverse) > 0
    inner = np.zeros_like(seen)
    inner[:, 12:-12, 12:-12] = True
    sel = seen & inner
    return F.norm(fields[keep] - u.inverse[keep])[sel[keep]]


def test_pair_field_recovers_a_smooth_field():
    """Analytic case: moving = the reference warped by a known smooth field (shift + sine)."""
    tex = (40 + 170 * _texture(1)).astype(np.float32)
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]].astype(np.float32)
    true = np.stack([1.5 + 2.0 * np.sin(2 * np.pi * xx / 128), -2.0 + 1.5 * np.cos(2 * np.pi * yy / 128)])
    moving = F.warp(tex, F.invert(true, iterations=60))  # warp(moving, true) == tex
    # a weaker smoothness than the default: this field bends more than sections usually do
    fld, info = pair_field(tex.astype(np.uint8), moving.astype(np.uint8),
                           params=FineParams(iterations=(60, 40, 20), smooth_weight=5))
    err = F.norm(fld - true)[12:-12, 12:-12]
    assert np.median(F.norm(true)) > 2
    assert np.median(err) < 0.35 and np.percentile(err, 95) < 0.6
    assert info["score"] > info["score_before"] and info["score"] > 0.9
    assert info["grid"].shape == (2, SHAPE[0] // info["factor"], SHAPE[1] // info["factor"])


def test_fine_beats_rough_on_a_distorted_stack(distorted, aligned):
    u, res = distorted, aligned
    rough = rough_align(u.image)
    keep = [1, 2, 3, 4]
    e_rough, e_fine = _err(rough.fields(), u, keep), _err(res.fields, u, keep)
    assert np.median(e_rough) > 1.0  # the rigid floor: the distortion stays
    assert np.median(e_fine) < 0.35 and np.percentile(e_fine, 95) < 1.0
    assert np.median(e_fine) < 0.3 * np.median(e_rough)
    assert res.report["status"] == ["reference", "ok", "ok", "ok", "ok"]
    assert not np.any(res.fields[0]) and np.array_equal(res.image[0], u.image[0])  # the reference stays
    # the output is the input warped by the fields, and it shows the aligned stack
    np.testing.assert_array_equal(res.image, F.warp(u.image, res.fields))
    seen = F.warp_labels(u.valid, res.fields) > 0
    seen[:, :12], seen[:, -12:], seen[:, :, :12], seen[:, :, -12:] = False, False, False, False
    assert np.median(np.abs(res.image.astype(float) - u.aligned.astype(float))[seen]) < 5
    q = res.report["sections"]
    assert all(r["score"] > r["score_before"] for r in q[1:])


def test_missing_section_skipped_and_bad_neighbour_falls_back(distorted):
    img = distorted.image.copy()
    img[2] = 0                                                          # missing
    img[3] = np.random.default_rng(5).integers(1, 255, SHAPE)          # matches nothing
    res = fine_align(img, params=FAST)
    st = res.report["status"]
    assert st[2] == "skipped" and st[4] == "fallback"
    row = res.report["sections"][4]
    assert row["tried"][0] == 3 and row["neighbour"] == 1               # across the gap: 3 fails, 2 is missing
    err = _err(res.fields, distorted, [4])
    assert np.median(err) < 0.6


def test_composition_runs_from_the_reference():
    """C[z] = compose(P[z], C[r]): two shifts along z add up; skipped sections keep the field before."""
    g = np.zeros((2, 8, 8), np.float32)
    a, b = g.copy(), g.copy()
    a[0] = 1.0
    b[1] = 2.0
    pairs = {1: (0, a), 3: (1, b)}
    C = compose_pairs(4, pairs, ["reference", "ok", "skipped", "ok"], 4, FineParams(detrend_sections=0))
    np.testing.assert_allclose(C[0], 0)
    np.testing.assert_allclose(C[1], a)
    np.testing.assert_allclose(C[2], a)
    np.testing.assert_allclose(C[3][0], 1.0, atol=1e-5)
    np.testing.assert_allclose(C[3][1], 2.0, atol=1e-5)
    C = compose_pairs(4, pairs, ["reference", "ok", "skipped", "ok"], 4, FineParams(detrend_sections=0))
    D = compose_pairs(4, pairs, ["reference", "ok", "skipped", "ok"], 4, FineParams(detrend_sections=1.0))
    assert abs(D[0]).max() < 1e-6 and abs(D[3]).max() < abs(C[3]).max()


def test_layers_equal_array_form_and_cli(tmp_path, capsys, distorted, aligned):
    import argparse

    from emkit.cli import align as cli
    from emkit.io import Layer

    u = distorted
    src = Layer.create(tmp_path / "img", "image", u.image.shape, chunk_size=(2, 64, 64))
    src.write(u.image)
    rep = fine_align_layers(src.url, tmp_path / "out", params=FAST, z_block=2, workers=0)
    ref = aligned
    assert rep["status"] == ref.report["status"]
    out = Layer(tmp_path / "out" / "image")
    assert out.size == src.size and out.resolution == src.resolution and out.voxel_offset == src.voxel_offset
    np.testing.assert_array_equal(out.read(), ref.image)
    fld = Layer(tmp_path / "out" / "field").read()
    np.testing.assert_allclose(fld.transpose(1, 0, 2, 3), ref.fields, atol=1e-4)
    assert read_report(tmp_path / "out")["sections"][1]["neighbour"] == 0
    assert (tmp_path / "out" / "quality.tsv").read_text().startswith("z\tstatus")
    with pytest.raises(LayerExistsError, match="image"):
        fine_align_layers(src.url, tmp_path / "out", params=FAST)
    # the command, on a range of sections, with a mask layer
    masks = Layer.create(tmp_path / "fold", "mask", u.image.shape)
    m = np.zeros(u.image.shape, np.uint8)
    m[:, 60:64, :] = 1
    masks.write(m)
    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers(dest="command"))
    args = p.parse_args(["align", src.url, str(tmp_path / "al"), "--sections", "1:5", "--masks", masks.url,
                         "--quiet"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "alignment of 4 sections" in text and "3 aligned" in text and "quality.tsv" in text
    al = Layer(tmp_path / "al" / "image").read()
    assert not al[0].any() and np.array_equal(al[1], u.image[1])  # outside the range: not written; 1 = reference
    e = _err(np.moveaxis(Layer(tmp_path / "al" / "field").read(), 0, 1) + 0, u, [2, 3, 4])
    assert np.isfinite(e).all()
    for bad, msg in ((["--sections", "3:2"], "sections"), (["--sections", "x"], "A:B"),
                     (["--rough-only", "--detrend", "2"], "fine stage")):
        args = p.parse_args(["align", src.url, str(tmp_path / "al3")] + bad)
        with pytest.raises(InputError, match=msg):
            args.func(args)


def test_bad_input_is_named():
    with pytest.raises(InputError, match="mips"):
        FineParams(mips=(1, 2))
    with pytest.raises(InputError, match="iterations"):
        FineParams(iterations=(1,))
    with pytest.raises(InputError, match="neighbours"):
        FineParams(neighbours=0)
    with pytest.raises(InputError, match="same shape"):
        pair_field(np.zeros((32, 32), np.uint8), np.zeros((16, 16), np.uint8))
    with pytest.raises(InputError, match="masks"):
        fine_align(np.zeros((2, 32, 32), np.uint8), masks=np.zeros((2, 16, 16)))


def test_pair_field_refuses_an_image_dtype_it_cannot_read():
    a = np.zeros((64, 64), np.int32)
    with pytest.raises(InputError, match="fine alignment works on uint8.*int32"):
        pair_field(a, a)
