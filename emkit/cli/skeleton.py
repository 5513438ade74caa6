"""``emkit skeleton SEG_LAYER``: TEASAR skeletons (kimimaro) as Precomputed skeletons, and a per-neuron table."""
from __future__ import annotations

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit skeleton data/ph/seg_tuned/segmentation --out data/ph/seg_tuned/neurons.parquet --overwrite
  emkit skeleton data/ph/gt/segmentation --synapses data/ph/gt/synapses.parquet --out data/ph/gt/neurons.parquet --overwrite --workers 0
"""


def register(sub) -> None:
    from ..skeleton import SkeletonParams

    d = SkeletonParams()
    p = sub.add_parser(
        "skeleton", help="skeletonize every segment (TEASAR, kimimaro) into SEG_LAYER/skeletons, plus a table",
        description="TEASAR skeletons (kimimaro, as Igneous skeletonizes the paper's segments) chunk by chunk; the "
                    "pieces of each segment are merged, post-processed (ticks removed) and smoothed, written as "
                    "Precomputed skeletons (uncompressed) in SEG_LAYER/skeletons, named in the layer's info so "
                    "Neuroglancer shows them. --out writes the per-neuron table (Parquet: segment_id, "
                    "path_length_um, branch_points, endpoints, vertices, voxels, synapse_count, synapses_pre, "
                    "synapses_post; the synapse columns are filled from --synapses, a table with pre_id and "
                    "post_id columns). Existing skeletons or table are refused unless --overwrite. "
                    "Sizes are z,y,x voxels.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("seg", metavar="SEG_LAYER", help="segmentation layer (URL or local path)")
    p.add_argument("--out", metavar="TABLE.parquet", help="write the per-neuron table here")
    p.add_argument("--synapses", metavar="TABLE", help="synapse table (Parquet or CSV with pre_id, post_id columns)")
    p.add_argument("--scale", type=float, default=d.scale, help=f"TEASAR invalidation scale (default {d.scale:g})")
    p.add_argument("--const", type=float, default=d.const, metavar="NM",
                   help=f"TEASAR invalidation constant, nm (default {d.const:g})")
    p.add_argument("--dust", type=int, default=d.dust_threshold, metavar="VOXELS",
                   help=f"segments with fewer voxels get no skeleton (default {d.dust_threshold})")
    p.add_argument("--tick", type=float, default=d.tick_threshold, metavar="NM",
                   help=f"remove branches shorter than this, nm (default {d.tick_threshold:g})")
    p.add_argument("--smooth", type=int, default=d.smooth_window, metavar="N",
                   help=f"moving-average window along paths, vertices; 1 = raw lattice path (default {d.smooth_window})")
    p.add_argument("--task", metavar="Z,Y,X", help="box skeletonized by one task, whole storage chunks "
                                                   "(default: 4x the storage chunk in y, x)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=0, metavar="N",
                       help="local dask worker processes (default 0: in this process)")
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler (tcp://host:8786)")
    p.add_argument("--overwrite", action="store_true", help="replace existing skeletons and table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..geometry import parse_vec3
    from ..skeleton import SkeletonParams, skeleton_layers

    params = SkeletonParams(scale=args.scale, const=args.const, dust_threshold=args.dust, tick_threshold=args.tick,
                            smooth_window=args.smooth)
    rep = skeleton_layers(args.seg, params=params, synapses=args.synapses, table_path=args.out,
                          task_size=parse_vec3(args.task, "--task", positive=True) if args.task else None,
                          overwrite=args.overwrite, workers=None if args.scheduler else args.workers,
                          scheduler=args.scheduler, progress=not args.quiet)
    print(rep.summary())
    t = rep.table
    if t is not None and len(t):
        show = t.sort_values("path_length_um", ascending=False).head(10)
        print(show.to_string(index=False))
    return 0
