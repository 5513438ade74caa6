"""emkit.detect: misalignment maps, step/slip classification, segmentation masks (array and chunked)."""
import numpy as np
import pytest

from emkit.defects import slip, step
from emkit.detect import (MisalignmentParams, classify_misalignments, classify_regions, consecutive_runs,
                          misaligned, misalignment_maps, patch_extent, segmentation_masks,
                          segmentation_masks_layers)
from emkit.errors import InputError, LayerExistsError
from emkit.phantom import make_phantom

SHAPE = (24, 256, 256)
SLIP_Z, STEP_Z = 6, 15
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def clean():
    return {s: make_phantom(SHAPE, seed=s, defects="none").image for s in SEEDS}


def shifted(img, seed, slip_shift=(8, -10), step_shift=(-9, 7)):
    rng = np.random.default_rng(seed)
    r = slip(img, rng, z=SLIP_Z, shift=slip_shift)
    return step(r.image, rng, z=STEP_Z, shift=step_shift).image


@pytest.fixture(scope="module")
def damaged(clean):
    return {s: shifted(img, s) for s, img in clean.items()}


def test_params_defaults_and_errors():
    p = MisalignmentParams()
    assert (p.max_distance, p.patch_px, p.consecutive) == (5, 8, 3)         # the paper's values
    assert patch_extent(p) == 8 * p.downsample
    assert MisalignmentParams.for_resolution(8).downsample == 8
    assert MisalignmentParams.for_resolution(4, threshold=0.2) == MisalignmentParams(downsample=16, threshold=0.2)
    with pytest.raises(InputError, match="pixel_nm"):
        MisalignmentParams.for_resolution(0)
    for bad in ({"max_distance": 1}, {"patch_px": 0}, {"downsample": 1.5}, {"threshold": 2.0},
                {"highpass_sigma_px": 0}, {"empty_fraction": -0.1}, {"smooth_radius": -1},
                {"threshold_far": float("nan")}, {"input_defects": "fold"}):
        name = next(iter(bad))
        with pytest.raises(InputError, match=f"MisalignmentParams.{name}"):
            MisalignmentParams(**bad)


def test_bad_input():
    with pytest.raises(InputError, match="3 dimensions"):
        misalignment_maps(np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="dtype int32"):
        misalignment_maps(np.zeros((4, 64, 64), np.int32))
    with pytest.raises(InputError, match="MisalignmentParams"):
        misalignment_maps(np.zeros((4, 64, 64), np.uint8), params={"threshold": 0.1})
    with pytest.raises(InputError, match="K >= 2"):
        classify_regions(np.zeros((1, 4), np.float32))
    with pytest.raises(InputError, match="float array"):
        misaligned(np.zeros((2, 4), np.int64))
    with pytest.raises(InputError, match="defect mask 'fold' has shape"):
        segmentation_masks(np.full((4, 64, 64), 100, np.uint8), defect_masks={"fold": np.zeros((4, 64, 32))})


