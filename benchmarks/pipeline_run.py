"""The whole pipeline (`emkit run` of the shipped phantom configuration) on a 64×512×512 phantom,
stage by stage: wall seconds per stage from the run's own records (RUN/provenance/<stage>.json),
voxels per second, and the scores the run's evaluate stage wrote.

    python benchmarks/pipeline_run.py [--shape 64,512,512] [--workers 0] [--keep DIR]

Writes results/pipeline_run.json (RESULTS.md via report.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _cli import machine, sh  # noqa: E402


def _r(v):
    return None if v is None else round(float(v), 3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="64,512,512", help="phantom size z,y,x (default 64,512,512)")
    ap.add_argument("--workers", type=int, default=0, help="0: in one process; N: a local dask cluster")
    ap.add_argument("--keep", default=None, help="run folder to keep (default: a temporary one)")
    a = ap.parse_args(argv)
    shape = [int(v) for v in a.shape.split(",")]
    voxels = shape[0] * shape[1] * shape[2]
    with tempfile.TemporaryDirectory(prefix="emkit-bench-run-") as tmp:
        run = Path(a.keep or tmp) / "run"
        args = ["run", "phantom", "--output", run, "--set", f"input.phantom.shape={a.shape}", "--workers", a.workers,
                "--quiet"]
        _, wall = sh(*args)
        rows = []
        for name in ("phantom", "align", "masks", "boundary", "semantic", "segment", "synapses", "pyramids", "meshes",
                     "skeletons", "evaluate"):
            p = run / "provenance" / f"{name}.json"
            if not p.exists():
                continue
            rec = json.loads(p.read_text())
            s = float(rec["seconds"])
            rows.append({"stage": name, "seconds": round(s, 1), "MVx/s": round(voxels / s / 1e6, 2) if s > 0 else None,
                         "share": None})
        total = sum(r["seconds"] for r in rows)
        for r in rows:
            r["share"] = f"{100 * r['seconds'] / total:.0f} %"
        scores = json.loads((run / "evaluation" / "scores.json").read_text())
    seg = scores.get("segmentation", {})
    syn = scores.get("synapses", {}) or {}
    res = {"title": "The whole pipeline: emkit run of the shipped phantom configuration, stage by stage",
           "command": f".venv/bin/python benchmarks/pipeline_run.py --shape {a.shape} --workers {a.workers}",
           "machine": machine(), "date": datetime.date.today().isoformat(), "rows": rows,
           "wall_seconds": round(wall, 1), "stage_seconds": round(total, 1),
           "scores": {"arand": seg.get("arand"), "voi_split": seg.get("voi_split"), "voi_merge": seg.get("voi_merge"),
                      **{k: syn.get(k) for k in ("precision", "recall", "partner_accuracy", "edges_found",
                                                  "edges_missed", "edges_spurious")}},
           "notes": (f"emkit run phantom --set input.phantom.shape={a.shape} (emkit/pipeline/configs/phantom.yaml: "
                     f"masks from the misalignment maps, shipped boundary net, segment at 0.5, shipped cleft and "
                     f"partner nets, pyramids, meshes, skeletons, evaluate), {voxels / 1e6:.1f} M voxels, "
                     f"{'in one process' if a.workers == 0 else f'{a.workers} dask workers'}; seconds from the "
                     f"run's own stage records; {wall:.0f} s wall for the command (Python start-up, imports and "
                     f"the viewer-free summary included). MVx/s = voxels / stage seconds. Load average at the end "
                     f"{os.getloadavg()[0]:.1f}. Scores of the run's evaluate stage: adapted Rand "
                     f"{_r(seg.get('arand'))}, synapse precision {_r(syn.get('precision'))}, recall "
                     f"{_r(syn.get('recall'))}, partner accuracy {_r(syn.get('partner_accuracy'))}, edges found / "
                     f"missed / spurious {syn.get('edges_found')} / {syn.get('edges_missed')} / "
                     f"{syn.get('edges_spurious')}.")}
    (HERE / "results" / "pipeline_run.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
