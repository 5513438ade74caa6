"""Run emkit's stages on the two real EM volumes of the shared data folder and print what came out.

Not part of ``make bench`` when the folder is absent (a user's clone does not have it). Stages:
``emkit import`` (tiff, with the true resolution) → for the ssTEM (50×4×4 nm): 2× average in x/y
to 50×8×8 nm, ``emkit infer boundary`` (the shipped phantom-trained net) and ``emkit segment`` →
for the FIB-SEM (10 nm isotropic, which the shipped net refuses): watershed + agglomeration on
affinities derived from intensity (membranes dark). Usage:
``python benchmarks/real_em.py [DATA_DIR] [--out DIR]``; look at the result with ``emkit view DIR/…``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EMKIT = [sys.executable, "-m", "emkit.cli.main"]
DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-em"


def emkit(*args) -> float:
    t = time.perf_counter()
    r = subprocess.run([*EMKIT, *map(str, args)], capture_output=True, text=True)
    print(f"$ emkit {' '.join(map(str, args))}\n  -> rc {r.returncode}, {time.perf_counter() - t:.1f} s; "
          f"{(r.stderr.strip().splitlines() or [''])[-1][:200]}", flush=True)
    return r.returncode


def intensity_affinities(img: np.ndarray, sigma) -> np.ndarray:
    """Crude affinities from a uint8 EM image: bright (cytoplasm) high, dark (membrane) low."""
    import scipy.ndimage as ndi

    sm = ndi.gaussian_filter(img.astype(np.float32) / 255, sigma)
    lo, hi = np.percentile(sm, 5), np.percentile(sm, 60)
    b = np.clip((sm - lo) / (hi - lo), 0, 1)
    aff = np.zeros((3,) + b.shape, np.float32)
    aff[0, 1:] = np.minimum(b[1:], b[:-1])
    aff[1, :, 1:] = np.minimum(b[:, 1:], b[:, :-1])
    aff[2, :, :, 1:] = np.minimum(b[:, :, 1:], b[:, :, :-1])
    return aff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(DEFAULT))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    data = Path(args.data)
    fib, sstem = data / "flyem-medulla-fib-10nm-250.tif", data / "isbi2012-sstem-test-30x512x512.tif"
    if not (fib.exists() and sstem.exists()):
        print(f"real EM volumes not found in {data}; nothing to do")
        return 0
    from emkit.io import Layer
    from emkit.segment import segment

    out = Path(args.out or tempfile.mkdtemp(prefix="emkit-real-em-"))
    emkit("import", fib, out / "fib/image", "--kind", "image", "--resolution", "10,10,10", "--overwrite", "--quiet")
    emkit("import", sstem, out / "sstem/image", "--kind", "image", "--resolution", "50,4,4", "--overwrite", "--quiet")
    img = Layer.open(out / "sstem/image").read()
    z, y, x = img.shape
    ds = img[:, : y // 2 * 2, : x // 2 * 2].reshape(z, y // 2, 2, x // 2, 2).mean(axis=(2, 4)).round().astype(np.uint8)
    Layer.create(out / "sstem8/image", "image", ds.shape, resolution=(50, 8, 8), overwrite=True).write(ds)
    emkit("infer", "boundary", out / "sstem8/image", out / "sstem8/affinities", "--heads", "affinity",
          "--workers", "0", "--overwrite", "--quiet")
    emkit("segment", out / "sstem8/affinities", out / "sstem8/seg", "--workers", "0", "--overwrite", "--quiet")
    seg = Layer.open(out / "sstem8/seg/segmentation").read()
    _, counts = np.unique(seg, return_counts=True)
    print(f"ssTEM 50x8x8 nm, shipped net: {len(counts)} segments, largest {counts.max() / seg.size:.1%} of the volume")
    from emkit.nets import available_models

    if "semantic" in available_models():  # the shipped semantic net, and the semantic constraint it feeds
        from emkit.evaluate import SEMANTIC_CLASS_NAMES, semantic_classes

        emkit("infer", "semantic", out / "sstem8/image", out / "sstem8/semantic", "--workers", "0", "--overwrite",
              "--quiet")
        cls = semantic_classes(Layer.open(out / "sstem8/semantic").read())
        frac = np.bincount(cls.ravel(), minlength=6)[1:] / cls.size
        print("ssTEM semantic classes (shipped net):",
              ", ".join(f"{n} {f:.1%}" for n, f in zip(SEMANTIC_CLASS_NAMES.values(), frac)))
        emkit("segment", out / "sstem8/affinities", out / "sstem8/seg_semantic", "--semantic", out / "sstem8/semantic",
              "--workers", "0", "--overwrite", "--quiet")
        seg2 = Layer.open(out / "sstem8/seg_semantic/segmentation").read()
        _, c2 = np.unique(seg2, return_counts=True)
        print(f"ssTEM with the semantic constraint: {len(c2)} segments, largest {c2.max() / seg2.size:.1%}")
    emkit("infer", "boundary", out / "fib/image", out / "fib/affinities", "--workers", "0", "--quiet")  # refused
    fimg = Layer.open(out / "fib/image").read()
    t = time.perf_counter()
    fseg, sv, _ = segment(intensity_affinities(fimg, 1.5), threshold=0.7)
    Layer.create(out / "fib/seg_intensity", "segmentation", fseg.shape, resolution=(10, 10, 10), overwrite=True).write(fseg)
    _, counts = np.unique(fseg, return_counts=True)
    print(f"FIB-SEM 10 nm, intensity affinities: {time.perf_counter() - t:.1f} s, {int(sv.max())} supervoxels, "
          f"{len(counts)} segments, largest {counts.max() / fseg.size:.1%}")
    print(f"look at it: emkit view {out / 'sstem8'}   /   emkit view {out / 'fib'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
