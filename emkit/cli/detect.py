"""``emkit detect IMAGE_URL OUT_DIR``: fold, crack and resin masks from the image with the defect net."""
from __future__ import annotations

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit detect data/ph/image data/ph/defects_found
  emkit masks data/ph/image data/ph/masks_detected --defects data/ph/defects_found
"""

#: above this many voxels the command does not read the masks back to summarise them
_SUMMARY_VOXELS = 256 * 1024 * 1024


def register(sub) -> None:
    p = sub.add_parser(
        "detect", help="detect folds, cracks and resin with the defect net (mask layers for `emkit masks`)",
        description="Run the defect net (the paper's 2D U-Net, Methods: Fold & crack detection, Resin detection) "
                    "section by section: folds and cracks at about 16 nm per pixel, resin at about 32 nm, in tiles of "
                    "256 px overlapping by half. Writes OUT_DIR/masks/fold, OUT_DIR/masks/crack and OUT_DIR/masks/resin "
                    "(mask layers on the image's grid, 1 = defect) that `emkit masks --defects OUT_DIR` adds to the "
                    "boundary net's input mask. An interrupted run resumes when rerun with the same arguments; other "
                    "existing outputs are refused unless --overwrite. Sizes are z,y,x voxels.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("image", metavar="IMAGE_URL", help="image layer (URL or local path)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (masks/fold, masks/crack, masks/resin)")
    p.add_argument("--model", default="defects", help="shipped model name or checkpoint path (default: defects)")
    p.add_argument("--threshold", type=float, default=None, help="probability above which a pixel is a defect "
                                                                   "(default: per kind, DefectParams: fold 0.4, crack 0.8, "
                                                                   "resin 0.7; one value here applies to all kinds)")
    p.add_argument("--chunk", metavar="Z,Y,X", help="task chunk: whole storage chunks; y/x whole tile blocks "
                                                    "(default: a storage chunk of whole sections)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=0, metavar="N",
                       help="local dask worker processes (default 0: in this process)")
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler (tcp://host:8786)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per task")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..detect.defect_masks import DefectParams, detect_defects_layers
    from ..geometry import parse_vec3
    from ..io import Layer

    params = DefectParams() if args.threshold is None else DefectParams(threshold=args.threshold)
    urls = detect_defects_layers(
        args.image, args.out_dir, model=args.model, params=params,
        chunk_size=parse_vec3(args.chunk, "--chunk", positive=True) if args.chunk else None,
        workers=None if args.scheduler else args.workers, scheduler=args.scheduler, overwrite=args.overwrite,
        progress=not args.quiet, threads=args.threads)
    for kind, url in urls.items():
        line = f"{kind}: {url}"
        layer = Layer.open(url)
        if int(np.prod(layer.size)) <= _SUMMARY_VOXELS:
            z0 = layer.voxel_offset[0]
            sections = [int(z0 + z) for z in np.flatnonzero(layer.read().reshape(layer.size[0], -1).any(axis=1))]
            line += f" (sections with detections: {sections if sections else 'none'})"
        print(line)
    return 0
