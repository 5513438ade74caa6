"""Tune watershed and agglomeration parameters and the cut threshold on an annotated crop.

What a user with their own ground truth does before segmenting a large volume: segment the
annotated crop with a few parameter sets, score every cut of each merge history against the
annotation, keep the best, and segment the rest with it (``emkit segment --params FILE``).

Search (deterministic, small): a *coordinate search* from a starting point (the defaults). For
each parameter in :data:`DEFAULT_GRID`, in order, every candidate value is tried with the other
parameters fixed at the current best; a value is kept when it beats the current set by more than
``tolerance`` (5 %: small gains on one crop do not transfer); rounds repeat until a round changes
nothing (at most ``rounds``). Every parameter set costs one watershed, region graph and
agglomeration per part (below); all thresholds are then scored from one supervoxel contingency
table (:func:`emkit.evaluate.sweep`, milliseconds per threshold), so the threshold is searched
exhaustively at no extra cost. Scores are those of :func:`emkit.evaluate.evaluate` (ground-truth
label 0 not counted by default).

*The cut* of a set: each threshold t is judged by the worst score among the thresholds whose
odds t / (1 - t) are within a factor of two of its own (a cut at the bottom of a narrow dip
transfers badly: the right cut moves from one crop to the next); among the thresholds judged
within ``tolerance`` of the best, the one nearest the default cut 0.5 (scores are often flat). *The rank* of a set (lower is better) is the worse of two scores that
predict how it holds on data it was not tuned on: ``cv_arand``, cross-validated — the crop is
halved along its longest axis, the set's cut is chosen on one half and scored on the other, both
ways, averaged; and ``robust_arand`` — the judged score of its cut on the whole crop. On the gala FIB-SEM crop the default watershed's best cut is 0.03 on one half in z
and scores 0.07 on the other, while the other half's best cut (0.05) lies in a dip; ranked this
way, the search moves to sets whose scores are flat over a wide range of cuts.

Tune on one part of the annotation and report on another: the score on the part tuned on is
optimistic.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import numpy as np

from emkit.errors import InputError
from emkit.segment.params import AgglomerationParams, WatershedParams

__all__ = ["tune", "TuneResult", "DEFAULT_GRID", "DEFAULT_THRESHOLDS", "load_params", "save_params", "params_dict"]

#: Candidate values per parameter, searched in this order ("agglomeration.<field>" for
#: AgglomerationParams fields). ``high`` below 0.99 suits saturated classifier maps (exact 0/1)
#: and is catastrophic on graded affinities — exactly what a search on the user's crop decides.
DEFAULT_GRID: dict[str, tuple] = {
    "high": (0.99, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4),
    "low": (0.0, 0.01),
    "merge_affinity": (0.25, 0.5, 0.8),
    "size_threshold": (0, 150, 1000),
    "dust_size": (0, 50, 200),
    "agglomeration.constraints": (True, False),
}
#: Cuts of the merge history that are scored (mean affinity).
DEFAULT_THRESHOLDS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6,
                      0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
_KEYS = ("arand", "voi")


@dataclass
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes
    ----------
    watershed, agglomeration : the best parameters.
    threshold : the best cut (mean affinity).
    scores : the chosen set on the whole crop at its cut: ``arand``, ``arand_precision``,
        ``arand_recall``, ``voi_split``, ``voi_merge``, ``voi`` (bits), ``n_seg``,
        ``supervoxels``; ``best_<key>`` (its best cut), ``cv_<key>`` (cross-validated) and
        ``robust_<key>`` (judged score of its cut) — see the module docstring.
    table : one row per parameter set tried: its watershed parameters and searched agglomeration
        fields, its cut (``threshold``) and the scores there, ``best_<key>``, ``cv_<key>``,
        ``robust_<key>``, ``rank``, the score at ``default_threshold``, ``supervoxels`` and
        ``seconds``.
    seconds : wall time of the whole search.
    """

    watershed: WatershedParams
    agglomeration: AgglomerationParams
    threshold: float
    scores: dict
    table: list = field(default_factory=list)
    seconds: float = 0.0
    key: str = "arand"

    def to_dict(self, tuned_on: dict | None = None) -> dict:
        """The parameter file's content (see :func:`save_params`)."""
        return params_dict(self.watershed, self.agglomeration, self.threshold, scores=self.scores,
                           tuned_on={"key": self.key, "parameter_sets": len(self.table),
                                     "seconds": round(self.seconds, 2), **(tuned_on or {})})


