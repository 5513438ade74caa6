"""Boundary nets on real ssTEM with per-section membrane annotation, against a seeded watershed.

Data: ``../shared/data/real-em-gt/vnc-sstem-synapses-20x1024x1024.npz`` (Drosophila larva VNC,
~50 × 4.6 × 4.6 nm, Gerhard et al. 2013, CC BY-NC-SA 3.0: used here, never copied into the
repository). It has a membrane mask per section and no 3D neuron ids, so the ground truth of a
section is the 2D connected components (4-connected) of its non-membrane pixels; membrane pixels
are label 0 and are not scored. As the paper did for 4 nm ssTEM, the image is averaged 2 × 2
in-plane to 50 × 9.2 × 9.2 nm (the membrane mask: a pixel is membrane when at least half of its
2 × 2 block is), and everything is scored on that grid.

Split: sections 0-13 train (the net; the baseline's parameters; every threshold), sections 14-19
are held out and scored. Scores are ISBI 2012-style: each segment is split per section, and one
adapted Rand error (and VOI) is computed over all held-out sections, voxels of label 0 excluded.

Steps (``--step``):

* ``prepare``: writes WORK/train and WORK/test dataset folders (image, gt/segmentation with planar
  2D ids) for ``emkit train boundary --data WORK/train --init boundary --planar-labels``.
* ``baseline``: seeded watershed on the Gaussian-smoothed raw image (markers: connected components of
  the smoothed image above a quantile, per section; scikit-image watershed), sigma and quantile
  tuned on the training sections, scored on the held-out ones.
* ``nets``: for each ``--model NAME=REF`` (a checkpoint or shipped name): ``emkit infer`` on train
  and test, ``emkit segment`` with the z-affinities kept (3D agglomeration, then split per
  section) or zeroed (``2d``: a 2D segmentation per section), thresholds tuned on the training
  sections, scored on the held-out ones.

Writes ``results/finetune_sstem.json`` (or ``--out``), merging the steps run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _cli import machine, sh  # noqa: E402

SRC = HERE.parent.parent / "shared" / "data" / "real-em-gt" / "vnc-sstem-synapses-20x1024x1024.npz"
TRAIN_Z = (0, 14)
TEST_Z = (14, 20)
RESOLUTION = (50.0, 9.2, 9.2)


def planar_components(membrane: np.ndarray) -> np.ndarray:
    """(z, y, x) membrane mask → uint64 ids of the 4-connected non-membrane components of each
    section, unique across sections; membrane = 0."""
    from scipy import ndimage

    out = np.zeros(membrane.shape, np.uint64)
    nxt = 0
    for z in range(membrane.shape[0]):
        lab, n = ndimage.label(membrane[z] == 0)
        out[z] = np.where(lab > 0, lab.astype(np.uint64) + np.uint64(nxt), 0)
        nxt += n
    return out


def downsample(image: np.ndarray, membrane: np.ndarray):
    """2 × 2 in-plane average of the image (uint8) and the membrane mask (>= half of the block)."""
    z, y, x = image.shape
    im = image[:, : y // 2 * 2, : x // 2 * 2].reshape(z, y // 2, 2, x // 2, 2).astype(np.float32).mean((2, 4))
    mb = membrane[:, : y // 2 * 2, : x // 2 * 2].reshape(z, y // 2, 2, x // 2, 2).astype(np.float32).mean((2, 4))
    return np.round(im).astype(np.uint8), (mb >= 0.5).astype(np.uint8)


def split_per_section(seg: np.ndarray) -> np.ndarray:
    from emkit.train.loop import split_per_section as f

    return f(seg)


def score(seg: np.ndarray, gt: np.ndarray) -> dict:
    """ISBI-style: segments split per section, one ARAND / VOI over the stack, gt 0 ignored."""
    from emkit.evaluate import evaluate

    r = evaluate(split_per_section(seg), gt, k=0)
    return {"arand": round(float(r["arand"]), 4), "voi_split": round(float(r["voi_split"]), 3),
            "voi_merge": round(float(r["voi_merge"]), 3)}


def seeded_watershed(image: np.ndarray, sigma: float, quantile: float) -> np.ndarray:
    """Per section: Gaussian smoothing, markers = connected components of the smoothed image above
    its ``quantile`` (bright cell interiors), watershed of the inverted smoothed image."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    out = np.zeros(image.shape, np.uint64)
    nxt = 0
    for z in range(image.shape[0]):
        g = ndimage.gaussian_filter(image[z].astype(np.float32), sigma)
        markers, n = ndimage.label(g > np.quantile(g, quantile))
        ws = watershed(-g, markers)
        out[z] = ws.astype(np.uint64) + np.uint64(nxt)
        nxt += n
    return out


def load_split(work: Path):
    from emkit.io import Layer

    d = {}
    for part in ("train", "test"):
        d[part] = (Layer(str(work / part / "image")).read(), Layer(str(work / part / "gt" / "segmentation")).read())
    return d


