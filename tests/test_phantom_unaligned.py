"""The unaligned phantom: sections moved before alignment, with true fields that undo it."""
from __future__ import annotations

import numpy as np
import pytest
from helpers_require import require

from emkit.errors import InputError, LayerExistsError
from emkit.phantom import UnalignedParams, make_phantom, make_unaligned, read_fields, write_phantom

torch = require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")
torch.set_num_threads(1)


def _smooth_stack(nz=4, shape=(96, 112), seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return np.stack([gaussian_filter(rng.random(shape), 3.0) for _ in range(nz)]).astype(np.float32)


def test_inverse_field_gives_back_the_aligned_stack():
    from scipy.ndimage import binary_erosion

    from emkit.align import fields as F

    a = _smooth_stack()
    u = make_unaligned(a, seed=3)
    image, fields, inverse = u  # unpacks
    assert fields.shape == inverse.shape == (4, 2, 96, 112) and fields.dtype == np.float32
    assert np.array_equal(image[0], a[0]) and not np.any(fields[0])  # the reference stays put
    moved = [float(np.abs(fields[z]).max()) for z in range(1, 4)]
    assert max(moved) > 3.0  # sections really moved
    p = UnalignedParams()
    assert max(moved) < p.max_shift_px + 2 * p.drift_px * 4 + 0.1 * 112 + 4 * p.distortion_px
    # the rule: image[z, y, x] == aligned[z, y - dy, x - dx]
    np.testing.assert_allclose(image, np.where(u.valid > 0, F.warp(a, fields), 0), atol=1e-6)
    back = F.warp(image, inverse)
    seen = binary_erosion(F.warp_labels(u.valid, inverse) > 0, iterations=2, structure=np.ones((1, 3, 3)))
    assert seen[1:].mean() > 0.5
    assert np.abs(back - a)[seen].max() < 0.02 * (a.max() - a.min())
    assert not np.any(F.folds(fields)) and not np.any(F.folds(inverse))


def test_deterministic_and_parameters_matter():
    a = _smooth_stack(3, (64, 64))
    u1, u2 = make_unaligned(a, seed=5), make_unaligned(a, seed=5)
    assert np.array_equal(u1.fields, u2.fields) and np.array_equal(u1.image, u2.image)
    assert not np.array_equal(make_unaligned(a, seed=6).fields, u1.fields)
    still = make_unaligned(a, seed=5, params=UnalignedParams(shift_px=0, rotation_deg=0, drift_px=0, distortion_px=0))
    assert np.abs(still.fields).max() < 1e-4 and np.abs(still.image - a).max() < 1e-5
    with pytest.raises(InputError, match="shift_px"):
        UnalignedParams(shift_px=-1)
    with pytest.raises(InputError, match="shape"):
        make_unaligned(np.zeros((4, 4)), seed=0)


def test_phantom_frames_and_writer(tmp_path):
    from emkit.align import fields as F
    from emkit.io import Layer

    ph = make_phantom((4, 96, 96), seed=2, defects="slip")
    u = make_unaligned(ph, seed=2)
    up = u.phantom
    assert np.array_equal(up.image, u.image) and np.array_equal(u.aligned, ph.image)
    assert np.array_equal(up.segmentation, ph.segmentation)  # ground truth stays in the clean frame
    # displacement now goes clean -> unaligned: its ground truth in the image frame matches the
    # aligned phantom's, moved by the fields (nearest neighbour; agree almost everywhere)
    direct = up.in_image_frame(ph.segmentation)
    two_step = F.warp_labels(ph.in_image_frame(ph.segmentation), u.fields)
    inside = u.valid > 0
    assert (direct == two_step)[inside].mean() > 0.97
    assert np.array_equal(up.masks["slip"], F.warp_labels(ph.masks["slip"], u.fields))

    out = tmp_path / "unal"
    written = write_phantom(u, out, progress=False)
    assert {"gt/aligned_image", "gt/fields.npz", "image"} <= set(written)
    assert np.array_equal(Layer(written["image"]).read(), u.image)
    assert np.array_equal(Layer(written["gt/aligned_image"]).read(), ph.image)
    got = read_fields(out)
    assert np.array_equal(got["field"], u.fields) and np.array_equal(got["inverse"], u.inverse)
    assert got["seed"] == 2 and got["params"]["shift_px"] == UnalignedParams().shift_px
    with pytest.raises(LayerExistsError, match="fields.npz"):
        write_phantom(u, out, progress=False)
    with pytest.raises(InputError, match="gt/fields.npz"):
        read_fields(tmp_path / "nothing")


def test_cli_unaligned(tmp_path, capsys):
    import argparse

    from emkit.cli import phantom as cli

    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers(dest="command"))
    args = p.parse_args(["phantom", str(tmp_path / "d"), "--size", "3,64,64", "--unaligned", "--defects", "none",
                         "--shift", "5", "--quiet"])
    assert args.func(args) == 0
    assert "unaligned" in capsys.readouterr().out
    f = read_fields(tmp_path / "d")
    assert f["field"].shape == (3, 2, 64, 64) and f["params"]["shift_px"] == 5.0
    args = p.parse_args(["phantom", str(tmp_path / "e"), "--size", "3,64,64", "--rotation", "2"])
    with pytest.raises(InputError, match="--unaligned"):
        args.func(args)
