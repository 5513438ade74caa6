"""``emkit masks IMAGE_URL OUT_DIR``: misalignment maps → step/slip → the boundary net's input and output masks."""
from __future__ import annotations

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit masks data/ph/image data/ph/masks_and_maps --maps
  emkit masks data/ph/image data/ph/masks_with_folds --defect fold=data/ph/masks/fold --defect crack=data/ph/masks/crack
  emkit masks data/ph/image data/ph/masks_true_defects --defects data/ph
  emkit masks data/ph/image data/ph/masks_paper_rule --output-steps
"""

#: above this many voxels the command does not read the masks back to summarise them
_SUMMARY_VOXELS = 256 * 1024 * 1024


def register(sub) -> None:
    p = sub.add_parser(
        "masks", help="find misaligned sections (steps, slips) and write the boundary net's input/output masks",
        description="Misalignment maps (correlation of high-pass filtered 8x8 px patches of each section with up "
                    "to 5 previous ones, at about 64 nm per pixel), steps and slips classified from them, and the "
                    "paper's segmentation masks (Methods: Segmentation masks): OUT_DIR/mask_in (slips, plus the "
                    "fold/crack/resin masks given with --defects or --defect) and OUT_DIR/mask_out (locations masked "
                    "in the input for 3 consecutive sections, and steps with --output-steps), mask layers on the image's grid that "
                    "`emkit infer --mask-in/--mask-out` take. Existing outputs are refused unless --overwrite. "
                    "Sizes are z,y,x voxels.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("image", metavar="IMAGE_URL", help="image layer (URL or local path)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (mask_in, mask_out, and maps with --maps)")
    p.add_argument("--defect", action="append", default=[], metavar="KIND=URL",
                   help="a defect mask layer to add to the input mask (fold, crack or resin; repeatable)")
    p.add_argument("--defects", metavar="DIR", default=None,
                   help="a folder holding masks/fold, masks/crack, masks/resin (what `emkit detect IMAGE DIR` writes; "
                        "a phantom's folder holds the true ones): those present go into the input mask")
    p.add_argument("--chunk", metavar="Z,Y,X", help="task chunk: whole storage chunks, y/x multiples of the patch "
                                                    "extent (default: the whole volume in one task)")
    p.add_argument("--maps", action="store_true", help="also write the misalignment maps (OUT_DIR/maps)")
    p.add_argument("--output-steps", action="store_true",
                   help="also put steps into the output mask (the paper's rule; off by default: emkit's boundary net "
                        "is trained to bridge steps, and zeroing its output there splits every object crossing one)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=0, metavar="N",
                       help="local dask worker processes (default 0: in this process)")
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler (tcp://host:8786)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _defects(items) -> dict:
    from ..errors import InputError

    out = {}
    for item in items:
        kind, sep, url = item.partition("=")
        if not sep or not kind or not url:
            raise InputError(f"--defect must be KIND=URL (e.g. fold=data/ph/masks/fold), got {item!r}")
        if kind in out:
            raise InputError(f"--defect {kind} given twice")
        out[kind] = url
    return out


def _defects_dir(folder) -> dict:
    """``{kind: URL}`` of the fold/crack/resin mask layers in ``folder/masks`` (those present)."""
    from ..detect import MisalignmentParams
    from ..errors import InputError
    from ..io.layer import join_url, layer_exists, normalize_url

    base = normalize_url(folder)
    out = {k: join_url(base, "masks", k) for k in MisalignmentParams().input_defects}
    out = {k: u for k, u in out.items() if layer_exists(u)}
    if not out:
        raise InputError(f"--defects {folder}: no masks/fold, masks/crack or masks/resin layer there "
                         "(write them with `emkit detect IMAGE_URL DIR`)")
    return out


def run(args) -> int:
    import numpy as np

    from ..detect import MisalignmentParams, segmentation_masks_layers
    from ..errors import InputError
    from ..geometry import parse_vec3
    from ..io import Layer

    defects = {**(_defects_dir(args.defects) if getattr(args, "defects", None) else {}), **_defects(args.defect)}
    unknown = sorted(set(defects) - set(MisalignmentParams().input_defects))
    if unknown:
        raise InputError(f"--defect kinds must be among {', '.join(MisalignmentParams().input_defects)}; "
                         f"got {', '.join(unknown)}")
    params = None
    if getattr(args, "output_steps", False):
        params = MisalignmentParams.for_resolution(Layer.open(args.image).resolution[2], output_steps=True)
    urls = segmentation_masks_layers(
        args.image, args.out_dir, params=params, chunk_size=parse_vec3(args.chunk, "--chunk", positive=True) if args.chunk else None,
        defect_mask_urls=defects or None, workers=None if args.scheduler else args.workers,
        scheduler=args.scheduler, overwrite=args.overwrite, progress=not args.quiet, maps=args.maps)
    for name, url in zip(("input mask", "output mask", "misalignment maps"), urls):
        line = f"{name}: {url}"
        layer = Layer.open(url)
        if name != "misalignment maps" and int(np.prod(layer.size)) <= _SUMMARY_VOXELS:
            z0 = layer.voxel_offset[0]
            sections = [int(z0 + z) for z in np.flatnonzero(layer.read().reshape(layer.size[0], -1).any(axis=1))]
            line += f" (sections with masked voxels: {sections if sections else 'none'})"
        print(line)
    return 0
