"""``emkit mesh SEG_LAYER``: a 3D mesh per segment (marching cubes + simplification), as Precomputed meshes."""
from __future__ import annotations

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit mesh data/ph/seg_tuned/segmentation --overwrite
  emkit mesh data/ph/gt/segmentation --reduction-factor 0 --overwrite --workers 0
"""


def register(sub) -> None:
    from ..mesh import MeshParams

    d = MeshParams()
    p = sub.add_parser(
        "mesh", help="mesh every segment (zmesh) into SEG_LAYER/mesh, shown in 3D by emkit view",
        description="Marching cubes and quadric simplification (zmesh, as Igneous meshes the paper's segments) "
                    "chunk by chunk; the pieces of each segment are merged into one closed mesh, written as "
                    "Neuroglancer legacy Precomputed meshes (uncompressed) in SEG_LAYER/mesh, and the layer's info "
                    "names them, so Neuroglancer (emkit view) shows them in 3D. Existing meshes are refused "
                    "unless --overwrite. Sizes are z,y,x voxels.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("seg", metavar="SEG_LAYER", help="segmentation layer (URL or local path)")
    p.add_argument("--reduction-factor", type=int, default=d.reduction_factor, metavar="R",
                   help=f"simplify to about 1/R of the triangles; 0: no simplification (default {d.reduction_factor})")
    p.add_argument("--max-error", type=float, default=d.max_error, metavar="NM",
                   help=f"largest distance a simplified vertex moves, nm (default {d.max_error:g})")
    p.add_argument("--dust", type=int, default=d.dust_threshold, metavar="VOXELS",
                   help="skip segment pieces smaller than this in a task's box (default 0: mesh all)")
    p.add_argument("--task", metavar="Z,Y,X", help="box meshed by one task, whole storage chunks "
                                                   "(default: 4x the storage chunk in y, x)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=0, metavar="N",
                       help="local dask worker processes (default 0: in this process)")
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler (tcp://host:8786)")
    p.add_argument("--overwrite", action="store_true", help="replace existing meshes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..geometry import parse_vec3
    from ..mesh import MeshParams, mesh_layers

    params = MeshParams(reduction_factor=args.reduction_factor, max_error=args.max_error, dust_threshold=args.dust)
    rep = mesh_layers(args.seg, params=params,
                      task_size=parse_vec3(args.task, "--task", positive=True) if args.task else None,
                      overwrite=args.overwrite, workers=None if args.scheduler else args.workers,
                      scheduler=args.scheduler, progress=not args.quiet)
    print(rep.summary())
    return 0
