"""``emkit export URL DEST.npz``: a layer (or a box of it) into an ``.npz`` file."""
from __future__ import annotations

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit export data/ph/image image.npz
  emkit export data/ph/affinities affinities_crop.npz --bbox 0:8,0:64,0:64
"""


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="export a layer (or a bbox of it) to .npz",
        description="Export a Precomputed layer, or the part inside --bbox, to a compressed .npz holding "
                    "data ((c,) z, y, x), resolution (nm, z, y, x), offset (voxels, z, y, x) and kind.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("url", metavar="URL", help="layer URL or local path")
    p.add_argument("dest", metavar="DEST.npz", help="output file (must end in .npz)")
    p.add_argument("--bbox", metavar="Z0:Z1,Y0:Y1,X0:X1",
                   help="half-open box in voxels in layer coordinates (voxel offset included); default: all")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DEST.npz")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from ..geometry import parse_bbox
    from ..io.convert import export_volume

    bbox = parse_bbox(args.bbox) if args.bbox else None
    path = export_volume(args.url, args.dest, bbox=bbox, overwrite=args.overwrite)
    print(f"exported {args.url} -> {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    return 0
