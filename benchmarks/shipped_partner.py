"""Score the shipped partner net on a phantom whose seed training never used.

phantom (``--size``, no defects so that image and ground truth share one frame, seed 0 — training
used 101–112, validation 199) → ``assign_partners`` on the ground-truth clefts with

1. the ground-truth segmentation: partner accuracy = clefts whose pre and post ids both equal the
   phantom's (paper: 100 % on its 81 test clefts, 96 % on its 110 validation clefts);
2. (``--boundary``) the segmentation of the shipped boundary net (``emkit infer boundary`` →
   ``emkit segment``): a predicted segment counts as the ground-truth segment it overlaps most
   (voxels), so a cleft is right when its pre and post segments are mostly the true partners —
   the cost of segmentation errors shows.

Writes results/shipped_partner.json. Usage:
``python benchmarks/shipped_partner.py [--model partner] [--seed 0] [--size 64,384,384] [--boundary]``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _cli import machine, sh  # noqa: E402


def majority_map(pred: np.ndarray, gt: np.ndarray) -> dict:
    """predicted segment id -> the ground-truth id it overlaps most (0 excluded from pred)."""
    m = pred != 0
    pairs, cnt = np.unique(np.stack([pred[m], gt[m]]), axis=1, return_counts=True)
    order = np.lexsort((-cnt, pairs[0]))
    out = {}
    for i in order:
        out.setdefault(int(pairs[0, i]), int(pairs[1, i]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="partner")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="64,384,384")
    ap.add_argument("--boundary", action="store_true", help="also with the shipped boundary net's segmentation")
    ap.add_argument("--threshold", type=float, default=0.5, help="emkit segment --threshold for --boundary")
    ap.add_argument("--keep", help="folder to keep the dataset in (default: a temporary one)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write results/")
    args = ap.parse_args(argv)
    import pandas as pd

    from emkit.io import Layer
    from emkit.synapse import assign_partners, partner_accuracy

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.keep or tmp)
        _, t_ph = sh("phantom", d, "--size", args.size, "--seed", args.seed, "--defects", "none", "--quiet")
        image = Layer.open(str(d / "image")).read()
        clefts = Layer.open(str(d / "gt/clefts")).read()
        gt_seg = Layer.open(str(d / "gt/segmentation")).read()
        truth = pd.read_parquet(d / "gt/synapses.parquet")
        res = tuple(Layer.open(str(d / "image")).resolution)
        base = {"model": args.model, "phantom seed": args.seed, "size": args.size.replace(",", "x"),
                "clefts": "ground truth"}
        t = time.perf_counter()
        df = assign_partners(image, clefts, gt_seg, resolution=res, model=args.model, progress=False)
        t_as = time.perf_counter() - t
        acc = partner_accuracy(df, truth)
        rows.append({**base, "segmentation": "ground truth", "n clefts": acc["n"], "correct": acc["correct"],
                     "accuracy": round(acc["accuracy"], 4), "pre correct": acc["pre_correct"],
                     "post correct": acc["post_correct"], "assign_s": round(t_as, 1)})
        print(rows[-1], flush=True)
        wrong = df.merge(truth, on="cleft_id", suffixes=("", "_true"))
        wrong = wrong[(wrong.pre_id != wrong.pre_id_true) | (wrong.post_id != wrong.post_id_true)]
        if len(wrong):
            print("wrong:", wrong[["cleft_id", "pre_id", "post_id", "pre_id_true", "post_id_true",
                                   "assignment_score"]].to_string(index=False), flush=True)
        if args.boundary:
            _, t_inf = sh("infer", "boundary", d / "image", d / "affinities", "--heads", "affinity", "--workers", "0",
                          "--quiet")
            _, t_seg = sh("segment", d / "affinities", d / "seg", "--threshold", args.threshold, "--workers", "0",
                          "--quiet")
            pred = Layer.open(str(d / "seg" / "segmentation")).read()
            t = time.perf_counter()
            dfp = assign_partners(image, clefts, pred, resolution=res, model=args.model, progress=False)
            t_as = time.perf_counter() - t
            mp = majority_map(pred, gt_seg)
            mapped = dfp.assign(pre_id=[mp.get(int(i), 0) for i in dfp.pre_id],
                                post_id=[mp.get(int(i), 0) for i in dfp.post_id])
            acc = partner_accuracy(mapped, truth)
            rows.append({**base, "segmentation": f"shipped boundary net, emkit segment --threshold {args.threshold}",
                         "n clefts": acc["n"], "correct": acc["correct"], "accuracy": round(acc["accuracy"], 4),
                         "pre correct": acc["pre_correct"], "post correct": acc["post_correct"],
                         "assign_s": round(t_as, 1)})
            print(rows[-1], f"(infer {t_inf:.0f} s, segment {t_seg:.0f} s)", flush=True)
    cmd = f".venv/bin/python benchmarks/shipped_partner.py --model {args.model} --seed {args.seed} --size {args.size}" \
        + (" --boundary" if args.boundary else "")
    out = {"title": "Shipped partner net: synaptic partner accuracy on a fresh-seed phantom",
           "command": cmd, "machine": machine(), "date": datetime.date.today().isoformat(), "rows": rows,
           "notes": (f"emkit phantom --defects none ({t_ph:.0f} s) → emkit.synapse.assign_partners on the "
                     "ground-truth clefts (CPU, serial). A cleft is correct when both its presynaptic and "
                     "postsynaptic segment are the phantom's; with a predicted segmentation, a predicted segment "
                     "stands for the ground-truth segment it overlaps most. Paper (Methods, Synapse detection and "
                     "synaptic partner assignment): 100 % on 81 test clefts, 96 % on 110 validation clefts.")}
    if not args.no_write:
        (HERE / "results" / "shipped_partner.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
