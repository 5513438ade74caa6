"""emkit.align.fields against analytic cases: shifts, rotations, compositions with the inverse."""
from __future__ import annotations

import numpy as np
import pytest
from helpers_require import require

from emkit.align import fields as F
from emkit.errors import InputError

torch = require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")
torch.set_num_threads(1)

H, W = 48, 64


def _texture(seed=0, shape=(H, W)):
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.random.default_rng(seed).random(shape), 2.0).astype(np.float32)


def _rotation(deg, shift=(0.0, 0.0), shape=(H, W)):
    t = np.deg2rad(deg)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = (np.asarray(shape, float) - 1) / 2
    return np.concatenate([R, (c - R @ c + np.asarray(shift))[:, None]], 1)


def test_integer_shift_moves_content_by_plus_d():
    img = _texture()
    f = np.zeros((2, H, W), np.float32)
    f[0], f[1] = 3, -2
    out = F.warp(img, f)
    assert out.dtype == img.dtype and out.shape == img.shape
    np.testing.assert_allclose(out[3:, :-2], img[:-3, 2:], atol=1e-5)
    assert np.abs(out[:2]).max() < 1e-5  # read from outside: cval 0
    # the same rule as emkit.defects.warp
    from emkit.defects import warp as dwarp

    np.testing.assert_allclose(out, dwarp(img[None], f[:, None], order=1)[0], atol=1e-4)


def test_labels_nearest_exact_for_uint64():
    lab = np.random.default_rng(1).integers(2**60, 2**63, (3, H, W), dtype=np.uint64)
    f = np.zeros((3, 2, H, W), np.float32)
    f[:, 0], f[:, 1] = 1.4, -2.6  # rounds to (1, -3)
    out = F.warp_labels(lab, f)
    assert out.dtype == np.uint64
    assert np.array_equal(out[:, 1:, :-3], lab[:, :-1, 3:])
    assert np.all(out[:, 0] == 0)


def test_affine_field_and_its_fit_agree():
    M = _rotation(7, (2.5, -4.0))
    f = F.affine_field(M, (H, W))
    np.testing.assert_allclose(F.field_to_affine(f), M, atol=1e-4)
    # a rotation warps like scipy's affine_transform
    from scipy.ndimage import affine_transform

    img = _texture(2)
    ref = affine_transform(img, M[:, :2], offset=M[:, 2], order=1)
    np.testing.assert_allclose(F.warp(img, f)[12:-12, 12:-12], ref[12:-12, 12:-12], atol=1e-4)


def test_compose_two_shifts_adds_and_matches_two_warps():
    a = np.zeros((2, H, W), np.float32)
    b = np.zeros((2, H, W), np.float32)
    a[0], b[1] = 2.0, -1.5
    c = F.compose(a, b)
    np.testing.assert_allclose(c, a + b, atol=1e-5)
    img = _texture(3)
    r1 = F.affine_field(_rotation(4), (H, W))
    r2 = F.affine_field(_rotation(-2, (1.0, 3.0)), (H, W))
    twice = F.warp(F.warp(img, r1), r2)
    once = F.warp(img, F.compose(r1, r2))
    np.testing.assert_allclose(twice[8:-8, 8:-8], once[8:-8, 8:-8], atol=0.02)


@pytest.mark.parametrize("deg", [3.0, -10.0])
def test_inverse_of_rotation_is_analytic_and_composes_to_identity(deg):
    M = _rotation(deg, (3.0, -2.0))
    f = F.affine_field(M, (H, W))
    g = F.invert(f)
    Minv = np.linalg.inv(np.vstack([M, [0, 0, 1]]))[:2]
    m = 14  # away from where the inverse reads the field outside its grid
    np.testing.assert_allclose(g[:, m:-m, m:-m], F.affine_field(Minv, (H, W))[:, m:-m, m:-m], atol=1e-3)
    assert np.abs(F.compose(f, g))[:, m:-m, m:-m].max() < 1e-3
    img = _texture(4)
    back = F.warp(F.warp(img, f), g)
    np.testing.assert_allclose(back[m:-m, m:-m], img[m:-m, m:-m], atol=0.03)


