"""``emkit status CONFIG``: how far a pipeline run got, stage by stage."""
from __future__ import annotations

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit status phantom --output data/run --set input.phantom.shape=64,256,256
  emkit status phantom --output data/run --set input.phantom.shape=64,256,256 --json
"""


def register(sub) -> None:
    from .run import add_config_arguments

    p = sub.add_parser(
        "status", help="show each stage of a pipeline run: done, running, failed (with the error), pending",
        description="Read the stage records of a configuration's run folder (RUN/provenance/) and print, per "
                    "configured stage, its state — done, running, interrupted (its process is gone), failed (with "
                    "the error the run recorded), pending, or changed (done with another configuration; the "
                    "changed fields are listed) — and how long it took. Reads only; never changes the run.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..pipeline.status import format_status, pipeline_status
    from .run import load

    st = pipeline_status(load(args))
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return 0
