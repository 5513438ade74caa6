"""emkit.defects: each defect's effect, masks, displacement, composition, determinism."""
import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from emkit.defects import (DEFAULT_DEFECTS, DEFECT_KINDS, DefectSpec, apply_defects, blur, crack, fold, lost,
                           missing, parse_kinds, partial, partial_missing, resin, slip, step, thick, warp)
from emkit.errors import InputError

NZ = 8


@pytest.fixture(scope="module")
def clean():
    rng = np.random.default_rng(42)
    z, y, x = np.mgrid[0:NZ, 0:64, 0:64]
    img = 120 + 50 * np.sin(y / 5.0 + z) * np.cos(x / 7.0) + 10 * rng.standard_normal((NZ, 64, 64))
    return np.clip(img, 1, 254).astype(np.uint8)


def gen(seed=0):
    return np.random.default_rng(seed)


def test_parse_kinds():
    assert parse_kinds("default") == DEFAULT_DEFECTS
    assert parse_kinds(None) == () and parse_kinds("none") == () and parse_kinds("") == ()
    assert parse_kinds("all") == DEFECT_KINDS
    assert parse_kinds("fold, slip") == ("fold", "slip")
    with pytest.raises(InputError, match="valid kinds: fold, crack"):
        parse_kinds(["fold", "warp-drive"])


def test_bad_input():
    with pytest.raises(InputError, match="3 dimensions"):
        apply_defects(np.zeros((4, 4), np.uint8), ["fold"], gen())
    with pytest.raises(InputError, match="uint8"):
        apply_defects(np.zeros((4, 8, 8), np.int32), ["fold"], gen())
    with pytest.raises(InputError, match="outside the volume"):
        slip(np.zeros((4, 8, 8), np.uint8), gen(), z=9)
    with pytest.raises(InputError, match="non-negative"):
        DefectSpec(blur_sigma_px=(3.0, 1.0))


@pytest.mark.parametrize("func,kind", [(slip, "slip"), (step, "step")])
def test_shifts_match_displacement(clean, func, kind):
    z = 3
    r = func(clean, gen(), z=z, shift=(5, -7))
    zs = [z] if kind == "slip" else list(range(z, NZ))
    for zz in range(NZ):
        if zz in zs:
            assert np.array_equal(r.image[zz, 5:, :-7], clean[zz, :-5, 7:])   # image[y,x] = clean[y-dy, x-dx]
            assert np.all(r.image[zz, :5] == 0) and np.all(r.image[zz, :, -7:] == 0)
            assert np.all(r.displacement[0, zz] == 5) and np.all(r.displacement[1, zz] == -7)
        else:
            assert np.array_equal(r.image[zz], clean[zz])
            assert not r.displacement[:, zz].any()
    assert r.masks[kind].sum(axis=(1, 2)).nonzero()[0].tolist() == [z]
    assert np.array_equal(warp(clean, r.displacement, order=1), r.image)


@pytest.mark.parametrize("func,kind,sign", [(fold, "fold", 1), (crack, "crack", -1)])
def test_fold_and_crack(clean, func, kind, sign):
    z = 4
    r = func(clean, gen(3), z=z)
    m = r.masks[kind][z].astype(bool)
    assert m.any() and not r.masks[kind][np.arange(NZ) != z].any()
    others = np.arange(NZ) != z
    assert np.array_equal(r.image[others], clean[others])
    # outside the band the image is exactly the clean section moved by the displacement
    expect = warp(clean, r.displacement, order=1)
    assert np.array_equal(r.image[z][~m], expect[z][~m])
    band = r.image[z][m].astype(float).mean()
    assert band < 60 if kind == "fold" else band > 200
    # near the band, tissue moves towards it (fold) or away from it (crack): (dy, dx) is the motion
    dist, idx = distance_transform_edt(~m, return_indices=True)
    yy, xx = np.mgrid[0:64, 0:64]
    near = (dist > 2) & (dist < 8)
    to_band = np.stack([idx[0] - yy, idx[1] - xx]).astype(float)
    dot = (r.displacement[:, z] * to_band).sum(0)[near]
    assert np.mean(np.sign(dot) == sign) > 0.9
    assert np.abs(r.displacement[:, z][:, near]).max() > 1.0