def test_inverse_of_smooth_nonlinear_field():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    f = np.stack([2.0 * np.sin(xx / 9.0), 1.5 * np.cos(yy / 7.0)]).astype(np.float32)
    g = F.invert(f, iterations=60, tol=1e-6)
    assert np.abs(F.compose(f, g))[:, 4:-4, 4:-4].max() < 1e-3
    assert np.abs(F.compose(g, f))[:, 4:-4, 4:-4].max() < 1e-2


def test_resample_between_mips():
    M = _rotation(5, (4.0, -6.0), shape=(H, W))
    f = F.affine_field(M, (H, W))
    up = F.resample(f, 2)
    assert up.shape == (2, 2 * H, 2 * W)
    # the same motion at the finer mip: coarse pixel i has its centre at fine 2i + 0.5
    o = 0.5
    A = M[:, :2]
    Mf = np.concatenate([A, (2 * M[:, 2] + o - A @ np.full(2, o))[:, None]], 1)
    np.testing.assert_allclose(up[:, 4:-4, 4:-4], F.affine_field(Mf, (2 * H, 2 * W))[:, 4:-4, 4:-4], atol=1e-3)
    down = F.resample(up, 0.5)
    np.testing.assert_allclose(down[:, 2:-2, 2:-2], f[:, 2:-2, 2:-2], atol=1e-3)
    shift = np.ones((2, H, W), np.float32)
    np.testing.assert_allclose(F.resample(shift, 0.25), 0.25)


def test_jacobian_smoothness_and_folds():
    r = F.affine_field(_rotation(20), (H, W))
    np.testing.assert_allclose(F.jacobian_det(r), 1.0, atol=1e-4)
    t = np.deg2rad(20)
    assert F.smoothness(r) == pytest.approx(2 * (2 - 2 * np.cos(t)), rel=1e-3)
    assert F.smoothness(r, order=2) == pytest.approx(0.0, abs=1e-6)
    assert not F.folds(r).any()
    xx = np.mgrid[0:H, 0:W][1].astype(np.float32)
    fold = np.stack([np.zeros_like(xx), np.where(xx > W // 2, 2.0 * (xx - W // 2), 0.0)]).astype(np.float32)
    fm = F.folds(fold)
    assert fm[:, W // 2 + 2:].all() and not fm[:, :W // 2 - 1].any()
    stack = np.stack([r, fold])
    assert F.folds(stack).shape == (2, H, W)
    np.testing.assert_allclose(F.smoothness(stack), [F.smoothness(r), F.smoothness(fold)], rtol=1e-5)


def test_torch_in_torch_out_and_gradients_flow():
    img = torch.from_numpy(_texture(5))
    f = torch.zeros((2, H, W), requires_grad=True)
    target = torch.from_numpy(F.warp(_texture(5), F.affine_field(_rotation(0, (0.5, 0.0)), (H, W))))
    loss = ((F.warp(img, f) - target) ** 2).mean() + 0.1 * F.smoothness(f)
    loss.backward()
    assert f.grad is not None and float(f.grad.abs().sum()) > 0
    m = torch.tensor(_rotation(2), dtype=torch.float32, requires_grad=True)
    F.affine_field(m, (H, W)).sum().backward()
    assert m.grad is not None
    assert isinstance(F.invert(f.detach()), torch.Tensor) and isinstance(F.invert(f.detach().numpy()), np.ndarray)


def test_bad_shapes_are_named():
    with pytest.raises(InputError, match=r"\(2, y, x\)"):
        F.warp(_texture(), np.zeros((3, H, W), np.float32))
    with pytest.raises(InputError, match="differ"):
        F.warp(_texture(), np.zeros((2, H, W + 1), np.float32))
    with pytest.raises(InputError, match="compose"):
        F.compose(np.zeros((2, H, W)), np.zeros((2, H, W + 1)))
    with pytest.raises(InputError, match="scale"):
        F.resample(np.zeros((2, H, W)), 0)
