"""Tune the agglomeration threshold live: a slider re-cuts the merge history and redraws.

Each move re-cuts the :class:`emkit.segment.MergeHistory` (``labels_at``: microseconds for
thousands of supervoxels) and relabels **only the displayed section**. The scores against ground
truth come from :func:`emkit.evaluate.cut_contingency`: the supervoxel × ground-truth table is
built once, and each cut only renames its rows — exact full-volume VOI and adapted Rand error
without touching the voxels again (cached per distinct cut). ``benchmarks/segment.py`` measures
the time per move.

:meth:`ThresholdTuner.render` is a plain function of the state (threshold, z) returning the RGB
image and the scores; the widget only calls it.
"""
from __future__ import annotations

import os

import numpy as np

from .overlay import blend, label_colors, to_rgb
from .slice_browser import _section

__all__ = ["ThresholdTuner"]

_SCORE_KEYS = ("voi_split", "voi_merge", "voi", "arand", "arand_precision", "arand_recall", "n_seg")


def _volume(src, name: str) -> np.ndarray:
    """A (z, y, x) array from an array or a Layer (read whole)."""
    from emkit.errors import InputError

    arr = src.read() if hasattr(src, "read") and hasattr(src, "bbox") else np.asarray(src)
    if arr.ndim != 3:
        raise InputError(f"{name} must be a (z, y, x) volume, got shape {arr.shape}")
    return arr


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels (y, x) whose right or lower neighbour has another label."""
    b = np.zeros(labels.shape, bool)
    b[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    b[:-1, :] |= labels[1:, :] != labels[:-1, :]
    return b


class ThresholdTuner:
    """Cut a merge history at a threshold chosen with a slider; overlay and scores follow.

    Parameters
    ----------
    image : (z, y, x) uint8 array or image Layer (read one section at a time).
    supervoxels : (z, y, x) integer array (or segmentation Layer, read whole) — the supervoxels
        the history was built on.
    history : :class:`emkit.segment.MergeHistory`.
    gt : optional (z, y, x) ground-truth ids (array or Layer, same shape); gives live VOI and
        adapted Rand error over the whole volume (gt label 0 not counted).
    z : section shown first (default: the middle one).
    threshold : first threshold (mean affinity; merges with affinity >= threshold are applied).
    alpha : overlay opacity in [0, 1].
    resolution : voxel size in nm (z, y, x), used when layers are written for Neuroglancer.
    """

    def __init__(self, image, supervoxels, history, gt=None, *, z: int | None = None, threshold: float = 0.5,
                 alpha: float = 0.45, resolution=(40, 8, 8)):
        from emkit.errors import InputError
        from emkit.evaluate import contingency

        self.image = image
        self.supervoxels = _volume(supervoxels, "supervoxels")
        if not np.issubdtype(self.supervoxels.dtype, np.integer):
            raise InputError(f"supervoxels must hold integer ids, got dtype {self.supervoxels.dtype}")
        self.history = history
        shape = tuple(image.bbox.shape) if hasattr(image, "bbox") else tuple(np.shape(image))
        if shape != self.supervoxels.shape:
            raise InputError(f"image shape {shape} differs from supervoxels shape {self.supervoxels.shape} (z, y, x)")
        self.gt = None if gt is None else _volume(gt, "gt")
        if self.gt is not None and self.gt.shape != self.supervoxels.shape:
            raise InputError(f"gt shape {self.gt.shape} differs from supervoxels shape {self.supervoxels.shape} (z, y, x)")
        self._table = None if self.gt is None else contingency(self.supervoxels, self.gt)
        self.nz = int(self.supervoxels.shape[0])
        self.z = self.nz // 2 if z is None else int(z)
        if not 0 <= self.z < self.nz:
            raise InputError(f"z must be in 0..{self.nz - 1}, got {z}")
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.resolution = tuple(resolution)
        self._scores: dict[int, dict] = {}
        self._widget = None
        self._controls: dict = {}

    @classmethod
    def from_affinities(cls, image, affinities, gt=None, *, params=None, semantic=None, **kwargs) -> "ThresholdTuner":
        """Segment ``affinities`` and tune the cut of the result.

        Parameters
        ----------
        image : (z, y, x) uint8 array or image Layer.
        affinities : (3, z, y, x) float affinities in [0, 1] (channels z, y, x).
        gt : optional ground truth (as for the constructor).
        params : the segmentation parameters: a parameter file (path or URL, as ``emkit tune``
            writes), a :class:`emkit.segment.tune.TuneResult`, a tuple ``(WatershedParams,
            AgglomerationParams, threshold)``, or None (package defaults, threshold 0.5). The
            slider starts at the file's / result's threshold unless ``threshold=`` is given.
        semantic : optional (z, y, x) classes for the semantic constraint.
        kwargs : passed to the constructor (``z``, ``threshold``, ``alpha``, ``resolution``).
        """
        from emkit.errors import InputError
        from emkit.segment import AgglomerationParams, WatershedParams, agglomerate, region_graph, watershed
        from emkit.segment.tune import TuneResult, load_params

        if params is None:
            wp, ap, t = WatershedParams(), AgglomerationParams(), 0.5
        elif isinstance(params, TuneResult):
            wp, ap, t = params.watershed, params.agglomeration, params.threshold
        elif isinstance(params, tuple) and len(params) == 3:
            wp, ap, t = params
        elif isinstance(params, (str, os.PathLike)):
            wp, ap, t = load_params(params)
        else:
            raise InputError("params must be a parameter file, a TuneResult or (WatershedParams, "
                             f"AgglomerationParams, threshold), got {type(params).__name__}")
        sv = watershed(affinities, wp)
        history = agglomerate(region_graph(sv, affinities, semantic=semantic), ap)
        kwargs.setdefault("threshold", float(t))
        return cls(image, sv, history, gt, **kwargs)

    # the plain functions the widget calls -------------------------------------------------------
    def section(self, threshold: float | None = None, z: int | None = None) -> np.ndarray:
        """Object ids (y, x, uint64) of section ``z`` cut at ``threshold`` (defaults: current)."""
        t = self.threshold if threshold is None else float(threshold)
        z = self.z if z is None else int(z)
        if not 0 <= z < self.nz:
            raise IndexError(f"section {z} outside 0..{self.nz - 1}")
        return self.history.segmentation(self.supervoxels[z:z + 1], t)[0]

    def scores(self, threshold: float | None = None) -> dict | None:
        """Full-volume scores of the cut at ``threshold`` against ``gt`` (None without gt).

        Keys: ``voi_split``, ``voi_merge``, ``voi`` (bits), ``arand`` (adapted Rand error),
        ``arand_precision``, ``arand_recall``, ``n_seg`` — equal to
        :func:`emkit.evaluate.evaluate` on ``history.segmentation(supervoxels, threshold)``.
        """
        if self._table is None:
            return None
        from emkit.evaluate import cut_contingency, evaluate

        t = self.threshold if threshold is None else float(threshold)
        key = int(np.count_nonzero(self.history.affinities >= t))  # the cut is fixed by the merges kept
        if key not in self._scores:
            res = evaluate(cut_contingency(self._table, self.history, t), None, k=0)
            self._scores[key] = {k: res[k] for k in _SCORE_KEYS}
        return dict(self._scores[key])

    def render(self, threshold: float | None = None, z: int | None = None) -> tuple[np.ndarray, dict | None]:
        """RGB image (y, x, 3, float32 in [0, 1]) of section ``z`` cut at ``threshold``, and the
        scores (:meth:`scores`, None without gt). Object colours are stable across thresholds
        for objects that keep their smallest supervoxel; boundaries between objects are dark."""
        z = self.z if z is None else int(z)
        labels = self.section(threshold, z)
        rgb = blend(to_rgb(_section(self.image, z)), label_colors(labels), labels > 0, self.alpha)
        edge = _boundaries(labels)
        rgb[edge] *= 0.3
        return rgb, self.scores(threshold)

    def set_threshold(self, threshold: float) -> None:
        """Move to ``threshold`` (the slider too, when the widget is shown; it redraws)."""
        self.threshold = float(threshold)
        if "threshold" in self._controls:
            self._controls["threshold"].value = self.threshold

    def segmentation(self, threshold: float | None = None) -> np.ndarray:
        """The whole volume cut at ``threshold`` (default: current), uint64 (z, y, x)."""
        t = self.threshold if threshold is None else float(threshold)
        return self.history.segmentation(self.supervoxels, t)

    # Neuroglancer ---------------------------------------------------------------------------
    def send_to_neuroglancer(self, folder: str | os.PathLike, *, name: str | None = None,
                             overwrite: bool = False, **serve_kw):
        """Write the current cut as a segmentation layer in ``folder`` and open Neuroglancer on it.

        ``folder`` is a dataset folder: the cut goes to ``folder/<name>`` (default
        ``segmentation_t<threshold>``, e.g. ``segmentation_t0.500``). The image and the ground
        truth are shown beside it: when they were given as Layers those layers are used; arrays
        are written once to ``folder/image`` and ``folder/gt/segmentation`` (an existing layer
        there is reused if its size fits, never overwritten).

        Returns
        -------
        emkit.view.ViewerHandle
            ``.url`` is the link; ``.stop()`` ends serving.

        Raises
        ------
        LayerExistsError
            ``folder/<name>`` exists and ``overwrite`` is False.
        """
        from emkit.errors import InputError
        from emkit.io import Layer, join_url, layer_exists
        from emkit.view import serve

        t = self.threshold
        name = name or f"segmentation_t{t:.3f}"
        size = self.supervoxels.shape
        urls: dict[str, str] = {}

        def put(key: str, src, kind: str, dtype) -> None:
            if hasattr(src, "url") and hasattr(src, "bbox"):
                urls[key] = src.url
                return
            url = join_url(folder, key)
            if layer_exists(url):
                have = Layer.open(url)
                if tuple(have.size) != tuple(size):
                    raise InputError(f"{url} exists with size {have.size}, expected {size} (z, y, x); "
                                     "choose another folder")
            else:
                Layer.create(url, kind, size, resolution=self.resolution, compress=False).write(
                    np.ascontiguousarray(src, dtype=dtype))
            urls[key] = url

        put("image", self.image, "image", np.uint8)
        if self.gt is not None:
            put("gt/segmentation", self.gt, "segmentation", np.uint64)
        url = join_url(folder, name)
        Layer.create(url, "segmentation", size, resolution=self.resolution, compress=False,
                     overwrite=overwrite).write(self.segmentation(t))
        urls[name] = url
        return serve(urls, **serve_kw)

    # the Jupyter face -----------------------------------------------------------------------
    def _scores_html(self, s: dict | None) -> str:
        if s is None:
            return "<i>no ground truth: no scores</i>"

        def f(v):
            return "n/a" if v is None or not np.isfinite(v) else f"{v:.4f}"

        return (f"<b>VOI</b> split {f(s['voi_split'])} · merge {f(s['voi_merge'])} · sum {f(s['voi'])} bits"
                f" &nbsp; <b>ARAND</b> {f(s['arand'])} &nbsp; objects {s['n_seg']}"
                f"<br><small>exact, whole volume ({self.supervoxels.size:,} voxels)</small>")

    def widget(self, folder: str | os.PathLike | None = None):
        """ipywidgets box: threshold and z sliders, the overlay, the scores, and (with
        ``folder``) a button that calls :meth:`send_to_neuroglancer` into that folder."""
        import io

        import ipywidgets as w
        from PIL import Image

        img = w.Image(format="png")
        ts = w.FloatSlider(value=self.threshold, min=0.0, max=1.0, step=0.01, description="threshold",
                           continuous_update=True, readout_format=".2f")
        zs = w.IntSlider(value=self.z, min=0, max=self.nz - 1, description="z", continuous_update=True)
        info = w.HTML()
        link = w.HTML()

        def redraw(*_):
            self.threshold = float(ts.value)
            self.z = int(zs.value)
            rgb, s = self.render()
            buf = io.BytesIO()
            Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
            img.value = buf.getvalue()
            info.value = self._scores_html(s)

        ts.observe(redraw, names="value")
        zs.observe(redraw, names="value")
        redraw()
        rows = [w.HBox([ts, zs]), info, img]
        self._controls = {"threshold": ts, "z": zs, "image": img, "scores": info}
        if folder is not None:
            btn = w.Button(description="send to Neuroglancer", icon="external-link")

            def send(_):
                try:
                    h = self.send_to_neuroglancer(folder, overwrite=True)
                    link.value = f'<a href="{h.url}" target="_blank">{h.url}</a>'
                except Exception as exc:  # shown to the user in the widget, not raised in a callback
                    link.value = f"<span style='color:#c00'>{type(exc).__name__}: {exc}</span>"

            btn.on_click(send)
            rows.append(w.HBox([btn, link]))
            self._controls["send"] = btn
        self._widget = w.VBox(rows)
        return self._widget

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget())
