"""``emkit infer MODEL IMAGE_URL OUT_URL``: chunked, seamless net inference over an image layer."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Run a net over an image layer the Chunkflow way: overlapping patches blended with a smooth weight
on one global patch grid, so chunked output has no seams.

MODEL is 'boundary', 'semantic' or 'cleft' (the shipped model of that family whose training resolution is
nearest the image's: boundary, boundary_*, ...; the one used is printed), a full shipped name, or a
checkpoint path (e.g. runs/mine/best.pt written by 'emkit train').

Output: a boundary net writes an 'affinities' layer (3 channels z, y, x) that 'emkit segment'
takes; its long-range heads are auxiliary training targets (paper, Methods) and are written only
when asked for with --heads (then as a 'probability' layer, one channel per output). A semantic net
writes a 'probability' layer of its 5 classes; the cleft net a 1-channel 'probability' layer
(channel 'cleft', synaptic cleft probability) that 'emkit synapses' thresholds into clefts. No input
or output masks are applied unless given (the paper used none for clefts: predicting no synapse is
a fair default on a defect).

Resolution: when the image is finer than the net's training resolution, it is averaged by a whole
factor per axis (at most --max-downsample, default 2) to the net's resolution, as the paper did
4 -> 8 nm in-plane (ssTEM at 50x4x4 nm through a 40x8x8 nm net: 2x in y, x; z stays); an axis still
more than 1.5x away after that (coarser, or finer than the averaging allows) is refused with the
shipped models' resolutions and how to fine-tune. Outputs are always written on the IMAGE's grid
(same size, voxel offset, resolution, chunks), interpolated linearly back from the net's grid, so
segment, evaluate and view take them unchanged.

An existing OUT_URL is refused unless --overwrite, except when it holds an interrupted run with the
same parameters: then only chunks without a done-marker (<out>/.emkit/infer/done/) are computed.
Sizes are z,y,x voxels.
"""

EPILOG = """\
examples:
  emkit infer boundary data/sstem/image data/sstem/aff_4nm --workers 0
  emkit infer semantic data/ph/image data/ph/semantic_example --chunk 16,128,128 --workers 0
  emkit infer cleft data/ph/image data/ph/clefts_prob --workers 0
  emkit infer runs/example/best.pt data/ph/image data/ph/all_heads --heads all --workers 0
  emkit infer boundary data/fib/image data/fib/affinities --max-downsample 4 --workers 0
"""


def register(sub) -> None:
    p = sub.add_parser(
        "infer", help="run a boundary/semantic/cleft net over an image layer, chunk by chunk (resumable)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL",
                   help="boundary, semantic or cleft (the shipped model nearest the image's resolution), a full "
                        "shipped "
                        "name, or a checkpoint path (.pt)")
    p.add_argument("image", metavar="IMAGE_URL", help="image layer (URL or local path)")
    p.add_argument("out", metavar="OUT_URL", help="output layer (URL or local path)")
    p.add_argument("--mask-in", metavar="URL", help="mask layer: where it is 1, the net is fed zeros")
    p.add_argument("--mask-out", metavar="URL", help="mask layer: where it is 1, outputs are set to 0")
    p.add_argument("--chunk", metavar="Z,Y,X", help="task chunk, a multiple of the image's storage chunk "
                                                    "(default: about 4 M voxels)")
    p.add_argument("--heads", metavar="H[,H…]|all",
                   help="heads to output, e.g. affinity, affinity,myelin or all (default: the affinity head of a "
                        "boundary net, written as an affinities layer; every head of other nets)")
    p.add_argument("--patch", metavar="Z,Y,X",
                   help="patch size on the grid the net runs on (default: the net's training patch)")
    p.add_argument("--max-downsample", type=int, default=2, metavar="N",
                   help="largest whole factor per axis by which a finer image is averaged to the net's resolution "
                        "(default 2)")
    p.add_argument("--overlap", metavar="F|Z,Y,X", default="0.25",
                   help="patch overlap: a fraction of the patch (0.25) or voxels z,y,x (default 0.25)")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="patches per forward pass (default 4)")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help="local dask worker processes (default: one per core; 0 runs serially, no dask)")
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler (tcp://host:8786)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output layer")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _overlap(text: str):
    from ..errors import InputError
    from ..geometry import parse_vec3

    parts = [t.strip() for t in text.split(",")]
    try:
        if len(parts) == 1:
            v = float(parts[0])
            return int(v) if v.is_integer() else v
    except ValueError:
        raise InputError(f"--overlap must be a fraction (0.25) or voxels z,y,x, got {text!r}") from None
    if any("." in t for t in parts):
        return parse_vec3(text, "--overlap", dtype=float)
    return parse_vec3(text, "--overlap")


def run(args) -> int:
    import sys
    import warnings

    from ..geometry import parse_vec3
    from ..inference import infer_layers

    def show(message, category, *rest, **kw):  # notes as one line each, when they happen
        print(f"emkit infer: note: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        rep = _infer(args, infer_layers, parse_vec3)
    print(rep.summary())
    return 0


def _infer(args, infer_layers, parse_vec3):
    return infer_layers(
        args.model, args.image, args.out, mask_in_url=args.mask_in, mask_out_url=args.mask_out,
        chunk_size=parse_vec3(args.chunk, "--chunk", positive=True) if args.chunk else None,
        heads=args.heads, patch_size=parse_vec3(args.patch, "--patch", positive=True) if args.patch else None,
        overlap=_overlap(args.overlap), batch_size=args.batch_size, device=args.device, workers=args.workers,
        scheduler=args.scheduler, overwrite=args.overwrite, max_downsample=args.max_downsample,
        progress=not args.quiet)
