"""Rough alignment: rigid transforms recovered, missing sections skipped, layers = arrays."""
from __future__ import annotations

import numpy as np
import pytest
from helpers_require import require

from emkit.align import fields as F
from emkit.align.rough import RoughParams, read_transforms, rough_align, rough_align_layers
from emkit.errors import InputError, LayerExistsError
from emkit.phantom import UnalignedParams, make_unaligned

torch = require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")
torch.set_num_threads(1)

SHAPE = (128, 128)


@pytest.fixture(scope="module")
def moved():
    """The same smooth texture in every section (plus noise), moved rigidly: a stack whose
    alignment is known exactly."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    tex = gaussian_filter(rng.random(SHAPE), 3.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    stack = np.stack([np.clip(40 + 170 * tex + rng.normal(0, 3, SHAPE), 1, 255) for _ in range(6)]).astype(np.uint8)
    return make_unaligned(stack, seed=1, params=UnalignedParams(shift_px=8, rotation_deg=1.5, distortion_px=0))


def _residual(fields, truth, valid):
    seen = F.warp_labels(valid, truth) > 0
    err = F.norm(fields - truth)
    return err[seen]


def test_recovers_rigid_moves(moved):
    res = rough_align(moved.image, resolution=(40, 8, 8), params=RoughParams(detrend_sections=0))
    image, matrices, report = res
    assert report["status"] == ["reference"] + ["ok"] * 5
    assert matrices.shape == (6, 2, 3)
    fields = res.fields()  # the convention of emkit.align.fields: warping the input by them gives the output
    np.testing.assert_allclose(fields, F.affine_field(matrices, SHAPE), atol=1e-3)
    by_fields = F.warp(moved.image, fields)
    inner = (slice(None), slice(20, -20), slice(20, -20))
    assert np.abs(by_fields[inner].astype(int) - image[inner].astype(int)).max() <= 1
    before = _residual(np.zeros_like(moved.inverse), moved.inverse, moved.valid)
    after = _residual(res.fields(), moved.inverse, moved.valid)
    assert np.median(before) > 5
    assert np.median(after) < 0.5 and np.percentile(after, 95) < 1.0
    # the aligned image shows the aligned stack
    seen = F.warp_labels(moved.valid, res.fields()) > 0
    diff = np.abs(image.astype(float) - moved.aligned.astype(float))[seen]
    assert np.median(diff) < 6


def test_missing_and_empty_sections_are_skipped(moved):
    img = moved.image.copy()
    img[2] = 0                      # missing section
    ignore = np.zeros(img.shape, np.uint8)
    ignore[4] = 1                   # a section entirely masked out
    res = rough_align(img, params=RoughParams(neighbours=1, detrend_sections=0), ignore=ignore)
    st = res.report["status"]
    assert st[2] == "skipped" and st[4] == "skipped" and st[3] == "ok" and st[5] == "ok"
    pairs = {(p[0], p[1]) for p in res.report["pairs"]}
    assert (3, 1) in pairs and (5, 3) in pairs  # matched across the gaps
    err = _residual(res.fields()[[1, 3, 5]], moved.inverse[[1, 3, 5]], moved.valid[[1, 3, 5]])
    assert np.median(err) < 0.6


def test_neighbour_fallback_over_a_section_that_does_not_match(moved):
    img = moved.image.copy()
    img[3] = np.random.default_rng(7).integers(1, 255, img.shape[1:])  # tissue-like, matches nothing
    res = rough_align(img, params=RoughParams(neighbours=3, detrend_sections=0))
    st = res.report["status"]
    assert st[3] == "unmatched" and st[4] == "ok" and st[5] == "ok"
    pairs = {(p[0], p[1]): p[2] for p in res.report["pairs"]}
    assert pairs[(4, 3)] < 0.2 and pairs[(4, 2)] > 0.5 and (5, 4) in pairs and (5, 3) not in pairs
    keep = [1, 2, 4, 5]
    err = _residual(res.fields()[keep], moved.inverse[keep], moved.valid[keep])
    assert np.median(err) < 0.6


def test_drift_suppression_leaves_slow_trends(moved):
    """Tissue that moves steadily from section to section (oblique neurites) cannot be told from
    drift: pure composition follows it, drift suppression leaves it in place."""
    from scipy.ndimage import shift as ndshift

    base = moved.aligned[0].astype(float)
    tilted = np.stack([ndshift(base, (1.5 * z, -1.0 * z), order=1) for z in range(8)]).astype(np.uint8)
    follow = rough_align(tilted, params=RoughParams(detrend_sections=0, neighbours=1))
    keep = rough_align(tilted, params=RoughParams(detrend_sections=6, neighbours=1))
    t_follow = np.abs(np.asarray(follow.report["shift_px"])).max()
    t_keep = np.abs(np.asarray(keep.report["shift_px"])).max()
    assert t_follow > 8  # 7 sections x 1.5 px undone
    assert t_keep < 0.35 * t_follow
    assert keep.report["status"] == follow.report["status"]


def test_reference_is_first_section_with_tissue(moved):
    img = moved.image.copy()
    img[0] = 0
    res = rough_align(img)
    assert res.report["status"][:2] == ["skipped", "reference"]
    assert np.array_equal(res.image[1], img[1])  # the reference is not moved


def test_layers_equal_array_form(tmp_path, moved):
    from emkit.io import Layer

    src = Layer.create(tmp_path / "img", "image", moved.image.shape, chunk_size=(2, 64, 64))
    src.write(moved.image)
    p = RoughParams(neighbours=2)
    rep = rough_align_layers(src.url, tmp_path / "out", params=p, z_block=2, workers=0)
    ref = rough_align(moved.image, params=p)
    got = read_transforms(tmp_path / "out")
    np.testing.assert_array_equal(got["matrices"], ref.matrices)
    assert rep["status"] == ref.report["status"] and rep["pairs"] == ref.report["pairs"]
    out = Layer(tmp_path / "out" / "image")
    assert out.size == src.size and out.resolution == src.resolution and out.chunk_size == src.chunk_size
    np.testing.assert_array_equal(out.read(), ref.image)
    fld = Layer(tmp_path / "out" / "field").read()  # (2, z, y, x)
    np.testing.assert_allclose(fld.transpose(1, 0, 2, 3), ref.fields(), atol=1e-4)
    with pytest.raises(LayerExistsError, match="image"):
        rough_align_layers(src.url, tmp_path / "out", params=p)
    rough_align_layers(src.url, tmp_path / "out", params=p, overwrite=True, write_field=False, z_block=4)
    np.testing.assert_array_equal(Layer(tmp_path / "out" / "image").read(), ref.image)


def test_cli_align(tmp_path, capsys, moved):
    import argparse

    from emkit.cli import align as cli
    from emkit.io import Layer

    src = Layer.create(tmp_path / "img", "image", moved.image.shape)
    src.write(moved.image)
    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers(dest="command"))
    args = p.parse_args(["align", src.url, str(tmp_path / "al"), "--rough-only", "--quiet", "--no-field"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "5 aligned" in out and "transforms.json" in out
    assert not (tmp_path / "al" / "field").exists()
    args = p.parse_args(["align", src.url, str(tmp_path / "al2"), "--neighbours", "0"])
    with pytest.raises(InputError, match="neighbours"):
        args.func(args)


def test_bad_input_is_named():
    with pytest.raises(InputError, match="shape"):
        rough_align(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="ignore"):
        rough_align(np.zeros((2, 32, 32), np.uint8), ignore=np.zeros((2, 16, 16)))
    with pytest.raises(InputError, match="dtype"):
        rough_align(np.zeros((2, 32, 32), np.int32))
    with pytest.raises(InputError, match="RoughParams"):
        RoughParams(min_score=-1)
