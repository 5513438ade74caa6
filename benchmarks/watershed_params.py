"""Sensitivity of segmentation accuracy to the watershed parameters (size merge and dust).

Phantom seed 1, 64×256×256, noisy ground-truth affinities (the same as benchmarks/segment.py),
plain mean-affinity agglomeration; for each parameter set the best adapted Rand error over a
threshold sweep. Writes results/watershed_params.json.
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
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)
SETS = [(0.25, 150, 50), (0.25, 150, 10), (0.25, 150, 5), (0.25, 150, 0), (0.25, 300, 0), (0.5, 150, 50),
        (0.9, 150, 50), (0.1, 150, 0)]


def main() -> int:
    from emkit.affinity import noisy_affinities
    from emkit.evaluate import adapted_rand_error, voi
    from emkit.phantom import make_phantom
    from emkit.segment import AgglomerationParams, WatershedParams, agglomerate, region_graph, watershed

    ph = make_phantom((64, 256, 256), seed=SEED)
    gt = ph.segmentation
    aff = noisy_affinities(gt, SEED)
    rows = []
    for merge_affinity, size_threshold, dust in SETS:
        wp = WatershedParams(merge_affinity=merge_affinity, size_threshold=size_threshold, dust_size=dust)
        t = time.perf_counter()
        sv = watershed(aff, wp)
        hist = agglomerate(region_graph(sv, aff), AgglomerationParams(constraints=False))
        sec = time.perf_counter() - t
        best = None
        for th in THRESHOLDS:
            seg = hist.segmentation(sv, th)
            a = adapted_rand_error(seg, gt)[0]
            if best is None or a < best[1]:
                best = (th, a, *voi(seg, gt))
        rows.append({"merge_affinity": merge_affinity, "size_threshold": size_threshold, "dust_size": dust,
                     "supervoxels": int(sv.max()), "seconds": round(sec, 2), "best_t": best[0],
                     "arand": round(best[1], 4), "voi_split": round(best[2], 3), "voi_merge": round(best[3], 3)})
        print(rows[-1], flush=True)
    res = {"title": "Watershed parameters: accuracy sensitivity (64x256x256 phantom, noisy affinities)",
           "command": ".venv/bin/python benchmarks/watershed_params.py",
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "date": datetime.date.today().isoformat(), "rows": rows,
           "notes": ("Same affinities and clean ground truth as the 64x256x256 rows of the emkit-vs-waterz table; "
                     "seconds = watershed + region graph + agglomeration (no constraints). The dust pass (small "
                     "fragments join their best neighbour along any edge) costs accuracy: dust_size 0 leaves them "
                     "to the mean-affinity agglomeration and beats waterz on both adapted Rand and VOI, at the price "
                     "of ~30x more supervoxels and stray single-voxel fragments on membranes at high thresholds.")}
    (HERE / "results" / "watershed_params.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
