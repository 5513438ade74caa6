"""``emkit segment INPUT OUT_DIR``: watershed + agglomeration chunk by chunk, identical to global."""
from __future__ import annotations

import json

from .helpfmt import ExamplesHelpFormatter

DESCRIPTION = """\
Watershed and constrained mean-affinity agglomeration, chunk by chunk, with a result identical
to a global run. INPUT is one of:
  (a) an affinities layer (3 float32 channels z, y, x);
  (b) a probability layer with channels affinity_z, affinity_y, affinity_x (what `emkit infer`
      writes for the affinity head together with other heads): those three channels are read;
  (c) a 1-channel probability layer of boundary probability, 1 = boundary (ilastik and most
      pixel classifiers; `emkit import MAP URL --kind probability` takes float [0, 1] or uint8
      0..255 maps): affinities are 1 - max(b[v], b[v - e_d]) (emkit.affinity), and the watershed
      default is emkit.segment.params.BOUNDARY_MAP_WATERSHED (high 0.5; measured on real
      classifier output) unless --params is given.
Writes OUT_DIR/supervoxels, OUT_DIR/segmentation (the merge history cut at --threshold),
OUT_DIR/history.npz and OUT_DIR/params.json (the parameters used; --params reads it back).
Volumes up to 32 Mi voxels run in this process unless --workers/--scheduler ask for dask
(up to 4 Mi voxels without --chunk: as one piece, with the array function's identical result);
larger ones on a local cluster with one worker per core. An interrupted chunked run resumes
when started again with the same arguments.
"""

EPILOG = """\
examples:
  emkit segment data/ph/affinities data/ph/seg_serial --workers 0 --threshold 0.4
  emkit segment data/ph/affinities data/ph/seg_again --params data/ph/seg/params.json --semantic data/ph/semantic_prob
  emkit segment data/ph/affinities data/ph/seg_big_chunks --chunk 64,256,256 --quiet
"""


def register(sub) -> None:
    p = sub.add_parser(
        "segment", help="segment affinities or a boundary-probability map: supervoxels, merge history, segmentation",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("aff_url", metavar="INPUT",
                   help="affinities layer, probability layer with affinity_z/y/x channels, or 1-channel "
                        "boundary-probability layer (see above)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (path or URL)")
    p.add_argument("--semantic", metavar="URL", default=None,
                   help="semantic classes layer (0..5) or the semantic net's 5-channel probabilities (same size, "
                        "offset and resolution) for the semantic constraint")
    p.add_argument("--params", metavar="FILE", default=None,
                   help="JSON parameter file {\"watershed\": {...}, \"agglomeration\": {...}, \"threshold\": T} as "
                        "written by `emkit tune` or by a previous run (OUT_DIR/params.json)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="mean affinity at which the merge history is cut (default: the --params file's, else 0.5); "
                        "overrides the file's")
    p.add_argument("--chunk", default=None, metavar="Z,Y,X", help="task chunk size in voxels (default 32,128,128)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local dask worker processes (0: serially in this process; default: in this process up to "
                        "32 Mi voxels, else one worker per core)")
    g.add_argument("--scheduler", default=None, metavar="ADDR", help="address of a running dask scheduler")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from .faststart import fast_start

    fast_start("cloudfiles", "cloudvolume", "emkit.segment.pipeline")  # ~2 s less CPU per run (see there)
    from ..geometry import parse_vec3
    from ..segment.pipeline import segment_layers

    chunk = parse_vec3(args.chunk, "--chunk", positive=True) if args.chunk else None
    report = segment_layers(
        args.aff_url, args.out_dir, semantic_url=args.semantic, threshold=args.threshold, params=args.params,
        chunk_size=chunk, workers=args.workers, scheduler=args.scheduler, overwrite=args.overwrite,
        progress=not args.quiet)
    print(json.dumps(report, indent=2))
    return 0
