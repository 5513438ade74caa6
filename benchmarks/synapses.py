"""Chunked cleft connected components (map-reduce, serial and 2 dask workers) against one cc3d call.

Input: the clefts of a phantom (seed 1, 64x512x512 at 40x8x8 nm) blurred into a probability map
(Gaussian sigma 0.5, 1.5, 1.5 voxels, scaled to max 1). Rows: one ``cc3d.connected_components``
call on the same thresholded volume (26-connected, no statistics, no size filter); the array
function ``emkit.synapse.cleft_components`` (cc3d + statistics + size filter + renumbering); and
``cleft_components_layers`` over Precomputed layers (read, map, reduce, relabel, write layer and
Parquet table), each checked equal to the array function. Writes results/synapse_components.json.

Second part (issue 8 §8): the whole ``emkit synapses`` command (cleft inference → components →
partner assignment → merge → table, one process, chunked) on a written phantom (seed 1, with its
defects) and its true segmentation, timed as a user runs it (a subprocess, imports and model loading
included), in voxels per second, with the per-step seconds the command reports. Models: the shipped
``cleft`` / ``partner`` nets when installed, else the phantom's ground truth stands in for the
missing one (an oracle row, labelled so: it measures the plumbing, not the nets). Writes
results/synapse_pipeline.json.
Usage: ``python benchmarks/synapses.py [--quick] [--only components|pipeline]``.
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
    import cc3d
    import pandas as pd
    from scipy import ndimage as ndi

    from emkit.io import Layer
    from emkit.phantom import make_phantom
    from emkit.runtime import Cluster
    from emkit.synapse import CleftParams, cleft_components, cleft_components_layers

    ph = make_phantom(size, seed=SEED, defects=None)
    prob = ndi.gaussian_filter((ph.clefts > 0).astype(np.float32), (0.5, 1.5, 1.5))
    prob = (prob / max(float(prob.max()), 1e-6)).astype(np.float32)
    url = str(tmp / "prob")
    Layer.create(url, "probability", size, num_channels=1).write(prob)
    prm = CleftParams()
    sz = "x".join(map(str, size))
    n_true = len(np.unique(ph.clefts)) - 1

    t = time.perf_counter()
    _, n_raw = cc3d.connected_components(prob > prm.threshold, connectivity=26, return_N=True)
    sec = time.perf_counter() - t
    rows = [{"size": sz, "method": "one cc3d call (labels only)", "workers": "-", "chunk": "-",
             "seconds": round(sec, 3), "MVx/s": round(prob.size / sec / 1e6, 1), "clefts": int(n_raw)}]
    t = time.perf_counter()
    ref, tab = cleft_components(prob, params=prm)
    sec = time.perf_counter() - t
    rows.append({"size": sz, "method": "cleft_components (array)", "workers": "-", "chunk": "-",
                 "seconds": round(sec, 3), "MVx/s": round(prob.size / sec / 1e6, 1), "clefts": len(tab)})
    print(rows, flush=True)
    for w in workers_list:
        cluster = Cluster(n_workers=w, quiet=True) if w else None
        try:
            t = time.perf_counter()
            rep = cleft_components_layers(url, str(tmp / f"out{w}"), chunk_size=chunk, params=prm, progress=False,
                                          **({"client": cluster} if cluster else {"workers": 0}))
            sec = time.perf_counter() - t
        finally:
            if cluster:
                cluster.close()
        out = Layer.open(rep["segmentation"]).read()
        t2 = pd.read_parquet(rep["table"])
        cols = [c for c in tab.columns if c != "mean_prob"]
        equal = bool(np.array_equal(out, ref) and len(t2) == len(tab) and (t2[cols].values == tab[cols].values).all()
                     and np.allclose(t2.mean_prob, tab.mean_prob, rtol=1e-12))
        rows.append({"size": sz, "method": "cleft_components_layers" + (" (dask)" if w else " (serial)"),
                     "workers": w, "chunk": ",".join(map(str, chunk)), "seconds": round(sec, 3),
                     "MVx/s": round(prob.size / sec / 1e6, 1), "clefts": rep["n_clefts"], "equal_to_array": equal,
                     "stages_s": " ".join(f"{k} {v:.2f}" for k, v in rep["seconds"].items())})
        print(rows[-1], flush=True)
    for r in rows:
        r["phantom_clefts"] = n_true
    return rows


def run_pipeline(size, tmp: Path, workers=(0,)) -> list[dict]:
    """``emkit synapses`` on a written phantom, timed per run (see the module docstring)."""
    sys.path.insert(0, str(HERE))
    from _cli import sh

    from emkit.nets import available_models
    from emkit.phantom import make_phantom, write_phantom

    ds = tmp / "ph"
    ph = make_phantom(size, seed=SEED)
    write_phantom(ph, str(ds), progress=False)
    have = available_models()
    models = {w: (w if w in have else f"truth:{ds}") for w in ("cleft", "partner")}
    rows = []
    nvox = int(np.prod(size))
    for w in workers:
        out = tmp / f"syn{w}"
        text, sec = sh("synapses", ds / "image", ds / "gt/image_frame/segmentation", out, "--cleft-model",
                       models["cleft"], "--partner-model", models["partner"], "--workers", w, "--quiet")
        rep = json.loads(text)
        rows.append({"size": "x".join(map(str, size)), "workers": w,
                     "cleft": "shipped net" if models["cleft"] == "cleft" else "oracle (truth)",
                     "partner": "shipped net" if models["partner"] == "partner" else "oracle (truth)",
                     "seconds": round(sec, 2), "kVx/s": round(nvox / sec / 1e3, 1),
                     "synapses": rep["n_synapses"], "phantom_synapses": len(ph.synapses),
                     "steps_s": " ".join(f"{k} {v:.2f}" for k, v in rep["seconds"].items())})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small size, result printed only")
    ap.add_argument("--only", choices=["components", "pipeline"], default=None, help="run one part only")
    args = ap.parse_args(argv)
    if args.only != "components":
        psize = (16, 128, 128) if args.quick else (32, 256, 256)
        with tempfile.TemporaryDirectory() as d:
            prow = run_pipeline(psize, Path(d), workers=(0,) if args.quick else (0, 2))
        if args.quick:
            print(json.dumps(prow, indent=1))
        else:
            load = os.getloadavg()[0]
            res = {"title": "The whole `emkit synapses` command: throughput per voxel (CPU)",
                   "command": ".venv/bin/python benchmarks/synapses.py --only pipeline",
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                   "date": datetime.date.today().isoformat(), "rows": prow,
                   "notes": ("One `emkit synapses IMAGE SEG OUT` subprocess per row on a phantom (seed 1, its defects) "
                             "with its true segmentation; seconds: wall time of the command (Python start, imports, "
                             "model loading, writing every output); steps_s: the command's own per-step seconds "
                             "(cleft_prob = cleft inference, clefts = connected components across chunks, partners = "
                             "assignment, synapses = merge + table + graph). Rows whose cleft or partner column says "
                             "'oracle (truth)' ran with the phantom's ground truth in place of a net that was not "
                             "installed: they time the plumbing, not the net. No GPU on this machine. Shared 2-core "
                             f"machine; load average at the end: {load:.1f}.")}
            (HERE / "results" / "synapse_pipeline.json").write_text(json.dumps(res, indent=1))
        if args.only == "pipeline":
            return 0
    size, chunk = ((16, 128, 128), (8, 64, 64)) if args.quick else ((64, 512, 512), (32, 256, 256))
    with tempfile.TemporaryDirectory() as d:
        rows = run(size, chunk, [0, 2], Path(d))
    if args.quick:
        print(json.dumps(rows, indent=1))
        return 0
    load = os.getloadavg()[0]
    res = {"title": "Cleft connected components: chunked map-reduce (serial, 2 dask workers) vs one cc3d call",
           "command": ".venv/bin/python benchmarks/synapses.py",
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "date": datetime.date.today().isoformat(), "rows": rows,
           "notes": (f"Phantom seed {SEED} clefts blurred into a probability (threshold 0.5, 26-connected, size filter "
                     "40 voxels at 40x8x8 nm). seconds: wall time; for the layer rows one cleft_components_layers call "
                     "reading the probability layer and writing the uint64 layer and the Parquet table (cluster start "
                     "excluded); stages_s: map / reduce (in the client) / relabel. equal_to_array: same labels voxel "
                     "for voxel and same table as cleft_components on the whole array. clefts: components after the "
                     "size filter (the cc3d row: before it; the unblurred phantom mask has exactly one 26-connected "
                     "component per cleft, so the extra components are thin cleft parts that the blur pushed below 0.5). The volume is small "
                     "(16.8 MVx, ~0.1 s of work): the layer rows are dominated by fixed costs (Precomputed I/O; for dask, "
                     "first tasks on fresh workers and task shipping), so the serial/dask ratio says nothing of large "
                     "volumes. Shared 2-core machine; load average at the end: "
                     f"{load:.1f}.")}
    (HERE / "results" / "synapse_components.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
