"""Time ``make_phantom`` for 64×512×512 voxels (and writing it); result in results/phantom.json.

Run: ``.venv/bin/python benchmarks/phantom.py`` (the first call compiles the numba kernels,
so a warm-up on a small volume runs first and is not counted).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    from emkit.phantom import make_phantom, write_phantom

    make_phantom((8, 64, 64), seed=0)  # compile the kernels
    rows = []
    for size in [(64, 512, 512)]:
        t0 = time.perf_counter()
        ph = make_phantom(size, seed=0)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            write_phantom(ph, d, progress=False)
        t2 = time.perf_counter()
        s = ph.summary()
        rows.append({"name": "make_phantom", "size": "x".join(map(str, size)), "seconds": round(t1 - t0, 2),
                     "write_seconds": round(t2 - t1, 2), "segments": s["n_segments"], "synapses": s["n_synapses"],
                     "defects": len(s["defects"])})
        print(rows[-1], flush=True)
    res = {
        "title": "Phantom generation",
        "command": ".venv/bin/python benchmarks/phantom.py",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "notes": "make_phantom with the default defects (seed 0), numba kernels compiled beforehand; "
                 "write_seconds = write_phantom to a local folder (all layers, parquet, npz). Target: < 60 s.",
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "phantom.json").write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
