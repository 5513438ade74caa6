"""Matplotlib figures for the notebooks: a defect gallery and clean-versus-damaged views.

They only arrange what the library computes (``emkit.defects``, ``emkit.phantom``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["defect_gallery", "clean_vs_damaged", "most_damaged_section"]


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
