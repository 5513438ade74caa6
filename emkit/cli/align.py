"""``emkit align IMAGE_URL OUT_DIR``: align the sections of an image stack."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Align the serial sections of an image layer and write under OUT_DIR (a local folder or a
file://, gs:// or s3:// prefix):

  image            the aligned stack (same size, resolution, voxel offset and chunks as the input;
                   the first section of the range with tissue is the reference and is not moved)
  field            float32, channels dy, dx: pixels at the image's resolution per section;
                   image[z,y,x] = input[z, y-dy, x-dx] (the convention of emkit.align.fields)
  quality.json     per section: status (reference, ok, fallback: matched to an earlier neighbour,
  quality.tsv      skipped: no tissue / missing, unmatched: no pair accepted), the neighbour used,
                   the normalised cross-correlation before/after, the displacement left (px)
  fine_fields.npz  the composed fine fields on their coarse grid
  rough/           the rough stage: its aligned image and transforms.json

Two stages (paper, "Rough alignment" and "Alignment at 1024 nm & 64 nm"):
  rough   a rotation and a translation per section at a coarse mip against the nearest previous
          section with tissue, composed along z;
  fine    a displacement field per section against the previous section (holes filled from the
          sections before it), coarse to fine over mips 4, 2, 1: block matching, then gradient
          descent on the image difference over tissue + a smoothness penalty relaxed inside
          --masks (the field may tear at folds and cracks; with --field-model the descent also
          starts from a field net's field and the better match is kept); a pair that still matches badly
          (> 8 px or low correlation) falls back to an earlier neighbour (up to 5); the fields are
          composed in ascending z from the reference (no global relaxation), and their slow trend
          along z (tissue running obliquely through the sections; --detrend) is left in place.
--rough-only stops after the rough stage (then OUT_DIR holds image, field and transforms.json
of the rough stage). Existing outputs are never replaced without --overwrite.
"""

EPILOG = """\
examples:
  emkit phantom data/unal8 --size 8,128,128 --unaligned --defects fold --quiet
  emkit align data/unal8/image data/unal8/aligned --quiet
  emkit align data/unal8/image data/unal8/rough --rough-only --workers 0
  emkit align data/unal8/image data/unal8/part --sections 2:8 --masks data/unal8/masks/fold --quiet
  emkit align data/unal8/image data/unal8/net --sections 0:4 --field-model field --quiet
"""


def register(sub) -> None:
    p = sub.add_parser("align", help="align serial sections (rough rigid + fine displacement fields)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE_URL", help="image layer to align")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder or gs:// / s3:// prefix")
    p.add_argument("--rough-only", action="store_true", help="rough (rigid) alignment only")
    p.add_argument("--sections", default=None, metavar="A:B",
                   help="align sections A (the reference) to B-1 only (absolute z; default all)")
    p.add_argument("--masks", nargs="+", default=None, metavar="URL",
                   help="mask layers on the image's grid (folds, cracks, resin): left out of matching, "
                        "the field may tear there")
    p.add_argument("--ignore", default=None, metavar="MASK_URL",
                   help="mask layer, nonzero where the rough stage is not to match (default: none)")
    p.add_argument("--neighbours", type=int, default=None, metavar="N",
                   help="previous sections a section may be matched to, the next only when a pair matches "
                        "badly (default 5 fine, 3 rough)")
    p.add_argument("--max-rotation", type=float, default=None, metavar="DEG",
                   help="largest rotation between two sections searched (default 6)")
    p.add_argument("--coarse-nm", type=float, default=None, metavar="NM",
                   help="pixel size at which rough transforms are estimated (default 32)")
    p.add_argument("--detrend", type=float, default=None, metavar="SECTIONS",
                   help="remove the slow trend of the fine fields along z, the tissue's own steady motion "
                        "(Gaussian sigma in sections; default 3; 0 = the paper's plain composition)")
    p.add_argument("--field-model", default=None, metavar="MODEL",
                   help="also start each pair's gradient descent from this field net's field (the shipped 'field' "
                        "net or a checkpoint; `emkit train field` trains one) and keep the better-matching field "
                        "(default: block matching only)")
    p.add_argument("--no-field", action="store_true", help="with --rough-only: do not write the field layer")
    p.add_argument("--z-block", type=int, default=None, metavar="N",
                   help="sections per task (default the image's z chunk)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local dask workers (0 = run in this process; default 0)")
    g.add_argument("--scheduler", default=None, metavar="ADDR", help="address of a running dask scheduler")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _sections(text):
    from ..errors import InputError

    if text is None:
        return None
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"--sections must look like A:B (section numbers), got {text!r}") from None
    return a, b


