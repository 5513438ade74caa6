"""Matplotlib figures for the notebooks: a defect gallery and clean-versus-damaged views; training loss
curves, an augmentation gallery, affinities and semantic labels beside their ground truth.

They only arrange what the library computes (``emkit.defects``, ``emkit.phantom``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["defect_gallery", "clean_vs_damaged", "most_damaged_section", "loss_curve", "augmentation_gallery",
           "affinities_vs_truth", "semantic_channels", "semantic_vs_truth", "field_arrows", "residual_by_section"]


def most_damaged_section(displacement: np.ndarray) -> int:
    """Index of the section with the largest in-plane displacement magnitude.

    Parameters
    ----------
    displacement : float (2, z, y, x) field (dy, dx) in voxels.
    """
    mag = np.hypot(displacement[0], displacement[1])
    return int(np.argmax(mag.reshape(mag.shape[0], -1).max(axis=1)))


def clean_vs_damaged(phantom, z: int | None = None):
    """Figure: clean section, damaged section and |displacement| (voxels) of a phantom."""
    import matplotlib.pyplot as plt

    z = most_damaged_section(phantom.displacement) if z is None else int(z)
    fig, ax = plt.subplots(1, 3, figsize=(13, 4.5))
    ax[0].imshow(phantom.clean_image[z], cmap="gray")
    ax[0].set_title(f"clean, z={z}")
    ax[1].imshow(phantom.image[z], cmap="gray")
    ax[1].set_title("with defects")
    im = ax[2].imshow(np.hypot(*phantom.displacement[:, z]), cmap="magma")
    ax[2].set_title("|displacement| (voxels)")
    fig.colorbar(im, ax=ax[2])
    for a in ax:
        a.axis("off")
    return fig


def defect_gallery(clean_image: np.ndarray, kinds=None, seed: int = 0):
    """Figure: each defect kind applied alone to ``clean_image`` (z, y, x), with its mask.

    The section shown per kind is the one its mask covers most.
    """
    import matplotlib.pyplot as plt

    from emkit.defects import DEFECT_KINDS, apply_defects

    kinds = list(DEFECT_KINDS if kinds is None else kinds)
    fig, ax = plt.subplots(2, len(kinds), figsize=(2.2 * len(kinds), 4.6), squeeze=False)
    for i, kind in enumerate(kinds):
        res = apply_defects(clean_image, [kind], np.random.default_rng(seed))
        mask = res.masks.get(kind, np.zeros(res.image.shape, np.uint8))
        per_z = mask.reshape(mask.shape[0], -1).sum(axis=1)
        z = int(np.argmax(per_z)) if per_z.any() else res.image.shape[0] // 2
        ax[0, i].imshow(res.image[z], cmap="gray", vmin=0, vmax=255)
        ax[0, i].set_title(f"{kind} (z={z})", fontsize=8)
        ax[1, i].imshow(mask[z], cmap="Reds", vmin=0, vmax=1)
        ax[0, i].axis("off")
        ax[1, i].axis("off")
    fig.tight_layout()
    return fig


# ---- nets (notebooks 03 and 04) -----------------------------------------------------------------
def _middle(z, nz: int) -> int:
    z = nz // 2 if z is None else int(z)
    if not 0 <= z < nz:
        raise IndexError(f"section {z} outside 0..{nz - 1}")
    return z


def loss_curve(log: dict, ax=None):
    """Figure: training loss per iteration (total and per head) and validation loss.

    Parameters
    ----------
    log : the training log (``TrainResult.log`` or ``log.json`` of :mod:`emkit.train.loop`):
        ``log["train"]`` holds ``iteration``, ``loss`` and ``heads`` (name → losses);
        ``log["validation"]`` a list of dicts with ``iteration`` and ``loss``.
    ax : optional matplotlib axes to draw into.
    """
    import matplotlib.pyplot as plt

    tr = log["train"]
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    else:
        fig = ax.figure
    it = np.asarray(tr["iteration"])
    ax.plot(it, tr["loss"], lw=1.8, color="k", label="training loss (sum of heads)")
    for name, vals in tr.get("heads", {}).items():
        if vals and len(vals) == len(it) and all(v is not None for v in vals):
            ax.plot(it, vals, lw=1, alpha=0.7, label=name)
    val = [v for v in log.get("validation", []) if "loss" in v]
    if val:
        ax.plot([v["iteration"] for v in val], [v["loss"] for v in val], "o", color="tab:red",
                label="validation loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def augmentation_gallery(explorer, seed: int = 0, names=None, columns: int = 4):
    """Figure: the explorer's patch, then each augmentation applied to it (image | target).

    Parameters
    ----------
    explorer : :class:`emkit_widgets.augment_explorer.AugmentExplorer` (it computes and renders).
    seed : the augmentations' seed.
    names : augmentations to show (default: all of the explorer's, ``"all"`` included).
    columns : panels per row.
    """
    import matplotlib.pyplot as plt

    names = list(explorer.names if names is None else names)
    panels = [("original", explorer.render(names[0], seed)[0])]
    panels += [(n, explorer.render(n, seed)[1]) for n in names]
    rows = -(-len(panels) // columns)
    fig, ax = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.3 * rows), squeeze=False)
    for a in ax.ravel():
        a.axis("off")
    for a, (title, rgb) in zip(ax.ravel(), panels):
        a.imshow(np.clip(rgb, 0, 1))
        a.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _affinity_rgb(aff: np.ndarray, z: int) -> np.ndarray:
    """Nearest-neighbour affinities (3, z, y, x) of section z as RGB = (z, y, x) channels."""
    return np.clip(np.moveaxis(np.asarray(aff[:3, z], np.float32), 0, -1), 0, 1)


def affinities_vs_truth(image: np.ndarray, affinities: np.ndarray, labels: np.ndarray, z: int | None = None):
    """Figure: image, predicted affinities, true affinities and ground-truth labels of one section.

    Parameters
    ----------
    image : (z, y, x) uint8 image.
    affinities : float (C, z, y, x) in [0, 1]; the first three channels are the nearest-neighbour
        affinities (z, y, x), drawn as red, green, blue (white: inside a cell; dark: boundary).
    labels : (z, y, x) ground-truth labels in the image's frame; the true affinities are
        :func:`emkit.affinity.affinities_from_labels` of them.
    z : section (default the middle one).
    """
    import matplotlib.pyplot as plt

    from emkit.affinity import affinities_from_labels

    from .overlay import label_colors

    z = _middle(z, image.shape[0])
    true = affinities_from_labels(labels[max(z - 1, 0):z + 1])
    true = true[:, -1:]
    if z == 0:  # no section below: the z-affinity is unknown, show it as the in-plane minimum
        true[0] = true[1:].min(axis=0)
    fig, ax = plt.subplots(1, 4, figsize=(16, 4.4))
    ax[0].imshow(image[z], cmap="gray")
    ax[0].set_title(f"image, z={z}")
    ax[1].imshow(_affinity_rgb(affinities, z))
    ax[1].set_title("predicted affinities (RGB = z, y, x)")
    ax[2].imshow(_affinity_rgb(true, 0))
    ax[2].set_title("true affinities")
    ax[3].imshow(label_colors(labels[z]))
    ax[3].set_title("ground truth")
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    return fig


def semantic_channels(image: np.ndarray, channels: np.ndarray, z: int | None = None, titles=None):
    """Figure: an image section and the five semantic channels (targets or predictions) beside it.

    Parameters
    ----------
    image : (z, y, x) uint8.
    channels : float (5, z, y, x) in [0, 1], classes soma, axon, dendrite, glia, vessel.
    z : section (default the middle one).
    titles : channel titles (default the class names).
    """
    import matplotlib.pyplot as plt

    from emkit.evaluate.semantic import SEMANTIC_CLASS_NAMES

    z = _middle(z, image.shape[0])
    titles = list(SEMANTIC_CLASS_NAMES.values()) if titles is None else list(titles)
    n = channels.shape[0]
    fig, ax = plt.subplots(1, n + 1, figsize=(2.9 * (n + 1), 3.2))
    ax[0].imshow(image[z], cmap="gray")
    ax[0].set_title(f"image, z={z}", fontsize=9)
    for i in range(n):
        ax[i + 1].imshow(channels[i, z], cmap="magma", vmin=0, vmax=1)
        ax[i + 1].set_title(titles[i] if i < len(titles) else f"channel {i}", fontsize=9)
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    return fig


def semantic_vs_truth(image: np.ndarray, pred: np.ndarray, gt: np.ndarray, z: int | None = None,
                      alpha: float = 0.5):
    """Figure: image, predicted classes and ground-truth classes of one section, with a legend.

    Parameters
    ----------
    image : (z, y, x) uint8.
    pred, gt : (z, y, x) integer classes 0..5 (0 background, 1 soma, 2 axon, 3 dendrite, 4 glia,
        5 vessel).
    z : section (default the middle one).
    alpha : opacity of the class colours over the image.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from emkit.evaluate.semantic import SEMANTIC_CLASS_NAMES

    from .overlay import SEMANTIC_COLORS, blend, to_rgb

    z = _middle(z, image.shape[0])
    base = to_rgb(image[z])
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.8))
    ax[0].imshow(base)
    ax[0].set_title(f"image, z={z}")
    for a, cls, title in ((ax[1], pred, "predicted classes"), (ax[2], gt, "ground truth")):
        c = np.clip(np.asarray(cls[z]).astype(np.int64), 0, len(SEMANTIC_COLORS) - 1)
        a.imshow(blend(base, SEMANTIC_COLORS[c], c > 0, alpha))
        a.set_title(title)
    for a in ax:
        a.axis("off")
    fig.legend(handles=[Patch(color=SEMANTIC_COLORS[c], label=n) for c, n in SEMANTIC_CLASS_NAMES.items()],
               loc="lower center", ncol=5, fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def field_arrows(field: np.ndarray, image: np.ndarray | None = None, *, step: int = 16, ax=None, title: str = ""):
    """A displacement field as arrows on a grid, over an image.

    Parameters
    ----------
    field : float (2, y, x): ``(dy, dx)`` pixels (:mod:`emkit.align.fields` convention: the
        aligned pixel ``(y, x)`` shows the input at ``(y - dy, x - dx)``).
    image : optional (y, x) image drawn under the arrows.
    step : grid step of the arrows (pixels). Arrows are drawn at true length (1 px = 1 px).
    """
    import matplotlib.pyplot as plt

    from emkit.errors import InputError

    f = np.asarray(field, np.float32)
    if f.ndim != 3 or f.shape[0] != 2:
        raise InputError(f"field must be (2, y, x), got shape {f.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    if image is not None:
        ax.imshow(image, cmap="gray")
    yy, xx = np.mgrid[step // 2:f.shape[1]:step, step // 2:f.shape[2]:step]
    dy, dx = f[0][yy, xx], f[1][yy, xx]
    # an arrow from where the content was (y - dy, x - dx) to where alignment puts it (y, x)
    ax.quiver(xx - dx, yy - dy, dx, dy, angles="xy", scale_units="xy", scale=1, color="tab:orange", width=0.004)
    mag = np.hypot(f[0], f[1])
    ax.set_title(title or f"field: median {np.median(mag):.1f} px, max {mag.max():.1f} px")
    ax.set_xlim(0, f.shape[2])
    ax.set_ylim(f.shape[1], 0)
    ax.set_axis_off()
    return ax


def residual_by_section(residual: dict, ax=None):
    """Bar chart of :func:`emkit.evaluate.alignment_residual_dirs`' median residual per section,
    with the residual of no alignment as a line."""
    import matplotlib.pyplot as plt

    per = residual["section_median_px"]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    z = [i for i, v in enumerate(per) if v is not None]
    ax.bar(z, [per[i] for i in z], color="tab:blue", label="after alignment (median per section)")
    if "unaligned_median_px" in residual:
        ax.axhline(residual["unaligned_median_px"], color="tab:red", ls="--", label="no alignment (median)")
    ax.set_xlabel("section z")
    ax.set_ylabel("residual (px)")
    ax.set_title(f"residual against the true fields: median {residual['median_px']:.2f} px, "
                 f"95th percentile {residual['p95_px']:.2f} px")
    ax.legend(loc="upper left", fontsize=8)
    return ax
