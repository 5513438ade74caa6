"""emkit's segmentation against waterz on the same noisy ground-truth affinities, and on real data.

Real data (``--real-data``, default ``../shared/data/real-em-gt``; skipped with a message when absent;
``--real-only`` runs only this part, about a minute): the gala FIB-SEM crop's boundary map, emkit
(defaults, and ``emkit.segment.tune``) against waterz (+ fill) and a seeded scikit-image
watershed, tuned on one half in z and scored on the other; written to
``results/segment_real.json``. Then the same comparison on a real net's affinities: the shipped
isotropic net (``boundary_iso``, trained on gala-fib-train) applied to the held-out
gala-fib-tiny crop (needs torch; ``--real-net`` runs only this part), written to
``results/segment_real_net.json``.

Run: ``.venv/bin/python benchmarks/segment.py`` (about 5 minutes on 2 cores; ``--quick`` for a
small smoke run written elsewhere). Needs ``waterz==0.10.1`` (a bench dependency).

For each phantom size (64×256×256 and 128×512×512, seed 1, clean ground truth) the affinities
are ``emkit.affinity.noisy_affinities(gt, seed=1)`` and every method gets the same file:

* **emkit** — ``watershed`` (default ``WatershedParams``) → ``region_graph`` → ``agglomerate``
  (plain mean affinity, no constraints, like waterz) → one cut of the merge history per threshold.
* **emkit+constraints** — the same with the paper's constraints and the phantom's semantic labels
  (``semantic_min_size`` scaled to 2,000 voxels for these small volumes).
* **waterz** — ``waterz.agglomerate(affs, thresholds)`` with its defaults (zwatershed with
  low/high 0.0001/0.9999, ``OneMinus<MeanAffinity>`` scoring); its threshold ``1 - t`` is emkit's
  mean-affinity threshold ``t``.

Every method produces the segmentation at each of the same 16 thresholds; the time is that of
the whole run (watershed, graph, agglomeration, every segmentation), measured inside a fresh
child process after imports, input loading and a warm-up on a tiny volume. Peak memory is the
child's peak resident set size (``os.wait4`` rusage ``ru_maxrss``, which sees numba and C++
allocations); ``input_rss_mb`` is the child's peak before the run (interpreter, libraries and
the affinities), so ``peak - input`` is what the method itself needed. Accuracy is scored by
``emkit.evaluate`` (scikit-image definitions; ground-truth 0 ignored) in a second child, and
each method is reported at its best threshold by adapted Rand error. waterz leaves some voxels
at 0 (no affinity above its low threshold), which counts as one object; the ``*_filled`` columns
score the segmentation after giving each 0 voxel the label of its nearest labelled voxel
(Euclidean, in voxels). emkit's watershed (``low`` 0) leaves none.

The threshold tuner's cost per slider move (re-cut, relabel the shown section, exact
full-volume scores, PNG encoding) is measured on 64×256×256, beside the naive alternative
(relabel the whole volume and run ``emkit.evaluate``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 1
SIZES = [(64, 256, 256), (128, 512, 512)]
QUICK_SIZES = [(16, 128, 128), (24, 192, 192)]
#: mean-affinity thresholds t (merges with mean affinity >= t); waterz gets 1 - t
THRESHOLDS = [0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9]
METHODS = ["emkit", "emkit+constraints", "waterz"]


# ---------------------------------------------------------------------- the methods (child) ----
def _emkit_history(aff, semantic=None, constraints=False, stages=None):
    from emkit.segment import AgglomerationParams, agglomerate, region_graph, watershed

    stages = {} if stages is None else stages
    t0 = time.perf_counter()
    sv = watershed(aff)
    t1 = time.perf_counter()
    graph = region_graph(sv, aff, semantic=semantic)
    t2 = time.perf_counter()
    params = AgglomerationParams(constraints=constraints, semantic_min_size=2_000)
    hist = agglomerate(graph, params)
    t3 = time.perf_counter()
    stages.update(watershed=t1 - t0, region_graph=t2 - t1, agglomerate=t3 - t2)
    return sv, hist


def _run_emkit(aff, semantic, constraints, stages=None):
    """Yield (t, segmentation) for every threshold."""
    stages = {} if stages is None else stages
    sv, hist = _emkit_history(aff, semantic, constraints, stages)
    stages["cuts"] = 0.0
    for t in THRESHOLDS:
        t0 = time.perf_counter()
        seg = hist.segmentation(sv, t)
        stages["cuts"] += time.perf_counter() - t0
        yield t, seg


def _run_waterz(aff):
    import waterz

    out = os.dup(1)  # waterz prints from C++: silence stdout while it runs
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        for seg in waterz.agglomerate(aff, sorted(1.0 - t for t in THRESHOLDS)):
            yield None, seg  # thresholds come back in increasing order of 1 - t
    finally:
        sys.stdout.flush()
        os.dup2(out, 1)
        os.close(devnull)
        os.close(out)


def _segmentations(method, aff, semantic, stages=None):
    if method == "waterz":
        ts = sorted(THRESHOLDS, reverse=True)
        for t, (_, seg) in zip(ts, _run_waterz(aff)):
            yield t, seg
    else:
        yield from _run_emkit(aff, semantic if method == "emkit+constraints" else None,
                              constraints=method == "emkit+constraints", stages=stages)


def _max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _nearest_fill_index(seg0: np.ndarray) -> np.ndarray | None:
    """Flat index of the nearest non-zero voxel for every voxel (None when nothing is 0)."""
    from scipy import ndimage

    zero = seg0 == 0
    if not zero.any() or zero.all():
        return None
    _, inds = ndimage.distance_transform_edt(zero, return_indices=True)
    return np.ravel_multi_index(tuple(inds), seg0.shape).ravel()


def _hwm_mb() -> float:
    """This process's own peak RSS (VmHWM; fresh after exec, unlike ru_maxrss), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def child(method: str, data: Path, score: bool) -> dict:
    aff = np.load(data / "aff.npy")
    semantic = np.load(data / "semantic.npy") if method == "emkit+constraints" else None
    # warm-up on a tiny volume: compiled kernels loaded, lazy imports done
    tiny = np.ascontiguousarray(aff[:, :4, :32, :32])
    for _ in _segmentations(method, tiny, None if semantic is None else semantic[:4, :32, :32]):
        pass
    if not score:
        base = _max_rss_mb()
        t0 = time.perf_counter()
        stages: dict = {}
        n = sum(1 for _ in _segmentations(method, aff, semantic, stages))
        return {"seconds": time.perf_counter() - t0, "input_rss_mb": base, "n": n, "hwm_mb": _hwm_mb(),
                "stages": stages}
    from emkit.evaluate import evaluate

    gt = np.load(data / "gt.npy")
    rows, fill = [], None
    for t, seg in _segmentations(method, aff, semantic):
        if fill is None:
            fill = _nearest_fill_index(seg)
            zero_fraction = float((seg == 0).mean())
        r = evaluate(seg, gt, k=0)
        row = {"threshold": t, "arand": r["arand"], "voi_split": r["voi_split"], "voi_merge": r["voi_merge"],
               "n_seg": r["n_seg"]}
        if fill is not None:
            f = evaluate(seg.ravel()[fill].reshape(seg.shape), gt, k=0)
            row.update(arand_filled=f["arand"], voi_split_filled=f["voi_split"], voi_merge_filled=f["voi_merge"])
        rows.append(row)
    return {"rows": rows, "zero_fraction": zero_fraction}


