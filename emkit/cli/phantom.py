"""``emkit phantom OUT_DIR``: write the synthetic EM dataset with ground truth and defects."""
from __future__ import annotations

import argparse
import dataclasses

DESCRIPTION = """\
Generate synthetic neural tissue as seen by serial-section TEM (default 40 x 8 x 8 nm voxels),
with dense ground truth, and write it as Precomputed layers under OUT_DIR (a local folder or a
file://, gs:// or s3:// prefix):

  image, gt/clean_image, gt/segmentation, gt/semantic, gt/clefts, masks/<defect>,
  gt/synapses.parquet, gt/displacement.npz, gt/phantom.json

Ground truth is in the clean, aligned frame; 'image' carries the defects, and
gt/displacement.npz says where each image voxel's tissue came from (dy, dx voxels).
Deterministic by --seed. Existing outputs are never replaced without --overwrite.
OUT_DIR may be a cloud prefix: emkit phantom gs://bucket/phantom --defects none.

--unaligned also moves every section as cutting and imaging do before alignment (rigid offsets
of tens of pixels and a few degrees, a slow drift along z, a smooth distortion; the first
section stays put): 'image' is then unaligned, gt/aligned_image is the image before, and
gt/fields.npz holds the true field of every section ((dy, dx) pixels; 'inverse' warps image
back onto gt/aligned_image) for scoring an aligner (emkit align).
"""

EPILOG = """\
defect kinds: fold, crack, missing, partial_missing, blur, slip, step, lost, thick, partial,
resin; 'default' = fold,crack,missing,partial_missing,blur,slip,step; 'all'; 'none'.

examples:
  emkit phantom data/phantom --size 64,256,256
  emkit phantom data/small --size 16,128,128 --seed 3 --defects fold,slip
  emkit phantom data/clean --size 16,128,128 --defects none --chunk 16,64,64
  emkit phantom data/moved --size 8,128,128 --unaligned --defects none
"""


def register(sub) -> None:
    p = sub.add_parser("phantom", help="write a synthetic EM dataset with ground truth and defects",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder or gs:// / s3:// prefix")
    p.add_argument("--size", default="64,256,256", metavar="Z,Y,X",
                   help="volume size in voxels, z,y,x (default 64,256,256; a soma and a vessel appear from 375 in y and x)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--defects", default="default", metavar="LIST|none|default|all",
                   help="comma-separated defect kinds, 'default' (the default), 'all' or 'none'")
    p.add_argument("--resolution", default="40,8,8", metavar="Z,Y,X", help="voxel size in nm (default 40,8,8)")
    p.add_argument("--chunk", default=None, metavar="Z,Y,X", help="storage chunk size (default 16,128,128)")
    p.add_argument("--unaligned", action="store_true",
                   help="move the sections as before alignment and write their true fields (gt/fields.npz)")
    p.add_argument("--shift", type=float, default=None, metavar="PX",
                   help="with --unaligned: std of the per-section translation in pixels (default 12)")
    p.add_argument("--rotation", type=float, default=None, metavar="DEG",
                   help="with --unaligned: std of the per-section rotation in degrees (default 1)")
    p.add_argument("--distortion", type=float, default=None, metavar="PX",
                   help="with --unaligned: RMS of the smooth in-plane distortion in pixels (default 1.5)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..defects import parse_kinds
    from ..geometry import parse_vec3
    from ..io import normalize_url
    from ..phantom import make_phantom, write_phantom

    size = parse_vec3(args.size, "--size", positive=True)
    res = parse_vec3(args.resolution, "--resolution", positive=True, dtype=float)
    chunk = parse_vec3(args.chunk, "--chunk", positive=True) if args.chunk else None
    kinds = parse_kinds(args.defects)  # fail on a bad name before any work
    unaligned = getattr(args, "unaligned", False)
    moves = {k: getattr(args, a, None) for k, a in (("shift_px", "shift"), ("rotation_deg", "rotation"),
                                                    ("distortion_px", "distortion"))}
    moves = {k: v for k, v in moves.items() if v is not None}
    uparams = None
    if moves and not unaligned:
        from ..errors import InputError

        raise InputError("--shift, --rotation and --distortion need --unaligned")
    if unaligned:
        from ..phantom import UnalignedParams

        uparams = UnalignedParams(**moves)
        uparams = dataclasses.replace(uparams, max_shift_px=max(uparams.max_shift_px, 2.5 * uparams.shift_px),
                                      max_rotation_deg=max(uparams.max_rotation_deg, 2.5 * uparams.rotation_deg))
    if not args.overwrite:
        from ..errors import LayerExistsError
        from ..phantom.writer import existing_outputs

        found = existing_outputs(args.out_dir, kinds, unaligned=unaligned)
        if found:
            raise LayerExistsError(f"{normalize_url(args.out_dir)} already holds {', '.join(found)}; "
                                   "pass --overwrite to replace them")
    t0 = time.perf_counter()
    ph = make_phantom(size, seed=args.seed, resolution=res, defects=kinds or None, progress=not args.quiet)
    if unaligned:
        from ..phantom import make_unaligned

        ph = make_unaligned(ph, params=uparams, seed=args.seed)
    t1 = time.perf_counter()
    written = write_phantom(ph, args.out_dir, overwrite=args.overwrite, chunk_size=chunk, progress=not args.quiet)
    t2 = time.perf_counter()
    if unaligned:
        u, ph = ph, ph.phantom
        mags = [float(abs(u.fields[z]).max()) for z in range(len(u.fields))]
        print(f"unaligned: sections moved by up to {max(mags):.1f} px (true fields in gt/fields.npz)")
    s = ph.summary()
    where = ", ".join(f"{k} (z={','.join(map(str, v))})" for k, v in s["defects"].items()) or "none"
    print(f"phantom {tuple(size)} voxels at {tuple(res)} nm, seed {args.seed}: {s['n_segments']} segments, "
          f"{s['n_synapses']} synapses; defects: {where}")
    print(f"generated in {t1 - t0:.1f} s, written in {t2 - t1:.1f} s to {normalize_url(args.out_dir)}")
    for name, url in written.items():
        print(f"  {name:<22s} {url}")
    return 0
