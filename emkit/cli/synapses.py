"""``emkit synapses IMAGE_URL SEG_URL OUT_DIR``: cleft net → components → partner net → synapse table."""
from __future__ import annotations

import json

from .helpfmt import ExamplesHelpFormatter

DESCRIPTION = """\
Find the synapses of an image with its segmentation, chunk by chunk: the cleft net's probability
(OUT_DIR/cleft_prob), connected components across chunks (OUT_DIR/clefts, clefts.parquet), the
partner net's presynaptic and postsynaptic segment for each cleft (partners.parquet), then clefts
within 700 nm with the same partners merged and autapses dropped (paper, Methods). Writes the
synapse table OUT_DIR/synapses.parquet (id, pre_id, post_id, centroid_{z,y,x}_nm, size_voxels,
bbox, cleft_score, assignment_score, cleft_ids), the wiring diagram's edge list OUT_DIR/edges.parquet
(pre_id, post_id, synapse_count, total_size) and OUT_DIR/synapses.json (command, models, layers,
parameters, emkit version, git revision); prints a JSON report with the connectivity summary.
The segmentation must be on the image's grid. --cleft-model/--partner-model take a shipped name or a
checkpoint; truth:DATASET_DIR uses a phantom dataset's ground truth instead (an oracle, recorded as
such). An interrupted run resumes when started again with the same arguments; a finished one is
not overwritten unless --overwrite. `emkit view IMAGE OUT_DIR` shows the synapses in Neuroglancer;
`emkit evaluate --synapses OUT_DIR DATASET` scores them.
"""

EPILOG = """\
examples:
  emkit synapses data/ph/image data/ph/gt/image_frame/segmentation data/ph/synapses_on_gt --quiet
  emkit synapses data/ph/image data/ph/seg/segmentation data/ph/synapses_oracle --cleft-model truth:data/ph --partner-model truth:data/ph --chunk 8,64,64 --workers 2 --quiet
"""


def register(sub) -> None:
    p = sub.add_parser(
        "synapses", help="synapses of an image + segmentation: cleft net, partner net, synapse table, wiring diagram",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("image_url", metavar="IMAGE_URL", help="image layer (uint8)")
    p.add_argument("seg_url", metavar="SEG_URL", help="segmentation layer on the image's grid")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (path or URL)")
    p.add_argument("--cleft-model", default="cleft",
                   help="cleft net: shipped name or checkpoint (default: cleft); truth:DATASET_DIR for the oracle")
    p.add_argument("--partner-model", default="partner",
                   help="partner net: shipped name or checkpoint (default: partner); truth:DATASET_DIR for the oracle")
    p.add_argument("--cleft-threshold", type=float, default=None, metavar="T",
                   help="a voxel is synaptic when its cleft probability is > T (default: the threshold recorded with the "
                        "cleft model, chosen on its validation data; else 0.5)")
    p.add_argument("--min-size", type=int, default=None, metavar="VOXELS",
                   help="smallest cleft in voxels (default: 40 at 8x8x40 nm, scaled by voxel volume; paper)")
    p.add_argument("--merge-distance", type=float, default=None, metavar="NM",
                   help="merge clefts with the same partners whose centroids lie within NM (default 700, paper; 0: off)")
    p.add_argument("--keep-autapses", action="store_true", help="keep synapses whose pre and post segment are the same")
    p.add_argument("--chunk", default=None, metavar="Z,Y,X", help="task chunk in voxels (default: 2x the image's "
                                                                  "storage chunk in y, x)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local dask worker processes (0: in this process; default: in this process up to 32 Mi "
                        "voxels, else one per core)")
    g.add_argument("--scheduler", default=None, metavar="ADDR", help="address of a running dask scheduler")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from ..errors import InputError
    from ..geometry import parse_vec3
    from ..synapse import CleftParams, SynapseParams
    from ..synapse.pipeline import synapses_layers

    cleft = {}
    if args.cleft_threshold is not None:
        cleft["threshold"] = args.cleft_threshold
    if args.min_size is not None:
        cleft["min_size_voxels"] = args.min_size
    sp = {"cleft": CleftParams(**cleft), "drop_autapses": not args.keep_autapses}
    if args.merge_distance is not None:
        sp["merge_distance_nm"] = args.merge_distance
    params = SynapseParams(**sp)
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    chunk = parse_vec3(args.chunk, "--chunk", positive=True) if args.chunk else None
    command = "emkit " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[1:2] == ["synapses"] else None
    report = synapses_layers(args.image_url, args.seg_url, args.out_dir, cleft_model=args.cleft_model,
                             partner_model=args.partner_model, params=params, chunk_size=chunk, workers=args.workers,
                             scheduler=args.scheduler, overwrite=args.overwrite, progress=not args.quiet,
                             command=command)
    print(json.dumps(report, indent=2))
    return 0