def test_missing_and_partial_missing(clean):
    r = missing(clean, gen(), z=2)
    assert np.all(r.image[2] == 0) and r.masks["missing"][2].all() and r.masks["missing"].sum() == 64 * 64
    assert np.array_equal(r.image[3:], clean[3:])
    r = partial_missing(clean, gen(), z=2)
    m = r.masks["partial_missing"].astype(bool)
    assert 0 < m.sum() < 64 * 64 and np.all(r.image[m] == 0) and np.array_equal(r.image[~m], clean[~m])


def test_blur_thick_lost(clean):
    r = blur(clean, gen(), z=5)
    assert r.image[5].std() < 0.8 * clean[5].std() and r.masks["blur"][5].all()
    assert np.array_equal(r.image[:5], clean[:5])
    r = thick(clean, gen(), z=2)
    assert np.array_equal(r.image[2], r.image[3]) and r.masks["thick"][2:4].all() and r.masks["thick"].sum() == 2 * 64 * 64
    r = lost(clean, gen(), z=3)
    assert r.image.shape == (NZ - 1, 64, 64) and r.kept_sections.tolist() == [0, 1, 2, 4, 5, 6, 7]
    assert np.array_equal(r.image, clean[r.kept_sections])
    assert r.masks["lost"].sum(axis=(1, 2)).nonzero()[0].tolist() == [3]


@pytest.mark.parametrize("func,kind", [(partial, "partial"), (resin, "resin")])
def test_resin_like(clean, func, kind):
    r = func(clean, gen(5), z=1)
    m = r.masks[kind].astype(bool)
    assert m.any() and np.array_equal(r.image[~m], clean[~m])
    assert abs(r.image[m].mean() - 0.84 * 255) < 10


def test_float_images_keep_scale(clean):
    f = clean.astype(np.float32) / 255
    r = apply_defects(f, ["crack", "missing"], gen(1))
    assert r.image.dtype == np.float32 and r.image.max() <= 1.5


def test_apply_defects_composes(clean):
    sections = {"fold": [4], "slip": [4], "missing": [6]}
    r = apply_defects(clean, ["fold", "slip", "missing"], gen(7), sections=sections)
    assert set(r.masks) == {"fold", "slip", "missing"}
    # the fold mask moved with the slipped section; image == clean warped by the total field
    shift = r.displacement[:, 4, 32, 0]
    fold_only = apply_defects(clean, ["fold"], gen(7), sections={"fold": [4]})
    assert r.masks["fold"][4].sum() > 0
    m = r.masks["fold"][4].astype(bool)
    expect = warp(clean, r.displacement, order=1)
    assert np.array_equal(r.image[4][~m], expect[4][~m])
    assert np.all(r.image[6] == 0)
    assert fold_only.masks["fold"][4].sum() >= m.sum()  # shifted mask loses what moved outside
    assert np.abs(shift).max() >= 4


def test_apply_defects_default_and_determinism(clean):
    vol = np.concatenate([clean, clean[::-1]])          # 16 sections: room for every default defect
    a = apply_defects(vol, "default", gen(11))
    b = apply_defects(vol, "default", gen(11))
    c = apply_defects(vol, "default", gen(12))
    assert set(a.masks) == set(DEFAULT_DEFECTS)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.displacement, b.displacement)
    assert not np.array_equal(a.image, c.image)
    used = [z for zs in a.sections.values() for z in zs]
    assert len(used) == len(set(used)) == len(DEFAULT_DEFECTS)   # one distinct section each
    short = apply_defects(clean[:4], "default", gen(1))  # 2 usable sections: 2 defects, no error
    assert sum(len(v) for v in short.sections.values()) == 2
    none = apply_defects(clean, "none", gen(1))
    assert np.array_equal(none.image, clean) and none.masks == {}


def test_lost_in_apply_defects(clean):
    r = apply_defects(clean, ["lost", "missing"], gen(0), sections={"lost": [2], "missing": [5]})
    assert r.image.shape[0] == NZ - 1 and 2 not in r.kept_sections
    assert r.masks["missing"].shape == r.image.shape
    assert np.all(r.image[4] == 0)  # input section 5 is output section 4