def test_maps_high_on_aligned_low_on_shifted(damaged):
    p = MisalignmentParams()
    img = damaged[SEEDS[0]]
    maps = misalignment_maps(img, p)
    nz = SHAPE[0]
    ext = patch_extent(p)
    assert maps.shape == (p.max_distance, nz, -(-SHAPE[1] // ext), -(-SHAPE[2] // ext)) and maps.dtype == np.float32
    for k in range(1, p.max_distance + 1):
        assert np.isnan(maps[k - 1, :k]).all() and np.isfinite(maps[k - 1, k:]).all()
    bad_pairs = {SLIP_Z, SLIP_Z + 1, STEP_Z}                                 # (z - 1, z) across a shift
    good = [z for z in range(1, nz) if z not in bad_pairs]
    assert np.nanmin(maps[0, good]) > p.threshold                            # aligned: high everywhere
    assert np.nanmax(maps[0, sorted(bad_pairs)]) < p.threshold               # shifted: low everywhere
    mis = misaligned(maps, p)
    assert mis.dtype == bool and mis.shape == maps.shape
    assert mis[0, sorted(bad_pairs)].all() and not mis[0, good].any()
    assert not mis[:, 0].any()                                               # NaN: no answer, not misaligned


def test_classifier_finds_slip_and_step(clean, damaged):
    found = {s: classify_misalignments(misalignment_maps(img)) for s, img in damaged.items()}
    tp = sum((SLIP_Z in f["slips"]) + (STEP_Z in f["steps"]) for f in found.values())
    n_pred = sum(len(f["slips"]) + len(f["steps"]) for f in found.values())
    assert tp == 2 * len(SEEDS) and n_pred == tp, found                      # precision = recall = 1
    for s, img in clean.items():
        assert classify_misalignments(misalignment_maps(img)) == {"slips": [], "steps": []}
    # the per-section summary given directly (K, z) classifies the same way
    maps = misalignment_maps(damaged[SEEDS[0]])
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="All-NaN"):
        per_pair = np.nanmedian(maps.reshape(*maps.shape[:2], -1), axis=-1)
    assert classify_misalignments(per_pair) == found[SEEDS[0]]


def test_classifier_on_synthetic_pairs():
    # (K, z) section agreement: 1 aligned, 0 misaligned (distance 2 across the slip at 3 aligned)
    nz = 10
    m = np.ones((2, nz), np.float32)
    m[:, :1] = np.nan
    m[1, 1] = np.nan
    m[0, [3, 4]] = 0            # slip at 3: (2, 3) and (3, 4) misaligned, (2, 4) aligned
    m[1, [3, 5]] = 0            # pairs two apart across section 3 ... (1, 3) and (3, 5)
    m[0, 7] = 0                 # step at 7
    m[1, [7, 8]] = 0
    assert classify_misalignments(m) == {"slips": [3], "steps": [7]}
    m[1, 4] = -1                # (2, 4) clearly misaligned too: two steps in a row, not a slip
    assert classify_misalignments(m)["slips"] == []


def test_empty_section_has_no_answer(clean):
    img = clean[SEEDS[0]].copy()
    img[10] = 0                                                              # a missing section
    maps = misalignment_maps(img)
    assert np.isnan(maps[0, 10]).all() and np.isnan(maps[0, 11]).all() and np.isnan(maps[1, 12]).all()
    assert np.isfinite(maps[1, 11]).all()                                    # 9 vs 11 skips it
    assert classify_misalignments(maps) == {"slips": [], "steps": []}


def test_consecutive_runs():
    m = np.zeros((7, 1, 3), np.uint8)
    m[1:4, 0, 0] = 1          # run of 3 -> all three
    m[1:3, 0, 1] = 1          # run of 2 -> nothing
    m[2:7, 0, 2] = 1          # run of 5 -> all five
    r = consecutive_runs(m, 3)
    assert r[:, 0, 0].tolist() == [0, 1, 1, 1, 0, 0, 0]
    assert not r[:, 0, 1].any()
    assert r[:, 0, 2].tolist() == [0, 0, 1, 1, 1, 1, 1]


def test_segmentation_masks(damaged):
    img = damaged[SEEDS[0]]
    nz = img.shape[0]
    m_in, m_out = segmentation_masks(img)
    assert m_in.shape == m_out.shape == img.shape and m_in.dtype == m_out.dtype == np.uint8
    assert set(np.unique(m_in)) <= {0, 1} and set(np.unique(m_out)) <= {0, 1}
    per_in, per_out = m_in.mean(axis=(1, 2)), m_out.mean(axis=(1, 2))
    assert per_in[SLIP_Z] > 0.5 and per_in[np.arange(nz) != SLIP_Z].max() == 0     # input: the slip
    assert per_out.max() == 0                         # emkit's default: steps stay out of the output mask
    m_in_p, m_out_p = segmentation_masks(img, MisalignmentParams(output_steps=True))   # the paper's rule
    per_out = m_out_p.mean(axis=(1, 2))
    assert np.array_equal(m_in_p, m_in)
    assert per_out[STEP_Z] > 0.5 and per_out[np.arange(nz) != STEP_Z].max() == 0   # output: the step
    with pytest.raises(InputError, match="output_steps"):
        MisalignmentParams(output_steps="yes")
    # folds / cracks / resin from defect masks go into the input mask; three in a row also into the output
    fold = np.zeros(img.shape, np.uint8)
    fold[2:5, 10:40, 20:60] = 1       # three consecutive sections
    crack = np.zeros(img.shape, np.uint8)
    crack[19:21, 100:120, 100:130] = 1  # two
    other = np.ones(img.shape, np.uint8)  # a kind not in params.input_defects: ignored
    m_in2, m_out2 = segmentation_masks(img, defect_masks={"fold": fold, "crack": crack, "blur": other})
    assert np.array_equal(m_in2, m_in | fold | crack)
    assert np.array_equal(m_out2, m_out | fold)


OFFSET = (3, 64, 128)   # a voxel offset: the patch grid starts at the volume's first voxel


def _layer(url, array, chunk):
    from emkit.io import Layer

    lay = Layer.create(url, "image" if url.endswith("img") else "mask", array.shape, chunk_size=chunk,
                       voxel_offset=OFFSET)
    lay.write(array, OFFSET)
    return lay


def test_chunked_equals_array(tmp_path, damaged):
    from emkit.inference.chunked import _open_mask    # what `emkit infer --mask-in/--mask-out` opens
    from emkit.io import Layer

    img = damaged[SEEDS[1]][:, :, :192]           # x not a multiple of the patch extent: padded at the end
    fold = np.zeros(img.shape, np.uint8)
    fold[7:10, 50:90, 30:100] = 1
    _layer(str(tmp_path / "img"), img, (4, 64, 64))
    _layer(str(tmp_path / "fold"), fold, (4, 64, 64))
    paper = MisalignmentParams(output_steps=True)        # steps in the output mask too: both kinds of content
    want_in, want_out = segmentation_masks(img, paper, defect_masks={"fold": fold})
    assert want_in[SLIP_Z].any() and want_out[STEP_Z].any() and want_out[7:10].any()
    want_maps = misalignment_maps(img)
    for i, chunk in enumerate([(4, 64, 64), (8, 128, 192)]):
        in_url, out_url, maps_url = segmentation_masks_layers(
            str(tmp_path / "img"), str(tmp_path / f"out{i}"), chunk_size=chunk,
            defect_mask_urls={"fold": str(tmp_path / "fold")}, maps=True, params=paper)
        maps = Layer.open(maps_url)
        assert maps.voxel_offset == (OFFSET[0], OFFSET[1] // 64, OFFSET[2] // 64) and maps.num_channels == 5
        np.testing.assert_allclose(maps.read(), want_maps, rtol=0, atol=1e-6, equal_nan=True)
        a, b = Layer.open(in_url), Layer.open(out_url)
        assert a.kind.name == b.kind.name == "mask" and a.size == b.size == img.shape
        assert a.voxel_offset == b.voxel_offset == OFFSET
        image = Layer.open(str(tmp_path / "img"))
        assert _open_mask(in_url, image, "input mask") is not None and _open_mask(out_url, image, "output mask")
        assert np.array_equal(a.read(), want_in), chunk
        assert np.array_equal(b.read(), want_out), chunk
    with pytest.raises(LayerExistsError):
        segmentation_masks_layers(str(tmp_path / "img"), str(tmp_path / "out0"), chunk_size=(4, 64, 64))
    with pytest.raises(InputError, match="patch extent"):
        segmentation_masks_layers(str(tmp_path / "img"), str(tmp_path / "out9"), chunk_size=(4, 64, 128),
                                  params=MisalignmentParams(downsample=16))
    with pytest.raises(InputError, match="image layer"):
        segmentation_masks_layers(str(tmp_path / "fold"), str(tmp_path / "out8"))


def test_layer_form_follows_the_image_resolution_by_default(tmp_path):
    """A 4 nm image gets patches correlated at 64 nm per pixel (downsample 16), as for_resolution says."""
    from emkit.detect import segmentation_masks_layers
    from emkit.io import Layer

    img = np.random.default_rng(0).integers(0, 255, (6, 128, 128), dtype=np.uint8)
    Layer.create(str(tmp_path / "img4"), "image", img.shape, resolution=(50, 4, 4), chunk_size=(6, 128, 128)).write(img)
    *_, maps_url = segmentation_masks_layers(str(tmp_path / "img4"), str(tmp_path / "o"), maps=True)
    assert Layer.open(maps_url).resolution[1:] == (4 * 8 * 16, 4 * 8 * 16)
    assert MisalignmentParams.for_resolution(4).downsample == 16


def test_masks_command_writes_masks_and_refuses_bad_defects(tmp_path, capsys, damaged):
    """`emkit masks` writes mask layers with the array form's content; bad --defect values are named."""
    from emkit.cli.main import main
    from emkit.io import Layer

    img = damaged[SEEDS[0]]
    Layer.create(str(tmp_path / "img"), "image", img.shape, chunk_size=(8, 128, 128)).write(img)
    assert main(["masks", str(tmp_path / "img"), str(tmp_path / "m"), "--quiet", "--output-steps"]) == 0
    out = capsys.readouterr().out
    want_in, want_out = segmentation_masks(img, MisalignmentParams(output_steps=True))
    assert np.array_equal(Layer.open(str(tmp_path / "m" / "mask_in")).read(), want_in)
    assert np.array_equal(Layer.open(str(tmp_path / "m" / "mask_out")).read(), want_out)
    assert f"[{SLIP_Z}]" in out and f"[{STEP_Z}]" in out
    assert main(["masks", str(tmp_path / "img"), str(tmp_path / "m2"), "--defect", "blur=x"]) == 2
    assert "fold, crack, resin" in capsys.readouterr().err
    assert main(["masks", str(tmp_path / "img"), str(tmp_path / "m2"), "--defect", "fold"]) == 2
    assert "KIND=URL" in capsys.readouterr().err
