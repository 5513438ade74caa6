"""Sensitivity of segmentation accuracy to the watershed parameters (size merge, dust, low, high).

Phantom seed 1, 64×256×256, noisy ground-truth affinities (the same as benchmarks/segment.py),
and the gala FIB-SEM crop's real boundary map (``--real-data``, default
``../shared/data/real-em-gt``; skipped when absent), plain mean-affinity agglomeration; for each
parameter set the best adapted Rand error over a threshold sweep and the score at the default cut
0.5. Writes results/watershed_params.json.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 1
THRESHOLDS = (0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)
#: (merge_affinity, size_threshold, dust_size, low, high)
SETS = [(0.25, 150, 50, 0.01, 0.99), (0.25, 150, 50, 0.0, 0.99), (0.25, 150, 10, 0.0, 0.99), (0.25, 150, 0, 0.0, 0.99),
        (0.25, 300, 0, 0.0, 0.99), (0.5, 150, 50, 0.0, 0.99), (0.9, 150, 50, 0.0, 0.99), (0.1, 150, 0, 0.0, 0.99),
        (0.25, 150, 50, 0.0, 0.9), (0.25, 150, 50, 0.0, 0.7), (0.25, 150, 50, 0.0, 0.5)]


def _rows(label, aff, gt, sets):
    from emkit.evaluate import sweep
    from emkit.segment import AgglomerationParams, WatershedParams, agglomerate, region_graph, watershed

    rows = []
    for merge_affinity, size_threshold, dust, low, high in sets:
        wp = WatershedParams(merge_affinity=merge_affinity, size_threshold=size_threshold, dust_size=dust, low=low,
                             high=high)
        t = time.perf_counter()
        sv = watershed(aff, wp)
        hist = agglomerate(region_graph(sv, aff), AgglomerationParams(constraints=False))
        sec = time.perf_counter() - t
        sw = sweep(hist, sv, gt, THRESHOLDS)
        best = min(sw, key=lambda r: r["arand"])
        at = next(r for r in sw if r["threshold"] == 0.5)
        rows.append({"data": label, "high": high, "low": low, "merge_affinity": merge_affinity,
                     "size_threshold": size_threshold, "dust_size": dust, "supervoxels": int(sv.max()),
                     "zero_voxels_pct": round(100 * float((sv == 0).mean()), 2), "seconds": round(sec, 2),
                     "best_t": best["threshold"], "arand": round(best["arand"], 4),
                     "voi_split": round(best["voi_split"], 3), "voi_merge": round(best["voi_merge"], 3),
                     "arand_at_0.5": round(at["arand"], 4)})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    import argparse

    import numpy as np

    from emkit.affinity import boundary_to_affinities, noisy_affinities
    from emkit.phantom import make_phantom

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real-data", default=str(HERE.parent.parent / "shared" / "data" / "real-em-gt"))
    args = ap.parse_args(argv)
    ph = make_phantom((64, 256, 256), seed=SEED)
    gt = ph.segmentation
    rows = _rows("phantom 64x256x256, noisy affinities", noisy_affinities(gt, SEED), gt, SETS)
    real = Path(args.real_data) / "gala-fib-train-50x100x200.npz"
    if real.exists():
        with np.load(real) as z:
            rows += _rows("gala FIB-SEM 50x100x200, boundary_prob", boundary_to_affinities(z["boundary_prob"]),
                          z["labels"], SETS)
    else:
        print(f"{real} not found: real-data rows skipped")
    res = {"title": "Watershed parameters: accuracy sensitivity (phantom noisy affinities; real classifier map)",
           "command": ".venv/bin/python benchmarks/watershed_params.py",
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "date": datetime.date.today().isoformat(), "rows": rows,
           "notes": ("Phantom: the same affinities and clean ground truth as the 64x256x256 rows of the emkit-vs-waterz "
                     "table. Real: the whole gala crop, affinities emkit.affinity.boundary_to_affinities(boundary_prob) "
                     "(no held-out part: this is sensitivity, not a score; see the real-data segmentation section). "
                     "seconds = watershed + region graph + agglomeration (no constraints); arand: best over the cuts "
                     f"{THRESHOLDS}; arand_at_0.5: at the default cut. low 0.01 leaves 14 % of the real volume (boundary "
                     "probability exactly 1) as background, one object: low 0 is the default. high below 0.99 is what "
                     "the saturated real map wants and ruins graded phantom affinities (merges across leaks): not a "
                     "default, a parameter for emkit tune. The dust pass costs a little accuracy on the phantom at the "
                     "price of far fewer supervoxels.")}
    (HERE / "results" / "watershed_params.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
