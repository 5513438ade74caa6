"""An ipywidgets slice browser: z slider plus toggles for ground truth, semantics and masks.

Sources are numpy arrays (z, y, x) or :class:`emkit.io.Layer` objects (read one section at a
time, so big layers stay on disk). The rendering (:meth:`SliceBrowser.render`) is a plain
function of the widget state, which is what the tests check.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .overlay import SEMANTIC_COLORS, blend, label_colors, to_rgb

__all__ = ["SliceBrowser", "browse_phantom", "browse_dataset"]

MASK_COLOR = np.array([1.0, 0.1, 0.1], np.float32)


def _section(src, z: int) -> np.ndarray:
    """Section ``z`` (index from the first section) of an array or Layer, shape (y, x)."""
    if hasattr(src, "read") and hasattr(src, "bbox"):
        from emkit.geometry import Bbox

        b = src.bbox
        box = Bbox((b.start[0] + z, b.start[1], b.start[2]), (b.start[0] + z + 1, b.stop[1], b.stop[2]))
        arr = src.read(box)
        return arr[0] if arr.ndim == 3 else arr[:, 0].mean(0)
    return np.asarray(src[z])


class SliceBrowser:
    """Browse sections of an image with optional label overlays.

    Parameters
    ----------
    image : (z, y, x) uint8 array or image Layer.
    segmentation : optional (z, y, x) label array/Layer (ground truth or result); drawn with
        random colours.
    semantic : optional (z, y, x) array/Layer of semantic classes 0–5.
    masks : optional mapping name → (z, y, x) mask array/Layer (defects, input masks...).
    alpha : overlay opacity in [0, 1].
    """

    def __init__(self, image, *, segmentation=None, semantic=None, masks: Mapping | None = None,
                 alpha: float = 0.4):
        self.image = image
        self.overlays: dict[str, object] = {}
        if segmentation is not None:
            self.overlays["segmentation"] = segmentation
        if semantic is not None:
            self.overlays["semantic"] = semantic
        for name, m in (masks or {}).items():
            self.overlays[f"mask:{name}"] = m
        shape = image.shape if not hasattr(image, "bbox") else image.bbox.shape
        self.nz = int(shape[-3])
        self.alpha = float(alpha)
        self.z = self.nz // 2
        self.visible = {name: False for name in self.overlays}
        self._widget = None

    def render(self, z: int | None = None) -> np.ndarray:
        """RGB float image (y, x, 3) of section ``z`` with the visible overlays."""
        z = self.z if z is None else int(z)
        if not 0 <= z < self.nz:
            raise IndexError(f"section {z} outside 0..{self.nz - 1}")
        rgb = to_rgb(_section(self.image, z))
        for name, on in self.visible.items():
            if not on:
                continue
            sec = _section(self.overlays[name], z)
            if name == "segmentation":
                rgb = blend(rgb, label_colors(sec), sec > 0, self.alpha)
            elif name == "semantic":
                cls = np.clip(sec.astype(np.int64), 0, len(SEMANTIC_COLORS) - 1)
                rgb = blend(rgb, SEMANTIC_COLORS[cls], cls > 0, self.alpha)
            else:
                rgb = blend(rgb, MASK_COLOR, sec > 0, self.alpha)
        return rgb

    # the Jupyter face ---------------------------------------------------------------------
    def widget(self):
        """An ipywidgets box: z slider, overlay toggles, alpha slider, and the image."""
        import io

        import ipywidgets as w
        from PIL import Image

        img = w.Image(format="png")
        zs = w.IntSlider(value=self.z, min=0, max=self.nz - 1, description="z", continuous_update=True)
        alpha = w.FloatSlider(value=self.alpha, min=0, max=1, step=0.05, description="alpha")
        toggles = {n: w.ToggleButton(value=v, description=n.replace("mask:", ""),
                                     tooltip=n) for n, v in self.visible.items()}

        def redraw(*_):
            self.z = zs.value
            self.alpha = alpha.value
            for n, t in toggles.items():
                self.visible[n] = t.value
            buf = io.BytesIO()
            Image.fromarray((self.render() * 255).astype(np.uint8)).save(buf, format="PNG")
            img.value = buf.getvalue()

        for c in (zs, alpha, *toggles.values()):
            c.observe(redraw, names="value")
        redraw()
        self._widget = w.VBox([w.HBox([zs, alpha]), w.HBox(list(toggles.values())), img])
        self._controls = {"z": zs, "alpha": alpha, **toggles}
        return self._widget

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget())


def browse_phantom(phantom, **kw) -> SliceBrowser:
    """A :class:`SliceBrowser` over an in-memory :class:`emkit.phantom.Phantom`."""
    return SliceBrowser(phantom.image, segmentation=phantom.segmentation, semantic=phantom.semantic,
                        masks=phantom.masks, **kw)


def browse_dataset(out_dir: str, **kw) -> SliceBrowser:
    """A :class:`SliceBrowser` over a dataset folder written by ``emkit phantom`` (layers on disk)."""
    from emkit.io import Layer, join_url, layer_exists

    def opt(name):
        url = join_url(out_dir, name)
        return Layer.open(url) if layer_exists(url) else None

    from emkit.demo import dataset_layers

    masks = {n.split("/", 1)[1]: Layer.open(u) for n, u in dataset_layers(out_dir).items() if n.startswith("masks/")}
    return SliceBrowser(Layer.open(join_url(out_dir, "image")), segmentation=opt("gt/segmentation"),
                        semantic=opt("gt/semantic"), masks=masks, **kw)
