"""``emkit info URL``: print a layer's facts as JSON."""
from __future__ import annotations

import json

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit info data/ph/image
  emkit info data/sstem/affinities
"""


def register(sub) -> None:
    p = sub.add_parser("info", help="print a layer's facts (kind, size, resolution, chunks) as JSON",
                       description="Print the facts of a Precomputed layer as JSON (axes z, y, x).",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("url", help="layer URL or local path")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import Layer

    print(json.dumps(Layer.open(args.url).describe(), indent=2))
    return 0
