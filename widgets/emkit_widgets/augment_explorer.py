"""An ipywidgets explorer of the training augmentations: pick one, move the seed, see the patch
before and after — image beside its target (labels in colour, boundaries from the
nearest-neighbour affinities in black, masked target in red).

All augmentation logic is :func:`emkit.train.augment.demo`; this module only picks the section
to show and draws. :meth:`AugmentExplorer.render` is a plain function of (name, seed), which is
what the tests check.
"""
from __future__ import annotations

import numpy as np

from .overlay import blend, label_colors, to_rgb

__all__ = ["AugmentExplorer", "phantom_sample", "focus_sections"]

MASK_COLOR = np.array([1.0, 0.1, 0.1], np.float32)
GAP = 4  # pixels between the image and the target panel


def phantom_sample(shape=(16, 96, 96), seed: int = 0, params=None) -> dict:
    """A clean phantom patch big enough for an :class:`~emkit.train.augment.Augmenter` with
    ``params`` to return ``shape`` (z, y, x): ``{"image", "labels", "semantic"}``."""
    from emkit.phantom import make_phantom
    from emkit.train.augment import Augmenter

    size = Augmenter(params).required_input_shape(shape)
    ph = make_phantom(size, seed=seed, defects="none")
    return {"image": ph.image, "labels": ph.segmentation, "semantic": ph.semantic}


def focus_sections(record: dict | None, nz_before: int, nz_after: int) -> tuple[int, int]:
    """The section (before, after) that best shows the augmentation of ``record``."""
    if not record:
        return nz_before // 2, nz_after // 2
    name = record["name"]
    if name in ("misalignment", "slip_interpolation", "misalignment_missing"):
        z = int(record["z"])
        return z, z
    if name in ("missing_section", "out_of_focus"):
        z = int(record["sections"][0])
        return z, z
    if name == "lost_section":
        z = int(record["lost"][0])
        return z, int(np.searchsorted(np.asarray(record["kept"]), z))
    if name == "lost_missing":
        return int(record["z"]), int(record["missing_at"])
    return nz_before // 2, nz_after // 2


def _target_rgb(sample: dict, z: int) -> np.ndarray:
    """Labels of section z in colour, boundaries (any nearest-neighbour affinity 0) black,
    masked target red."""
    from emkit.affinity import affinities_from_labels

    labels = sample["labels"]
    lo = max(z - 1, 0)
    aff = affinities_from_labels(labels[lo:z + 1])[:, z - lo]           # z-affinity links to section z-1
    boundary = aff.min(axis=0) == 0
    if z == 0:
        boundary = aff[1:].min(axis=0) == 0
    rgb = 0.8 * label_colors(labels[z])
    rgb[boundary] = 0.0
    if "mask" in sample:
        rgb = blend(rgb, MASK_COLOR, sample["mask"][z] == 0, 0.6)
    return rgb


def _panel(sample: dict, z: int) -> np.ndarray:
    img = to_rgb(sample["image"][z])
    if sample["image"].dtype != np.uint8:
        img = np.clip(img, 0, 1)
    tgt = _target_rgb(sample, z)
    gap = np.ones((img.shape[0], GAP, 3), np.float32)
    return np.concatenate([img, gap, tgt], axis=1).astype(np.float32)


class AugmentExplorer:
    """Show each augmentation of :data:`emkit.train.augment.AUGMENTATIONS` (and ``"all"``, the full
    :class:`~emkit.train.augment.Augmenter`) on one patch.

    Parameters
    ----------
    sample : dict with ``"image"`` and ``"labels"`` (z, y, x); default a clean phantom patch
        (:func:`phantom_sample`) big enough for ``"all"`` to return ``shape``.
    params : :class:`~emkit.train.augment.AugmentParams` (default: boundary preset).
    shape : output shape (z, y, x) of ``"all"`` when the sample is made here.
    """

    def __init__(self, sample: dict | None = None, *, params=None, shape=(16, 96, 96), seed: int = 0):
        from emkit.train.augment import AUGMENTATIONS

        self.params = params
        self.sample = phantom_sample(shape, seed, params) if sample is None else sample
        self.names = [*AUGMENTATIONS, "all"]
        self.name, self.seed = self.names[0], 0
        self._cache: dict = {}
        self._widget = None

    def augment(self, name: str, seed: int) -> tuple[dict, dict]:
        """``(before, after)`` samples (cached), from :func:`emkit.train.augment.demo`."""
        from emkit.train.augment import demo

        key = (name, int(seed))
        if key not in self._cache:
            self._cache = {key: demo(name, self.sample, int(seed), self.params)}
        return self._cache[key]

    def record(self, name: str, seed: int) -> dict | None:
        """What was applied: the record of ``name`` (for ``"all"``, the section augmentation if
        any, else the last one)."""
        after = self.augment(name, seed)[1]
        recs = after.get("_applied", [])
        if name != "all":
            return next((r for r in recs if r["name"] == name), recs[-1] if recs else None)
        focus = [r for r in recs if r["name"] in ("misalignment", "slip_interpolation", "misalignment_missing",
                                                  "missing_section", "lost_section", "lost_missing")]
        return focus[0] if focus else (recs[-1] if recs else None)

    def render(self, name: str | None = None, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(before_rgb, after_rgb)``: float32 (y, 2·x + gap, 3) in [0, 1], image | target, of the
        section that shows the augmentation best (:func:`focus_sections`)."""
        name = self.name if name is None else name
        seed = self.seed if seed is None else int(seed)
        if name not in self.names:
            raise ValueError(f"unknown augmentation {name!r}; valid: {', '.join(self.names)}")
        before, after = self.augment(name, seed)
        zb, za = focus_sections(self.record(name, seed), before["image"].shape[0], after["image"].shape[0])
        return _panel(before, zb), _panel(after, za)

    def describe(self, name: str | None = None, seed: int | None = None) -> str:
        """One line per applied augmentation (name and its main parameters)."""
        name = self.name if name is None else name
        seed = self.seed if seed is None else int(seed)
        lines = []
        for r in self.augment(name, seed)[1].get("_applied", []):
            items = [f"{k}={v}" for k, v in r.items()
                     if k != "name" and (not isinstance(v, list) or k in ("sections", "lost", "missing"))]
            lines.append(f"{r['name']}: " + ", ".join(items))
        return "\n".join(lines) or "(nothing applied)"

    # the Jupyter face ---------------------------------------------------------------------
    def widget(self):
        """An ipywidgets box: augmentation dropdown, seed slider, before / after images, record."""
        import io

        import ipywidgets as w
        from PIL import Image

        dd = w.Dropdown(options=self.names, value=self.name, description="augment")
        seed = w.IntSlider(value=self.seed, min=0, max=99, description="seed")
        before, after = w.Image(format="png"), w.Image(format="png")
        info = w.Textarea(layout=w.Layout(width="100%", height="6em"), disabled=True)

        def png(rgb):
            buf = io.BytesIO()
            Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
            return buf.getvalue()

        def redraw(*_):
            self.name, self.seed = dd.value, seed.value
            b, a = self.render()
            before.value, after.value = png(b), png(a)
            info.value = self.describe()

        dd.observe(redraw, names="value")
        seed.observe(redraw, names="value")
        redraw()
        self._controls = {"name": dd, "seed": seed, "before": before, "after": after, "info": info}
        self._widget = w.VBox([w.HBox([dd, seed]),
                               w.HBox([w.VBox([w.Label("before (image | target)"), before]),
                                       w.VBox([w.Label("after"), after])]), info])
        return self._widget

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget())
