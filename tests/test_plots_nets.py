"""emkit_widgets.plots figures of notebooks 03 and 04 draw what they are given."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from emkit_widgets import plots  # noqa: E402
from emkit_widgets.overlay import SEMANTIC_COLORS, label_colors  # noqa: E402


@pytest.fixture
def vol(rng):
    labels = np.zeros((4, 24, 32), np.uint64)
    labels[:, :12] = 3
    labels[:, 12:] = 8
    image = rng.integers(0, 255, labels.shape, dtype=np.uint8)
    return image, labels


def _images(ax):
    return [im.get_array() for im in ax.get_images()]


def test_loss_curve():
    log = {"train": {"iteration": [1, 2, 3], "loss": [1.5, 1.2, 1.0],
                     "heads": {"affinity": [0.8, 0.6, 0.5], "long_range": [0.7, 0.6, 0.5], "myelin": [None] * 3}},
           "validation": [{"iteration": 3, "loss": 1.1}]}
    fig = plots.loss_curve(log)
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert labels == ["training loss (sum of heads)", "affinity", "long_range", "validation loss"]
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [1.5, 1.2, 1.0])
    np.testing.assert_array_equal(ax.get_lines()[-1].get_xdata(), [3])


def test_affinities_vs_truth(vol):
    image, labels = vol
    aff = np.full((12, *labels.shape), 0.25, np.float32)
    fig = plots.affinities_vs_truth(image, aff, labels, z=2)
    ims = [_images(a)[0] for a in fig.axes]
    np.testing.assert_array_equal(ims[0], image[2])
    assert np.allclose(ims[1], 0.25) and ims[1].shape == (24, 32, 3)
    true = np.asarray(ims[2])
    assert (true[11, :, 1] == 1).all() and (true[12, :, 1] == 0).all()   # the y-boundary between 3 and 8
    assert (true[:, 0, 2] == 0).all() and (true[:, 1:, 2] == 1).all()    # x-affinity 0 at the border only
    np.testing.assert_allclose(ims[3], label_colors(labels[2]))
    fig0 = plots.affinities_vs_truth(image, aff, labels, z=0)             # first section: no z-neighbour
    assert (np.asarray(_images(fig0.axes[2])[0])[12, :, 0] == 0).all()
    with pytest.raises(IndexError):
        plots.affinities_vs_truth(image, aff, labels, z=4)


def test_semantic_figures(vol):
    image, _ = vol
    gt = np.zeros(image.shape, np.uint8)
    gt[:, :, :16] = 2
    gt[:, :, 16:] = 5
    pred = np.full(image.shape, 2, np.uint8)
    fig = plots.semantic_vs_truth(image, pred, gt, alpha=1.0)
    p, g = (np.asarray(_images(a)[0]) for a in fig.axes[1:3])
    assert np.allclose(p, SEMANTIC_COLORS[2]) and np.allclose(g[:, 20], SEMANTIC_COLORS[5])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["soma", "axon", "dendrite", "glia", "vessel"]
    onehot = np.stack([(gt == c) for c in range(1, 6)]).astype(np.float32)
    fig = plots.semantic_channels(image, onehot, z=1)
    assert [a.get_title() for a in fig.axes] == ["image, z=1", "soma", "axon", "dendrite", "glia", "vessel"]
    np.testing.assert_array_equal(_images(fig.axes[5])[0], onehot[4, 1])


def test_augmentation_gallery():
    from emkit.train.augment import AugmentParams
    from emkit_widgets.augment_explorer import AugmentExplorer

    ex = AugmentExplorer(params=AugmentParams(d_max=(4, 8, 12)), shape=(10, 48, 48), seed=3)
    fig = plots.augmentation_gallery(ex, seed=1, names=["flip_rotate", "missing_section"], columns=2)
    titled = [a for a in fig.axes if a.get_images()]
    assert [a.get_title() for a in titled] == ["original", "flip_rotate", "missing_section"]
    np.testing.assert_allclose(_images(titled[2])[0], ex.render("missing_section", 1)[1])
    np.testing.assert_allclose(_images(titled[0])[0], ex.render("flip_rotate", 1)[0])
