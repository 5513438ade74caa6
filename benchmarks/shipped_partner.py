"""Score the shipped partner net on a phantom whose seed training never used.

phantom (``--size``, no defects so that image and ground truth share one frame, seed 0 — training
used 101–112, validation 199) → ``assign_partners`` on the ground-truth clefts, once with each
*selection rule* (how pre/post segments are chosen from the net's two maps):

* ``default`` — :class:`emkit.synapse.PartnerParams` defaults: the candidates are the two segments
  with the most voxels within 16 nm of the cleft, the net's maps decide which is pre (pre ≠ post);
* ``first`` — the first shipped rule (``contact_nm=60, max_candidates=None, distinct=False``):
  any segment within 60 nm of the cleft, each side its own largest mean weight;

with

1. the ground-truth segmentation: partner accuracy = clefts whose pre and post ids both equal the
   phantom's (paper: 100 % on its 81 test clefts, 96 % on its 110 validation clefts);
2. (``--boundary``) the segmentation of the shipped boundary net (``emkit infer boundary`` →
   ``emkit segment``): a predicted segment counts as the ground-truth segment it overlaps most
   (voxels), so a cleft is right when its pre and post segments are mostly the true partners —
   the cost of segmentation errors shows;
3. (``--pipeline-size``) end to end on a second phantom of that size (same seed): ``emkit synapses``
   (shipped cleft net → components → partners → merge/filters) with the ground-truth and with the
   boundary net's segmentation, scored as ``emkit evaluate --synapses`` does (cleft precision /
   recall, partner accuracy over matched clefts, edges found / missed / spurious); each rule
   re-assigns the same predicted clefts (the partner step and the table re-run in-process).

Writes results/shipped_partner.json. Usage:
``python benchmarks/shipped_partner.py [--model partner] [--seed 0] [--size 64,384,384] [--boundary]
[--pipeline-size 64,256,256] [--demo DIR] [--keep DIR]`` (``--keep`` reuses the datasets and outputs already in
DIR; ``--demo DIR`` scores an ``emkit demo DIR --serve no`` folder, i.e. ``make demo``'s, with each rule).
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

#: the selection rules compared (PartnerParams overrides).
RULES = {"default": {},
         "first": {"contact_nm": 60.0, "max_candidates": None, "distinct": False}}
RULE_TEXT = {"default": "default (the 2 segments most in contact with the cleft, pre != post)",
             "first": "first shipped (any segment within 60 nm, each side's largest mean)"}


def majority_map(pred: np.ndarray, gt: np.ndarray) -> dict:
    """predicted segment id -> the ground-truth id it overlaps most (0 excluded from pred)."""
    m = pred != 0
    pairs, cnt = np.unique(np.stack([pred[m], gt[m]]), axis=1, return_counts=True)
    order = np.lexsort((-cnt, pairs[0]))
    out = {}
    for i in order:
        out.setdefault(int(pairs[0, i]), int(pairs[1, i]))
    return out


def dataset(d: Path, size: str, seed: int, boundary: bool, threshold: float) -> dict:
    """The phantom dataset (and the boundary net's segmentation) in ``d``, made unless there; seconds."""
    t = {}
    if not (d / "gt" / "synapses.parquet").is_file():
        _, t["phantom_s"] = sh("phantom", d, "--size", size, "--seed", seed, "--defects", "none", "--quiet")
    if boundary and not (d / "seg" / "segmentation").is_dir():
        if not (d / "affinities").is_dir():
            _, t["infer_s"] = sh("infer", "boundary", d / "image", d / "affinities", "--heads", "affinity",
                                 "--workers", "0", "--quiet")
        _, t["segment_s"] = sh("segment", d / "affinities", d / "seg", "--threshold", threshold, "--workers", "0",
                               "--quiet")
    return t


def partner_rows(d: Path, args, base: dict) -> list:
    import pandas as pd

    from emkit.io import Layer
    from emkit.synapse import PartnerParams, assign_partners, partner_accuracy

    image = Layer.open(str(d / "image")).read()
    clefts = Layer.open(str(d / "gt/clefts")).read()
    gt_seg = Layer.open(str(d / "gt/segmentation")).read()
    truth = pd.read_parquet(d / "gt/synapses.parquet")
    res = tuple(Layer.open(str(d / "image")).resolution)
    segs = [("ground truth", gt_seg, None)]
    if args.boundary:
        pred = Layer.open(str(d / "seg" / "segmentation")).read()
        segs.append((f"shipped boundary net, emkit segment --threshold {args.threshold}", pred,
                     majority_map(pred, gt_seg)))
    rows = []
    for seg_name, seg, mp in segs:
        for rule, kw in RULES.items():
            t = time.perf_counter()
            df = assign_partners(image, clefts, seg, resolution=res, model=args.model, params=PartnerParams(**kw),
                                 progress=False)
            t_as = time.perf_counter() - t
            if mp is not None:
                df = df.assign(pre_id=[mp.get(int(i), 0) for i in df.pre_id],
                               post_id=[mp.get(int(i), 0) for i in df.post_id])
            acc = partner_accuracy(df, truth)
            rows.append({**base, "clefts": "ground truth", "segmentation": seg_name, "rule": RULE_TEXT[rule],
                         "n clefts": acc["n"], "correct": acc["correct"], "accuracy": round(acc["accuracy"], 4),
                         "pre correct": acc["pre_correct"], "post correct": acc["post_correct"],
                         "assign_s": round(t_as, 1)})
            print(rows[-1], flush=True)
            wrong = df.merge(truth, on="cleft_id", suffixes=("", "_true"))
            wrong = wrong[(wrong.pre_id != wrong.pre_id_true) | (wrong.post_id != wrong.post_id_true)]
            if len(wrong):
                print("  wrong:", wrong[["cleft_id", "pre_id", "post_id", "pre_id_true", "post_id_true"]]
                      .to_dict("records"), flush=True)
    return rows


def pipeline_rows(d: Path, args, base: dict) -> list:
    """emkit synapses end to end (GT and boundary-net segmentation), re-assigned with each rule."""
    import pandas as pd

    from emkit.evaluate.synapses import synapse_scores
    from emkit.io import Layer
    from emkit.synapse import PartnerParams, assign_partners
    from emkit.synapse.table import SynapseParams, build_synapse_table
    from emkit.synapse.truth import load_truth

    truth = load_truth(str(d))
    image = Layer.open(str(d / "image")).read()
    res = tuple(Layer.open(str(d / "image")).resolution)
    gseg = Layer.open(str(d / "gt/image_frame/segmentation")).read()
    rows = []
    for seg_name, seg_url, out in (("ground truth", d / "gt/image_frame/segmentation", d / "synapses_gt"),
                                   (f"shipped boundary net, emkit segment --threshold {args.threshold}",
                                    d / "seg" / "segmentation", d / "synapses_seg")):
        if not (out / "synapses.json").is_file():
            sh("synapses", d / "image", seg_url, out, "--workers", "0", "--quiet")
        prov = json.loads((out / "synapses.json").read_text())
        sparams = SynapseParams.from_dict(prov["params"])
        ctable = pd.read_parquet(out / "clefts.parquet")
        clefts = Layer.open(str(out / "clefts")).read()
        seg = Layer.open(str(seg_url)).read()
        for rule, kw in RULES.items():
            parts = assign_partners(image, clefts, seg, resolution=res, model=args.model, params=PartnerParams(**kw),
                                    progress=False)
            table = build_synapse_table(ctable, parts, sparams)
            s = synapse_scores(table, clefts, truth.table, truth.clefts, res,
                               segmentation=None if seg_name == "ground truth" else seg,
                               gt_segmentation=None if seg_name == "ground truth" else gseg)
            rows.append({**base, "clefts": "shipped cleft net (emkit synapses)", "segmentation": seg_name,
                         "rule": RULE_TEXT[rule], "cleft precision": round(s["precision"], 4),
                         "cleft recall": round(s["recall"], 4), "synapses": len(table),
                         "partners matched": s["partners_matched"], "partners correct": s["partners_correct"],
                         "partner accuracy": round(s["partner_accuracy"], 4), "edges true": s["edges_true"],
                         "edges found": s["edges_found"], "edges missed": s["edges_missed"],
                         "edges spurious": s["edges_spurious"]})
            print(rows[-1], flush=True)
    return rows


def demo_rows(d: Path, args, base: dict) -> list:
    """An ``emkit demo`` folder (default defects, boundary-net segmentation, synapses/): each rule
    re-assigns its predicted clefts, scored against the truth in the image frame."""
    import pandas as pd

    from emkit.evaluate.synapses import synapse_scores
    from emkit.io import Layer
    from emkit.synapse import PartnerParams, assign_partners
    from emkit.synapse.table import SynapseParams, build_synapse_table
    from emkit.synapse.truth import load_truth

    out = d / "synapses"
    truth = load_truth(str(d))
    image = Layer.open(str(d / "image")).read()
    res = tuple(Layer.open(str(d / "image")).resolution)
    prov = json.loads((out / "synapses.json").read_text())
    sparams = SynapseParams.from_dict(prov["params"])
    ctable = pd.read_parquet(out / "clefts.parquet")
    clefts = Layer.open(str(out / "clefts")).read()
    seg = Layer.open(prov["layers"]["segmentation"]).read()
    gseg = Layer.open(str(d / "gt/image_frame/segmentation")).read()
    phantom = json.loads((d / "gt" / "phantom.json").read_text())
    rows = []
    for rule, kw in RULES.items():
        parts = assign_partners(image, clefts, seg, resolution=res, model=args.model, params=PartnerParams(**kw),
                                progress=False)
        table = build_synapse_table(ctable, parts, sparams)
        s = synapse_scores(table, clefts, truth.table, truth.clefts, res, segmentation=seg, gt_segmentation=gseg)
        rows.append({**base, "phantom seed": phantom.get("seed", "?"),
                     "size": "x".join(str(v) for v in Layer.open(str(d / "image")).size),
                     "clefts": "shipped cleft net (emkit demo, default defects)",
                     "segmentation": "shipped boundary net (emkit demo)", "rule": RULE_TEXT[rule],
                     "cleft precision": round(s["precision"], 4), "cleft recall": round(s["recall"], 4),
                     "synapses": len(table), "partners matched": s["partners_matched"],
                     "partners correct": s["partners_correct"], "partner accuracy": round(s["partner_accuracy"], 4),
                     "edges true": s["edges_true"], "edges found": s["edges_found"],
                     "edges missed": s["edges_missed"], "edges spurious": s["edges_spurious"]})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="partner")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="64,384,384")
    ap.add_argument("--boundary", action="store_true", help="also with the shipped boundary net's segmentation")
    ap.add_argument("--threshold", type=float, default=0.5, help="emkit segment --threshold for --boundary")
    ap.add_argument("--pipeline-size", help="also emkit synapses end to end on a phantom of this size (z,y,x)")
    ap.add_argument("--demo", help="also an `emkit demo DIR` output folder (make demo's), re-assigned with each rule")
    ap.add_argument("--keep", help="folder to keep (and reuse) the datasets in (default: a temporary one)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write results/")
    args = ap.parse_args(argv)

    rows, times = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        d = root / f"partner_s{args.seed}_{args.size.replace(',', 'x')}"
        times["partner dataset"] = dataset(d, args.size, args.seed, args.boundary, args.threshold)
        base = {"model": args.model, "phantom seed": args.seed, "size": args.size.replace(",", "x")}
        rows += partner_rows(d, args, base)
        if args.pipeline_size:
            dp = root / f"partner_s{args.seed}_{args.pipeline_size.replace(',', 'x')}"
            times["pipeline dataset"] = dataset(dp, args.pipeline_size, args.seed, True, args.threshold)
            rows += pipeline_rows(dp, args, {**base, "size": args.pipeline_size.replace(",", "x")})
        if args.demo:
            rows += demo_rows(Path(args.demo), args, base)
    cmd = f".venv/bin/python benchmarks/shipped_partner.py --model {args.model} --seed {args.seed} --size {args.size}" \
        + (" --boundary" if args.boundary else "") \
        + (f" --pipeline-size {args.pipeline_size}" if args.pipeline_size else "") \
        + (" --demo DIR" if args.demo else "")
    out = {"title": "Shipped partner net: synaptic partner accuracy on a fresh-seed phantom",
           "command": cmd, "machine": machine(), "date": datetime.date.today().isoformat(), "rows": rows,
           "seconds": times,
           "notes": ("emkit phantom --defects none → emkit.synapse.assign_partners on the ground-truth clefts (CPU, "
                     "serial), with each selection rule. A cleft is correct when both its presynaptic and "
                     "postsynaptic segment are the phantom's; with a predicted segmentation, a predicted segment "
                     "stands for the ground-truth segment it overlaps most. Pipeline rows: emkit synapses with the "
                     "shipped cleft net, scored like emkit evaluate --synapses (partner accuracy over predicted "
                     "clefts matched to true ones; edges of the wiring diagram found / missed / spurious). Paper "
                     "(Methods, Synapse detection and synaptic partner assignment): 100 % on 81 test clefts, 96 % "
                     "on 110 validation clefts.")}
    if not args.no_write:
        (HERE / "results" / "shipped_partner.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
