"""``emkit run CONFIG``: the whole pipeline of a configuration file, resumable, with provenance."""
from __future__ import annotations

import sys

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit run phantom --output data/run --set input.phantom.shape=64,256,256
  emkit run phantom --output data/run --set input.phantom.shape=64,256,256 --set stages.meshes.reduction_factor=0 --overwrite

A configuration (YAML; every field and its default: emkit/pipeline/config.py):
  input: {phantom: {shape: [64, 256, 256], seed: 0}}   # or {layer: gs://bucket/image}
  output: data/run
  cluster: {workers: 0}                                  # or {scheduler: tcp://host:8786}
  stages: {boundary: {}, segment: {threshold: 0.5}, synapses: {}, meshes: {}, evaluate: {}}
"""


def add_config_arguments(p) -> None:
    """CONFIG, --output and --set: shared by `emkit run` and `emkit status`."""
    p.add_argument("config", metavar="CONFIG",
                   help="pipeline configuration file (YAML), or the name of a shipped one (phantom)")
    p.add_argument("--output", metavar="DIR", default=None,
                   help="run folder (replaces the configuration's output)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="set_",
                   help="replace one field of the configuration, e.g. stages.segment.threshold=0.4 or "
                        "input.phantom.shape=16,128,128 (repeatable)")


def load(args):
    from ..pipeline.config import load_config, parse_set

    return load_config(args.config, output=args.output, overrides=parse_set(args.set_))


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="run a pipeline configuration (phantom or image layer -> ... -> meshes, scores), resumably",
        description="Run the stages a configuration file names, in the order align, masks, boundary, semantic, "
                    "segment, synapses, pyramids, meshes, skeletons, evaluate (each with the library's chunked "
                    "layer function, on one dask cluster when workers or a scheduler are given), into the run "
                    "folder. Each stage records beside its outputs what made them (RUN/provenance/STAGE.json: its "
                    "configuration, emkit and dependency versions, git revision, models, command line, times). A "
                    "rerun skips finished stages and resumes an interrupted one (chunk by chunk where the stage "
                    "keeps done-markers); a rerun whose configuration changed for a finished stage is refused, "
                    "naming the changed fields, unless --overwrite or --restart-from. `emkit status` shows how "
                    "far a run got. Stages not in the configuration are skipped, said so.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    add_config_arguments(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="local dask worker processes (0: in this process; default: the configuration's cluster)")
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler (tcp://host:8786)")
    p.add_argument("--stages", metavar="A,B", default=None,
                   help="run only these stages (comma-separated); the stages they read from must be done")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true",
                       help="recompute stages whose configuration changed (and those reading from them) and "
                            "unfinished ones (instead of resuming them)")
    again.add_argument("--restart-from", metavar="STAGE", default=None,
                       help="recompute this stage and every later one")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def command_line(args) -> str:
    """The ``emkit run`` command line these arguments stand for (recorded in the provenance)."""
    import shlex

    words = ["emkit", "run", args.config]
    for flag, value in (("--output", args.output), ("--workers", args.workers), ("--scheduler", args.scheduler),
                        ("--stages", args.stages), ("--restart-from", args.restart_from)):
        if value is not None:
            words += [flag, str(value)]
    for item in args.set_:
        words += ["--set", item]
    words += [f for f, on in (("--overwrite", args.overwrite), ("--quiet", args.quiet)) if on]
    return shlex.join(str(w) for w in words)


def run(args) -> int:
    from ..errors import EmkitError
    from ..pipeline.run import run_pipeline

    cfg = load(args)
    stages = None if args.stages is None else [s.strip() for s in args.stages.split(",") if s.strip()]
    try:
        run_pipeline(cfg, workers=args.workers, scheduler=args.scheduler, stages=stages, overwrite=args.overwrite,
                     restart_from=args.restart_from, progress=not args.quiet, command=command_line(args))
    except EmkitError:
        raise
    except Exception as exc:  # a stage failed: its record holds the message; rerunning resumes
        from ..pipeline.redact import redact_text

        print(f"emkit run: error: {type(exc).__name__}: {redact_text(str(exc))}\n(`emkit status {args.config}` shows the run; the same "
              "command resumes it)", file=sys.stderr)
        return 1
    return 0
