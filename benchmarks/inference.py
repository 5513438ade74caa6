"""Inference throughput: chunked ``emkit infer`` against plain torch over the same patches.

The baseline runs the net over exactly the patches of emkit's global patch grid (same patch,
overlap, batch size and threads) with plain torch: a numpy→tensor copy, the forward pass and the
sigmoid, nothing else (no blending, no masks, no I/O). Each emkit variant adds its own work:
``predict`` (blending), ``predict`` with input and output masks, ``infer_layers`` (layer reads,
masks read from layers, blending, writes, markers) serially and on a local dask cluster, and the
``emkit infer`` command (process start and torch import included). Overhead = time / baseline − 1.

Net: the shipped ``boundary`` model when ``emkit/models/boundary.pt`` exists, else an RSUNet with
widths (16, 32, 64, 128) and random weights (speed does not depend on the weights). Image: a
smoothed-noise uint8 volume of 32×256×256 voxels at 40×8×8 nm with defect masks.

Run: ``.venv/bin/python benchmarks/inference.py [--size 32,256,256] [--repeat 2]``; writes
``benchmarks/results/inference.json``. Each timing is the best of ``--repeat`` runs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_net():
    from emkit.nets import NetConfig, RSUNet, available_models, boundary_heads, load_model

    if "boundary" in available_models():
        return load_model("boundary"), "shipped boundary model"
    import torch

    torch.manual_seed(0)
    net = RSUNet(NetConfig(widths=(16, 32, 64, 128), heads=boundary_heads(long_range=True), resolution=(40, 8, 8)))
    return net.eval(), "RSUNet widths (16, 32, 64, 128), random weights"


def make_image(size, seed=0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random(size, dtype=np.float32), (0.5, 2, 2))
    img = (255 * (img - img.min()) / np.ptp(img)).astype(np.uint8)
    m_in = np.zeros(size, np.uint8)
    m_in[size[0] // 3] = 1
    m_out = np.zeros(size, np.uint8)
    m_out[:, : size[1] // 8] = 1
    return img, m_in, m_out


class TimedNet:
    """Wraps a net (same interface) and adds up the seconds spent in its forward passes, so each
    run measures its own overhead (total − forward) — robust to other load on the machine."""

    def __new__(cls, net):
        import torch

        class _Timed(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner
                self.config = inner.config
                self.head_slices = inner.head_slices
                self.input_multiple = inner.input_multiple
                self.in_channels = inner.config.in_channels
                self.forward_s = 0.0

            def forward(self, x):
                t0 = time.perf_counter()
                y = self.inner(x)
                self.forward_s += time.perf_counter() - t0
                return y

        return _Timed(net)


def plain_torch(net, img, grid, batch_size):
    """The same patches through the net with nothing around it; returns seconds."""
    import torch

    x = img.astype(np.float32) / np.float32(255)
    patches = grid.patches()
    P = grid.patch
    buf = np.zeros((batch_size, 1, *P), np.float32)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(patches), batch_size):
            batch = patches[b:b + batch_size]
            for i, p in enumerate(batch):
                buf[i, 0] = x[p.slices()]
            torch.sigmoid(net(torch.from_numpy(buf[:len(batch)]))).numpy()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="32,256,256", help="image size z,y,x")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--out", default=str(HERE / "results" / "inference.json"))
    args = ap.parse_args()

    import torch

    from emkit.geometry import Bbox, chunk_grid
    from emkit.inference import PatchGrid, infer_layers, predict
    from emkit.io import Layer
    from emkit.nets import save

    size = tuple(int(v) for v in args.size.split(","))
    net, net_desc = make_net()
    timed = TimedNet(net)
    img, m_in, m_out = make_image(size)
    grid = PatchGrid(size, net.config.patch_size, args.overlap, net.input_multiple)
    bs, ov, nvox = args.batch_size, args.overlap, int(np.prod(size))
    print(f"{net_desc}; patch {grid.patch}, overlap {grid.overlap}, {len(grid)} patches, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    predict(net, img[: grid.patch[0], : grid.patch[1], : grid.patch[2]], progress=False)  # warm-up

    def n_patches(chunk_size):
        return sum(len(grid.patches(c)) for c in chunk_grid(Bbox.from_shape(size), chunk_size))

    def measure(fn):
        """Best of --repeat runs of fn() -> seconds, with the forward seconds of the same run."""
        out = []
        for _ in range(args.repeat):
            timed.forward_s = 0.0
            t = fn()
            out.append((t, timed.forward_s))
        return min(out)

    rows = []
    t_plain = None

    def row(method, seconds, patches, forward_s=None):
        r = {"method": method, "seconds": round(seconds, 2), "voxels/s": round(nvox / seconds),
             "patches run": patches,
             "overhead vs plain torch %": "-" if t_plain is None else round(100 * (seconds / t_plain - 1), 1),
             "in-run overhead %": "-" if not forward_s else round(100 * (seconds / forward_s - 1), 1)}
        rows.append(r)
        print(r, flush=True)

    def wall(fn):
        def run():
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        return run

    t_plain, fwd = measure(lambda: plain_torch(timed, img, grid, bs))
    t_plain_s = t_plain
    t_plain = None
    row("plain torch: the same patches (copy in, forward, sigmoid)", t_plain_s, len(grid), fwd)
    t_plain = t_plain_s
    t, fwd = measure(wall(lambda: predict(timed, img, batch_size=bs, overlap=ov, progress=False)))
    row("emkit predict (array; blending)", t, len(grid), fwd)
    t, fwd = measure(wall(lambda: predict(timed, img, batch_size=bs, overlap=ov, mask_in=m_in, mask_out=m_out,
                                          progress=False)))
    row("emkit predict (array; blending + input/output masks)", t, len(grid), fwd)

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for name, arr, kind in (("image", img, "image"), ("mask_in", m_in, "mask"), ("mask_out", m_out, "mask")):
            Layer.create(d / name, kind, size, chunk_size=(16, 128, 128)).write(arr)
        ckpt = save(net, d / "net.pt", extra={"benchmark": True})
        image, mi, mo = (str(d / n) for n in ("image", "mask_in", "mask_out"))
        last = {}

        def layers(model, workers, chunk_size=None):
            def run():
                rep = infer_layers(model, image, d / "out", mask_in_url=mi, mask_out_url=mo, chunk_size=chunk_size,
                                   batch_size=bs, overlap=ov, workers=workers, overwrite=True, progress=False)
                last["rep"] = rep
                return rep.seconds
            return run

        # the CLI first: a fresh process measured before the dask cluster row below, which left the
        # machine slower for a while when it ran earlier (CLI rows 2x slow on 2026-11-26)
        def cli():
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "emkit.cli.main", "infer", str(ckpt), image, str(d / "cli"),
                                  "--mask-in", mi, "--mask-out", mo, "--workers", "0", "--batch-size", str(bs),
                                  "--overlap", str(ov), "--overwrite", "--quiet"],
                                 check=True, capture_output=True, text=True)
            w = time.perf_counter() - t0
            return float(re.search(r"in ([0-9.]+) s", res.stdout).group(1)), w

        t_in, t_wall = min(cli() for _ in range(args.repeat))
        row("emkit infer CLI --workers 0 (chunk map time)", t_in, len(grid))
        row("emkit infer CLI --workers 0 (process wall: start, torch import, model load)", t_wall, len(grid))

        for model, workers, cs in ((timed, 0, None), (timed, 0, (size[0], 128, 128)), (str(ckpt), 2, None)):
            t, fwd = measure(layers(model, workers, cs))
            rep = last["rep"]
            how = "serial" if workers == 0 else "dask LocalCluster, model from checkpoint"
            row(f"infer_layers workers={workers} ({how}), chunk {'x'.join(map(str, rep.chunk_size))} "
                f"({rep.chunks} chunks), layer I/O + masks", t, n_patches(rep.chunk_size), fwd if workers == 0 else None)

    res = {
        "title": f"Inference throughput ({'x'.join(map(str, size))} voxels, CPU)",
        "command": ".venv/bin/python benchmarks/inference.py",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"torch {torch.__version__} ({torch.get_num_threads()} threads), no GPU",
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "notes": (f"Net: {net_desc}; patch {grid.patch} (z, y, x), overlap {grid.overlap} voxels, batch {bs}; "
                  f"{len(grid)} patches cover the volume. Best of {args.repeat}. 'overhead vs plain torch' = "
                  "seconds / plain-torch seconds − 1 (plain torch runs the same patches without blending, masks or "
                  "I/O); 'in-run overhead' = seconds / seconds spent inside the net's forward in the same run − 1, "
                  "which other load on the machine does not skew. Target: < 20 % for the serial chunked run with "
                  "the default chunk. Smaller chunks recompute the patches that straddle chunk faces (column "
                  "'patches run'): the price of the global patch grid that makes chunked output equal a single "
                  "pass. The dask row splits the cores between 2 workers (torch threads split too) and each worker "
                  "loads the model from the checkpoint once."),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