def run(args) -> int:
    import time

    from ..align.rough import RoughParams, rough_align_layers
    from ..errors import InputError
    from ..io import join_url, normalize_url

    over = {k: v for k, v in (("max_rotation_deg", args.max_rotation), ("coarse_nm", args.coarse_nm)) if v is not None}
    if args.neighbours is not None:
        if args.neighbours < 1:
            raise InputError(f"--neighbours must be >= 1, got {args.neighbours}")
        over["neighbours"] = min(args.neighbours, 3) if not args.rough_only else args.neighbours
    params = RoughParams(**over)
    if args.z_block is not None and args.z_block < 1:
        raise InputError(f"--z-block must be >= 1, got {args.z_block}")
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    if args.rough_only and (args.masks or args.detrend is not None):
        raise InputError("--masks and --detrend belong to the fine stage; leave out --rough-only to use them")
    workers = 0 if (args.workers is None and args.scheduler is None) else args.workers
    sections = _sections(args.sections)
    out = normalize_url(args.out_dir)
    t0 = time.perf_counter()
    if args.rough_only:
        rep = rough_align_layers(args.image, args.out_dir, params=params, ignore_url=args.ignore,
                                 write_field=not args.no_field, z_block=args.z_block, overwrite=args.overwrite,
                                 workers=workers, scheduler=args.scheduler, progress=not args.quiet,
                                 sections=sections)
        dt = time.perf_counter() - t0
        c = rep["counts"]
        n = len(rep["status"])
        rot = max((abs(r) for r in rep["rotation_deg"]), default=0.0)
        shift = max((max(abs(v) for v in s) for s in rep["shift_px"]), default=0.0)
        print(f"rough alignment of {n} sections in {dt:.1f} s (coarse mip factor {rep['factor']}): "
              f"{c['ok']} aligned, {c['skipped']} skipped (no tissue), {c['unmatched']} unmatched; "
              f"largest rotation {rot:.2f} deg, largest shift {shift:.1f} px")
        names = ("image",) + (() if args.no_field else ("field",)) + ("transforms.json",)
    else:
        from ..align.fine import FineParams, fine_align_layers

        fover = {}
        if args.neighbours is not None:
            fover["neighbours"] = args.neighbours
        if args.detrend is not None:
            fover["detrend_sections"] = args.detrend
        if args.field_model is not None:
            fover["field_model"] = args.field_model
        rep = fine_align_layers(args.image, args.out_dir, params=FineParams(**fover), rough_params=params,
                                mask_urls=args.masks or (), ignore_url=args.ignore, z_block=args.z_block,
                                overwrite=args.overwrite, workers=workers, scheduler=args.scheduler,
                                progress=not args.quiet, sections=sections)
        dt = time.perf_counter() - t0
        c = rep["counts"]
        n = len(rep["status"])
        res = [r["residual_px"] for r in rep["sections"] if r["residual_px"] is not None]
        worst = max(res, default=float("nan"))
        print(f"alignment of {n} sections in {dt:.1f} s (rough + fine, field grid 1/{rep['factor']}): "
              f"{c['ok']} aligned, {c['fallback']} to an earlier neighbour, {c['skipped']} skipped (no tissue), "
              f"{c['unmatched']} unmatched; largest displacement left between neighbours {worst:.2f} px")
        names = ("image", "field", "quality.json", "quality.tsv", "rough")
    for name in names:
        print(f"  {name:<16s} {join_url(out, name)}")
    return 0
