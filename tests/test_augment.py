"""emkit.train.augment: each augmentation's effect on image and targets, exclusivity, determinism,
d_max bounds, the Augmenter's geometry — and the exact order-0 path added to emkit.defects.warp."""
import json

import numpy as np
import pytest

from emkit import defects
from emkit.affinity import affinities_from_labels
from emkit.errors import InputError
from emkit.train.augment import (AUGMENTATIONS, EXCLUSIVE, N_FLIP_ROTATE, AugmentParams, Augmenter,
                                 brightness_contrast, demo, draw_shift, flip_rotate, flip_rotate_array,
                                 invert_flip_rotate, lost_missing, lost_section, misalignment, misalignment_missing,
                                 missing_section, out_of_focus, preset, slip_interpolation, warp)

BIG = np.uint64(2 ** 60)          # ids above 2**53: any float round trip would change them
NZ, NY, NX = 12, 64, 64


def lut(labels):
    """A grey value per label (never 0, so zero-filled borders and missing sections show)."""
    return ((labels % np.uint64(251)).astype(np.float32) + 2.0) / 255.0


def make_sample(shape=(NZ, NY, NX), seed=0):
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    jy = rng.integers(0, 4, (nz, 1, 1))
    labels = (BIG + (z // 3) * 10000 + ((y + jy) // 7) * 100 + (x // 9) + 1).astype(np.uint64)
    return {"image": lut(labels), "labels": labels, "semantic": (labels % np.uint64(6)).astype(np.uint8)}


def gen(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture
def sample():
    return make_sample()


def names(s):
    return [r["name"] for r in s["_applied"]]


# --- emkit.defects.warp, order 0 (the small change made for this module) ----------------------
def test_defects_warp_order0_is_exact_for_big_ids(sample):
    lab = sample["labels"]
    disp = np.zeros((2, *lab.shape), np.float32)
    disp[0, 5:], disp[1, 5:] = 3, -4
    out = defects.warp(lab, disp, order=0)
    assert out.dtype == np.uint64
    assert np.array_equal(out[:5], lab[:5])
    assert np.array_equal(out[5:, 3:, :-4], lab[5:, :-3, 4:])          # out[y, x] = lab[y - 3, x + 4]
    assert np.all(out[5:, :3] == 0) and np.all(out[5:, :, -4:] == 0)
    assert np.array_equal(defects.warp(lab, disp, order=0, cval=7)[5:, :3], np.full((NZ - 5, 3, NX), 7, np.uint64))


# --- (1) flip & rotation ----------------------------------------------------------------------
def test_flip_rotate_16_distinct_invertible_and_consistent(sample):
    seen = set()
    noise = gen(9).random(sample["image"].shape, dtype=np.float32)
    for c in range(N_FLIP_ROTATE):
        seen.add(flip_rotate(dict(sample, image=noise), gen(), config=c)["image"].tobytes())
        out = flip_rotate(sample, gen(), config=c)
        assert np.array_equal(out["image"], lut(out["labels"]))           # labels moved with the image
        assert out["_applied"][-1]["config"] == c
        back = invert_flip_rotate(out, c)
        for k in ("image", "labels", "semantic"):
            assert np.array_equal(back[k], sample[k])
    assert len(seen) == 16
    drawn = {flip_rotate(sample, gen(s))["_applied"][-1]["config"] for s in range(200)}
    assert drawn == set(range(16))
    # channel-first arrays move the same way
    aff = np.stack([sample["labels"]] * 2)
    assert np.array_equal(flip_rotate_array(aff, 13)[1], flip_rotate_array(sample["labels"], 13))


def test_flip_rotate_non_square():
    s = make_sample((6, 32, 48))
    assert {flip_rotate(s, gen(i))["_applied"][-1]["config"] for i in range(100)} <= set(range(8))
    with pytest.raises(InputError, match="transpose"):
        flip_rotate(s, gen(), config=8)


# --- (2) brightness & contrast ----------------------------------------------------------------
@pytest.mark.parametrize("per_section", [True, False])
def test_brightness_contrast_changes_image_only(sample, per_section):
    out = brightness_contrast(sample, gen(3), per_section=per_section)
    assert out["labels"] is sample["labels"] and out["semantic"] is sample["semantic"]
    assert not np.allclose(out["image"], sample["image"])
    assert out["image"].dtype == np.float32 and 0 <= out["image"].min() and out["image"].max() <= 1
    assert len(out["_applied"][-1]["gamma"]) == (NZ if per_section else 1)
    u8 = dict(sample, image=(sample["image"] * 255).astype(np.uint8))
    u8["image"][2] = 0                                                     # no data stays no data
    out8 = brightness_contrast(u8, gen(3), per_section=per_section)
    assert out8["image"].dtype == np.uint8 and np.all(out8["image"][2] == 0) and out8["image"][3].any()


# --- (3) warping --------------------------------------------------------------------------------
def test_warp_moves_image_and_labels_consistently(sample):
    out = warp(sample, gen(1), out_shape=(40, 40), rotation_deg=20, image_order=0)
    assert out["image"].shape == out["labels"].shape == (NZ, 40, 40)
    assert np.array_equal(out["image"], lut(out["labels"]))               # labels-derived image == warped labels
    assert "mask" not in out and out["_applied"][-1]["strength"] > 0     # nothing came from outside
    centre = sample["labels"][:, 12:52, 12:52]
    assert not np.array_equal(out["labels"], centre)                       # it did warp
    assert np.isin(out["labels"], sample["labels"]).all()                  # nearest neighbour: no new ids
    # bilinear image: equal to the label-derived value wherever the label is locally constant
    lin = warp(sample, gen(1), out_shape=(40, 40), rotation_deg=20)
    assert np.mean(np.isclose(lin["image"], lut(lin["labels"]), atol=1e-5)) > 0.5
    assert np.array_equal(lin["labels"], out["labels"])


def test_warp_without_window_masks_outside(sample):
    out = warp(sample, gen(2), rotation_deg=30)
    assert out["image"].shape == sample["image"].shape
    assert out["mask"].min() == 0 and out["mask"].max() == 1
    assert np.all(out["labels"][out["mask"] == 0] == 0)


# --- (4) misalignment, (10) slip interpolation --------------------------------------------------
def test_step_misalignment_shifts_image_and_target_from_z(sample):
    z, (dy, dx) = 5, (4, -6)
    out = misalignment(sample, gen(), kind="step", z=z, shift=(dy, dx))
    for key in ("image", "labels", "semantic"):
        a, b = out[key], sample[key]
        assert np.array_equal(a[:z], b[:z])
        assert np.array_equal(a[z:, dy:, :dx], b[z:, :-dy, -dx:])          # a[y, x] = b[y - dy, x - dx]
    assert np.all(out["image"][z:, :dy] == 0)
    assert np.all(out["mask"][z:, :dy] == 0) and np.all(out["mask"][z:, :, dx:] == 0)
    assert out["mask"][:z].all() and out["mask"][z:, dy:, :dx].all()
    # targets from the shifted labels: no z-affinity across the mismatch at z
    aff = affinities_from_labels(out["labels"])
    assert aff[0, z].mean() < affinities_from_labels(sample["labels"])[0, z].mean()
    assert np.array_equal(aff[0, z] > 0, out["labels"][z] == out["labels"][z - 1])
    assert out["_applied"][-1] == {"name": "misalignment", "kind": "step", "z": z, "shift": (dy, dx), "d_max": 10,
                                   "target_moved": True}


def test_slip_interpolation_shifts_input_only(sample):
    out = slip_interpolation(sample, gen(), z=4, shift=(-3, 5))
    assert np.array_equal(out["image"][4, :-3, 5:], sample["image"][4, 3:, :-5])
    others = [z for z in range(NZ) if z != 4]
    assert np.array_equal(out["image"][others], sample["image"][others])
    assert out["labels"] is sample["labels"] and "mask" not in out
    assert names(out) == ["slip_interpolation"]
    # Lee et al. 2017 slip (semantic preset): the target slips too
    both = misalignment(sample, gen(), kind="slip", slip_target=True, z=4, shift=(-3, 5))
    assert np.array_equal(both["labels"][4, :-3, 5:], sample["labels"][4, 3:, :-5])
    assert np.array_equal(both["labels"][others], sample["labels"][others])


def test_shift_within_d_max():
    rng = gen(5)
    for d in (0, 5, 10):
        s = np.array([draw_shift(rng, d) for _ in range(600)])
        assert np.abs(s).max() <= d
        if d:
            assert set(np.unique(s)) == set(range(-d, d + 1))
    with pytest.raises(InputError, match="d_max"):
        draw_shift(rng, -1)


# --- (5) missing section, (6) out of focus -----------------------------------------------------
def test_missing_sections_zero_input_target_untouched(sample):
    counts = []
    for seed in range(30):
        out = missing_section(sample, gen(seed))
        rec = out["_applied"][-1]
        secs = rec["sections"]
        assert rec["consecutive"] == [secs[0], secs[0] + 1]                  # two consecutive, always
        assert 2 <= len(secs) <= 9 and len(set(secs)) == len(secs)
        for z, part in zip(secs, rec["partial"]):
            zeros = out["image"][z] == 0
            assert zeros.all() if not part else (zeros.any() and not zeros.all())
        untouched = [z for z in range(NZ) if z not in secs]
        assert np.array_equal(out["image"][untouched], sample["image"][untouched])
        assert out["labels"] is sample["labels"] and "mask" not in out
        counts.append(len(secs))
    assert max(counts) > 4


def test_out_of_focus_blurs_listed_sections_only(sample):
    out = out_of_focus(sample, gen(4), max_sections=7, partial_probability=0.0)
    secs = out["_applied"][-1]["sections"]
    assert 1 <= len(secs) <= 7
    for z in range(NZ):
        same = np.array_equal(out["image"][z], sample["image"][z])
        assert same == (z not in secs)
        if z in secs:
            assert out["image"][z].std() < sample["image"][z].std()
    assert out["labels"] is sample["labels"]
    part = out_of_focus(sample, gen(4), n=1, partial_probability=1.0)
    (z,), (box,) = part["_applied"][-1]["sections"], part["_applied"][-1]["boxes"]
    y0, y1, x0, x1 = box
    changed = part["image"][z] != sample["image"][z]
    assert changed[y0:y1, x0:x1].any() and not changed[:y0].any() and not changed[y1:].any()


# --- (7) misalignment + missing -----------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2])
def test_misalignment_plus_missing_colocated_target_interpolates(sample, n):
    z, shift = 6, (6, -9)
    out = misalignment_missing(sample, gen(), z=z, shift=shift, n_missing=n)
    gap = list(range(z - n + 1, z + 1))
    assert out["_applied"][-1]["missing"] == gap
    assert np.all(out["image"][gap] == 0)                                  # missing where the step is
    assert np.array_equal(out["image"][:gap[0]], sample["image"][:gap[0]])
    lab, ref = out["labels"], sample["labels"]
    assert np.array_equal(lab[:gap[0]], ref[:gap[0]])
    assert np.array_equal(lab[z + 1:, 6:, :-9], ref[z + 1:, :-6, 9:])      # after the gap: full shift
    assert np.array_equal(out["image"][z + 1:, 6:, :-9], sample["image"][z + 1:, :-6, 9:])
    for k, s in enumerate(gap, start=1):                                   # in the gap: k/(n+1) of it
        ty, tx = round(6 * k / (n + 1)), round(-9 * k / (n + 1))
        assert out["_applied"][-1]["target_shifts"][k - 1] == (ty, tx)
        assert np.array_equal(lab[s, ty:, :tx], ref[s, :-ty, -tx:])


# --- (8) lost section, (9) lost + missing ---------------------------------------------------------
@pytest.mark.parametrize("single,double,fewer", [(True, False, 1), (False, True, 2), (True, True, 3)])
def test_lost_sections_removed_from_input_and_target(sample, single, double, fewer):
    out = lost_section(sample, gen(7), single=single, double=double)
    rec = out["_applied"][-1]
    assert out["image"].shape[0] == out["labels"].shape[0] == out["semantic"].shape[0] == NZ - fewer
    assert len(rec["lost"]) == fewer and 0 not in rec["lost"] and NZ - 1 not in rec["lost"]
    kept = [z for z in range(NZ) if z not in rec["lost"]]
    assert rec["kept"] == kept
    for k in ("image", "labels", "semantic"):
        assert np.array_equal(out[k], sample[k][kept])
    if double:
        assert any(a + 1 == b for a, b in zip(rec["lost"], rec["lost"][1:]))
    drawn = {len(lost_section(sample, gen(s))["_applied"][-1]["lost"]) for s in range(40)}
    assert drawn == {1, 2, 3}


def test_lost_plus_missing(sample):
    out = lost_missing(sample, gen(), z=5)
    assert out["image"].shape[0] == out["labels"].shape[0] == NZ - 2
    assert np.all(out["image"][4] == 0)                                    # z-1, z, z+1 → one missing section
    assert np.array_equal(out["labels"][4], sample["labels"][5])           # target keeps only the middle
    keep = [0, 1, 2, 3, 5, 7, 8, 9, 10, 11]
    assert np.array_equal(out["labels"], sample["labels"][keep])
    others = [i for i in range(NZ - 2) if i != 4]
    assert np.array_equal(out["image"][others], sample["image"][keep][others])


# --- the Augmenter ---------------------------------------------------------------------------------
SMALL = AugmentParams(d_max=(2, 4, 6))
OUT = (8, 24, 24)


def test_required_input_shape_and_inverse():
    aug = Augmenter("boundary", 0)
    req = aug.required_input_shape((16, 96, 96))
    assert req[0] == 16 + 3 and req[1] == req[2] >= 96 + 50
    assert aug.output_shape_for(req) == (16, 96, 96)
    assert Augmenter("semantic").required_input_shape((16, 96, 96)) == (16, 96 + 25, 96 + 25)
    assert Augmenter("none").required_input_shape((16, 64, 96)) == (16, 64, 96)
    assert Augmenter("boundary").required_input_shape((16, 64, 96))[1:] == (96 + 50 + 44, 96 + 50 + 44)
    with pytest.raises(InputError, match="smaller than"):
        aug(make_sample((16, 96, 96)), (16, 96, 96))
    with pytest.raises(InputError, match="at least 3"):
        aug.required_input_shape((2, 32, 32))


def test_augmenter_shapes_exclusivity_and_coverage():
    aug = Augmenter(SMALL, 11)
    s = make_sample(aug.required_input_shape(OUT))
    seen = {}
    for _ in range(300):
        out = aug(s, OUT)
        assert all(out[k].shape == OUT for k in ("image", "labels", "semantic", "mask"))
        excl = [n for n in names(out) if n in EXCLUSIVE or n == "slip_interpolation"]
        assert len(excl) <= 1, names(out)
        for n in names(out):
            seen[n] = seen.get(n, 0) + 1
        for r in out["_applied"]:
            if "d_max" in r:
                assert r["d_max"] in SMALL.d_max and max(map(abs, r["shift"])) <= r["d_max"]
    assert set(seen) == set(AUGMENTATIONS)                                 # all ten occur
    frac_step = seen["misalignment"] / (seen["misalignment"] + seen["slip_interpolation"])
    assert 0.5 < frac_step < 0.9                                           # step p = 0.7, slip p = 0.3


def test_augmenter_keeps_image_and_target_consistent():
    # only augmentations that move image and target together: the image stays lut(labels) everywhere,
    # so no uncovered (zero) border survives the crops and targets follow every move
    p = AugmentParams(d_max=(2, 4, 6), brightness_contrast=0, out_of_focus=0, warp=0, missing_section=0,
                      misalignment_missing=0, lost_missing=0, misalignment=0.5, lost_section=0.3,
                      step_probability=1.0)
    aug = Augmenter(p, 3)
    s = make_sample(aug.required_input_shape(OUT))
    for _ in range(60):
        out = aug(s, OUT)
        assert np.array_equal(out["image"], lut(out["labels"])), names(out)
        assert out["mask"].all()
    slip = Augmenter(AugmentParams(d_max=(6,), misalignment=1.0, step_probability=0.0, missing_section=0,
                                   misalignment_missing=0, lost_section=0, lost_missing=0, brightness_contrast=0,
                                   out_of_focus=0, warp=0), 1)
    for _ in range(20):
        out = slip(s, OUT)
        assert out["image"].min() > 0                                      # the slip's empty border is cropped


def test_augmenter_deterministic_by_seed():
    s = make_sample(Augmenter(SMALL).required_input_shape(OUT))
    a = [Augmenter(SMALL, 42)(s, OUT) for _ in range(2)]
    for k in ("image", "labels", "mask"):
        assert np.array_equal(a[0][k], a[1][k])
    assert json.dumps(a[0]["_applied"], default=str) == json.dumps(a[1]["_applied"], default=str)
    outs = {Augmenter(SMALL, seed)(s, OUT)["image"].tobytes() for seed in range(5)}
    assert len(outs) > 1
    b = demo("misalignment", s, seed=3)[1]
    assert np.array_equal(b["image"], demo("misalignment", s, seed=3)[1]["image"])


def test_augmenter_extra_arrays_and_bad_input():
    aug = Augmenter(SMALL, 0)
    s = make_sample(aug.required_input_shape(OUT))
    s["extra"] = np.stack([s["labels"], s["labels"]])                       # (c, z, y, x)
    s["mask"] = np.ones(s["image"].shape, np.uint8)
    for _ in range(10):
        out = aug(s, OUT)
        assert out["extra"].shape == (2, *OUT)
        assert np.array_equal(out["extra"][1], out["labels"])
    with pytest.raises(InputError, match="expected"):
        aug({"image": s["image"], "labels": s["labels"][:-1]}, OUT)
    with pytest.raises(InputError, match="'image'"):
        aug({"labels": s["labels"]}, OUT)
    with pytest.raises(InputError, match="Generator"):
        flip_rotate(s, 0)


# --- parameters ----------------------------------------------------------------------------------
def test_params_presets_and_validation():
    b, sem = preset("boundary"), preset("semantic")
    assert b.d_max == (10, 30, 50) and sem.d_max == (5, 15, 25)
    assert b.step_probability == 0.7 and not b.slip_target
    assert b.missing_consecutive == 2 and b.missing_max_single == 7 and b.blur_max_sections == 7
    assert sem.warp == sem.out_of_focus == sem.lost_section == sem.lost_missing == 0
    assert AugmentParams.from_dict(json.loads(json.dumps(b.to_dict()))) == b
    with pytest.raises(InputError, match="sum to"):
        AugmentParams(misalignment=0.5, missing_section=0.5, lost_section=0.5)
    with pytest.raises(InputError, match="probability"):
        AugmentParams(warp=1.5)
    with pytest.raises(InputError, match="d_max"):
        AugmentParams(d_max=(10, -1))
    with pytest.raises(InputError, match="unknown augmentation preset"):
        preset("fancy")
    with pytest.raises(InputError, match="unknown AugmentParams"):
        AugmentParams.from_dict({"flip": 1})
