"""Boundary nets on real isotropic FIB-SEM: held-out adapted Rand error before and after training.

Data (``../shared/data/real-em-gt``, FlyEM FIB-SEM at 10 nm, Janelia gala, BSD-style licence):
the nets were trained on ``gala-fib-train-50x100x200.npz`` (x 0-159 for training, x 160-199 for
validation / choosing ``best.pt``) and are scored here on ``gala-fib-tiny-50x200x100.npz``, a
crop training never saw (42 bodies; voxels of label 0 are not scored).

Each model goes through the user's path: ``emkit infer MODEL image aff`` → ``emkit segment aff
seg --threshold T`` → ``emkit evaluate seg gt`` at thresholds 0.3 / 0.5 / 0.7.

MODEL is ``NAME=REF``: REF is a checkpoint path, a shipped model name, or ``adapted:NAME`` — the
shipped weights NAME adapted to 10 nm before any training (:func:`emkit.train.adapted_model`:
what ``emkit train --init NAME`` starts from). ``--run NAME=DIR`` adds that training run's time,
printed ETA and validation curve (``DIR/log.json``) to the results.

Usage::

    python benchmarks/finetune_fib.py --prepare runs/fib_data     # the training datasets (then emkit train …)
    python benchmarks/finetune_fib.py --model shipped=emkit/models/boundary.pt \\
        --model adapted=adapted:boundary --model init=runs/iso_init/best.pt \\
        --run init=runs/iso_init [--infer-args "--max-downsample 4"] [--out results/finetune_fib.json]

Writes ``results/finetune_fib.json`` (or ``--out``) and prints one row per model and threshold.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _cli import machine, sh  # noqa: E402

HELDOUT = HERE.parent.parent / "shared" / "data" / "real-em-gt" / "gala-fib-tiny-50x200x100.npz"
ANCHOR = ("stock 3D U-Net (torch-em UNet3d, 1.3 M parameters, 3000 iterations, ~45 min) + waterz: ARAND 0.108 on "
          "100 held-out sections of another 10 nm FIB-SEM volume (../shared/notes/anchors.md)")


def _prepare_model(name: str, ref: str, tmp: Path, resolution) -> str:
    if not ref.startswith("adapted:"):
        return ref
    from emkit.nets import save
    from emkit.train import adapted_model

    model, note = adapted_model(ref.split(":", 1)[1], resolution)
    path = tmp / f"{name}_adapted.pt"
    save(model, path, extra={"note": note or "same resolution: the checkpoint as is"})
    return str(path)


TRAIN = HERE.parent.parent / "shared" / "data" / "real-em-gt" / "gala-fib-train-50x100x200.npz"
VAL_X = 160


def prepare(out: Path) -> list[str]:
    """The training datasets of boundary_iso: gala-fib-train x 0-159 (OUT/gala_train_a) and x 160-199
    (OUT/gala_train_v, validation), image + gt/segmentation at 10 nm. Returns the commands run."""
    import numpy as np

    z = np.load(TRAIN)
    cmds = []
    for name, sl in (("gala_train_a", slice(0, VAL_X)), ("gala_train_v", slice(VAL_X, None))):
        npz = out / f"{name}.npz"
        np.savez(npz, image=z["image"][:, :, sl], labels=z["labels"][:, :, sl])
        for key, kind, rel in (("image", "image", "image"), ("labels", "segmentation", "gt/segmentation")):
            args = ("import", npz, out / name / rel, "--kind", kind, "--key", key, "--resolution", "10,10,10",
                    "--quiet")
            sh(*args)
            cmds.append("emkit " + " ".join(map(str, args)))
    return cmds


def _run_facts(d: Path) -> dict:
    log = json.loads((d / "log.json").read_text())
    tc = log["train_config"]
    return {"dir": str(d), "iterations": log["train"]["iteration"][-1] + 1 if log["train"]["iteration"] else 0,
            "wall_seconds": log.get("wall_seconds"), "seconds_per_iteration": log.get("seconds_per_iteration"),
            "eta_printed": log.get("eta"), "init": tc.get("init"), "init_note": log.get("init"),
            "background": log.get("background"), "augment": log.get("augment"), "patch": tc.get("patch_size"),
            "lr": tc.get("lr"), "seed": tc.get("seed"), "validation_source": log.get("validation_source"),
            "validation": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                            if k in ("iteration", "loss", "arand", "voi_split", "voi_merge")}
                           for r in log["validation"]],
            "best": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in (log.get("best") or {}).items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", metavar="DIR", help="only write the training datasets (gala-fib-train split at "
                                                     f"x = {VAL_X}) into DIR and print the commands")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=REF")
    ap.add_argument("--run", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--heldout", default=str(HELDOUT), help="npz with image and labels (z, y, x), 10 nm")
    ap.add_argument("--thresholds", default="0.3,0.5,0.7")
    ap.add_argument("--infer-args", default="", help="extra emkit infer options for every model, e.g. "
                                                      "'--max-downsample 4' for a net trained at 40x8x8 nm")
    ap.add_argument("--keep", help="folder to keep the layers in (default: a temporary one)")
    ap.add_argument("--out", default=str(HERE / "results" / "finetune_fib.json"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.prepare:
        Path(args.prepare).mkdir(parents=True, exist_ok=True)
        print("\n".join(prepare(Path(args.prepare))))
        return 0
    if not args.model:
        ap.error("give --model NAME=REF (or --prepare DIR)")
    models = [m.split("=", 1) for m in args.model]
    if any(len(m) != 2 for m in models):
        ap.error("--model takes NAME=REF")
    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.keep or tmp)
        d.mkdir(parents=True, exist_ok=True)
        sh("import", args.heldout, d / "image", "--kind", "image", "--key", "image", "--resolution", "10,10,10",
           "--quiet", "--overwrite")
        sh("import", args.heldout, d / "gt", "--kind", "segmentation", "--key", "labels", "--resolution", "10,10,10",
           "--quiet", "--overwrite")
        for name, ref in models:
            path = _prepare_model(name, ref, Path(tmp), (10.0, 10.0, 10.0))
            aff = d / f"aff_{name}"
            _, t_inf = sh("infer", path, d / "image", aff, "--workers", "0", "--quiet", "--overwrite",
                          *shlex.split(args.infer_args))
            for th in [float(t) for t in args.thresholds.split(",")]:
                out = d / f"seg_{name}_{th:.2f}"
                _, t_seg = sh("segment", aff, out, "--threshold", th, "--workers", "0", "--quiet", "--overwrite")
                s = json.loads(sh("evaluate", out / "segmentation", d / "gt", "--worst", "0")[0])
                rows.append({"model": name, "ref": ref, "threshold": th, "arand": round(s["arand"], 4),
                             "voi_split": round(s["voi_split"], 3), "voi_merge": round(s["voi_merge"], 3),
                             "infer_s": round(t_inf, 1), "segment_s": round(t_seg, 1)})
                print(json.dumps(rows[-1]), flush=True)
    for r in args.run:
        name, dr = r.split("=", 1)
        runs[name] = _run_facts(Path(dr))
    res = {"title": "Boundary nets on real 10 nm FIB-SEM (gala): held-out adapted Rand error",
           "command": "python benchmarks/finetune_fib.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
           "machine": machine(), "date": datetime.date.today().isoformat(),
           "split": "trained on gala-fib-train x 0-159, validated (best.pt) on its x 160-199; scored on gala-fib-tiny "
                    "(held out entirely), label 0 not scored",
           "anchor": ANCHOR, "rows": rows, "runs": runs}
    if not args.no_write:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
