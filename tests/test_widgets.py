"""The slice browser renders what its controls say."""
import numpy as np
import pytest

from emkit.errors import InputError
from emkit_widgets.overlay import label_colors
from emkit_widgets.slice_browser import SliceBrowser


@pytest.fixture
def vol(rng):
    img = rng.integers(0, 255, (6, 32, 40), dtype=np.uint8)
    seg = np.zeros((6, 32, 40), np.uint64)
    seg[:, :16] = 7
    seg[:, 16:] = 9
    sem = np.zeros((6, 32, 40), np.uint8)
    sem[:, :, :20] = 2
    mask = np.zeros((6, 32, 40), np.uint8)
    mask[3, 5:10, 5:10] = 1
    return img, seg, sem, mask


def test_label_colors_stable_and_distinct():
    c = label_colors(np.array([0, 7, 9, 7], np.uint64))
    assert (c[0] == 0).all() and np.allclose(c[1], c[3]) and not np.allclose(c[1], c[2])


def test_render_follows_toggles(vol):
    img, seg, sem, mask = vol
    b = SliceBrowser(img, segmentation=seg, semantic=sem, masks={"fold": mask})
    plain = b.render(3)
    assert np.allclose(plain[..., 0], img[3] / 255.0)
    b.visible["segmentation"] = True
    with_seg = b.render(3)
    assert not np.allclose(with_seg[:16], plain[:16]) and not np.allclose(with_seg[16:], plain[16:])
    b.visible["segmentation"] = False
    b.visible["mask:fold"] = True
    m = b.render(3)
    changed = np.any(m != plain, axis=-1)
    assert changed[5:10, 5:10].all() and changed.sum() == 25
    assert np.array_equal(b.render(2), to_plain := b.render(2)) and np.allclose(to_plain[..., 0], img[2] / 255.0)
    with pytest.raises(IndexError):
        b.render(6)


def _shown(box) -> np.ndarray:
    """The RGB image (uint8) the widget's image shows, decoded from its PNG bytes."""
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(box.children[-1].value)).convert("RGB"))


def test_widget_controls_drive_render(vol):
    img, seg, sem, mask = vol
    b = SliceBrowser(img, segmentation=seg, semantic=sem, masks={"fold": mask})
    box = b.widget()
    # the widget shows exactly what render() draws for the slice and overlays its controls select
    assert b.z == 3 and _shown(box).shape == (32, 40, 3)
    np.testing.assert_array_equal(_shown(box), (b.render(3) * 255).astype(np.uint8))
    np.testing.assert_array_equal(_shown(box)[..., 0], (img[3] / 255.0 * 255).astype(np.uint8))
    b._controls["z"].value = 1
    assert b.z == 1
    np.testing.assert_array_equal(_shown(box), (b.render(1) * 255).astype(np.uint8))
    np.testing.assert_array_equal(_shown(box)[..., 0], (img[1] / 255.0 * 255).astype(np.uint8))
    b._controls["semantic"].value = True
    assert b.visible["semantic"]
    shown = _shown(box)
    np.testing.assert_array_equal(shown, (b.render(1) * 255).astype(np.uint8))
    # the semantic overlay colours exactly the labelled half (x < 20) of the slice
    plain = (img[1] / 255.0 * 255).astype(np.uint8)
    changed = np.any(shown != plain[..., None], axis=-1)
    assert changed[:, :20].mean() > 0.9 and not changed[:, 20:].any()


def test_cleft_tuner_threshold_slider_reaches_recorded_threshold():
    """The threshold slider reaches a rebalanced net's threshold (the shipped cleft net records 0.998),
    with stops finer near 1, and moving it to such a value changes the clefts found."""
    from emkit_widgets.cleft_tuner import CleftTuner, threshold_steps

    stops = threshold_steps()
    assert stops == sorted(set(stops)) and stops[0] == 0.05 and stops[-1] == 0.9999
    assert {0.5, 0.95, 0.99, 0.998, 0.999, 0.9995} <= set(stops)
    gaps = np.diff(stops)
    assert gaps[-1] == pytest.approx(1e-4) and gaps.max() == pytest.approx(0.05)  # log-ish: finer near 1
    assert 0.9985 in threshold_steps(include=(0.9985,)) and max(threshold_steps(0.99)) == 0.99

    gt = np.zeros((6, 32, 32), np.uint64)
    gt[1:4, 4:9, 4:9] = 1
    gt[2:5, 20:25, 20:25] = 2
    prob = np.where(gt > 0, 0.9995, 0.0).astype(np.float32)
    prob[gt == 2] = 0.997  # found below 0.998, lost at it
    tuner = CleftTuner(prob, gt, min_size=5, threshold=0.998)
    box = tuner.widget()
    t = tuner._controls["threshold"]
    values = [v for _, v in t.options]
    assert t.value == 0.998 and max(values) == 0.9999 and len(box.children) == 3
    assert "recall <b>0.500</b>" in tuner._controls["score"].value
    t.value = 0.995
    assert tuner.threshold == 0.995 and "recall <b>1.000</b>" in tuner._controls["score"].value
    t.value = 0.9999  # above every voxel: nothing found
    assert "<b>0</b> clefts found" in tuner._controls["score"].value


def test_alignment_flipper_shows_grey_where_sections_agree():
    import matplotlib

    matplotlib.use("Agg")
    from emkit_widgets.alignment_flipper import AlignmentFlipper, pair_overlay
    from emkit_widgets.plots import field_arrows, residual_by_section

    rng = np.random.default_rng(0)
    sec = (rng.random((64, 64)) * 255).astype(np.uint8)
    after = np.stack([sec, sec, sec])
    before = np.stack([sec, np.roll(sec, 5, axis=1), np.roll(sec, -3, axis=0)])
    fold = np.zeros(before.shape, bool)
    fold[2, 10:20, 10:20] = True
    res = {"section_median_px": [None, 5.0, 3.0], "worst_section": 1, "median_px": 4.0, "p95_px": 5.0,
           "unaligned_median_px": 6.0}
    fl = AlignmentFlipper(before, after, residual=res, defects={"fold": fold})
    assert fl.z == 1  # starts at the worst section
    rgb = fl.render(2, "after", "overlay")
    assert np.allclose(rgb[..., 0], rgb[..., 1])  # aligned: magenta + green = grey
    rgb = fl.render(2, "before", "overlay")
    assert not np.allclose(rgb[..., 0], rgb[..., 1])
    assert not np.allclose(rgb[10:20, 10:20], pair_overlay(before[1], before[2])[10:20, 10:20])  # fold drawn
    assert np.allclose(fl.render(2, "after", "this (z)")[..., 0], sec / 255.0)
    assert "median 3.00 px" in fl.caption(2)
    with pytest.raises(InputError, match="z must be in 1..2"):
        fl.render(0)
    with pytest.raises(InputError, match="mode must be"):
        fl.render(1, "after", "sideways")
    with pytest.raises(InputError, match="one shape"):
        AlignmentFlipper(before, after[:2])
    box = fl.widget()
    first = fl._controls["image"].value
    fl._controls["which"].value = "before"
    assert fl._controls["image"].value != first and box is not None
    f = np.zeros((2, 64, 64), np.float32)
    f[1] = 4.0
    assert "median 4.0 px" in field_arrows(f, sec).get_title()
    assert "median 4.00 px" in residual_by_section(res).get_title()
    with pytest.raises(InputError, match=r"\(2, y, x\)"):
        field_arrows(f[0])
