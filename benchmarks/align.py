"""Alignment on unaligned phantoms and real EM: residual against the true fields, side by side with peers.

Run: ``.venv/bin/python benchmarks/align.py [--part phantoms|phantoms512|e2e|real] [--quick]``; each part takes
a few minutes on the shared 2-core machine and replaces its own rows in results/align.json.

``phantoms`` (16×256² sections), ``phantoms512`` (16×512²): for each phantom (``make_phantom`` then ``make_unaligned`` with the default
:class:`~emkit.phantom.UnalignedParams`: rigid offsets, drift, smooth distortion; the first
section is the reference) every method returns one field per section (aligned ← unaligned);
the residual is ``|field - truth|`` (px, full resolution) where ``truth`` takes the unaligned
image back to the phantom's clean frame, over tissue: pixels of the aligned frame that were
imaged, not in resin or defect masks, not the reference section.

Methods
-------
* ``emkit fine (default: detrend 3)``: :func:`emkit.align.fine.fine_align` (rough, then fields per
  section against the previous one, composed along z, the slow trend of the fine fields along z
  left in place), defaults; ``emkit fine, plain composition (detrend 0)``: the paper's plain
  composition (``detrend_sections=0``).
* ``emkit rough``: :func:`emkit.align.rough_align` (rotation + translation), defaults.
* ``skimage masked cross-correlation``: scikit-image ``phase_cross_correlation`` with masks of
  the data between consecutive whole sections, translation only, summed along z.
* ``rigid part of the truth``: the floor of any rigid method; ``none``: no alignment.
* ``... (already aligned: must stay put)``: the phantom's clean image, where every field should be 0.

``e2e``: the shipped boundary net → ``emkit segment`` → adapted Rand error of (a) the unaligned
phantom, (b) the same after ``emkit align``, (c) the same phantom generated aligned.

``real``: the real EM volumes of ``../shared/data/real-em`` moved by known fields
(``make_unaligned`` defaults) and aligned back; and the volumes as they are (already aligned:
the fields should be 0). Their tissue moves from section to section too (the truth is the
volume as published).

* ``OpenCV DIS / Farnebäck flow + phase correlation``: ``cv2.phaseCorrelate`` (Hann window,
  translation) then dense optical flow (DIS preset MEDIUM; Farnebäck pyramid 4 levels, window
  31) of each section against the previous one with data, the pair fields composed along z
  as emkit's are;
  needs ``opencv-python-headless`` (measured with 4.14.0.94); skipped when it is not installed.
* ``emkit fine (smooth 100, detrend 0)``: a stiffer field (``smooth_weight=100``), plain
  composition: measured next to the defaults (it follows the tissue less).

Scored pixels exclude defect interiors (fold, crack, missing, partial_missing masks) and
tissue-free regions (resin, partial); blurred, slipped and stepped sections are scored (their
truth, the slip or step undone, is defined; before 2026-12-01 evening they were left out).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real-em"


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
        s = phase_cross_correlation(a, b, reference_mask=(a > 0) & ~ignore[z - 1], moving_mask=(b > 0) & ~ignore[z])[0]
        total = total + np.asarray(s)  # aligned_z[p] = U_z[p - total]
        mats[z, :, 2] = -total
    return F.affine_field(mats, (ny, nx)).astype(np.float32)


def _opencv_peer(stack, method):
    """OpenCV peers: phase-correlation pre-alignment (``cv2.phaseCorrelate``, Hann window,
    translation) then dense flow (``"dis"``: DIS, preset MEDIUM; ``"farneback"``) of each
    section against the previous one with data; the pair fields are composed along z as
    emkit's are (``total[z] = compose(pair[z], total[r])``); the first section is the
    reference; sections without data keep the field of the section before."""
    import cv2

    from emkit.align import fields as F

    nz, ny, nx = stack.shape
    out = np.zeros((nz, 2, ny, nx), np.float32)
    win = cv2.createHanningWindow((nx, ny), cv2.CV_32F)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) if method == "dis" else None
    r = 0
    for z in range(1, nz):
        a, b = stack[r], stack[z]
        if b.max() == 0 or a.max() == 0:
            out[z] = out[z - 1]
            continue
        (sx, sy), _ = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32), win)
        t = np.empty((2, ny, nx), np.float32)
        t[0], t[1] = -sy, -sx  # warp(b, t)[p] = b[p + s] ≈ a[p]
        pre = F.warp(b, t)
        if method == "dis":
            flow = dis.calc(a, pre, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(a, pre, None, 0.5, 4, 31, 3, 7, 1.5, 0)
        pf = -np.stack([flow[..., 1], flow[..., 0]]).astype(np.float32)  # a[p] ≈ pre[p + flow]
        out[z] = F.compose(F.compose(t, pf), out[r])
        r = z
    return out


def _have_cv2() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        print("OpenCV (opencv-python-headless) is not installed: its peers are skipped")
        return False
    return True


def _rigid_floor(inverse, seen):
    from emkit.align import fields as F
    from emkit.align.rough import _rigid

    out = np.zeros_like(inverse)
    for z in range(len(inverse)):
        if seen[z].sum() > 10:
            out[z] = F.affine_field(_rigid(F.field_to_affine(inverse[z], seen[z])), inverse.shape[2:])
    return out


STIFF = dict(smooth_weight=100.0, detrend_sections=0.0)
INTERIOR = ("fold", "crack", "missing", "partial_missing", "resin", "partial")


def _row(case, method, err, dt=None, n=1):
    return {"case": case, "method": method, "median_px": round(float(np.median(err)), 2),
            "p95_px": round(float(np.percentile(err, 95)), 2), "max_px": round(float(err.max()), 1),
            "s_per_section": "" if dt is None else round(dt / n, 3)}


def part_phantoms(quick, big=False):
    from emkit.align import fields as F
    from emkit.align.fine import FineParams, fine_align
    from emkit.align.rough import rough_align
    from emkit.phantom import make_phantom, make_unaligned

    cases = [((8, 192, 192), 0, "none")] if quick else \
        [((16, 512, 512), 3, "default")] if big else [((16, 256, 256), 0, "none"), ((16, 256, 256), 2, "default")]
    rows = []
    for size, seed, defects in cases:
        ph = make_phantom(size, seed=seed, defects=defects)
        u = make_unaligned(ph, seed=seed)
        truth = F.invert(np.ascontiguousarray(np.moveaxis(u.phantom.displacement, 0, 1)), iterations=60)
        ignore = np.zeros(size, bool)  # fold and crack masks (unaligned frame)
        for k in ("fold", "crack"):
            if k in u.phantom.masks:
                ignore |= u.phantom.masks[k] > 0
        seen = F.warp_labels(u.valid, u.inverse) > 0
        bad = np.zeros(size, bool)  # defect interiors and tissue-free regions; blur, slip and step label
        for k, m in ph.masks.items():  # whole sections whose truth is defined: they are scored
            if k in INTERIOR:
                bad |= m > 0
        tissue = seen & ~bad
        tissue[0] = False
        case = f"{'x'.join(map(str, size))} seed {seed} defects {defects}"
        methods = {
            "none": lambda: np.zeros_like(u.inverse),
            "rigid part of the truth": lambda: _rigid_floor(truth, tissue),
            "emkit fine (default: detrend 3)": lambda: fine_align(u.image, resolution=ph.resolution,
                                                                  masks=ignore).fields,
            "emkit fine, plain composition (detrend 0)": lambda: fine_align(
                u.image, resolution=ph.resolution, masks=ignore, params=FineParams(detrend_sections=0)).fields,
            "emkit fine (smooth 100, detrend 0)": lambda: fine_align(
                u.image, resolution=ph.resolution, masks=ignore, params=FineParams(**STIFF)).fields,
            "emkit rough": lambda: rough_align(u.image, resolution=ph.resolution, ignore=ignore).fields(),
            "skimage masked cross-correlation": lambda: _skimage_peer(u.image, ignore),
            "OpenCV DIS flow + phase correlation": lambda: _opencv_peer(u.image, "dis"),
            "OpenCV Farnebäck flow + phase correlation": lambda: _opencv_peer(u.image, "farneback"),
        }
        if not _have_cv2():
            methods = {k: v for k, v in methods.items() if not k.startswith("OpenCV")}
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fld = fn()
            dt = time.perf_counter() - t0
            timed = name not in ("none", "rigid part of the truth")
            rows.append(_row(case, name, F.norm(fld - truth)[tissue], dt if timed else None, size[0]))
            print(rows[-1], flush=True)
        for name, params in (("emkit fine (default: detrend 3)", FineParams()),
                             ("emkit fine, plain composition (detrend 0)", FineParams(detrend_sections=0)),
                             ("emkit fine (smooth 100, detrend 0)", FineParams(**STIFF))):
            t0 = time.perf_counter()
            r = fine_align(ph.clean_image, resolution=ph.resolution, params=params)
            dt = time.perf_counter() - t0
            rows.append(_row(case + ", already aligned", name + " (must stay put)", F.norm(r.fields)[1:], dt, size[0]))
            print(rows[-1], flush=True)
        for name, fn in (("emkit rough", lambda a: rough_align(a, resolution=ph.resolution).fields()),
                         ("OpenCV DIS flow + phase correlation", lambda a: _opencv_peer(a, "dis")),
                         ("OpenCV Farnebäck flow + phase correlation", lambda a: _opencv_peer(a, "farneback"))):
            if name.startswith("OpenCV") and not _have_cv2():
                continue
            t0 = time.perf_counter()
            fld = fn(ph.clean_image)
            dt = time.perf_counter() - t0
            rows.append(_row(case + ", already aligned", name + " (must stay put)", F.norm(fld)[1:], dt, size[0]))
            print(rows[-1], flush=True)
    return rows


def part_e2e(quick):
    sys.path.insert(0, str(HERE))
    from _cli import sh

    size = "8,128,128" if quick else "16,256,256"
    seed = 5
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        sh("phantom", d / "al", "--size", size, "--seed", seed, "--quiet")
        sh("phantom", d / "un", "--size", size, "--seed", seed, "--unaligned", "--quiet")
        _, t_align = sh("align", d / "un/image", d / "un/aligned", "--masks", d / "un/masks/fold", d / "un/masks/crack",
                        "--quiet")
        runs = {"(a) unaligned, no alignment": (d / "un/image", [("image frame", d / "un/gt/image_frame/segmentation")]),
                "(b) unaligned, after emkit align": (d / "un/aligned/image",
                                                     [("aligned phantom's image frame", d / "al/gt/image_frame/segmentation"),
                                                      ("clean frame", d / "al/gt/segmentation")]),
                "(c) generated aligned": (d / "al/image", [("image frame", d / "al/gt/image_frame/segmentation")])}
        for name, (img, gts) in runs.items():
            aff = img.parent / (img.name + "_aff")
            sh("infer", "boundary", img, aff, "--heads", "affinity", "--workers", "0", "--quiet")
            seg = img.parent / (img.name + "_seg")
            sh("segment", aff, seg, "--workers", "0", "--quiet")
            for gname, gt in gts:
                s = json.loads(sh("evaluate", seg / "segmentation", gt, "--worst", "0")[0])
                rows.append({"case": f"{size.replace(',', 'x')} seed {seed} defects default, end to end",
                             "method": f"{name}; ground truth: {gname}", "arand": round(s["arand"], 4),
                             "voi_split": round(s["voi_split"], 3), "voi_merge": round(s["voi_merge"], 3),
                             "s_per_section": round(t_align / int(size.split(',')[0]), 2) if "(b)" in name else ""})
                print(rows[-1], flush=True)
    return rows


def _read_tif(path, n, crop):
    import tifffile

    a = tifffile.imread(path)
    return np.ascontiguousarray(a[:n, :crop, :crop])


def part_real(quick):
    from emkit.align import fields as F
    from emkit.align.fine import FineParams, fine_align
    from emkit.align.rough import rough_align
    from emkit.phantom import make_unaligned

    vols = [("isbi2012-sstem-test-30x512x512.tif", (50, 4, 4), 16, 512),
            ("flyem-medulla-fib-10nm-250.tif", (10, 10, 10), 16, 250)]
    if quick:
        vols = [(v[0], v[1], 6, 192) for v in vols[:1]]
    rows = []
    for fname, res, n, crop in vols:
        path = REAL / fname
        if not path.exists():
            print(f"skipped: {path} not found")
            continue
        img = _read_tif(path, n, crop)
        img = np.clip(img, 1, 255).astype(np.uint8)  # 0 is "no data"
        u = make_unaligned(img, seed=11)
        seen = F.warp_labels(u.valid, u.inverse) > 0
        seen[0] = False
        case = f"{fname.split('-')[0]} {n}x{crop}x{crop} at {res[1]} nm, moved by known fields"
        for name, fn in (("none", lambda: np.zeros_like(u.inverse)),
                         ("emkit fine (default: detrend 3)", lambda: fine_align(u.image, resolution=res).fields),
                         ("emkit fine, plain composition (detrend 0)", lambda: fine_align(
                             u.image, resolution=res, params=FineParams(detrend_sections=0)).fields),
                         ("emkit fine (smooth 100, detrend 0)", lambda: fine_align(
                             u.image, resolution=res, params=FineParams(**STIFF)).fields),
                         ("emkit rough", lambda: rough_align(u.image, resolution=res).fields()),
                         ("skimage masked cross-correlation",
                          lambda: _skimage_peer(u.image, np.zeros(u.image.shape, bool))),
                         ("OpenCV DIS flow + phase correlation", lambda: _opencv_peer(u.image, "dis")),
                         ("OpenCV Farnebäck flow + phase correlation", lambda: _opencv_peer(u.image, "farneback"))):
            if name.startswith("OpenCV") and not _have_cv2():
                continue
            t0 = time.perf_counter()
            fld = fn()
            dt = time.perf_counter() - t0
            rows.append(_row(case, name, F.norm(fld - u.inverse)[seen], dt if name != "none" else None, n))
            print(rows[-1], flush=True)
        for name, params in (("emkit fine (default: detrend 3)", FineParams()),
                             ("emkit fine, plain composition (detrend 0)", FineParams(detrend_sections=0)),
                             ("emkit fine (smooth 100, detrend 0)", FineParams(**STIFF))):
            t0 = time.perf_counter()
            r = fine_align(img, resolution=res, params=params)
            dt = time.perf_counter() - t0
            rows.append(_row(case.replace("moved by known fields", "as published (already aligned)"),
                             name + " (must stay put)", F.norm(r.fields)[1:], dt, n))
            print(rows[-1], flush=True)
    return rows


PARTS = ("phantoms", "phantoms512", "e2e", "real")
NOTES = (
    "Residual = |estimated field - true field| in px over tissue of the aligned frame (imaged, outside resin and "
    "defect masks, reference section excluded); phantom px = 8 nm; the true field takes the unaligned image back to "
    "the clean frame (section moves, slips and steps undone); fold and crack masks (the phantom's) are given to the "
    "emkit methods and the peer. s_per_section: wall time on the shared 2-core machine (load 6-11, torch 1 thread). "
    "Unaligned phantoms: make_unaligned defaults (translation std 12 px, rotation std 1 deg, drift 0.5 px/section, "
    "distortion RMS 1.5 px, length 48 px). Blurred, slipped and stepped sections are scored. OpenCV peers: "
    "opencv-python-headless 4.14.0.94, phase correlation then DIS (preset MEDIUM) or Farnebäck flow of each section "
    "against the previous one, pair fields composed along z.")


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=PARTS, default="phantoms")
    ap.add_argument("--quick", action="store_true", help="small cases (a smoke run; not written to results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = {"phantoms": part_phantoms, "phantoms512": lambda q: part_phantoms(q, big=True), "e2e": part_e2e,
            "real": part_real}[args.part](args.quick)
    if args.quick:
        return 0
    path = HERE / "results" / "align.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    parts = old.get("parts", {})
    parts[args.part] = rows
    order = [p for p in PARTS if p in parts]
    res = {
        "title": "Alignment (issue 9): residual against the true fields of unaligned phantoms and moved real EM; "
                 "end-to-end segmentation",
        "command": "; ".join(f".venv/bin/python benchmarks/align.py --part {p}" for p in order),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": datetime.date.today().isoformat(),
        "rows": [r for p in order for r in parts[p]],
        "parts": parts,
        "notes": NOTES + (" " + old["conclusion"] if False else ""),
        "conclusion": old.get("conclusion", ""),
    }
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
