"""Ship a trained net: copy a run's best checkpoint into emkit/models/ with its provenance.

Writes ``emkit/models/<NAME>.pt`` (the run's ``best.pt``) and ``<NAME>.json``: the training
command, seed, the git revision the run started from (``--rev-file``, written before the run),
the training and net configuration, the validation curve, the best validation point and the
fresh-seed scores (a benchmarks/results/*.json). Refuses to replace shipped weights unless
``--overwrite``.

Usage::

    python tools/ship_model.py runs/semantic semantic --rev-file runs/semantic.rev \\
        --command "emkit train semantic --preset phantom --out runs/semantic --seed 0 --threads 2" \\
        --what "RSUNet semantic net: soma, axon, dendrite, glia, vessel at 40x8x8 nm" \\
        --eval benchmarks/results/shipped_semantic.json --machine "2-core x86_64 CPU"
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

MODELS = Path(__file__).resolve().parents[1] / "emkit" / "models"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("name")
    ap.add_argument("--command", required=True, help="the command that trained it")
    ap.add_argument("--rev-file", type=Path, required=True, help="file holding the git revision the run started from")
    ap.add_argument("--what", required=True, help="one line: what the net computes")
    ap.add_argument("--eval", type=Path, help="fresh-seed results JSON (benchmarks/results/…); a net trained on real "
                                              "data gives --heldout-eval instead")
    ap.add_argument("--machine", required=True)
    ap.add_argument("--previous-log", type=Path, help="log.json of an earlier stage whose weights this run started from "
                                                          "(--init)")
    ap.add_argument("--previous-command", help="the command(s) of that earlier stage")
    ap.add_argument("--previous-machine", help="where that earlier stage ran")
    ap.add_argument("--note", help="anything else a reader of the provenance must know")
    ap.add_argument("--heldout-eval", type=Path, help="scores on held-out real data (benchmarks/results/…), stored "
                                                      "as heldout_evaluation")
    ap.add_argument("--checkpoint", choices=("best", "last"), default="best",
                    help="which checkpoint of the run to ship (default best.pt; 'last': last.pt, without its optimizer "
                         "state — say why in --note)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    log = json.loads((args.run_dir / "log.json").read_text())
    cfg = log["train_config"]
    pt, meta = MODELS / f"{args.name}.pt", MODELS / f"{args.name}.json"
    if (pt.exists() or meta.exists()) and not args.overwrite:
        sys.exit(f"{pt} exists; pass --overwrite to replace the shipped weights")
    ph = cfg.get("phantom_size")
    out = {
        "name": args.name, "what": args.what, "command": args.command, "seed": cfg["seed"],
        "git_revision": args.rev_file.read_text().strip(), "train_config": cfg, "net_config": log["net_config"],
        "n_parameters": log["n_parameters"],
        "training_data": (f"phantoms {'x'.join(map(str, ph))}, default defects, seeds 101-106 (train), 199 "
                          f"(validation); {log['augment']} augmentations") if cfg.get("preset") == "phantom"
        else {"data": cfg["data"], "val_data": cfg["val_data"]},
        "iterations_run": int(log["train"]["iteration"][-1]) if log["train"].get("iteration") else 0,
        "best_iteration": log["best"]["iteration"], "seconds_per_iteration_median": log.get("seconds_per_iteration") or (
            round(float(sorted(log["train"]["seconds"])[len(log["train"]["seconds"]) // 2]), 4)
            if log["train"].get("seconds") else None),
        "validation": log["validation"], "validation_best": log["best"],
        "device": log["device"], "machine": args.machine,
    }
    if args.eval is None and args.heldout_eval is None:
        sys.exit("give --eval (phantom nets: fresh-seed scores) or --heldout-eval (real data: held-out scores)")
    if args.eval is not None:
        out["fresh_seed_evaluation"] = json.loads(args.eval.read_text())
    for key in ("wall_seconds", "eta", "init", "background", "augment", "validation_source"):
        if log.get(key) is not None:  # written by emkit.train since the isotropic / fine-tuning work
            out[{"eta": "eta_printed", "init": "init_note"}.get(key, key)] = log[key]
    if args.heldout_eval:
        out["heldout_evaluation"] = json.loads(args.heldout_eval.read_text())
    if args.previous_log:
        prev = json.loads(args.previous_log.read_text())
        out["previous_stage"] = {
            "command": args.previous_command, "machine": args.previous_machine, "device": prev.get("device"),
            "train_config": prev["train_config"], "iterations_run": int(prev["train"]["iteration"][-1]),
            "seconds_per_iteration_median": prev.get("seconds_per_iteration") or round(
                float(sorted(prev["train"]["seconds"])[len(prev["train"]["seconds"]) // 2]), 4),
            "validation": prev["validation"],
            "validation_best": prev["best"]}
    if args.note:
        out["note"] = args.note
    if args.checkpoint == "last":
        import torch

        blob = torch.load(args.run_dir / "last.pt", map_location="cpu", weights_only=True)
        blob.pop("training", None)
        it = int(blob["extra"]["iteration"])
        out["shipped_checkpoint"] = f"last.pt (iteration {it}); the run's best by its validation rule: iteration " \
                                    f"{log['best']['iteration']}"
        out["best_iteration"] = it  # the iteration of the shipped weights
        torch.save(blob, pt)
    else:
        shutil.copyfile(args.run_dir / "best.pt", pt)
    meta.write_text(json.dumps(out, indent=1) + "\n")
    print(f"shipped {pt} ({pt.stat().st_size / 1e6:.1f} MB) and {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
