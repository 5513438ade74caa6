"""``emkit transfer SRC_URL DEST_URL``: copy, rechunk and re-encode a layer on the dask runtime."""
from __future__ import annotations

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit transfer data/ph/image data/ph/image_copy --workers 0
  emkit transfer data/ph/affinities data/ph/affinities_crop --bbox 0:16,0:64,0:64 --chunk 16,64,64 --workers 0
"""


def register(sub) -> None:
    p = sub.add_parser(
        "transfer", help="copy a layer, rechunked and re-encoded, chunk by chunk (resumable)",
        description="Copy a Precomputed layer to DEST_URL chunk by chunk on a dask cluster (or serially), "
                    "optionally rechunked (--chunk), re-encoded (--encoding) and cropped (--bbox). "
                    "An existing DEST_URL is refused unless --overwrite, except when it holds an "
                    "interrupted transfer with the same parameters: then the command resumes, copying only "
                    "the chunks without a done-marker (<dest>/.emkit/transfer/done/). Sizes are z,y,x voxels.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("src", metavar="SRC_URL", help="source layer (URL or local path)")
    p.add_argument("dest", metavar="DEST_URL", help="destination layer (URL or local path; gs:// and s3:// work)")
    p.add_argument("--chunk", metavar="Z,Y,X", help="storage chunk size of the destination (default: the source's)")
    p.add_argument("--task", metavar="Z,Y,X",
                   help="box copied by one task, a multiple of --chunk (default: about 4 MiB of voxels)")
    p.add_argument("--encoding", metavar="E", help="destination encoding, e.g. raw, jpeg, compressed_segmentation, "
                                                   "compresso, fpzip (default: the source's)")
    p.add_argument("--bbox", metavar="Z0:Z1,Y0:Y1,X0:X1", help="copy only this box (voxels, global coordinates)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help="local dask worker processes (default: one per core; 0 runs serially, no dask)")
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler (tcp://host:8786)")
    p.add_argument("--retries", type=int, default=3, help="extra attempts of a failing chunk (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..geometry import parse_vec3
    from ..transfer import transfer

    chunk = parse_vec3(args.chunk, "--chunk", positive=True) if args.chunk else None
    task = parse_vec3(args.task, "--task", positive=True) if args.task else None
    rep = transfer(args.src, args.dest, chunk_size=chunk, task_size=task, encoding=args.encoding, bbox=args.bbox,
                   overwrite=args.overwrite, workers=args.workers, scheduler=args.scheduler, retries=args.retries,
                   progress=not args.quiet)
    print(rep.summary())
    return 0
