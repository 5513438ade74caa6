"""``emkit train boundary|semantic|cleft|partner|defects|field``: train a net on dataset folders (or
generated phantoms). ``partner``, ``defects`` and ``field`` are handed to
``emkit.synapse.partner_train.train_partner_cli``, ``emkit.detect.train.train_defects_cli`` and
``emkit.align.fieldnet_train.train_field_cli``."""
from __future__ import annotations

import json
import shlex
import sys

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
on a GPU: emkit train semantic --preset phantom --device cuda --workers 14 --out runs/s

examples:
  emkit train boundary --data data/ph --iterations 200 --out runs/example
  emkit phantom data/ph_syn --size 24,160,160 --seed 3 --quiet
  emkit train cleft --data data/ph_syn --iterations 200 --out runs/cleft_example
  emkit train cleft --data data/ph_syn --init cleft --iterations 200 --out runs/cleft_tuned
"""


def _vec(s):
    return tuple(int(x) for x in s.split(","))


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a boundary, semantic, cleft, partner or defect net on dataset folders or phantoms",
        description="Train a Residual Symmetric U-Net as in the paper (AMSGrad, BCE with inverse margin and class "
                    "rebalancing, the paper's augmentations). DATA folders hold 'image', 'gt/segmentation' "
                    "(boundary), 'gt/semantic' (semantic) or 'gt/clefts' (cleft: cleft ids, 0 = none), optionally "
                    "'gt/myelin' and 'masks/<name>'. Writes "
                    "OUT/last.pt, OUT/best.pt and OUT/log.json. Sizes are z,y,x.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("task", choices=["boundary", "semantic", "cleft", "partner", "defects", "field"],
                   help="which net to train (partner: synaptic partner assignment; defects: image defect detection; "
                        "field: the alignment field net, self-supervised on section pairs)")
    p.add_argument("--data", nargs="+", default=[], metavar="URL", help="training dataset folders (paths or URLs)")
    p.add_argument("--val-data", nargs="+", default=[], metavar="URL",
                   help="validation dataset folders (default: hold out the last 20%% in y of the last --data)")
    p.add_argument("--preset", choices=["phantom"], default=None,
                   help="'phantom': generate training/validation phantoms with defects when --data is not given, "
                        "and use the preset's net size")
    p.add_argument("--iterations", type=int, default=None, help="total gradient steps (default 1000)")
    p.add_argument("--out", required=True, help="output folder for checkpoints and log.json")
    p.add_argument("--seed", type=int, default=None, help="seed of weights and data (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes that prepare the next batches (sampling, augmentation, targets) while the net "
                        "trains; keeps a GPU busy (default 0: in the training process; same batches either way)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="AMSGrad learning rate (paper: 0.001)")
    p.add_argument("--widths", type=_vec, default=None, metavar="W0,W1,...", help="feature maps per level")
    p.add_argument("--patch", type=_vec, default=None, metavar="Z,Y,X", help="training patch (default: from resolution)")
    p.add_argument("--heads", default=None, help="head kinds, e.g. affinity,long_range,myelin")
    p.add_argument("--augment", default=None,
                   help="augmentation preset: boundary, semantic, isotropic, none (default: the task's; isotropic for "
                        "a boundary net on isotropic data)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="start from these weights (fine-tuning): a checkpoint path or a shipped model name ('boundary': "
                        "the shipped boundary net nearest the data's resolution); the net's widths and heads are the "
                        "checkpoint's (--patch may change the patch); at another resolution its weights are adapted "
                        "(down-sampling and long-range offsets re-derived for the data)")
    p.add_argument("--rebalance-semantic", action="store_true", default=None,
                   help="class rebalancing of the semantic channels (not in the paper; helps rare classes)")
    p.add_argument("--rebalance-cleft", action="store_true", default=None,
                   help="class rebalancing of the cleft channel (not in the paper; synaptic voxels are rare)")
    p.add_argument("--balance", default=None, choices=("auto", "none", "classes", "clefts"),
                   help="where patches fall: 'classes' centres them on a voxel of a semantic class drawn uniformly "
                        "(rare classes seen as often as common ones), 'clefts' centres 80%% of them on a cleft drawn "
                        "uniformly, 'none' uniform; default auto: classes for semantic nets, clefts for cleft nets, "
                        "none for boundary nets")
    p.add_argument("--background", default=None, choices=("auto", "ignore", "boundary"),
                   help="label 0 in gt/segmentation: 'ignore' (unlabelled: edges touching it do not count), "
                        "'boundary' (membranes labelled 0: edges touching it are boundaries), default auto: "
                        "'boundary' when label 0 separates the bodies everywhere (no two bodies touch)")
    p.add_argument("--planar-labels", action="store_true", default=None,
                   help="labels drawn section by section (2D ids, e.g. from per-section membrane masks): "
                        "affinities across sections are left out of the loss, validation scores per section")
    p.add_argument("--input-masks", default=None, help="mask names zeroed in the input, comma-separated")
    p.add_argument("--loss-masks", default=None, help="mask names excluded from the loss (default: auto)")
    p.add_argument("--val-interval", type=int, default=None)
    p.add_argument("--checkpoint-interval", type=int, default=None)
    p.add_argument("--phantom-size", type=_vec, default=None, metavar="Z,Y,X", help="size of generated phantoms")
    p.add_argument("--phantom-seeds", type=_vec, default=None, metavar="S1,S2,...", help="training phantom seeds")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.task in ("partner", "defects", "field"):
        import importlib

        mod, fn = {"partner": ("emkit.synapse.partner_train", "train_partner_cli"),
                   "defects": ("emkit.detect.train", "train_defects_cli"),
                   "field": ("emkit.align.fieldnet_train", "train_field_cli")}[args.task]
        train_cli = getattr(importlib.import_module(mod), fn)
        print(json.dumps(train_cli(args), indent=2, default=str))
        return 0
    from ..errors import InputError
    from ..train.loop import TrainConfig, Trainer
    from ..train.presets import preset_overrides

    kw = preset_overrides(args.preset, args.task)
    given = {
        "data": tuple(args.data), "val_data": tuple(args.val_data), "iterations": args.iterations,
        "seed": args.seed, "device": args.device, "threads": args.threads, "workers": args.workers,
        "batch_size": args.batch_size,
        "lr": args.lr, "widths": args.widths, "patch_size": args.patch,
        "heads": tuple(h for h in args.heads.split(",") if h) if args.heads else None,
        "augment": args.augment, "balance": args.balance, "init": args.init, "background": args.background,
        "planar_labels": args.planar_labels,
        "rebalance_semantic": args.rebalance_semantic, "rebalance_cleft": args.rebalance_cleft,
        "input_masks": tuple(m for m in args.input_masks.split(",") if m) if args.input_masks else None,
        "loss_masks": args.loss_masks, "val_interval": args.val_interval,
        "checkpoint_interval": args.checkpoint_interval, "phantom_size": args.phantom_size,
        "phantom_seeds": args.phantom_seeds,
    }
    kw.update({k: v for k, v in given.items() if v is not None})
    kw.update(task=args.task, preset=args.preset, out_dir=args.out, progress=not args.no_progress)
    if args.data and args.preset:
        kw["data"] = tuple(args.data)
    if args.resume:
        cfg = _resumed_config(args, given)
    else:
        try:
            cfg = TrainConfig(**kw)
        except TypeError as e:
            raise InputError(str(e)) from None
    argv = sys.argv[sys.argv.index("train"):] if "train" in sys.argv else None
    command = ("emkit " + " ".join(shlex.quote(a) for a in argv)) if argv else None
    result = Trainer(cfg, resume=args.resume, command=command).run()
    summary = {"out": str(result.out_dir), "last": str(result.last), "best": str(result.best) if result.best else None,
               "iterations": result.log["train"]["iteration"][-1] if result.log["train"]["iteration"] else 0,
               "n_parameters": result.log["n_parameters"], "best_validation": result.log["best"],
               "seconds_per_iteration": result.log.get("seconds_per_iteration"),
               "wall_seconds": result.log.get("wall_seconds"), "eta_printed": result.log.get("eta"),
               "background": result.log.get("background"), "augment": result.log.get("augment"),
               "init": result.log.get("init")}
    print(json.dumps(summary, indent=2))
    return 0


def _resumed_config(args, given):
    """The saved run's TrainConfig with the few options a resume may change."""
    from dataclasses import replace
    from pathlib import Path

    from ..errors import InputError
    from ..nets import load_checkpoint
    from ..train.loop import TrainConfig

    last = Path(args.out) / "last.pt"
    if not last.is_file():
        raise InputError(f"cannot resume: {last} does not exist")
    saved = TrainConfig.from_dict(load_checkpoint(last)["training"]["train_config"])
    keep = {k: given[k] for k in ("iterations", "device", "threads", "workers", "val_interval", "checkpoint_interval")
            if given[k] is not None}
    return replace(saved, out_dir=args.out, progress=not args.no_progress, **keep)
