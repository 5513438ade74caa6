"""Cleft threshold and size sliders with live precision and recall against true clefts.

Each move runs :func:`emkit.synapse.cleft_components` (threshold, connected components, size
filter) on the cleft probability and scores the components with
:func:`emkit.evaluate.cleft_precision_recall` (overlap rule documented there) — library calls
only. :meth:`CleftTuner.scores` is a plain function of (threshold, min size); the widget calls it
and shows the section's probability with the kept clefts outlined.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CleftTuner", "threshold_steps"]


def threshold_steps(top: float = 0.9999, include=()) -> list[float]:
    """The threshold slider's stops: fine near 1, where a rebalanced cleft net's threshold lies.

    0.05 … 0.95 in steps of 0.05, then 0.96 … 0.99 in steps of 0.01, 0.991 … 0.999 in steps of
    0.001, 0.9991 … 0.9999 in steps of 0.0001 (a log-ish scale: each decade of ``1 - threshold``
    has its own stops), cut at ``top``; ``include`` adds values (e.g. a model's recorded
    threshold) that are not stops already. Sorted, no duplicates.
    """
    stops = [round(0.05 * k, 4) for k in range(1, 20)]
    for decade in (0.01, 0.001, 0.0001):
        stops += [round(1 - decade * k, 6) for k in range(9 if decade < 0.01 else 4, 0, -1)]
    stops = [v for v in stops if v <= top] + [round(float(v), 6) for v in include if 0 < float(v) < 1]
    return sorted(set(stops))


class CleftTuner:
    """Choose the cleft threshold and minimum size with sliders; scores follow.

    Parameters
    ----------
    prob : (z, y, x) cleft probability (0..1), e.g. the cleft net's output.
    gt_clefts : (z, y, x) true cleft ids (0 = none), same shape.
    resolution : voxel size (z, y, x) in nm.
    threshold : first threshold (e.g. the cleft model's recorded ``cleft_threshold``: the slider's stops
        reach 0.9999, fine near 1, see :func:`threshold_steps`); min_size : first minimum size in voxels (default: the paper's
        40 voxels at 8 × 8 × 40 nm, scaled to ``resolution``).
    """

    def __init__(self, prob, gt_clefts, resolution=(40, 8, 8), threshold: float = 0.5, min_size: int | None = None):
        from emkit.errors import InputError
        from emkit.synapse import min_size_for

        self.prob = np.asarray(prob)
        self.gt = np.asarray(gt_clefts)
        if self.prob.shape != self.gt.shape or self.prob.ndim != 3:
            raise InputError(f"prob {self.prob.shape} and gt_clefts {self.gt.shape} must be (z, y, x) volumes of "
                             "the same shape")
        self.resolution = tuple(float(v) for v in resolution)
        self.threshold = float(threshold)
        self.min_size = int(min_size if min_size is not None else min_size_for(self.resolution))
        self._cache: dict = {}

    def components(self, threshold: float | None = None, min_size: int | None = None):
        """``(labels, table)`` of :func:`emkit.synapse.cleft_components` at these settings."""
        from emkit.synapse import CleftParams, cleft_components

        t = self.threshold if threshold is None else float(threshold)
        m = self.min_size if min_size is None else int(min_size)
        key = (round(t, 6), m)
        if key not in self._cache:
            self._cache = {key: cleft_components(self.prob, self.resolution,
                                                 CleftParams(threshold=t, min_size_voxels=m))}
        return self._cache[key]

    def scores(self, threshold: float | None = None, min_size: int | None = None) -> dict:
        """Precision, recall, F1 and counts of the clefts found at these settings."""
        from emkit.evaluate import cleft_precision_recall

        labels, _ = self.components(threshold, min_size)
        s = cleft_precision_recall(labels, self.gt, resolution=self.resolution)
        return {"threshold": self.threshold if threshold is None else float(threshold),
                "min_size": self.min_size if min_size is None else int(min_size),
                "precision": s.precision, "recall": s.recall, "f1": s.f1, "n_pred": s.n_pred, "n_true": s.n_true}

    def widget(self):
        """ipywidgets: threshold and size sliders, a section slider, the scores and the section."""
        import ipywidgets as w
        import matplotlib.pyplot as plt

        # a rebalanced cleft net's recorded threshold lies near 1 (the shipped one's: 0.998): the stops are
        # fine there, up to 0.9999 (threshold_steps), and always hold the current threshold
        stops = threshold_steps(include=(self.threshold,))
        t = w.SelectionSlider(options=[(f"{v:g}", v) for v in stops], value=round(self.threshold, 6),
                              description="threshold", continuous_update=False)
        m = w.IntSlider(value=self.min_size, min=1, max=max(4 * self.min_size, 50), description="min size",
                        continuous_update=False)
        gz = np.flatnonzero(self.gt.reshape(self.gt.shape[0], -1).any(1))
        z = w.IntSlider(value=int(gz[len(gz) // 2]) if gz.size else self.prob.shape[0] // 2, min=0,
                        max=self.prob.shape[0] - 1, description="z", continuous_update=False)
        score = w.HTML()
        out = w.Output()

        def update(*_):
            self.threshold, self.min_size = float(t.value), int(m.value)
            s = self.scores()
            score.value = (f"<b>{s['n_pred']}</b> clefts found, <b>{s['n_true']}</b> true — precision "
                           f"<b>{s['precision']:.3f}</b>, recall <b>{s['recall']:.3f}</b>, F1 {s['f1']:.3f}")
            labels, _ = self.components()
            with out:
                out.clear_output(wait=True)
                fig, ax = plt.subplots(1, 2, figsize=(9, 4.5))
                ax[0].imshow(self.prob[z.value], cmap="magma", vmin=0, vmax=1)
                ax[0].set_title(f"cleft probability, z = {z.value}")
                ax[1].imshow(labels[z.value] > 0, cmap="Greens")
                ax[1].contour(self.gt[z.value] > 0, levels=[0.5], colors="red", linewidths=0.8)
                ax[1].set_title("found (green) vs true (red outline)")
                for a in ax:
                    a.axis("off")
                plt.show()

        for s in (t, m, z):
            s.observe(update, names="value")
        update()
        self._controls = {"threshold": t, "min_size": m, "z": z, "score": score}
        return w.VBox([w.HBox([t, m, z]), score, out])
