"""Chunked segmentation (``segment_layers``) serial vs 2 dask workers, against the global array run.

Same noisy ground-truth affinities for every run (phantom seed 1, image-frame ground truth);
every chunked result is checked equal to the global one. Per run: wall seconds, the main process's
CPU seconds (serial rows: all the work), seconds per stage, and per octree level the tasks, the
units and edges a level passes up (what stays frozen) and the bytes of that passed-up state.
Writes results/segment_chunked.json.

Usage: ``python benchmarks/segment_chunked.py [--quick] [--sizes 128] [--out FILE] [--baseline FILE]``
(``--baseline``: a json this script wrote for an earlier code version; its rows are kept, marked
``before``, next to the new ones).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
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
SIZES = {64: ((64, 256, 256), (32, 128, 128)), 128: ((128, 512, 512), (64, 256, 256))}


def _levels(work: Path) -> dict:
    """Per stage of a finished run: fragments / units and edges passed up, bytes (FileStore npz files)."""
    def load(f):
        with np.load(f) as z:
            return {k: z[k] for k in z.files}

    data = work / ".emkit" / "segment" / "data"
    out = {}
    leaves = sorted(glob.glob(str(data / "leaf" / "*.npz")))
    if leaves:
        ls = [load(f) for f in leaves]
        out["leaves"] = {"tasks": len(ls), "units": int(sum(x["ids"].size for x in ls)),
                         "edges": int(sum(x["ea"].size for x in ls)),
                         "MB": round(sum(os.path.getsize(f) for f in leaves) / 1e6, 1)}
    for L in range(16):
        fs = sorted(glob.glob(str(data / "state" / str(L) / "*.npz")))
        if not fs:
            break
        st = [load(f) for f in fs]
        out[f"level{L}"] = {"tasks": len(fs), "units_up": int(sum(s["u_id"].size for s in st)),
                            "edges_up": int(sum(s["e_a"].size for s in st)),
                            "MB_up": round(sum(os.path.getsize(f) for f in fs) / 1e6, 1)}
    return out


def _fmt_levels(lv: dict) -> str:
    parts = []
    for k, v in lv.items():
        if k == "leaves":
            parts.append(f"leaves {v['tasks']}: {v['units']:,} fragments, {v['edges']:,} edges")
        else:
            parts.append(f"{k} {v['tasks']}: up {v['units_up']:,} units, {v['edges_up']:,} edges, {v['MB_up']} MB")
    return "; ".join(parts)


def _extrapolate(stage_seconds: dict, executed: dict, workers: int) -> float:
    """Wall seconds with ``workers`` ideal workers: each parallel stage takes ceil(tasks / W) rounds
    of its mean serial task time; one-task stages (plateaus, history) stay serial."""
    t = 0.0
    for k, s in stage_seconds.items():
        n = executed.get(k, 1) or 1
        t += math.ceil(n / workers) * s / n
    return t


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
    segment(aff[:, :8, :64, :64], chunk_size=(4, 32, 32))
    sz = "x".join(map(str, size))
    c, t = time.process_time(), time.perf_counter()
    ref, _, _ = segment(aff, threshold=0.5)
    rows = [{"size": sz, "method": "global array (segment)", "workers": "-", "chunk": "-",
             "seconds": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - c, 2)}]
    rows[-1]["MVx/s"] = round(ref.size / rows[-1]["seconds"] / 1e6, 2)
    print(rows[-1], flush=True)
    small = str(tmp / f"aff_{size[0]}_warm")
    Layer.create(small, "affinities", (16, 128, 128)).write(np.ascontiguousarray(aff[:, :16, :128, :128]))
    for w in workers_list:
        cluster = Cluster(n_workers=w, quiet=True) if w else None
        try:
            if cluster:  # warm the workers (imports, numba caches) on a small run first: not timed
                segment_layers(small, str(tmp / f"warm_{size[0]}_{w}"), chunk_size=(8, 64, 64), progress=False,
                               client=cluster)
            out = tmp / f"seg_{size[0]}_{w}"
            c, t = time.process_time(), time.perf_counter()
            rep = segment_layers(url, str(out), chunk_size=chunk, threshold=0.5, progress=False,
                                 **({"client": cluster} if cluster else {"workers": 0}))
            sec, cpu = time.perf_counter() - t, time.process_time() - c
        finally:
            if cluster:
                cluster.close()
        seg = Layer.open(rep["segmentation"]).read()
        lv = _levels(out)
        row = {"size": sz, "method": "segment_layers" + (" (dask)" if w else " (serial)"),
               "workers": w, "chunk": ",".join(map(str, chunk)), "seconds": round(sec, 2),
               "cpu_s": round(cpu, 2) if not w else "-", "MVx/s": round(seg.size / sec / 1e6, 2),
               "x_global": round(sec / rows[0]["seconds"], 2),
               "equal_to_global": bool(np.array_equal(seg, ref)),
               "stage_seconds": " ".join(f"{k} {v:.1f}" for k, v in rep["stage_seconds"].items()),
               "levels": _fmt_levels(lv), "load_1min": round(os.getloadavg()[0], 1)}
        if not w:
            row["est_16_64_workers_s"] = " / ".join(
                f"{_extrapolate(rep['stage_seconds'], rep['executed'], n):.1f}" for n in (16, 64))
        rows.append(row)
        print(row, flush=True)
    serial = [r for r in rows if r.get("workers") == 0]
    for r in rows:
        if r.get("workers") not in (0, "-") and serial:
            r["speedup_over_serial"] = round(serial[0]["seconds"] / r["seconds"], 2)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, result printed only")
    ap.add_argument("--sizes", default="64,128", help="which sizes (64: 64x256x256, 128: 128x512x512)")
    ap.add_argument("--out", default=str(HERE / "results" / "segment_chunked.json"), help="result json")
    ap.add_argument("--baseline", default=None, help="an earlier run's json: its rows are kept, marked 'before'")
    ap.add_argument("--label", default=None, help="version label of this run (default: git revision)")
    args = ap.parse_args(argv)
    sizes = [((16, 128, 128), (8, 64, 64))] if args.quick else [SIZES[int(s)] for s in args.sizes.split(",")]
    load0 = os.getloadavg()[0]
    label = args.label
    if label is None:
        try:
            label = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                   cwd=HERE.parent).stdout.strip() + "+wt"
        except OSError:  # pragma: no cover
            label = "?"
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for size, chunk in sizes:
            rows += run(size, chunk, [0, 2], Path(d))
    for r in rows:
        r["version"] = label
    if args.quick:
        print(json.dumps(rows, indent=1))
        return 0
    before = ""
    if args.baseline:
        old = json.loads(Path(args.baseline).read_text())
        rows = [{**r, "version": r.get("version", "?") if "before" in str(r.get("version"))
                 else f"before: {r.get('version', '?')}"} for r in old["rows"]] + rows
        before = f" Rows marked before: {old.get('notes_short', '')}"
    load = os.getloadavg()[0]
    res = {"title": "Chunked segmentation: serial vs 2 dask workers (equal to the global run)",
           "command": ".venv/bin/python benchmarks/segment_chunked.py",
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "date": datetime.date.today().isoformat(), "rows": rows,
           "notes_short": f"version {label}, load average {load0:.1f} at the start, {load:.1f} at the end",
           "notes": (f"Noisy image-frame ground-truth affinities of phantom seed {SEED}; threshold 0.5. seconds: wall "
                     "time of one segment_layers call reading the affinity layer (gzip, storage chunks 16x128x128) "
                     "and writing supervoxels, history and segmentation (cluster start and a warm-up run on 16x128x128 "
                     "excluded for dask rows); "
                     "cpu_s: CPU seconds of the calling process (serial rows: all the work; on a loaded machine "
                     "wall/CPU shows the contention); x_global: seconds over the global row's; equal_to_global: the "
                     "written segmentation equals emkit.segment.segment on the whole array. levels: per octree "
                     "level the tasks and what it passes up (units still frozen, their edges, MB of npz state). "
                     "est_16_64_workers_s: the serial run's stage times spread over 16 / 64 ideal workers "
                     "(ceil(tasks / W) rounds of the mean task time per stage). Load average "
                     f"{load0:.1f} at the start, {load:.1f} at the end (2 cores shared with other jobs).{before}")}
    Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
