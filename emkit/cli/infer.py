"""``emkit infer MODEL IMAGE_URL OUT_URL``: chunked, seamless net inference over an image layer."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "infer", help="run a boundary/semantic net over an image layer, chunk by chunk (resumable)",
        description="Run a net over an image layer the Chunkflow way: overlapping patches blended with a smooth "
                    "weight on one global patch grid, so chunked output has no seams. Writes an affinities layer "
                    "(only the affinity head) or a probability layer (one channel per output). MODEL is a shipped "
                    "model name (boundary, semantic) or a checkpoint path. An existing OUT_URL is refused unless "
                    "--overwrite, except when it holds an interrupted run with the same parameters: then only chunks "
                    "without a done-marker (<out>/.emkit/infer/done/) are computed. Sizes are z,y,x voxels.")
    p.add_argument("model", metavar="MODEL", help="shipped model name (boundary, semantic) or checkpoint path (.pt)")
    p.add_argument("image", metavar="IMAGE_URL", help="image layer (URL or local path)")
    p.add_argument("out", metavar="OUT_URL", help="output layer (URL or local path)")
    p.add_argument("--mask-in", metavar="URL", help="mask layer: where it is 1, the net is fed zeros")
    p.add_argument("--mask-out", metavar="URL", help="mask layer: where it is 1, outputs are set to 0")
    p.add_argument("--chunk", metavar="Z,Y,X", help="task chunk, a multiple of the image's storage chunk "
                                                    "(default: about 4 M voxels)")
    p.add_argument("--heads", metavar="H[,H…]", help="heads to output, e.g. affinity or affinity,myelin (default: all)")
    p.add_argument("--patch", metavar="Z,Y,X", help="patch size (default: the net's training patch)")
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
    from ..geometry import parse_vec3
    from ..inference import infer_layers

    rep = infer_layers(
        args.model, args.image, args.out, mask_in_url=args.mask_in, mask_out_url=args.mask_out,
        chunk_size=parse_vec3(args.chunk, "--chunk", positive=True) if args.chunk else None,
        heads=args.heads, patch_size=parse_vec3(args.patch, "--patch", positive=True) if args.patch else None,
        overlap=_overlap(args.overlap), batch_size=args.batch_size, device=args.device, workers=args.workers,
        scheduler=args.scheduler, overwrite=args.overwrite, progress=not args.quiet)
    print(rep.summary())
    return 0
