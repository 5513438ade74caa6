"""Score the shipped semantic net on a phantom whose seed training never used.

phantom (64×256×256, default defects, seed 0 — training used 101–106, validation 199) →
``emkit infer semantic`` (5 probability channels) → ``emkit evaluate --semantic`` against the
true classes in the image frame (``gt/image_frame/semantic``; voxels of class 0 are not counted).
Writes results/shipped_semantic.json and prints the per-class IoU.
With ``--every-class`` the phantom is made large enough in y and x for a soma and a blood vessel
(``PhantomParams.soma_min_extent_nm`` / ``vessel_min_extent_nm`` at 8 nm: 64×384×384 by default),
the script refuses to score unless all five classes are present, and the result goes to
results/shipped_semantic_every_class.json.
Usage: ``python benchmarks/shipped_semantic.py [--model semantic] [--seed 0] [--every-class] [--keep DIR]``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _cli import machine, sh  # noqa: E402


def _every_class_size() -> str:
    """z,y,x of a phantom at 40×8×8 nm whose y and x extents reach the soma and vessel minimum (384 = 3 µm + margin)."""
    import math

    from emkit.phantom.params import PhantomParams

    p = PhantomParams()
    yx = math.ceil(max(p.soma_min_extent_nm, p.vessel_min_extent_nm) / 8.0 / 64) * 64
    return f"64,{yx},{yx}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="semantic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default=None, help="phantom size z,y,x (default 64,256,256; 64,384,384 with --every-class)")
    ap.add_argument("--every-class", action="store_true",
                    help="a phantom that holds every class (soma, axon, dendrite, glia, vessel); fails if one is missing")
    ap.add_argument("--keep", help="folder to keep the dataset in (default: a temporary one)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write results/")
    args = ap.parse_args(argv)
    if args.size is None:
        args.size = _every_class_size() if args.every_class else "64,256,256"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.keep or tmp)
        if not (d / "gt" / "phantom.json").is_file():
            sh("phantom", d, "--size", args.size, "--seed", args.seed, "--quiet")
        _, t_inf = sh("infer", args.model, d / "image", d / "semantic_prob", "--workers", "0", "--quiet", "--overwrite")
        res, _ = sh("evaluate", "--semantic", d / "semantic_prob", d / "gt/image_frame/semantic")
        s = json.loads(res)
    if args.every_class:
        missing = [name for name, v in s["per_class"].items() if not v["gt_voxels"]]
        if missing:
            raise SystemExit(f"--every-class: the phantom (seed {args.seed}, size {args.size}) lacks {missing}; "
                             "choose a larger --size or another --seed")
    rows = [{"model": args.model, "phantom seed": args.seed, "size": args.size.replace(",", "x"), "class": name,
             "iou": None if v["iou"] is None else round(v["iou"], 4), "true voxels": v["gt_voxels"],
             "predicted voxels": v["pred_voxels"]} for name, v in s["per_class"].items()]
    rows.append({"model": args.model, "phantom seed": args.seed, "size": args.size.replace(",", "x"),
                 "class": "mean (5 classes)", "iou": round(s["mean_iou"], 4), "true voxels": s["n_voxels"],
                 "predicted voxels": s["n_voxels"]})
    for r in rows:
        print(r, flush=True)
    every = " --every-class" if args.every_class else ""
    out = {"title": "Shipped semantic net: per-class IoU on a fresh-seed phantom"
                    + (" that holds every class" if args.every_class else ""),
           "command": f".venv/bin/python benchmarks/shipped_semantic.py --model {args.model} --seed {args.seed}"
                      f"{every} --size {args.size}",
           "machine": machine(),
           "date": datetime.date.today().isoformat(), "rows": rows,
           "notes": (f"emkit phantom (default defects) → emkit infer {args.model} (serial, CPU, {t_inf:.0f} s) → "
                     "emkit evaluate --semantic against gt/image_frame/semantic (the most probable class per voxel; "
                     "voxels of true class 0, background where no cell is, not counted). "
                     "Goal (issue 4): mean IoU >= 0.8 over the five classes.")}
    if not args.no_write:
        name = "shipped_semantic_every_class.json" if args.every_class else "shipped_semantic.json"
        (HERE / "results" / name).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
