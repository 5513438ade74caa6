"""``emkit pyramid LAYER``: coarser scales (mips) of a layer, averaged (images) or mode (segmentations)."""
from __future__ import annotations

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit pyramid data/ph/image_rechunked --mips 2 --overwrite
  emkit pyramid data/ph/seg_tuned/segmentation --mips 3 --overwrite --workers 0
"""


def register(sub) -> None:
    p = sub.add_parser(
        "pyramid", help="add downsampled scales (mips) to a layer for Neuroglancer (averaging / mode)",
        description="Add mips 1..N to LAYER's own Precomputed info, chunk by chunk (tinybrain): image, affinities "
                    "and probability layers are averaged, segmentation and mask layers take the mode of each block. "
                    "Per mip an axis is halved when its voxel size is at most half the coarsest axis' (40x8x8 nm: "
                    "1,2,2 then 1,2,2 then 2,2,2; isotropic: 2,2,2). Neuroglancer switches between the scales by "
                    "zoom. A layer that already has scales above mip 0 is refused unless --overwrite. "
                    "Sizes are z,y,x voxels.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("layer", metavar="LAYER", help="layer to downsample (URL or local path)")
    p.add_argument("--mips", type=int, metavar="N",
                   help="levels to add (default: until y and x are at most 128 voxels)")
    p.add_argument("--factor", metavar="Z,Y,X", help="the same factor at every mip instead of the rule above")
    p.add_argument("--task", metavar="Z,Y,X", help="output box of one task at each mip, whole storage chunks "
                                                   "(default: 4x the storage chunk in y, x)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=0, metavar="N",
                       help="local dask worker processes (default 0: in this process)")
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler (tcp://host:8786)")
    p.add_argument("--overwrite", action="store_true", help="replace the layer's existing mips")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InputError
    from ..geometry import parse_vec3
    from ..pyramid import pyramid_layers

    factors = None
    if args.factor:
        if args.mips is None:
            raise InputError("--factor needs --mips N (how many levels)")
        factors = [parse_vec3(args.factor, "--factor", positive=True)] * int(args.mips)
    rep = pyramid_layers(args.layer, mips=args.mips, factors=factors,
                         task_size=parse_vec3(args.task, "--task", positive=True) if args.task else None,
                         overwrite=args.overwrite, workers=None if args.scheduler else args.workers,
                         scheduler=args.scheduler, progress=not args.quiet)
    print(rep.summary())
    return 0