def _split_grid(grid: dict) -> list[tuple[str, str, tuple]]:
    out = []
    wnames = set(WatershedParams.__dataclass_fields__)
    anames = set(AgglomerationParams.__dataclass_fields__)
    for name, values in grid.items():
        if name.startswith("agglomeration."):
            which, f = "agglomeration", name.split(".", 1)[1]
            ok = f in anames
        else:
            which, f = "watershed", name[len("watershed."):] if name.startswith("watershed.") else name
            ok = f in wnames
        if not ok:
            raise InputError(f"tune grid: unknown parameter {name!r}; WatershedParams fields {sorted(wnames)}, "
                             f"AgglomerationParams fields as 'agglomeration.<field>' {sorted(anames)}")
        vals = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        if not vals:
            raise InputError(f"tune grid: no candidate values for {name!r}")
        out.append((which, f, vals))
    return out


def tune(affinities, gt, *, semantic=None, watershed_params: WatershedParams | None = None,
         agglomeration_params: AgglomerationParams | None = None, grid: dict | None = None,
         thresholds=DEFAULT_THRESHOLDS, key: str = "arand", ignore_gt=(0,), rounds: int = 2,
         default_threshold: float = 0.5, tolerance: float = 0.05, cross_validate: bool = True,
         progress=None) -> TuneResult:
    """Search watershed and agglomeration parameters and the threshold on an annotated crop.

    Parameters
    ----------
    affinities : (3, z, y, x) float array in [0, 1], channels (z, y, x) (e.g.
        :func:`emkit.affinity.boundary_to_affinities` of a boundary map).
    gt : (z, y, x) integer ground truth, same shape; labels in ``ignore_gt`` are not scored.
    semantic : (z, y, x) classes 0..5 for the semantic constraint, optional.
    watershed_params, agglomeration_params : the starting point (defaults: the package defaults).
    grid : ``{field: candidate values}`` (default :data:`DEFAULT_GRID`); WatershedParams fields
        by name, AgglomerationParams fields as ``"agglomeration.<field>"``.
    thresholds : cuts scored for every parameter set (mean affinity in [0, 1]).
    key : ``"arand"`` (adapted Rand error) or ``"voi"`` (split + merge), minimised.
    ignore_gt : ground-truth labels not counted (default 0, unlabelled).
    rounds : at most this many rounds of the coordinate search.
    default_threshold : among equally good cuts the one nearest this is chosen (see above); the
        table also gives each set's score at this cut.
    tolerance : relative margin (default 5 %): a parameter change is kept only when it lowers the
        rank by more than this; cuts judged within it of the best count as equally good.
    cross_validate : rank parameter sets by the worse of their cross-validated and judged scores
        (see above); False: by the judged score alone.
    progress : callable taking one table row, called after each parameter set (optional).

    Returns
    -------
    TuneResult
    """
    from emkit.evaluate import contingency, sweep
    from emkit.segment.agglomerate import agglomerate
    from emkit.segment.region_graph import region_graph
    from emkit.segment.watershed import check_affinities, watershed

    if key not in _KEYS:
        raise InputError(f"key must be one of {_KEYS}, got {key!r}")
    aff = check_affinities(affinities)
    gt = np.asarray(gt)
    if gt.shape != aff.shape[1:]:
        raise InputError(f"ground truth shape {gt.shape} differs from the affinities' {aff.shape[1:]} (z, y, x)")
    if not np.issubdtype(gt.dtype, np.integer):
        raise InputError(f"ground truth must be integer labels, got dtype {gt.dtype}")
    if not np.any(~np.isin(gt, np.asarray(list(ignore_gt or ()), dtype=gt.dtype))):
        raise InputError("the ground truth has no labelled voxel (every voxel is in ignore_gt)")
    ts = sorted({float(t) for t in thresholds} | {float(default_threshold)})
    if not ts or min(ts) < 0 or max(ts) > 1:
        raise InputError(f"thresholds must lie in [0, 1], got {thresholds!r}")
    if int(rounds) < 1:
        raise InputError(f"rounds must be >= 1, got {rounds!r}")
    wp = watershed_params or WatershedParams()
    ap = agglomeration_params or AgglomerationParams()
    axes = _split_grid(DEFAULT_GRID if grid is None else grid)
    sem = None if semantic is None else np.asarray(semantic)
    if sem is not None and sem.shape != aff.shape[1:]:
        raise InputError(f"semantic shape {sem.shape} differs from the affinities' {aff.shape[1:]} (z, y, x)")

    t_start = time.perf_counter()
    cache: dict = {}
    table: list = []
    sv_cache: dict = {}
    ts_arr = np.asarray(ts)
    # two halves along the longest axis for the cross-validated rank (each set's cut is chosen on
    # one half and scored on the other, both ways)
    ax = int(np.argmax(aff.shape[1:]))
    n_ax = aff.shape[1 + ax]
    parts = {"all": (slice(None),) * 3}
    if cross_validate and n_ax >= 4:
        for name, sl in (("a", slice(0, n_ax // 2)), ("b", slice(n_ax // 2, None))):
            sel = [slice(None)] * 3
            sel[ax] = sl
            parts[name] = tuple(sel)

    def score_of(row):
        return row["arand"] if key == "arand" else row["voi"]

    def pick_cut(vals):
        """The cut whose worst score over the cuts within a factor 2 in odds is within `tolerance` of
        the lowest such worst score and nearest the default cut."""
        judged = _worst_nearby(ts_arr, vals)
        near = np.flatnonzero(judged <= judged.min() * (1 + tolerance) + 1e-12)
        return int(near[np.argmin(np.abs(ts_arr[near] - float(default_threshold)))]) if near.size else 0

    def rank_of(row):
        return row["rank"]

    def curves(w: WatershedParams, a: AgglomerationParams):
        wk = json.dumps(w.to_dict(), sort_keys=True)
        if wk not in sv_cache:
            sv_cache.clear()  # keep one watershed's volumes (memory); the search revisits few
            sv_cache[wk] = {}
            for name, sel in parts.items():
                af = np.ascontiguousarray(aff[(slice(None),) + sel])
                sv = watershed(af, w)
                sv_cache[wk][name] = (sv, region_graph(sv, af, semantic=None if sem is None else sem[sel]),
                                      contingency(sv, gt[sel], ignore_gt))
        out = {}
        for name, (sv, graph, table0) in sv_cache[wk].items():
            rows = sweep(agglomerate(graph, a), table0, None, ts, ignore_gt=ignore_gt)
            vals = np.array([score_of(r) for r in rows], float)
            out[name] = (rows, np.where(np.isnan(vals), np.inf, vals), int(sv.max()) if sv.size else 0)
        return out

    def evaluate_set(w: WatershedParams, a: AgglomerationParams) -> dict:
        ck = (json.dumps(w.to_dict(), sort_keys=True), json.dumps(a.to_dict(), sort_keys=True))
        if ck in cache:
            return cache[ck]
        t0 = time.perf_counter()
        cv = curves(w, a)
        rows, vals, n_sv = cv["all"]
        pick = pick_cut(vals)
        best = dict(rows[pick])
        if "a" in cv:
            va, vb = cv["a"][1], cv["b"][1]
            held_out = 0.5 * (vb[pick_cut(va)] + va[pick_cut(vb)])
        else:
            held_out = score_of(best)
        robust = float(_worst_nearby(ts_arr, vals)[pick])
        at_default = next(r for r in rows if r["threshold"] == float(default_threshold))
        row = {"watershed": w.to_dict(), "agglomeration": {f: getattr(a, f) for _, f, _ in
                                                              [x for x in axes if x[0] == "agglomeration"]},
               "threshold": best["threshold"], **{k: best[k] for k in ("arand", "arand_precision", "arand_recall",
                                                                       "voi_split", "voi_merge", "voi", "n_seg")},
               "best_" + key: float(vals.min()), "cv_" + key: float(held_out), "robust_" + key: robust,
               "rank": max(float(held_out), robust), "supervoxels": n_sv,
               f"{key}_at_{default_threshold:g}": score_of(at_default),
               "seconds": round(time.perf_counter() - t0, 3)}
        cache[ck] = row
        table.append(row)
        if progress is not None:
            progress(row)
        return row

    best_row = evaluate_set(wp, ap)
    for _ in range(int(rounds)):
        changed = False
        for which, f, values in axes:
            for v in values:
                try:
                    if which == "watershed":
                        w2, a2 = replace(wp, **{f: v}), ap
                    else:
                        w2, a2 = wp, replace(ap, **{f: v})
                except InputError:
                    continue  # e.g. low > high: not a valid combination
                row = evaluate_set(w2, a2)
                # a move must gain more than `tolerance` (relative): the search stays near the
                # starting point unless the crop clearly asks otherwise (less over-fitting)
                if rank_of(row) < rank_of(best_row) * (1 - tolerance):
                    best_row, wp, ap, changed = row, w2, a2, True
        if not changed:
            break
    scores = {k: best_row[k] for k in ("arand", "arand_precision", "arand_recall", "voi_split", "voi_merge", "voi",
                                       "n_seg", "supervoxels", "best_" + key, "cv_" + key, "robust_" + key)}
    return TuneResult(watershed=wp, agglomeration=ap, threshold=float(best_row["threshold"]), scores=scores,
                      table=table, seconds=time.perf_counter() - t_start, key=key)


def _worst_nearby(thresholds, scores) -> np.ndarray:
    """For each cut t, the worst (largest) score over the cuts u whose odds u / (1 - u) lie within a
    factor of two of t's (t = 0.05: 0.026–0.095; 0.5: 0.33–0.67; 0.9: 0.82–0.95)."""
    t = np.clip(np.asarray(thresholds, float), 1e-6, 1 - 1e-6)
    v = np.asarray(scores, float)
    lo = np.log(t / (1 - t))
    return np.array([v[np.abs(lo - x) <= np.log(2) + 1e-9].max() for x in lo])


# ------------------------------------------------------------------ parameter files -------------
def params_dict(watershed: WatershedParams, agglomeration: AgglomerationParams, threshold: float, *,
                scores: dict | None = None, tuned_on: dict | None = None) -> dict:
    """The parameter file's content: ``{"watershed": {...}, "agglomeration": {...}, "threshold": t,
    "scores": {...}, "tuned_on": {...}}`` (what ``emkit segment --params FILE`` reads)."""
    return {"watershed": watershed.to_dict(), "agglomeration": agglomeration.to_dict(), "threshold": float(threshold),
            "scores": _json_safe(scores or {}), "tuned_on": _json_safe(tuned_on or {})}


def _json_safe(v):
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def save_params(path, content: dict, *, overwrite: bool = False) -> str:
    """Write a parameter file atomically (temporary name + rename; one complete put on object
    stores). Refuses to replace an existing file unless ``overwrite``. Returns the path/URL."""
    import os

    from emkit.errors import LayerExistsError
    from emkit.runtime.atomic import put_atomic

    spath = os.fspath(path)
    if "://" in spath and not spath.startswith("file://"):
        folder, name = spath.rsplit("/", 1)
        from cloudfiles import CloudFiles

        exists = CloudFiles(folder).exists(name)
    else:
        local = os.path.abspath(os.path.expanduser(spath[len("file://"):] if spath.startswith("file://") else spath))
        if os.path.isdir(local):
            raise InputError(f"{spath} is a folder; give the parameter file's name (e.g. {spath}/params.json)")
        folder, name = os.path.split(local)
        exists = os.path.exists(local)
    if exists and not overwrite:
        raise LayerExistsError(f"{spath} exists; pass --overwrite (overwrite=True) to replace it")
    put_atomic(folder, name, (json.dumps(_json_safe(content), indent=2, allow_nan=False) + "\n").encode("utf-8"))
    return spath


def load_params(path) -> tuple[WatershedParams, AgglomerationParams, float]:
    """Read a parameter file written by ``emkit tune`` (or ``emkit segment``'s ``params.json``).

    Returns ``(WatershedParams, AgglomerationParams, threshold)``; a file without a threshold
    gives :data:`emkit.segment.pipeline.DEFAULT_THRESHOLD`. Bad files raise InputError naming the
    file and the field.
    """
    from emkit.segment.pipeline import DEFAULT_THRESHOLD
    from emkit.segment.pipeline import load_params as _load

    wp, ap, t = _load(path)
    return wp, ap, (DEFAULT_THRESHOLD if t is None else float(t))
