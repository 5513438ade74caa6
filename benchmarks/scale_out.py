"""Throughput against worker count, and the memory a worker needs, for chunked segmentation (issue 12 §3).

Run: ``.venv/bin/python benchmarks/scale_out.py [--sizes 64,256,256 64,512,512] [--workers 1,2]``.

For each volume (noisy affinities of a phantom's true segmentation, storage chunk 16×128×128,
task chunk 32×128×128): ``emkit.segment.segment_layers`` on a local dask cluster of N
single-threaded worker processes (``emkit.runtime.scaling.scaling_table``; cluster start-up not
timed), and the largest resident memory any worker process reached (``ru_maxrss`` read in each
worker after its row). The same chunk on a larger volume should need the same worker memory: the
bound is the task, not the volume. Writes results/scale_out.json and replaces its own section of
RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHUNK = (32, 128, 128)


def _peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["64,256,256", "64,512,512"])
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args(argv)
    import numpy as np

    from emkit.affinity import noisy_affinities
    from emkit.io import Layer
    from emkit.phantom import make_phantom
    from emkit.runtime import Cluster
    from emkit.runtime.scaling import scaling_table
    from emkit.segment import segment_layers

    counts = [int(v) for v in args.workers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size_s in args.sizes:
            size = tuple(int(v) for v in size_s.split(","))
            ph = make_phantom(size, seed=1, defects="none")
            aff = noisy_affinities(ph.segmentation, 1)
            url = f"{tmp}/aff_{'x'.join(map(str, size))}"
            Layer.create(url, "affinities", size, resolution=ph.resolution, chunk_size=(16, 128, 128)).write(aff)
            peaks = {}

            def make(n):
                return Cluster(n_workers=n, quiet=True)

            def run(c, size=size, url=url):
                out = segment_layers(url, f"{tmp}/seg_{'x'.join(map(str, size))}", chunk_size=CHUNK, client=c,
                                     overwrite=True, progress=False)
                peaks[len(c.client.nthreads())] = max(c.client.run(_peak_rss_mb).values())
                return out

            t0 = time.perf_counter()
            table = scaling_table(run, counts, voxels=int(np.prod(size)), make_cluster=make, progress=False)
            for rec in table.drop(columns="dashboard").to_dict("records"):
                n = int(rec["workers"])
                rows.append({"volume": "x".join(map(str, size)), "voxels": int(np.prod(size)),
                             "task_chunk": "x".join(map(str, CHUNK)), "workers": n,
                             "seconds": round(float(rec["seconds"]), 2),
                             "voxels_per_s": round(float(rec["voxels_per_s"])),
                             "speedup": round(float(rec["speedup"]), 2),
                             "peak_worker_rss_mb": round(peaks.get(n, float("nan")), 1)})
                print(rows[-1], flush=True)
            print(f"  ({time.perf_counter() - t0:.0f} s with cluster start-ups)", flush=True)
    load = os.getloadavg()[0]
    res = {"benchmark": "scale_out",
           "title": "Scale-out: chunked segmentation throughput against workers, and peak worker memory",
           "command": ("python benchmarks/scale_out.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
           "date": datetime.date.today().isoformat(), "machine": _machine(), "rows": rows,
           "notes": (f"Local dask cluster on loopback, single-threaded worker processes, this 2-core machine "
                     f"(load average at the end {load:.1f}); noisy affinities of phantom seed 1; "
                     "emkit.runtime.scaling.scaling_table (start-up not timed). peak_worker_rss_mb: the largest "
                     "resident memory any worker process reached, which includes the worker's own imports "
                     "(numpy, numba, dask: ~200-300 MB). With the same task chunk, a 4x larger volume should "
                     "leave it about the same: the memory a worker needs is bound by the task, not the volume.")}
    out = HERE / "results" / "scale_out.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    _splice(res)
    print(f"wrote {out}")
    return 0


def _machine():
    sys.path.insert(0, str(HERE))
    from report import machine

    return machine()


def _splice(res):
    """Replace (or append) this benchmark's section of RESULTS.md, leaving the others as they are."""
    sys.path.insert(0, str(HERE))
    from report import section

    path = HERE / "RESULTS.md"
    text = path.read_text()
    new = section(res)
    head = f"## {res['title']}"
    if head in text:
        start = text.index(head)
        nxt = text.find("\n## ", start + 1)
        text = text[:start] + new + ("\n" + text[nxt + 1:] if nxt >= 0 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
