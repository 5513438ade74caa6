"""Explore misalignment maps with a threshold slider: where each section disagrees with the one
``k`` before it, the slips and steps that the threshold implies, and the detected defects.

All computing is emkit's (:func:`emkit.detect.misaligned`, :func:`emkit.detect.classify_regions`,
:func:`emkit.detect.upsample_patches`); the widget only draws. Colours: misaligned patches of the
chosen distance orange, slips red, steps blue; detected folds magenta, cracks cyan, resin yellow.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .overlay import blend, to_rgb

__all__ = ["MisalignmentExplorer", "DEFECT_COLORS"]

DEFECT_COLORS = {"fold": (0.9, 0.2, 0.9), "crack": (0.1, 0.9, 0.9), "resin": (0.95, 0.9, 0.1)}
_MIS, _SLIP, _STEP = (1.0, 0.55, 0.0), (0.95, 0.1, 0.1), (0.2, 0.4, 1.0)


class MisalignmentExplorer:
    """Misalignment maps of ``image`` under a threshold you move.

    Parameters
    ----------
    image : uint8 (z, y, x) image.
    maps : float (K, z, py, px) from :func:`emkit.detect.misalignment_maps` (computed when None).
    params : :class:`emkit.detect.MisalignmentParams` the maps were made with.
    defects : optional ``{kind: bool (z, y, x)}`` (e.g. :func:`emkit.detect.detect_defects`) drawn over.
    threshold, z, distance : start values of the sliders.
    """

    def __init__(self, image, maps=None, params=None, defects: dict | None = None, *, threshold: float | None = None,
                 z: int | None = None, distance: int = 1):
        from emkit.detect import MisalignmentParams, misalignment_maps
        from emkit.errors import InputError

        self.image = np.asarray(image)
        if self.image.ndim != 3:
            raise InputError(f"image must be (z, y, x), got shape {self.image.shape}")
        self.params = params or MisalignmentParams()
        self.maps = misalignment_maps(self.image, self.params) if maps is None else np.asarray(maps)
        if self.maps.ndim != 4 or self.maps.shape[1] != self.image.shape[0]:
            raise InputError(f"maps must be (K, z, py, px) with z = {self.image.shape[0]}, got {self.maps.shape}")
        self.defects = {k: np.asarray(v, bool) for k, v in (defects or {}).items()}
        for k, v in self.defects.items():
            if v.shape != self.image.shape:
                raise InputError(f"defect mask {k!r} has shape {v.shape}; the image has {self.image.shape}")
        self.threshold = float(self.params.threshold if threshold is None else threshold)
        self.nz = self.image.shape[0]
        self.z = self.nz // 2 if z is None else int(z)
        self.distance = int(distance)
        if not 1 <= self.distance <= self.maps.shape[0]:
            raise InputError(f"distance must be in 1..{self.maps.shape[0]}, got {distance}")

    def _params(self, threshold=None):
        return replace(self.params, threshold=float(self.threshold if threshold is None else threshold))

    def classify(self, threshold: float | None = None) -> dict:
        """Sections with slips and steps at ``threshold`` (any patch classified), and the fraction of
        misaligned patches per distance."""
        from emkit.detect import classify_regions, misaligned

        p = self._params(threshold)
        slip, step = classify_regions(self.maps, p)
        mis = misaligned(self.maps, p)
        valid = np.isfinite(self.maps)
        frac = [round(float(mis[k][valid[k]].mean()), 4) if valid[k].any() else None for k in range(self.maps.shape[0])]
        return {"threshold": p.threshold, "slips": [int(z) for z in np.flatnonzero(slip.reshape(self.nz, -1).any(1))],
                "steps": [int(z) for z in np.flatnonzero(step.reshape(self.nz, -1).any(1))],
                "misaligned_fraction_by_distance": frac}

    def render(self, threshold: float | None = None, z: int | None = None, distance: int | None = None) -> np.ndarray:
        """RGB float (y, x, 3) of section ``z`` with the overlays."""
        from emkit.detect import classify_regions, misaligned, upsample_patches

        p = self._params(threshold)
        z = self.z if z is None else int(z)
        k = self.distance if distance is None else int(distance)
        shape = (1, *self.image.shape[1:])
        rgb = to_rgb(self.image[z])
        mis = upsample_patches(misaligned(self.maps[k - 1:k, z], p), shape, p)[0]
        rgb = blend(rgb, np.array(_MIS, np.float32), mis, 0.35)
        slip, step = classify_regions(self.maps, p)
        for a, col in ((slip, _SLIP), (step, _STEP)):
            m = upsample_patches(a[z:z + 1], shape, p)[0]
            rgb = blend(rgb, np.array(col, np.float32), m, 0.45)
        for kind, m in self.defects.items():
            rgb = blend(rgb, np.array(DEFECT_COLORS.get(kind, (1, 1, 1)), np.float32), m[z], 0.6)
        return rgb

    def widget(self):
        """ipywidgets box: threshold, z and distance sliders, the overlay and the classification."""
        import io

        import ipywidgets as w
        from PIL import Image

        img = w.Image(format="png")
        ts = w.FloatSlider(value=self.threshold, min=-0.2, max=1.0, step=0.01, description="threshold",
                           readout_format=".2f")
        zs = w.IntSlider(value=self.z, min=0, max=self.nz - 1, description="z")
        ks = w.IntSlider(value=self.distance, min=1, max=self.maps.shape[0], description="distance k")
        info = w.HTML()

        def redraw(*_):
            self.threshold, self.z, self.distance = float(ts.value), int(zs.value), int(ks.value)
            buf = io.BytesIO()
            Image.fromarray((np.clip(self.render(), 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
            img.value = buf.getvalue()
            c = self.classify()
            info.value = (f"threshold {c['threshold']:.2f}: slips at {c['slips'] or 'none'}, steps at "
                          f"{c['steps'] or 'none'}; misaligned patches by distance: "
                          f"{c['misaligned_fraction_by_distance']}")

        for s in (ts, zs, ks):
            s.observe(redraw, names="value")
        redraw()
        self._controls = {"threshold": ts, "z": zs, "distance": ks, "image": img, "info": info}
        self._widget = w.VBox([w.HBox([ts, zs, ks]), info, img])
        return self._widget

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget())