def step_prepare(work: Path) -> dict:
    from emkit.io import Layer

    z = np.load(SRC)
    image, membrane = downsample(z["image"], z["membrane"])
    gt = planar_components(membrane)
    facts = {}
    for part, (a, b) in (("train", TRAIN_Z), ("test", TEST_Z)):
        d = work / part
        Layer.create(str(d / "image"), "image", image[a:b].shape, resolution=RESOLUTION, overwrite=True).write(
            image[a:b])
        Layer.create(str(d / "gt" / "segmentation"), "segmentation", gt[a:b].shape, resolution=RESOLUTION,
                     overwrite=True).write(gt[a:b])
        facts[part] = {"sections": [a, b - 1], "shape": list(image[a:b].shape),
                       "segments": int(len(np.unique(gt[a:b])) - 1), "membrane_fraction":
                           round(float((gt[a:b] == 0).mean()), 3)}
    return facts


def step_baseline(work: Path, sigmas, quantiles) -> dict:
    d = load_split(work)
    rows = []
    t0 = time.perf_counter()
    for s in sigmas:
        for q in quantiles:
            r = score(seeded_watershed(d["train"][0], s, q), d["train"][1])
            rows.append({"sigma": s, "quantile": q, **r})
            print(json.dumps(rows[-1]), flush=True)
    best = min(rows, key=lambda r: r["arand"])
    test = score(seeded_watershed(d["test"][0], best["sigma"], best["quantile"]), d["test"][1])
    return {"tuning_rows": rows, "chosen": {"sigma": best["sigma"], "quantile": best["quantile"]},
            "train": {k: best[k] for k in ("arand", "voi_split", "voi_merge")}, "test": test,
            "seconds": round(time.perf_counter() - t0, 1)}


def _net_scores(name, ref, work: Path, thresholds, infer_args) -> dict:
    from emkit.io import Layer

    d = load_split(work)
    out = {"ref": ref, "modes": {}}
    affs = {}
    for part in ("train", "test"):
        aff = work / f"aff_{name}_{part}"
        _, t = sh("infer", ref, work / part / "image", aff, "--workers", "0", "--quiet", "--overwrite",
                  *shlex.split(infer_args))
        affs[part] = Layer(str(aff)).read()
        out[f"infer_{part}_s"] = round(t, 1)
    from emkit.segment import segment
    from emkit.evaluate import sweep

    for mode in ("3d", "2d"):
        res = {}
        for part in ("train", "test"):
            a = affs[part].copy()
            if mode == "2d":
                a[0] = 0.0                                  # no merges across sections
            seg, sv, hist = segment(a, threshold=0.5)
            rows = []
            for t in thresholds:
                rows.append({"threshold": t, **score(hist.segmentation(sv, t), d[part][1])})
            res[part] = rows
        best = min(res["train"], key=lambda r: r["arand"])
        test = next(r for r in res["test"] if r["threshold"] == best["threshold"])
        out["modes"][mode] = {"threshold_tuned_on_train": best["threshold"], "train": best, "test": test,
                              "test_all_thresholds": res["test"]}
        print(name, mode, json.dumps(out["modes"][mode]["test"]), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="folder for the datasets and intermediate layers")
    ap.add_argument("--step", action="append", choices=("prepare", "baseline", "nets"), required=True)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=REF")
    ap.add_argument("--infer-args", default="")
    ap.add_argument("--thresholds", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    ap.add_argument("--sigmas", default="1,2,3,4")
    ap.add_argument("--quantiles", default="0.5,0.6,0.7,0.8,0.9")
    ap.add_argument("--out", default=str(HERE / "results" / "finetune_sstem.json"))
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    outp = Path(args.out)
    res = json.loads(outp.read_text()) if outp.is_file() else {}
    res.update({"title": "Boundary nets vs a seeded watershed on real ssTEM (VNC), 2D per-section scoring",
                "machine": machine(), "date": datetime.date.today().isoformat(),
                "split": f"sections {TRAIN_Z[0]}-{TRAIN_Z[1] - 1} train/tune, {TEST_Z[0]}-{TEST_Z[1] - 1} held out",
                "grid": "image averaged 2x2 in-plane: 50 x 9.2 x 9.2 nm"})
    res.setdefault("commands", []).append(
        "python benchmarks/finetune_sstem.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    if "prepare" in args.step:
        res["data"] = step_prepare(work)
        print(json.dumps(res["data"]), flush=True)
    if "baseline" in args.step:
        res["baseline"] = step_baseline(work, [float(s) for s in args.sigmas.split(",")],
                                        [float(q) for q in args.quantiles.split(",")])
        print("baseline", json.dumps(res["baseline"]["test"]), flush=True)
    if "nets" in args.step:
        res.setdefault("nets", {})
        th = [float(t) for t in args.thresholds.split(",")]
        for m in args.model:
            name, ref = m.split("=", 1)
            res["nets"][name] = _net_scores(name, ref, work, th, args.infer_args)
    outp.parent.mkdir(parents=True, exist_ok=True)
    outp.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