# ---------------------------------------------------------------------- real data (gala FIB-SEM) --
REAL_FILE = "gala-fib-train-50x100x200.npz"
#: cuts scored for every method on real data (emkit mean affinity t; waterz gets 1 - t)
REAL_THRESHOLDS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65,
                   0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
#: seeds of the scikit-image watershed: connected components of boundary probability < s
SEED_LEVELS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def _fill_nearest(seg):
    fill = _nearest_fill_index(seg)
    return seg if fill is None else seg.ravel()[fill].reshape(seg.shape)


def _score(seg, gt) -> dict:
    from emkit.evaluate import evaluate

    r = evaluate(seg, gt, k=0)
    return {k: r[k] for k in ("arand", "voi_split", "voi_merge", "n_seg")}


def _real_methods(b, gt, tune_part, report_part):
    """Rows for emkit (defaults; tuned), waterz (+fill) and the seeded watershed on the report part,
    each method's free parameters chosen on the tune part."""
    from skimage.segmentation import watershed as sk_watershed
    from scipy import ndimage

    from emkit.affinity import boundary_to_affinities
    from emkit.evaluate import sweep
    from emkit.segment import agglomerate, region_graph, watershed
    from emkit.segment.pipeline import DEFAULT_THRESHOLD
    from emkit.segment.tune import tune

    parts = {"tune": tune_part, "report": report_part}
    aff = {k: boundary_to_affinities(b[v]) for k, v in parts.items()}
    g = {k: gt[v] for k, v in parts.items()}
    rows = []

    def emkit_rows(name, wp, ap, t_chosen, extra=None):
        t0 = time.perf_counter()
        sv = watershed(aff["report"], wp)
        hist = agglomerate(region_graph(sv, aff["report"]), ap)
        seg = hist.segmentation(sv, t_chosen)
        sec = time.perf_counter() - t0
        sw = sweep(hist, sv, g["report"], REAL_THRESHOLDS)
        best = min(sw, key=lambda r: r["arand"])
        at = _score(seg, g["report"])
        at_default = next(r for r in sweep(hist, sv, g["report"], [DEFAULT_THRESHOLD]))
        return {"method": name, "seconds": round(sec, 3), "supervoxels": int(sv.max()),
                "zero_voxels_pct": round(100 * float((sv == 0).mean()), 2),
                "t_chosen": t_chosen, "arand_at_t_chosen": at["arand"], "voi_split": at["voi_split"],
                "voi_merge": at["voi_merge"], "objects": at["n_seg"],
                "best_t": best["threshold"], "best_arand": best["arand"],
                f"arand_at_{DEFAULT_THRESHOLD:g}": at_default["arand"], **(extra or {})}

    from emkit.segment import AgglomerationParams, WatershedParams

    # emkit with the package defaults; threshold chosen on the tune part
    wp0, ap0 = WatershedParams(), AgglomerationParams()
    sv = watershed(aff["tune"], wp0)
    sw = sweep(agglomerate(region_graph(sv, aff["tune"]), ap0), sv, g["tune"], REAL_THRESHOLDS)
    t0_ = min(sw, key=lambda r: r["arand"])["threshold"]
    rows.append(emkit_rows("emkit (default params, t tuned)", wp0, ap0, t0_))
    # emkit with the boundary-map preset at the default cut: nothing tuned
    from emkit.segment.params import BOUNDARY_MAP_WATERSHED

    rows.append(emkit_rows(f"emkit (boundary-map preset, t {DEFAULT_THRESHOLD:g}, nothing tuned)",
                           BOUNDARY_MAP_WATERSHED, ap0, DEFAULT_THRESHOLD))
    # emkit tune on the tune part
    t0 = time.perf_counter()
    res = tune(aff["tune"], g["tune"], watershed_params=BOUNDARY_MAP_WATERSHED, thresholds=REAL_THRESHOLDS)
    tune_s = time.perf_counter() - t0
    rows.append(emkit_rows("emkit tune (params + t tuned, from the boundary-map preset)", res.watershed, res.agglomeration, res.threshold,
                           {"tune_seconds": round(tune_s, 1),
                            "tuned": ", ".join(f"{k} {v:g}" for k, v in res.watershed.to_dict().items()
                                               if k in ("high", "low", "merge_affinity", "size_threshold", "dust_size"))
                            + f", constraints {res.agglomeration.constraints}"}))
    # waterz (+ fill of the voxels it leaves at 0), threshold chosen on the tune part
    def waterz_segs(a):
        for t, (_, seg) in zip(sorted(REAL_THRESHOLDS, reverse=True), _run_waterz_thresholds(a, REAL_THRESHOLDS)):
            yield t, seg

    tune_scores = {t: _score(_fill_nearest(seg), g["tune"])["arand"] for t, seg in waterz_segs(aff["tune"])}
    tw = min(tune_scores, key=tune_scores.get)
    t0 = time.perf_counter()
    segs = {t: seg.copy() for t, seg in waterz_segs(aff["report"])}
    sec = time.perf_counter() - t0
    filled = {t: _score(_fill_nearest(s), g["report"]) for t, s in segs.items()}
    bt = min(filled, key=lambda t: filled[t]["arand"])
    rows.append({"method": "waterz + fill (t tuned)", "seconds": round(sec, 3),
                 "zero_voxels_pct": round(100 * float((segs[tw] == 0).mean()), 2), "t_chosen": tw,
                 "arand_at_t_chosen": filled[tw]["arand"], "voi_split": filled[tw]["voi_split"],
                 "voi_merge": filled[tw]["voi_merge"], "objects": filled[tw]["n_seg"],
                 "best_t": bt, "best_arand": filled[bt]["arand"],
                 "arand_unfilled_at_t_chosen": _score(segs[tw], g["report"])["arand"]})

    # seeded scikit-image watershed on the boundary map: seeds = components of b < s
    def seeded(bb, s):
        markers, n = ndimage.label(bb < s)
        return sk_watershed(bb, markers), n

    tune_scores = {s: _score(seeded(b[parts["tune"]], s)[0], g["tune"])["arand"] for s in SEED_LEVELS}
    sc = min(tune_scores, key=tune_scores.get)
    rep = {}
    for s in SEED_LEVELS:
        t0 = time.perf_counter()
        seg, n = seeded(b[parts["report"]], s)
        rep[s] = (_score(seg, g["report"]), time.perf_counter() - t0, n)
    bs = min(rep, key=lambda s: rep[s][0]["arand"])
    rows.append({"method": "skimage seeded watershed (seed level tuned)", "seconds": round(rep[sc][1], 3),
                 "supervoxels": rep[sc][2], "t_chosen": sc, "arand_at_t_chosen": rep[sc][0]["arand"],
                 "voi_split": rep[sc][0]["voi_split"], "voi_merge": rep[sc][0]["voi_merge"],
                 "objects": rep[sc][0]["n_seg"], "best_t": bs, "best_arand": rep[bs][0]["arand"]})
    return rows


