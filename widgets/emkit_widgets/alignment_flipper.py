"""Flip between adjacent sections before and after alignment.

The eye judges alignment best by flipping: section ``z - 1`` and section ``z`` shown in turn, or
overlaid in two colours (``z - 1`` magenta, ``z`` green: aligned structures turn grey, misaligned
ones show colour fringes). All computing is emkit's (:func:`emkit.align.fine.fine_align_layers`,
:func:`emkit.evaluate.alignment_residual_dirs`); the widget only draws.
"""
from __future__ import annotations

import numpy as np

from .overlay import blend, to_rgb

__all__ = ["AlignmentFlipper", "pair_overlay", "MODES"]

#: what the picture shows: the two sections overlaid, or one of them.
MODES = ("overlay", "previous (z-1)", "this (z)")
_DEFECT_COLORS = {"fold": (0.9, 0.2, 0.9), "crack": (0.1, 0.9, 0.9), "resin": (0.95, 0.9, 0.1)}


def _unit(section: np.ndarray) -> np.ndarray:
    s = section.astype(np.float32)
    return s / 255.0 if section.dtype == np.uint8 else s


def pair_overlay(previous: np.ndarray, this: np.ndarray) -> np.ndarray:
    """RGB float (y, x, 3): ``previous`` in magenta (red + blue), ``this`` in green.

    Where the two sections agree the result is grey; an edge that moved shows a magenta and a green
    fringe.
    """
    a, b = _unit(previous), _unit(this)
    return np.stack([a, b, a], axis=-1)


class AlignmentFlipper:
    """Adjacent sections before and after alignment, with a section slider and a flip control.

    Parameters
    ----------
    before, after : (z, y, x) images, the same shape: the unaligned stack and its alignment
        (e.g. ``emkit align``'s ``image`` layer read whole).
    residual : optional :func:`emkit.evaluate.alignment_residual_dirs` result, whose per-section
        median is shown under the picture.
    defects : optional ``{kind: bool (z, y, x)}`` masks in the unaligned frame (folds, cracks,
        resin), drawn over the ``before`` pictures.
    z : the first section shown (default: the worst section of ``residual``, else the middle).
    """

    def __init__(self, before, after, *, residual: dict | None = None, defects: dict | None = None,
                 z: int | None = None):
        from emkit.errors import InputError

        self.before, self.after = np.asarray(before), np.asarray(after)
        if self.before.ndim != 3 or self.before.shape != self.after.shape:
            raise InputError(f"before and after must be (z, y, x) images of one shape, got {self.before.shape} and "
                             f"{self.after.shape}")
        if self.before.shape[0] < 2:
            raise InputError(f"flipping needs at least 2 sections, got {self.before.shape[0]}")
        self.defects = {k: np.asarray(v, bool) for k, v in (defects or {}).items()}
        for k, v in self.defects.items():
            if v.shape != self.before.shape:
                raise InputError(f"defect mask {k!r} has shape {v.shape}; the images have {self.before.shape}")
        self.residual = residual
        self.nz = self.before.shape[0]
        if z is None:
            z = residual.get("worst_section") if residual else None
            z = self.nz // 2 if z is None else z
        self.z = int(min(max(int(z), 1), self.nz - 1))
        self.which, self.mode = "after", MODES[0]

    def render(self, z: int | None = None, which: str | None = None, mode: str | None = None) -> np.ndarray:
        """RGB float (y, x, 3) of section pair ``(z - 1, z)`` of ``which`` ('before' or 'after') in ``mode``."""
        from emkit.errors import InputError

        z = self.z if z is None else int(z)
        which = self.which if which is None else which
        mode = self.mode if mode is None else mode
        if not 1 <= z < self.nz:
            raise InputError(f"z must be in 1..{self.nz - 1} (a section and the one before it), got {z}")
        if which not in ("before", "after"):
            raise InputError(f"which must be 'before' or 'after', got {which!r}")
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        stack = self.before if which == "before" else self.after
        if mode == "overlay":
            rgb = pair_overlay(stack[z - 1], stack[z])
        else:
            rgb = to_rgb(stack[z - 1] if mode == MODES[1] else stack[z])
        if which == "before":
            shown = z - 1 if mode == MODES[1] else z
            for kind, m in self.defects.items():
                rgb = blend(rgb, np.array(_DEFECT_COLORS.get(kind, (1, 1, 1)), np.float32), m[shown], 0.5)
        return rgb

    def caption(self, z: int | None = None) -> str:
        z = self.z if z is None else int(z)
        text = f"sections {z - 1} (magenta) and {z} (green)"
        if self.residual:
            med = self.residual["section_median_px"][z]
            if med is not None:
                text += f"; residual against the true field at z={z}: median {med:.2f} px"
        return text

    def widget(self):
        """ipywidgets box: section slider, before/after and flip toggles, the picture and a caption."""
        import io

        import ipywidgets as w
        from PIL import Image

        img = w.Image(format="png")
        zs = w.IntSlider(value=self.z, min=1, max=self.nz - 1, description="z")
        ws = w.ToggleButtons(options=["before", "after"], value=self.which, description="stack")
        ms = w.ToggleButtons(options=list(MODES), value=self.mode, description="show")
        info = w.HTML()

        def redraw(*_):
            self.z, self.which, self.mode = int(zs.value), ws.value, ms.value
            buf = io.BytesIO()
            Image.fromarray((np.clip(self.render(), 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
            img.value = buf.getvalue()
            info.value = self.caption()

        for s in (zs, ws, ms):
            s.observe(redraw, names="value")
        redraw()
        self._controls = {"z": zs, "which": ws, "mode": ms, "image": img, "info": info}
        self._widget = w.VBox([w.HBox([zs, ws]), ms, info, img])
        return self._widget

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget())
