"""Chunked segmentation (``segment_layers``) serial vs 2 dask workers, against the global array run.

Same noisy ground-truth affinities for every run (phantom seed 1, image-frame ground truth);
every chunked result is checked equal to the global one. Writes results/segment_chunked.json.
Usage: ``python benchmarks/segment_chunked.py [--quick]``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 1


def run(size, chunk, workers_list, tmp: Path) -> list[dict]:
    from emkit.affinity import noisy_affinities
    from emkit.io import Layer
    from emkit.phantom import make_phantom
    from emkit.runtime import Cluster
    from emkit.segment import segment, segment_layers

    ph = make_phantom(size, seed=SEED)
    aff = noisy_affinities(ph.in_image_frame(ph.segmentation), SEED)
    url = str(tmp / f"aff_{size[0]}")
    Layer.create(url, "affinities", size).write(aff)
    segment(aff[:, :8, :64, :64])  # compile numba kernels before timing
    t = time.perf_counter()
    ref, _, _ = segment(aff, threshold=0.5)
    rows = [{"size": "x".join(map(str, size)), "method": "global array (segment)", "workers": "-", "chunk": "-",
             "seconds": round(time.perf_counter() - t, 2)}]
    rows[-1]["MVx/s"] = round(ref.size / rows[-1]["seconds"] / 1e6, 2)
    for w in workers_list:
        cluster = Cluster(n_workers=w, quiet=True) if w else None
        try:
            out = tmp / f"seg_{size[0]}_{w}"
            t = time.perf_counter()
            rep = segment_layers(url, str(out), chunk_size=chunk, threshold=0.5, progress=False,
                                 **({"client": cluster} if cluster else {"workers": 0}))
            sec = time.perf_counter() - t
        finally:
            if cluster:
                cluster.close()
        seg = Layer.open(rep["segmentation"]).read()
        rows.append({"size": "x".join(map(str, size)), "method": "segment_layers" + (" (dask)" if w else " (serial)"),
                     "workers": w, "chunk": ",".join(map(str, chunk)), "seconds": round(sec, 2),
                     "MVx/s": round(seg.size / sec / 1e6, 2), "equal_to_global": bool(np.array_equal(seg, ref))})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, result printed only")
    args = ap.parse_args(argv)
    sizes = [((16, 128, 128), (8, 64, 64))] if args.quick else [((64, 256, 256), (32, 128, 128)),
                                                               ((128, 512, 512), (64, 256, 256))]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for size, chunk in sizes:
            rows += run(size, chunk, [0, 2], Path(d))
    if args.quick:
        print(json.dumps(rows, indent=1))
        return 0
    load = os.getloadavg()[0]
    res = {"title": "Chunked segmentation: serial vs 2 dask workers (equal to the global run)",
           "command": ".venv/bin/python benchmarks/segment_chunked.py",
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "date": datetime.date.today().isoformat(), "rows": rows,
           "notes": (f"Noisy image-frame ground-truth affinities of phantom seed {SEED}; threshold 0.5. seconds: wall "
                     "time of one segment_layers call reading the affinity layer and writing supervoxels, history and "
                     "segmentation (cluster start excluded for dask rows); equal_to_global: the written segmentation "
                     f"equals emkit.segment.segment on the whole array. Load average at the end: {load:.1f}.")}
    (HERE / "results" / "segment_chunked.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
