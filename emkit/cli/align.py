"""``emkit align IMAGE_URL OUT_DIR``: align the sections of an image stack."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Align the serial sections of an image layer and write under OUT_DIR (a local folder or a
file://, gs:// or s3:// prefix):

  image            the aligned stack (same size, resolution, voxel offset and chunks as the input;
                   the first section with tissue is the reference and is not moved)
  field            float32, channels dy, dx: pixels at the image's resolution per section;
                   image[z,y,x] = input[z, y-dy, x-dx] (the convention of emkit.align.fields)
  transforms.json  the rigid transform of every section, the status of every section
                   (reference, ok, skipped: no tissue / missing, unmatched: no pair accepted) and
                   the score of every pair of sections matched

Rough alignment (paper, "Rough alignment"): a rotation and a translation per section, estimated at
a coarse mip against the nearest previous section (the one before it when that matches badly)
by cross-correlation over tissue (resin, empty
and --ignore regions left out), composed along z from the first section. Fine, elastic alignment
(per-pixel fields) is not implemented yet: the command does rough alignment only (--rough-only
says so explicitly). Existing outputs are never replaced without --overwrite.
"""

EPILOG = """\
examples:
  emkit align data/ph/image data/ph_aligned --rough-only
  emkit phantom data/unal8 --size 8,128,128 --unaligned --defects none --quiet
  emkit align data/unal8/image data/unal8/aligned --rough-only --workers 0
"""


def register(sub) -> None:
    p = sub.add_parser("align", help="align serial sections (rough: one rigid transform per section)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE_URL", help="image layer to align")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder or gs:// / s3:// prefix")
    p.add_argument("--rough-only", action="store_true",
                   help="rough (rigid) alignment only; today this is all the command does")
    p.add_argument("--ignore", default=None, metavar="MASK_URL",
                   help="mask layer on the image's grid, nonzero where not to match (folds, cracks, resin)")
    p.add_argument("--neighbours", type=int, default=None, metavar="N",
                   help="previous sections a section may be matched to, the next only when a pair scores "
                        "badly (default 3)")
    p.add_argument("--max-rotation", type=float, default=None, metavar="DEG",
                   help="largest rotation between two sections searched (default 6)")
    p.add_argument("--coarse-nm", type=float, default=None, metavar="NM",
                   help="pixel size at which transforms are estimated (default 32; at least 256 px a side kept)")
    p.add_argument("--no-field", action="store_true", help="do not write the field layer")
    p.add_argument("--z-block", type=int, default=None, metavar="N",
                   help="sections per task (default the image's z chunk)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local dask workers (0 = run in this process; default 0)")
    g.add_argument("--scheduler", default=None, metavar="ADDR", help="address of a running dask scheduler")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..align.rough import RoughParams, rough_align_layers
    from ..errors import InputError
    from ..io import join_url, normalize_url

    over = {k: v for k, v in (("neighbours", args.neighbours), ("max_rotation_deg", args.max_rotation),
                              ("coarse_nm", args.coarse_nm)) if v is not None}
    params = RoughParams(**over)
    if args.z_block is not None and args.z_block < 1:
        raise InputError(f"--z-block must be >= 1, got {args.z_block}")
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    workers = 0 if (args.workers is None and args.scheduler is None) else args.workers
    t0 = time.perf_counter()
    rep = rough_align_layers(args.image, args.out_dir, params=params, ignore_url=args.ignore,
                             write_field=not args.no_field, z_block=args.z_block, overwrite=args.overwrite,
                             workers=workers, scheduler=args.scheduler, progress=not args.quiet)
    dt = time.perf_counter() - t0
    c = rep["counts"]
    n = len(rep["status"])
    rot = max((abs(r) for r in rep["rotation_deg"]), default=0.0)
    shift = max((max(abs(v) for v in s) for s in rep["shift_px"]), default=0.0)
    if not args.rough_only:
        print("note: fine (elastic) alignment is not implemented yet; this is rough alignment")
    print(f"rough alignment of {n} sections in {dt:.1f} s (coarse mip factor {rep['factor']}): "
          f"{c['ok']} aligned, {c['skipped']} skipped (no tissue), {c['unmatched']} unmatched; "
          f"largest rotation {rot:.2f} deg, largest shift {shift:.1f} px")
    out = normalize_url(args.out_dir)
    for name in ("image",) + (() if args.no_field else ("field",)) + ("transforms.json",):
        print(f"  {name:<16s} {join_url(out, name)}")
    return 0
