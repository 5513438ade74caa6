"""Entry point of the ``emkit`` command.

Each command lives in its own module in this package, exposing ``register(subparsers)`` which
adds a sub-parser whose ``func`` default takes the parsed ``args``. Modules must import only
light things at module level (heavy imports go inside the command function).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import EmkitError

# command modules, in the order they appear in --help
COMMANDS = ["info", "import_", "export", "phantom", "transfer", "view", "segment", "synapses", "tune", "evaluate", "train", "infer",
            "align", "detect", "masks", "pyramid", "mesh", "skeleton", "run", "status", "demo"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="emkit",
        description="emkit: neural circuit reconstruction from serial-section EM. "
                    "Arrays are (c,) z, y, x; sizes and offsets are given as z,y,x.")
    parser.add_argument("--version", action="version", version=f"emkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"emkit.cli.{name}")
        except ModuleNotFoundError as exc:  # a command still being built
            if exc.name != f"emkit.cli.{name}":
                raise
            continue
        mod.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .faststart import fast_start

    fast_start()  # the one-shot command process only: cheaper imports and exit (see emkit.cli.faststart)
    try:
        rc = args.func(args)
    except EmkitError as exc:
        from ..pipeline.redact import redact_text

        print(f"emkit {args.command}: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emkit {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
