"""Segmentation masks end to end (issue 10 §4): step/slip detection on phantoms with known slips and
steps, and the segmentation of a damaged phantom with no masks, predicted masks and true masks.

1. Step/slip precision and recall: phantoms (seeds 20-25, 24 × 256 × 256 at 40 × 8 × 8 nm) with two
   slips and a step each (shifts 4-16 px per axis, `emkit.defects` defaults); predicted sections from
   `emkit.detect.classify_misalignments` (whole-section medians of the misalignment maps) against
   the true sections; recall also by shift size (the larger of |dy|, |dx|).
2. ARAND: a phantom (seed 0, 32 × 256 × 256) with slips, a step, folds and cracks → the shipped
   boundary net (`emkit.inference.predict`, affinity head) with (a) no masks, (b) predicted masks
   (`emkit.detect.predicted_masks`: the defect net's folds/cracks/resin + slips/steps from the
   misalignment maps), (c) true masks (the phantom's slip/fold/crack/resin masks in, its step mask
   and anything masked in three consecutive sections out) → `emkit.segment.segment` (defaults) →
   adapted Rand error against the ground truth in the image frame (also outside the true masks). Goal: (b) within 10 % of (c),
   and better than (a).
Usage: ``python benchmarks/masks_effect.py [--seed 0] [--defect-model defects]``. Writes
results/masks_effect.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _cli import machine  # noqa: E402


def _shift(ph, z):
    d = ph.displacement[:, z]
    prev = ph.displacement[:, z - 1] if z > 0 else np.zeros_like(d)
    return float(np.max(np.abs(np.median((d - prev).reshape(2, -1), axis=1))))


def step_slip_scores(seeds, size) -> dict:
    from emkit.detect import MisalignmentParams, classify_misalignments, misalignment_maps
    from emkit.phantom import make_phantom

    p = MisalignmentParams.for_resolution(8.0)
    counts = {k: {"tp": 0, "fp": 0, "fn": 0} for k in ("slip", "step")}
    events = []
    for seed in seeds:
        ph = make_phantom(size, seed=seed, defects="slip,slip,step")
        got = classify_misalignments(misalignment_maps(ph.image, p), p)
        for kind, key in (("slip", "slips"), ("step", "steps")):
            true = set(int(z) for z in ph.defect_sections.get(kind, []))
            pred = set(got[key])
            counts[kind]["tp"] += len(true & pred)
            counts[kind]["fp"] += len(pred - true)
            counts[kind]["fn"] += len(true - pred)
            for z in sorted(true):
                events.append({"seed": seed, "kind": kind, "z": z, "shift_px": _shift(ph, z), "found": z in pred})
    out = {}
    for kind, c in counts.items():
        out[kind] = {**c, "precision": None if c["tp"] + c["fp"] == 0 else round(c["tp"] / (c["tp"] + c["fp"]), 3),
                     "recall": None if c["tp"] + c["fn"] == 0 else round(c["tp"] / (c["tp"] + c["fn"]), 3)}
    by = {}
    for lo, hi in ((0, 6), (6, 10), (10, 100)):
        ev = [e for e in events if lo <= e["shift_px"] < hi]
        by[f"shift {lo}-{hi} px"] = {"events": len(ev), "recall": None if not ev else round(np.mean([e["found"] for e in ev]), 3)}
    return {"per_kind": out, "recall_by_shift": by, "events": events}


def true_masks(ph, consecutive=3):
    from emkit.detect import consecutive_runs

    z = np.zeros(ph.shape, np.uint8)
    m_in = z.copy()
    for k in ("slip", "fold", "crack", "resin"):
        m_in |= (ph.masks.get(k, z) != 0).astype(np.uint8)
    m_out = (ph.masks.get("step", z) != 0) | consecutive_runs(m_in, consecutive)
    return m_in, m_out.astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="32,256,256")
    ap.add_argument("--defects", default="slip,slip,step,fold,fold,crack,crack")
    ap.add_argument("--slip-seeds", default="20,21,22,23,24,25")
    ap.add_argument("--defect-model", default="defects")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from emkit.detect import predicted_masks
    from emkit.evaluate.metrics import adapted_rand_error
    from emkit.inference import predict
    from emkit.phantom import make_phantom
    from emkit.segment import segment

    t0 = time.perf_counter()
    ss = step_slip_scores([int(s) for s in args.slip_seeds.split(",")], (24, 256, 256))
    print(json.dumps({k: v for k, v in ss.items() if k != "events"}), flush=True)
    t_ss = time.perf_counter() - t0

    size = tuple(int(s) for s in args.size.split(","))
    ph = make_phantom(size, seed=args.seed, defects=args.defects)
    gt = ph.in_image_frame(ph.segmentation)
    t = time.perf_counter()
    p_in, p_out, found = predicted_masks(ph.image, ph.resolution, model=args.defect_model)
    t_masks = time.perf_counter() - t
    t_in, t_out = true_masks(ph)
    runs = {"a_no_masks": (None, None), "b_predicted_masks": (p_in, p_out), "c_true_masks": (t_in, t_out)}
    rows = []
    for name, (m_in, m_out) in runs.items():
        t = time.perf_counter()
        aff = predict("boundary", ph.image, resolution=ph.resolution, heads="affinity", mask_in=m_in, mask_out=m_out,
                      progress=False)
        seg = segment(aff)[0]
        are, prec, rec = adapted_rand_error(seg, gt)
        are_out = adapted_rand_error(seg, np.where((t_in | t_out) != 0, 0, gt))[0]
        rows.append({"masks": name, "arand": round(float(are), 4), "rand_precision": round(float(prec), 4),
                     "rand_recall": round(float(rec), 4), "arand_outside_true_masks": round(float(are_out), 4),
                     "mask_in_fraction": None if m_in is None else round(float(np.mean(m_in)), 4),
                     "mask_out_fraction": None if m_out is None else round(float(np.mean(m_out)), 4),
                     "seconds": round(time.perf_counter() - t, 1)})
        print(json.dumps(rows[-1]), flush=True)
    a, b, c = (r["arand"] for r in rows)
    agree = {k: round(float(((p_in != 0) == (t_in != 0)).mean()), 4) for k in ("mask_in",)}
    res = {"title": "Segmentation masks: step/slip detection and the end-to-end effect on segmentation",
           "command": ".venv/bin/python benchmarks/masks_effect.py " + " ".join(argv or sys.argv[1:]),
           "machine": machine(), "date": datetime.date.today().isoformat(),
           "step_slip": {**ss, "phantoms": f"seeds {args.slip_seeds}, 24x256x256, defects slip,slip,step",
                         "seconds": round(t_ss, 1)},
           "segmentation": {"phantom": f"seed {args.seed}, {args.size.replace(',', 'x')}, defects {args.defects}",
                            "defect_sections": {k: [int(z) for z in v] for k, v in ph.defect_sections.items()},
                            "rows": rows, "predicted_masks_seconds": round(t_masks, 1),
                            "mask_in_voxel_agreement": agree["mask_in"],
                            "goal": "(b) within 10 % of (c) and better than (a)",
                            "goal_met": bool(b <= 1.1 * c and b < a) if c > 0 else bool(b <= c and b < a),
                            "b_vs_c_relative": None if c == 0 else round((b - c) / c, 3)},
           "notes": "Adapted Rand error over the whole volume against the phantom's segmentation in the image frame "
                    "(ids 0 ignored); arand_outside_true_masks ignores the voxels of the true input/output masks "
                    "as well (the same voxels for all three runs: what masking does to the rest of the volume). "
                    "Boundary net: shipped 'boundary' (affinity head); emkit.segment.segment at its "
                    "defaults, no semantic input. The misalignment detector works on 8x8 patches of 64 nm working "
                    "pixels: shifts below ~6 px (8 nm) are mostly not seen."}
    if not args.no_write:
        (HERE / "results" / "masks_effect.json").write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
