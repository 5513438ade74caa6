"""``emkit segment AFF_URL OUT_DIR``: watershed + agglomeration chunk by chunk, identical to global."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "segment", help="segment an affinity layer: supervoxels, merge history, segmentation",
        description="Watershed and constrained mean-affinity agglomeration of an affinity layer, chunk by "
                    "chunk (serially or on dask) with a result identical to a global run. Writes "
                    "OUT_DIR/supervoxels, OUT_DIR/history.npz and OUT_DIR/segmentation (the history cut at "
                    "--threshold). An interrupted run resumes when started again with the same arguments.")
    p.add_argument("aff_url", metavar="AFF_URL", help="affinities layer (3 channels z, y, x, float32)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (path or URL)")
    p.add_argument("--semantic", metavar="URL", default=None,
                   help="semantic classes layer (0..5) or the semantic net's 5-channel probabilities (same size) "
                        "for the semantic constraint")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="mean affinity at which the merge history is cut (default 0.5)")
    p.add_argument("--chunk", default=None, metavar="Z,Y,X", help="task chunk size in voxels (default 32,128,128)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local dask worker processes (0: serial in this process; default: one per core)")
    g.add_argument("--scheduler", default=None, metavar="ADDR", help="address of a running dask scheduler")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..geometry import parse_vec3
    from ..segment.pipeline import DEFAULT_THRESHOLD, segment_layers

    chunk = parse_vec3(args.chunk, "--chunk", positive=True) if args.chunk else None
    report = segment_layers(
        args.aff_url, args.out_dir, semantic_url=args.semantic,
        threshold=DEFAULT_THRESHOLD if args.threshold is None else args.threshold, chunk_size=chunk,
        workers=args.workers, scheduler=args.scheduler, overwrite=args.overwrite, progress=not args.quiet)
    print(json.dumps(report, indent=2))
    return 0