def _run_waterz_thresholds(aff, thresholds):
    import waterz

    out = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        for seg in waterz.agglomerate(np.ascontiguousarray(aff), sorted(1.0 - t for t in thresholds)):
            yield None, seg
    finally:
        sys.stdout.flush()
        os.dup2(out, 1)
        os.close(devnull)
        os.close(out)


TINY_FILE = "gala-fib-tiny-50x200x100.npz"
#: Gaussian sigma (voxels) of the smoothed-intensity boundary map built for the tiny crop
TINY_SIGMA = 1.0


def intensity_boundary_map(image, sigma: float = TINY_SIGMA) -> np.ndarray:
    """A crude boundary map without a classifier: the Gaussian-smoothed image, inverted (membranes
    are dark in FIB-SEM) and stretched so the 2nd/98th percentiles map to 0/1."""
    from scipy import ndimage

    s = ndimage.gaussian_filter(np.asarray(image, np.float32), sigma)
    lo, hi = np.percentile(s, [2, 98])
    return np.clip((hi - s) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def real_rows(data_dir: Path) -> list[dict] | None:
    """The real-data rows (None, with a message, when the data is absent)."""
    f = Path(data_dir) / REAL_FILE
    if not f.exists():
        print(f"  real data: {f} not found; skipping the real-data rows")
        return None
    inputs = []
    with np.load(f) as z:
        inputs.append((REAL_FILE + " boundary_prob", z["boundary_prob"], z["labels"]))
    if (Path(data_dir) / TINY_FILE).exists():
        with np.load(Path(data_dir) / TINY_FILE) as z:
            inputs.append((f"{TINY_FILE} smoothed image (sigma {TINY_SIGMA:g})", intensity_boundary_map(z["image"]),
                           z["labels"]))
    rows = []
    for label, b, gt in inputs:
        half = b.shape[0] // 2
        n = b.shape[0]
        for tune_part, report_part, name in ((slice(0, half), slice(half, None), f"tune z 0-{half - 1}, report z {half}-{n - 1}"),
                                             (slice(half, None), slice(0, half), f"tune z {half}-{n - 1}, report z 0-{half - 1}")):
            for r in _real_methods(b, gt, tune_part, report_part):
                rows.append({"data": f"{label} ({name})", **r})
                print(f"  {json.dumps(_json_safe(rows[-1]))}", flush=True)
    return rows


# ---------------------------------------------------------------------- real data: a net's affinities --
#: the shipped isotropic net (trained on gala-fib-train) is applied to this crop it never saw
NET_FILE = TINY_FILE
NET_RESOLUTION = (10.0, 10.0, 10.0)
#: how the seeded scikit-image watershed turns the affinities into a voxel boundary map (the
#: choice is tuned with the seed level): 1 - mean of the 3 affinities stored at the voxel (edges to
#: its lower neighbours), or 1 - mean of all 6 edges touching it
BOUNDARY_FROM_AFF = ("mean3", "mean6")
#: seed levels s and minimum seed sizes (voxels; smaller seed components are dropped) tried for the
#: seeded scikit-image watershed on the net's affinities (finer than SEED_LEVELS: its scores
#: change fast between 0.1 and 0.2 on this map)
NET_SEED_LEVELS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
NET_SEED_MIN_SIZES = (0, 50, 200)


def affinity_boundary_map(aff: np.ndarray, how: str = "mean6") -> np.ndarray:
    """A voxel boundary map from (3, z, y, x) affinities (channel d at v: edge v - e_d -- v):
    1 - the mean affinity of the 3 edges stored at the voxel (``mean3``) or of the 6 edges touching
    it (``mean6``; edges leaving the volume are not counted)."""
    a = np.asarray(aff, np.float32)
    if how == "mean3":
        return (1.0 - a.mean(axis=0)).astype(np.float32)
    s = np.zeros(a.shape[1:], np.float32)
    n = np.zeros(a.shape[1:], np.float32)
    for d in range(3):
        lo = [slice(None)] * 3
        lo[d] = slice(1, None)
        hi = [slice(None)] * 3
        hi[d] = slice(None, -1)
        lo, hi = tuple(lo), tuple(hi)
        s[lo] += a[d][lo]  # the edge to the lower neighbour (stored at v; none at index 0)
        n[lo] += 1
        s[hi] += a[d][lo]  # the edge to the upper neighbour (stored at v + e_d)
        n[hi] += 1
    return (1.0 - s / np.maximum(n, 1)).astype(np.float32)


def net_affinities(image: np.ndarray, cache: Path) -> tuple[np.ndarray, dict]:
    """The affinities of the shipped boundary net ``emkit infer boundary`` picks for 10 nm data
    (``emkit.inference.choose_model`` + ``predict``), cached as ``cache/aff.npy``."""
    f = cache / "aff.npy"
    if f.exists():
        return np.load(f), json.loads((cache / "aff.json").read_text())
    from emkit.inference import choose_model, predict
    from emkit.nets import load_model

    name, path, _ = choose_model("boundary", NET_RESOLUTION)
    model = load_model(path)
    t0 = time.perf_counter()
    aff = predict(model, image, resolution=NET_RESOLUTION, progress=False)
    facts = {"model": name, "checkpoint": os.path.relpath(path, HERE.parent), "infer_seconds": time.perf_counter() - t0,
             "torch_threads": __import__("torch").get_num_threads()}
    np.save(f, aff)
    (cache / "aff.json").write_text(json.dumps(facts))
    return aff, facts


def _net_methods(aff_full, gt, tune_part, report_part):
    """Rows for emkit (`emkit segment` defaults at the default cut; defaults with the cut tuned;
    `emkit tune`), waterz (+ fill) and the seeded scikit-image watershed on the same affinities, on
    the report part, each method's free parameters chosen on the tune part."""
    from scipy import ndimage
    from skimage.segmentation import watershed as sk_watershed

    from emkit.evaluate import sweep
    from emkit.segment import AgglomerationParams, WatershedParams, agglomerate, region_graph, watershed
    from emkit.segment.pipeline import DEFAULT_THRESHOLD
    from emkit.segment.tune import tune

    parts = {"tune": tune_part, "report": report_part}
    aff = {k: np.ascontiguousarray(aff_full[:, v]) for k, v in parts.items()}
    g = {k: gt[v] for k, v in parts.items()}
    rows = []
    default_key = f"arand_at_{DEFAULT_THRESHOLD:g}"

    def emkit_row(name, wp, ap, t_chosen, extra=None):
        t0 = time.perf_counter()
        sv = watershed(aff["report"], wp)
        hist = agglomerate(region_graph(sv, aff["report"]), ap)
        seg = hist.segmentation(sv, t_chosen)
        sec = time.perf_counter() - t0
        sw = sweep(hist, sv, g["report"], sorted(set(REAL_THRESHOLDS) | {DEFAULT_THRESHOLD}))
        best = min(sw, key=lambda r: r["arand"])
        at = _score(seg, g["report"])
        at_default = next(r for r in sw if r["threshold"] == DEFAULT_THRESHOLD)
        return {"method": name, "seconds": round(sec, 3), "supervoxels": int(sv.max()),
                "zero_voxels_pct": round(100 * float((sv == 0).mean()), 2),
                "t_chosen": t_chosen, "arand_at_t_chosen": at["arand"], "voi_split": at["voi_split"],
                "voi_merge": at["voi_merge"], "objects": at["n_seg"],
                "best_t": best["threshold"], "best_arand": best["arand"], default_key: at_default["arand"],
                **(extra or {})}

    wp0, ap0 = WatershedParams(), AgglomerationParams()
    # `emkit segment AFF OUT` as a user runs it: package defaults, cut 0.5, nothing tuned
    rows.append(emkit_row(f"emkit segment (defaults, t {DEFAULT_THRESHOLD:g}, nothing tuned)", wp0, ap0,
                          DEFAULT_THRESHOLD))
    # the same defaults, the cut chosen on the tune part
    sv = watershed(aff["tune"], wp0)
    sw = sweep(agglomerate(region_graph(sv, aff["tune"]), ap0), sv, g["tune"], REAL_THRESHOLDS)
    rows.append(emkit_row("emkit (defaults, t tuned)", wp0, ap0, min(sw, key=lambda r: r["arand"])["threshold"]))
    # `emkit tune` on the tune part (from the package defaults, as `emkit tune` starts on affinities)
    t0 = time.perf_counter()
    res = tune(aff["tune"], g["tune"], thresholds=REAL_THRESHOLDS)
    tune_s = time.perf_counter() - t0
    rows.append(emkit_row("emkit tune (params + t tuned)", res.watershed, res.agglomeration, res.threshold,
                          {"tune_seconds": round(tune_s, 1),
                           "tuned": ", ".join(f"{k} {v:g}" for k, v in res.watershed.to_dict().items()
                                              if k in ("high", "low", "merge_affinity", "size_threshold", "dust_size"))
                           + f", constraints {res.agglomeration.constraints}"}))

    # waterz (+ fill of the voxels it leaves at 0), threshold chosen on the tune part
    def waterz_segs(a, thresholds=REAL_THRESHOLDS):
        for t, (_, seg) in zip(sorted(thresholds, reverse=True), _run_waterz_thresholds(a, thresholds)):
            yield t, seg

    tune_scores = {t: _score(_fill_nearest(seg), g["tune"])["arand"] for t, seg in waterz_segs(aff["tune"])}
    tw = min(tune_scores, key=tune_scores.get)
    segs = {t: seg.copy() for t, seg in waterz_segs(aff["report"])}
    filled = {t: _score(_fill_nearest(s), g["report"]) for t, s in segs.items()}
    bt = min(filled, key=lambda t: filled[t]["arand"])
    t0 = time.perf_counter()  # one run at the chosen threshold + the fill, as a user would
    for _, seg in waterz_segs(aff["report"], (tw,)):
        _fill_nearest(seg)
    sec = time.perf_counter() - t0
    rows.append({"method": "waterz + fill (t tuned)", "seconds": round(sec, 3),
                 "zero_voxels_pct": round(100 * float((segs[tw] == 0).mean()), 2), "t_chosen": tw,
                 "arand_at_t_chosen": filled[tw]["arand"], "voi_split": filled[tw]["voi_split"],
                 "voi_merge": filled[tw]["voi_merge"], "objects": filled[tw]["n_seg"],
                 "best_t": bt, "best_arand": filled[bt]["arand"], default_key: filled[DEFAULT_THRESHOLD]["arand"],
                 "arand_unfilled_at_t_chosen": _score(segs[tw], g["report"])["arand"]})

    # seeded scikit-image watershed: boundary map from the affinities (how), seeds = connected
    # components of b < s of at least min_size voxels, flooding b; (how, s, min_size) tuned
    def seeded(a, how, s, min_size):
        bb = affinity_boundary_map(a, how)
        markers, n = ndimage.label(bb < s)
        if min_size:
            small = np.bincount(markers.ravel()) < min_size
            small[0] = False
            markers[small[markers]] = 0
            n = int(n - small.sum())
        return sk_watershed(bb, markers), n

    def fmt(c):
        return f"{c[0]} s<{c[1]:g} min {c[2]}"

    grid = [(how, s, m) for how in BOUNDARY_FROM_AFF for s in NET_SEED_LEVELS for m in NET_SEED_MIN_SIZES]
    tune_scores = {c: _score(seeded(aff["tune"], *c)[0], g["tune"])["arand"] for c in grid}
    sc = min(tune_scores, key=tune_scores.get)
    rep = {}
    for c in grid:
        t0 = time.perf_counter()
        seg, n = seeded(aff["report"], *c)
        rep[c] = (_score(seg, g["report"]), time.perf_counter() - t0, n)
    bs = min(rep, key=lambda c: rep[c][0]["arand"])
    rows.append({"method": "skimage seeded watershed (map, seed level, seed size tuned)",
                 "seconds": round(rep[sc][1], 3), "supervoxels": rep[sc][2], "t_chosen": fmt(sc),
                 "arand_at_t_chosen": rep[sc][0]["arand"], "voi_split": rep[sc][0]["voi_split"],
                 "voi_merge": rep[sc][0]["voi_merge"], "objects": rep[sc][0]["n_seg"],
                 "best_t": fmt(bs), "best_arand": rep[bs][0]["arand"]})
    return rows


def _warm_up_emkit():
    """Compile emkit's numba kernels before anything is timed (tiny synthetic affinities)."""
    from emkit.segment import agglomerate, region_graph, watershed

    a = np.random.default_rng(0).random((3, 4, 16, 16), dtype=np.float32)
    sv = watershed(a)
    agglomerate(region_graph(sv, a)).segmentation(sv, 0.5)


def net_rows(data_dir: Path, cache: Path) -> tuple[list[dict], dict] | None:
    """The rows on the shipped isotropic net's affinities of gala-fib-tiny (None, with a message, when
    the data, torch or waterz is absent)."""
    f = Path(data_dir) / NET_FILE
    if not f.exists():
        print(f"  real data: {f} not found; skipping the net-affinity rows")
        return None
    for mod in ("torch", "waterz"):
        try:
            __import__(mod)
        except ImportError:
            print(f"  {mod} is not installed; skipping the net-affinity rows")
            return None
    with np.load(f) as z:
        image, gt = z["image"], z["labels"]
    aff, facts = net_affinities(image, cache)
    _warm_up_emkit()
    n, half = aff.shape[1], aff.shape[1] // 2
    rows = []
    for tune_part, report_part, name in ((slice(0, half), slice(half, None), f"tune z 0-{half - 1}, report z {half}-{n - 1}"),
                                         (slice(half, None), slice(0, half), f"tune z {half}-{n - 1}, report z 0-{half - 1}")):
        for r in _net_methods(aff, gt, tune_part, report_part):
            rows.append({"data": f"{NET_FILE} {facts['model']} affinities ({name})", **r})
            print(f"  {json.dumps(_json_safe(rows[-1]))}", flush=True)
    facts["shape"] = list(aff.shape[1:])
    facts["gt_objects"] = int(np.unique(gt[gt != 0]).size)
    return rows, facts


def net_verdict(rows: list[dict]) -> str:
    """What the rows say about issue 11's bar, computed from them: per scored half, every emkit row's
    held-out score against the better peer's (each at the value chosen on the other half), the best
    over the grid, and emkit's default cut against its best cut."""
    out = []
    for data in dict.fromkeys(r["data"] for r in rows):
        rs = [r for r in rows if r["data"] == data]
        em = [r for r in rs if r["method"].startswith("emkit")]
        peers = [r for r in rs if not r["method"].startswith("emkit")]
        p = min(peers, key=lambda r: r["arand_at_t_chosen"])
        pa = p["arand_at_t_chosen"]
        each = ", ".join(
            f"{r['method']} {r['arand_at_t_chosen']:.4f} ({100 * (r['arand_at_t_chosen'] / pa - 1):+.1f} %, "
            f"{'beats' if r['arand_at_t_chosen'] < pa else 'LOSES'})" for r in em)
        e_best = min(em, key=lambda r: r["best_arand"])
        p_best = min(peers, key=lambda r: r["best_arand"])
        default = next(r for r in em if r["method"].startswith("emkit segment"))
        d_key = next(k for k in default if k.startswith("arand_at_0"))
        half = data[data.index("(") + 1:-1]
        out.append(
            f"{half}: held out, better peer {p['method']} {pa:.4f} (the other "
            f"{max(r['arand_at_t_chosen'] for r in peers):.4f}); "
            f"{each}. Best over the grid on the scored half: emkit ({e_best['method']}) {e_best['best_arand']:.4f} "
            f"vs {p_best['method']} {p_best['best_arand']:.4f}. emkit defaults at the default cut "
            f"{default[d_key]:.4f} vs their own best cut {default['best_arand']:.4f} "
            f"({100 * (default[d_key] / default['best_arand'] - 1):+.0f} %, bar 20 %: "
            f"{'within' if default[d_key] <= 1.2 * default['best_arand'] else 'NOT within'}) and vs the best of any "
            f"emkit row {100 * (default[d_key] / e_best['best_arand'] - 1):+.0f} %")
    return "Computed from the rows. " + " | ".join(out) + "."


# ---------------------------------------------------------------------- the parent ----------
def _in_child(method: str, data: Path, score: bool = False, size=None) -> tuple[dict, float]:
    """Run a child; returns its JSON and its peak RSS in MB (from the kernel's rusage).

    The parent stays small (it never holds the volumes): on Linux a child's ru_maxrss starts
    from its parent's resident size when it is spawned.
    """
    out = data / f"{method}-{'score' if score else 'time'}.json"
    cmd = [sys.executable, __file__, "--child", method, "--data", str(data), "--result", str(out)]
    if score:
        cmd.append("--score")
    if size is not None:
        cmd += ["--size", ",".join(map(str, size))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return json.loads(out.read_text()), usage.ru_maxrss / 1024.0


def _json_safe(v):
    """NaN / infinity -> None, numpy scalars -> Python (valid JSON)."""
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _best(rows: list[dict], suffix: str = "") -> dict:
    key = "arand" + suffix
    ok = [r for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return min(ok, key=lambda r: r[key]) if ok else {}


def _prepare(size, data: Path) -> dict:
    """Write the phantom's affinities, gt, semantic labels and clean image as .npy (child)."""
    from emkit.affinity import noisy_affinities
    from emkit.phantom import make_phantom

    t0 = time.perf_counter()
    ph = make_phantom(size, seed=SEED)
    aff = noisy_affinities(ph.segmentation, SEED)
    np.save(data / "aff.npy", aff)
    np.save(data / "gt.npy", ph.segmentation)
    np.save(data / "semantic.npy", ph.semantic)
    np.save(data / "image.npy", ph.clean_image)
    n_gt = int(np.unique(ph.segmentation).size)
    print(f"  phantom + affinities {size}: {time.perf_counter() - t0:.1f} s, {n_gt} gt objects", flush=True)
    return {"gt_objects": n_gt}


def _tuner_timing(data: Path, moves: int = 40) -> dict:
    """ms per slider move of the ThresholdTuner widget, and the naive full-volume alternative."""
    sys.path.insert(0, str(HERE.parent / "widgets"))
    from emkit.evaluate import evaluate
    from emkit_widgets.threshold_tuner import ThresholdTuner

    aff = np.load(data / "aff.npy")
    gt = np.load(data / "gt.npy")
    image = np.load(data / "image.npy")
    sv, hist = _emkit_history(aff)
    del aff
    t0 = time.perf_counter()
    tuner = ThresholdTuner(image, sv, hist, gt, threshold=0.5)
    setup = time.perf_counter() - t0
    tuner.widget()
    slider = tuner._controls["threshold"]
    ts = np.round(np.linspace(0.01, 0.99, moves), 2)
    per_move = []
    for t in ts:
        tuner._scores.clear()  # no cache: every move computes its scores afresh
        t0 = time.perf_counter()
        slider.value = float(t)  # the widget's own redraw: cut, section, overlay, scores, PNG
        per_move.append(time.perf_counter() - t0)
    naive = []
    for t in ts[::8]:
        t0 = time.perf_counter()
        evaluate(hist.segmentation(sv, float(t)), gt, k=0)
        naive.append(time.perf_counter() - t0)
    return {"setup_ms": setup * 1e3, "median_ms": float(np.median(per_move)) * 1e3,
            "max_ms": float(np.max(per_move)) * 1e3, "naive_ms": float(np.median(naive)) * 1e3}


def write_net_rows(data_dir: Path, out: Path) -> None:
    """Run :func:`net_rows` and write its JSON to ``out`` (nothing, with a message, when skipped)."""
    from importlib.metadata import version

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emkit-bench-seg-net-") as d:
        got = net_rows(data_dir, Path(d))
    if got is None:
        return
    rows, facts = got
    res = {
        "title": "Segmentation on a real net's affinities (shipped boundary_iso on held-out gala FIB-SEM): emkit vs "
                 "waterz vs seeded watershed",
        "command": ".venv/bin/python benchmarks/segment.py --real-net",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": datetime.date.today().isoformat(), "rows": rows,
        "notes": (
            f"{NET_FILE} (FIB-SEM 10 nm, Janelia FlyEM / gala, BSD-style, HHMI; {facts['shape'][0]}x"
            f"{facts['shape'][1]}x{facts['shape'][2]} voxels, {facts['gt_objects']} labelled bodies, label 0 not "
            f"scored), never seen in training. Affinities: the shipped net `emkit infer boundary` picks for 10 nm "
            f"data ({facts['model']}, {facts['checkpoint']}, trained on gala-fib-train) through "
            f"emkit.inference.choose_model + predict(resolution=10,10,10) ({facts['infer_seconds']:.1f} s with "
            f"{facts['torch_threads']} torch thread(s)), computed once and given to every method. emkit segment: "
            "the package defaults (WatershedParams(), AgglomerationParams(): what `emkit segment AFF OUT` uses on "
            "an affinity layer) cut at 0.5, nothing tuned; emkit (defaults, t tuned): the same with the cut chosen "
            "on the tune half; emkit tune: emkit.segment.tune.tune on the tune half from the package defaults (as "
            "`emkit tune` starts on affinities), its parameters and cut applied to the other half; waterz "
            + version("waterz") + " with its defaults, threshold 1 - t chosen on the tune half, voxels it leaves at "
            "0 given the nearest label; scikit-image watershed flooding b from seeds = connected components of "
            "b < s with at least `min` voxels, b = 1 - mean affinity of the 3 edges stored at a voxel (mean3) or "
            "of the 6 touching it (mean6): b, s in " + ", ".join(map(str, NET_SEED_LEVELS)) + " and min in "
            + ", ".join(map(str, NET_SEED_MIN_SIZES)) + " chosen together on the tune half. Emkit and waterz "
            "cuts t in " + ", ".join(map(str, REAL_THRESHOLDS)) + ". Halves split in z; each row scores the half it was not "
            "tuned on (both ways). arand_at_t_chosen, voi_*, objects: at the chosen value on the scored half; "
            "best_t / best_arand: the best over the same grid on the scored half (optimistic); arand_at_0.5: the "
            "cut 0.5. Scores by emkit.evaluate (scikit-image definitions, gt 0 ignored). Also written by "
            "--real-only and the full run. seconds: segmenting the "
            "scored half once at the chosen value after warm-up (emkit: watershed + graph + agglomeration + cut; "
            "waterz: one threshold + fill; skimage: map + seeds + flood). "
            f"Total {time.perf_counter() - t0:.0f} s."),
        "conclusion": net_verdict(rows),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_safe(res), indent=2, allow_nan=False))
    print(res["conclusion"])
    print(f"wrote {out}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes; result written to --out (not results/)")
    ap.add_argument("--out", default=str(HERE / "results" / "segment.json"))
    ap.add_argument("--real-data", default=str(HERE.parent.parent / "shared" / "data" / "real-em-gt"),
                    help="folder holding " + REAL_FILE + " (default ../shared/data/real-em-gt); the real-data rows "
                         "are skipped with a message when it is absent")
    ap.add_argument("--real-only", action="store_true", help="only the real-data rows (results/segment_real.json "
                                                                "and results/segment_real_net.json)")
    ap.add_argument("--real-net", action="store_true", help="only the rows on the shipped isotropic net's affinities "
                                                            "of " + NET_FILE + " (results/segment_real_net.json)")
    ap.add_argument("--child", choices=METHODS + ["prepare", "tuner"], help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--score", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.child == "prepare":
            res = _prepare(tuple(int(v) for v in args.size.split(",")), Path(args.data))
        elif args.child == "tuner":
            res = _tuner_timing(Path(args.data))
        else:
            res = child(args.child, Path(args.data), args.score)
        Path(args.result).write_text(json.dumps(_json_safe(res)))
        return 0
    if args.quick and args.out == str(HERE / "results" / "segment.json"):
        ap.error("--quick needs --out (the committed results are for the full sizes)")

    from importlib.metadata import version

    real_out = Path(args.out).with_name(Path(args.out).stem + "_real.json")
    if args.real_net:
        write_net_rows(Path(args.real_data), Path(args.out).with_name(Path(args.out).stem + "_real_net.json"))
        return 0
    t_real = time.perf_counter()
    rrows = real_rows(Path(args.real_data))
    if rrows is not None:
        real = {
            "title": "Segmentation on a real classifier's boundary map (gala FIB-SEM): emkit vs waterz vs seeded watershed",
            "command": ".venv/bin/python benchmarks/segment.py --real-only",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "date": datetime.date.today().isoformat(), "rows": rrows,
            "notes": (
                f"{REAL_FILE} (FIB-SEM 10 nm, Janelia FlyEM / gala, BSD-style, HHMI) with its real classifier's "
                f"boundary_prob, and {TINY_FILE} (no classifier output) with a crude boundary map: the image "
                f"smoothed (Gaussian sigma {TINY_SIGMA:g} voxel), inverted and stretched "
                "(benchmarks/segment.py intensity_boundary_map). Affinities "
                "emkit.affinity.boundary_to_affinities(b) for emkit and waterz; the scikit-image "
                "watershed floods b from seeds = connected components of b < s. Each "
                "method's free parameter (emkit defaults: the cut t; emkit tune: everything, starting from "
                "emkit.segment.params.BOUNDARY_MAP_WATERSHED as `emkit tune` does for a boundary map; waterz: its "
                "threshold; skimage: the seed level s) is chosen on one half in z and the row scores the other "
                "half (both ways); the boundary-map preset row tunes nothing (cut 0.5). arand_at_t_chosen, voi_*: at the chosen value; best_arand: the best over "
                "the same grid on the scored half (optimistic); arand_at_0.5: emkit's default cut. Scores by "
                "emkit.evaluate (gt 0 ignored; segmentation 0 is one object, hence waterz + nearest-label fill). "
                "seconds: segmenting the scored half once (25x100x200 voxels) after warm-up. waterz "
                + version("waterz") + f". Total {time.perf_counter() - t_real:.0f} s.")}
        real_out.parent.mkdir(parents=True, exist_ok=True)
        real_out.write_text(json.dumps(_json_safe(real), indent=2, allow_nan=False))
        print(f"wrote {real_out}")
    write_net_rows(Path(args.real_data), Path(args.out).with_name(Path(args.out).stem + "_real_net.json"))
    if args.real_only:
        return 0

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    sizes = QUICK_SIZES if args.quick else SIZES
    rows: list[dict] = []
    extra: dict = {"waterz_version": version("waterz"), "thresholds": THRESHOLDS,
                   "parent_rss_mb": None}
    for size in sizes:
        name = "x".join(map(str, size))
        with tempfile.TemporaryDirectory(prefix="emkit-bench-seg-") as d:
            data = Path(d)
            facts, _ = _in_child("prepare", data, size=size)
            for method in METHODS:
                timing, peak = _in_child(method, data, score=False)
                scored, _ = _in_child(method, data, score=True)
                b, bf = _best(scored["rows"]), _best(scored["rows"], "_filled")
                row = {
                    "size": name, "method": method, "seconds": round(timing["seconds"], 2),
                    "peak_rss_mb": round(peak), "input_rss_mb": round(timing["input_rss_mb"]),
                    "vmhwm_mb": round(timing["hwm_mb"]),
                    "best_t": b.get("threshold"), "arand": b.get("arand"), "voi_split": b.get("voi_split"),
                    "voi_merge": b.get("voi_merge"), "objects": b.get("n_seg"),
                    "zero_voxels_pct": round(100 * scored["zero_fraction"], 2),
                    "best_t_filled": bf.get("threshold"), "arand_filled": bf.get("arand_filled"),
                    "voi_split_filled": bf.get("voi_split_filled"), "voi_merge_filled": bf.get("voi_merge_filled"),
                }
                rows.append(row)
                if timing.get("stages"):
                    extra.setdefault("emkit_stage_seconds", {})[f"{name} {method}"] = {
                        k: round(v, 2) for k, v in timing["stages"].items()}
                extra.setdefault("sweeps", {})[f"{name} {method}"] = scored["rows"]
                print(f"  {name} {method}: {json.dumps(row)}", flush=True)
            if size == sizes[0]:
                tt, _ = _in_child("tuner", data)
                rows.append({"size": name, "method": "threshold tuner, per slider move",
                             "ms_per_move": round(tt["median_ms"], 1), "ms_per_move_max": round(tt["max_ms"], 1),
                             "naive_ms_per_move": round(tt["naive_ms"], 1), "tuner_setup_ms": round(tt["setup_ms"], 1)})
                print(f"  tuner: {rows[-1]}", flush=True)
            extra.setdefault("gt_objects", {})[name] = facts["gt_objects"]
    extra["chunked_2_workers"] = "see benchmarks/segment_chunked.py (segment_chunked section)"
    extra["parent_rss_mb"] = round(_max_rss_mb())

    res = {
        "title": "Segmentation: emkit vs waterz on noisy ground-truth affinities",
        "command": ".venv/bin/python benchmarks/segment.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "notes": (
            f"Phantom seed {SEED} (clean ground truth), affinities emkit.affinity.noisy_affinities(gt, {SEED}) "
            f"given to every method. Each method produces the segmentation at the same {len(THRESHOLDS)} "
            "mean-affinity thresholds (waterz: 1 - t); `seconds` is that whole run in one process after a "
            "warm-up, `peak_rss_mb` the child process's peak resident memory (rusage, sees numba/C++), "
            "`input_rss_mb` its peak before the run (interpreter + libraries + affinities). Scores by "
            "emkit.evaluate (scikit-image definitions, gt 0 ignored) at each method's best threshold by "
            "adapted Rand error (`best_t`); `*_filled`: after giving voxels left at 0 the label of the nearest "
            "labelled voxel (`zero_voxels_pct` were 0). emkit: watershed + region graph + agglomerate, "
            "constraints off (as waterz); emkit+constraints: paper constraints with the phantom's semantic "
            "labels (semantic_min_size 2,000). waterz " + extra["waterz_version"] + " with its defaults. "
            "Threshold tuner: median (max) ms per slider move on the first size, through the widget's own "
            "redraw (re-cut, relabel the shown section, exact full-volume VOI/ARAND from the supervoxel "
            "contingency table, PNG), scores cache cleared before each move; naive = relabel the whole "
            "volume + emkit.evaluate. Chunked serial vs 2 workers: " + extra["chunked_2_workers"] + ". "
            f"Total benchmark time {time.perf_counter() - t_start:.0f} s; 1-minute load average "
            f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores "
            "(other jobs running at the same time slow every row alike)."),
        **{k: v for k, v in extra.items() if k != "chunked_2_workers"},
        "todo": extra["chunked_2_workers"] if extra["chunked_2_workers"].startswith("TODO") else None,
    }
    if res["todo"] is None:
        del res["todo"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_safe(res), indent=2, allow_nan=False))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
