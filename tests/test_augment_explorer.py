"""emkit_widgets.augment_explorer: render(name, seed) shows each augmentation; the widget drives it."""
import numpy as np
import pytest

from emkit.train.augment import AUGMENTATIONS, AugmentParams
from emkit_widgets.augment_explorer import AugmentExplorer, focus_sections

SHAPE = (10, 48, 48)
PARAMS = AugmentParams(d_max=(4, 8, 12))


@pytest.fixture(scope="module")
def explorer():
    return AugmentExplorer(params=PARAMS, shape=SHAPE, seed=3)


def halves(rgb):
    w = (rgb.shape[1] - 4) // 2
    return rgb[:, :w], rgb[:, w + 4:]


def test_every_augmentation_renders(explorer):
    assert explorer.names == [*AUGMENTATIONS, "all"]
    ny = explorer.sample["image"].shape[1]
    for name in explorer.names:
        before, after = explorer.render(name, 1)
        assert before.dtype == np.float32 and before.ndim == 3 and before.shape[2] == 3
        assert 0 <= before.min() and before.max() <= 1 and 0 <= after.min() and after.max() <= 1
        if name != "all":
            assert before.shape == after.shape and before.shape[0] == ny
        else:
            assert after.shape[:2] == (SHAPE[1], 2 * SHAPE[2] + 4)
        assert explorer.describe(name, 1).startswith(name if name != "all" else "")
    with pytest.raises(ValueError, match="unknown augmentation"):
        explorer.render("sharpen", 0)


def test_render_shows_the_effect(explorer):
    # image-only augmentation: the image panel changes, the target panel does not
    b, a = explorer.render("brightness_contrast", 2)
    assert not np.allclose(halves(b)[0], halves(a)[0]) and np.array_equal(halves(b)[1], halves(a)[1])
    # a step misalignment moves the target too; the uncovered border is masked (red)
    b, a = explorer.render("misalignment", 5)
    rec = explorer.record("misalignment", 5)
    assert rec["kind"] == "step" and not np.array_equal(halves(b)[1], halves(a)[1])
    if any(rec["shift"]):
        red = (halves(a)[1][..., 0] > 0.5) & (halves(a)[1][..., 1] < 0.2)
        assert red.any()
    # a full missing section shows black in the image panel
    for seed in range(10):
        rec = explorer.record("missing_section", seed)
        if not rec["partial"][0]:
            _, a = explorer.render("missing_section", seed)
            assert halves(a)[0].max() == 0
            break
    else:
        pytest.fail("no full missing section in 10 seeds")


def test_focus_sections():
    assert focus_sections(None, 10, 8) == (5, 4)
    assert focus_sections({"name": "lost_section", "lost": [3, 4], "kept": [0, 1, 2, 5, 6]}, 7, 5) == (3, 3)
    assert focus_sections({"name": "lost_missing", "z": 4, "missing_at": 3}, 9, 7) == (4, 3)


def test_widget_controls_drive_render(explorer):
    box = explorer.widget()
    c = explorer._controls
    first = c["after"].value
    c["name"].value = "slip_interpolation"
    assert explorer.name == "slip_interpolation" and c["after"].value != first
    assert "slip_interpolation" in c["info"].value
    second = c["after"].value
    c["seed"].value = 7
    assert explorer.seed == 7 and c["after"].value != second
    # the images the box shows are exactly render()'s panels for the selected augmentation and seed
    import io

    from PIL import Image

    b, a = explorer.render("slip_interpolation", 7)
    for widget, want in ((c["before"], b), (c["after"], a)):
        shown = np.asarray(Image.open(io.BytesIO(widget.value)).convert("RGB"))
        np.testing.assert_array_equal(shown, (np.clip(want, 0, 1) * 255).astype(np.uint8))
    assert c["info"].value == explorer.describe("slip_interpolation", 7)
    assert c["after"] in box.children[1].children[1].children and c["name"] in box.children[0].children
