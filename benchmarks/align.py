"""Rough alignment on unaligned phantoms: residual against the true fields, side by side with a peer.

Run: ``.venv/bin/python benchmarks/align.py [--quick]``; result in results/align.json.

For each phantom (``make_phantom`` then ``make_unaligned`` with the default
:class:`~emkit.phantom.UnalignedParams`: rigid offsets, drift, smooth distortion; the first
section is the reference) every method returns one field per section (aligned ← unaligned);
the residual is ``|field - truth|`` (px, full resolution) where ``truth`` is the recorded
inverse field, over tissue: pixels of the aligned frame that were imaged, not in resin or
defect masks, not the reference section.

Methods
-------
* ``emkit rough``: :func:`emkit.align.rough_align` (rotation + translation, neighbour fallback,
  plain composition along z), defaults.
* ``emkit rough, drift suppression (detrend 6)``: the same with ``detrend_sections=6`` (the slow
  trend along z left in place).
* ``skimage masked cross-correlation``: the peer — scikit-image ``phase_cross_correlation``
  with ``reference_mask``/``moving_mask`` (the pixels holding data) between consecutive whole
  sections, translation only (integer pixels), shifts summed along z. (OpenCV is not installed here: no ORB/
  ``estimateAffinePartial2D`` peer.)
* ``rigid part of the truth``: the least-squares rigid fit of the true field per section — the
  floor a rigid aligner can reach (the smooth distortion remains).
* ``none``: no alignment.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _skimage_peer(stack, ignore):
    from skimage.registration import phase_cross_correlation

    from emkit.align import fields as F

    nz, ny, nx = stack.shape
    total = np.zeros(2)
    mats = np.zeros((nz, 2, 3))
    mats[:, 0, 0] = mats[:, 1, 1] = 1
    for z in range(1, nz):
        a, b = stack[z - 1].astype(np.float32), stack[z].astype(np.float32)
        if a.max() == 0 or b.max() == 0:
            mats[z, :, 2] = -total
            continue
        # masked normalised cross-correlation (scikit-image's own way to leave out the no-data
        # border; integer shifts)
        s = phase_cross_correlation(a, b, reference_mask=(a > 0) & ~ignore[z - 1], moving_mask=(b > 0) & ~ignore[z])[0]
        total = total + np.asarray(s)  # aligned_z[p] = U_z[p - total]
        mats[z, :, 2] = -total
    return F.affine_field(mats, (ny, nx)).astype(np.float32)


def _rigid_floor(inverse, seen):
    from emkit.align import fields as F
    from emkit.align.rough import _rigid

    out = np.zeros_like(inverse)
    for z in range(len(inverse)):
        if seen[z].sum() > 10:
            out[z] = F.affine_field(_rigid(F.field_to_affine(inverse[z], seen[z])), inverse.shape[2:])
    return out


def main(argv=None) -> int:
    import torch

    from emkit.align import fields as F
    from emkit.align.rough import RoughParams, rough_align
    from emkit.phantom import make_phantom, make_unaligned

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one small phantom (a smoke run; not written to results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cases = [((8, 192, 192), 0, "none")] if args.quick else \
        [((16, 256, 256), 0, "none"), ((16, 256, 256), 1, "none"), ((16, 256, 256), 2, "default"),
         ((16, 512, 512), 3, "default")]
    rows = []
    for size, seed, defects in cases:
        ph = make_phantom(size, seed=seed, defects=defects)
        u = make_unaligned(ph, seed=seed)
        # the truth: from the unaligned image back to the clean frame (undoes the section moves and
        # the slips and steps of the phantom; = u.inverse without defects)
        truth = F.invert(np.ascontiguousarray(np.moveaxis(u.phantom.displacement, 0, 1)), iterations=60)
        ignore = np.zeros(size, bool)  # fold and crack masks (unaligned frame) are not matched
        for k in ("fold", "crack"):
            if k in u.phantom.masks:
                ignore |= u.phantom.masks[k] > 0
        seen = F.warp_labels(u.valid, u.inverse) > 0
        bad = np.zeros(size, bool)
        for k, m in ph.masks.items():  # defect interiors (aligned frame) and resin are left out
            bad |= m > 0
        tissue = seen & ~bad
        tissue[0] = False  # the reference section is not moved by anyone
        methods = {
            "none": lambda: np.zeros_like(u.inverse),
            "rigid part of the truth": lambda: _rigid_floor(truth, tissue),
            "emkit rough": lambda: rough_align(u.image, resolution=ph.resolution, ignore=ignore).fields(),
            "emkit rough, drift suppression (detrend 6)": lambda: rough_align(
                u.image, resolution=ph.resolution, params=RoughParams(detrend_sections=6), ignore=ignore).fields(),
            "skimage masked cross-correlation": lambda: _skimage_peer(u.image, ignore),
        }
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fld = fn()
            dt = time.perf_counter() - t0
            err = F.norm(fld - truth)[tissue]
            rows.append({"phantom": f"{'x'.join(map(str, size))} seed {seed} defects {defects}", "method": name,
                         "median_px": round(float(np.median(err)), 2),
                         "p95_px": round(float(np.percentile(err, 95)), 2), "max_px": round(float(err.max()), 1),
                         "s_per_section": round(dt / size[0], 3) if name not in ("none", "rigid part of the truth") else ""})
            print(rows[-1], flush=True)
        # stability: an already aligned stack (the phantom's clean image) must stay put
        t0 = time.perf_counter()
        r = rough_align(ph.clean_image, resolution=ph.resolution)
        dt = time.perf_counter() - t0
        err = F.norm(r.fields())[1:]
        rows.append({"phantom": f"{'x'.join(map(str, size))} seed {seed} defects {defects}, already aligned",
                     "method": "emkit rough (clean phantom image: must stay put)", "median_px": round(float(np.median(err)), 2),
                     "p95_px": round(float(np.percentile(err, 95)), 2), "max_px": round(float(err.max()), 1),
                     "s_per_section": round(dt / size[0], 3)})
        print(rows[-1], flush=True)
    if args.quick:
        return 0
    res = {
        "title": "Rough alignment (issue 9 §3): residual against the true fields of unaligned phantoms",
        "command": ".venv/bin/python benchmarks/align.py",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "notes": "Residual = |estimated field - true field| in px (8 nm) over tissue of the aligned frame "
                 "(imaged, outside resin and defect masks, reference section excluded); the true field takes the "
                 "unaligned image back to the phantom's clean frame (section moves, slips and steps undone); fold and "
                 "crack masks (the phantom's, unaligned frame) are given to both methods as regions not to match; s_per_section is wall time "
                 "on a shared 2-core machine (torch 1 thread). Unaligned phantoms: make_unaligned defaults (translation "
                 "std 12 px, rotation std 1 deg, drift 0.5 px/section, distortion RMS 1.5 px). 'rigid part of the truth' "
                 "is the floor of any rigid method (the smooth distortion stays). The peer is scikit-image "
                 "phase_cross_correlation with masks of the data between whole consecutive sections (translation only). "
                 "The phantom's tissue itself moves from section to section: its neurites run obliquely, and in a "
                 "2 um (256 px) field a few large ones dominate, so consecutive aligned sections look shifted (and "
                 "turned) consistently; a pairwise image aligner follows that and adds it up along z: the clean 256 px "
                 "stacks move by 8.6-14 px median under emkit rough's plain composition, the 512 px one by 1.5 px. On "
                 "512 px sections emkit rough is best (3.2 px median against a 1.4 px rigid floor; the peer 8.3 px, "
                 "p95 14 px). On 256 px sections it is worse than the translation-only peer (9-16 px against 5-11 px); "
                 "drift suppression (detrend_sections=6) brings it to 5.9-11.6 px there but hurts at 512 px (12.6 px: "
                 "it also removes the low-pass part of the true offsets), hence off by default. The peer fails on "
                 "sections with folds or missing data (p95 24 px on seed 2). The issue's goals (median < 0.5 px) are "
                 "for the fine alignment still to come (sections 4-5).",
    }
    (HERE / "results" / "align.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {HERE / 'results' / 'align.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
