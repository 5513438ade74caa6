"""emkit's segmentation against waterz on the same noisy ground-truth affinities.

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
each method is reported at its best threshold by adapted Rand error. Both methods leave some
voxels at 0 (no affinity above their low threshold), which counts as one object; the
``*_filled`` columns score the segmentation after giving each 0 voxel the label of its nearest
labelled voxel (Euclidean, in voxels).

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes; result written to --out (not results/)")
    ap.add_argument("--out", default=str(HERE / "results" / "segment.json"))
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
