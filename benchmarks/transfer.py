"""Throughput of ``emkit transfer`` (1 and 2 dask workers, and serial) against a plain
single-process CloudVolume read + write copy, on a 64 x 512 x 512 image (uint8, raw) and
segmentation (uint64, compressed_segmentation; copied as is and re-encoded to compresso) layer
on local disk.

Writes ``benchmarks/results/transfer.json``. Usage::

    python benchmarks/transfer.py [--size 64,512,512] [--repeat 2] [--out FILE]

MVx/s = voxels (z * y * x) / seconds / 1e6. ``seconds`` for emkit is the chunk map on a
started cluster whose workers already imported emkit (``cold wall s`` adds starting a fresh
cluster and the workers' first imports, as one ``emkit transfer`` command pays). Every copy is
checked voxel for voxel against the source (outside the timing).
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


def make_sources(root: Path, size):
    """A smooth, EM-like image (filtered noise) and a blocky segmentation, chunks (16, 128, 128)."""
    from scipy import ndimage

    from emkit.io import Layer

    rng = np.random.default_rng(0)
    noise = rng.normal(size=size).astype(np.float32)
    img = ndimage.gaussian_filter(noise, (0.5, 2, 2))
    img = np.clip(128 + img / img.std() * 40 + rng.normal(0, 8, size), 0, 255).astype(np.uint8)
    blocks = rng.integers(1, 2**40, (size[0] // 8 + 1, size[1] // 24 + 1, size[2] // 24 + 1)).astype(np.uint64)
    seg = blocks.repeat(8, 0).repeat(24, 1).repeat(24, 2)[: size[0], : size[1], : size[2]].copy()
    out = {}
    for kind, data in (("image", img), ("segmentation", seg)):
        layer = Layer.create(root / f"src_{kind}", kind, size, chunk_size=(16, 128, 128))
        layer.write(data)
        out[kind] = (layer, data)
    return out


def cloudvolume_copy(src_url: str, dest_url: str, encoding: str | None = None) -> float:
    """Peer: read the whole layer with CloudVolume and write it to a new layer, one process."""
    from cloudvolume import CloudVolume

    src = CloudVolume(src_url, parallel=1, progress=False)
    t0 = time.perf_counter()
    data = src[:]
    info = dict(src.info)
    info.pop("emkit", None)
    if encoding:
        info["scales"] = [dict(info["scales"][0], encoding=encoding)]
    dest = CloudVolume(dest_url, info=info, parallel=1, progress=False, compress=False)  # parallel > 1 corrupts (stack.md 1)
    dest.commit_info()
    dest[:] = data
    return time.perf_counter() - t0


def warm(client) -> None:
    def _imports():
        import emkit.transfer  # noqa: F401
        import cloudvolume  # noqa: F401

    client.run(_imports)


def main(argv=None) -> int:
    from emkit.io import Layer
    from emkit.runtime import Cluster, machine_cores
    from emkit.transfer import transfer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="64,512,512", help="volume z,y,x (default 64,512,512)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings (default 3)")
    ap.add_argument("--out", default=str(HERE / "results" / "transfer.json"))
    args = ap.parse_args(argv)
    size = tuple(int(v) for v in args.size.split(","))
    nvox = int(np.prod(size))
    rows = []
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="emkit-bench-transfer-") as tmp:
        root = Path(tmp)
        sources = make_sources(root, size)

        def check(url, data):
            got = Layer.open(url).read()
            if not np.array_equal(got, data):
                raise SystemExit(f"benchmark copy at {url} differs from its source")

        def row(kind, label, method, workers, seconds, cold=None, tasks=None):
            r = {"layer": f"{label} ({sources[kind][0].dtype.name})", "method": method, "workers": workers,
                 "task box z,y,x": tasks or "-", "seconds": round(seconds, 3), "MVx/s": round(nvox / seconds / 1e6, 2)}
            r["cold wall s"] = round(cold, 2) if cold is not None else "-"
            rows.append(r)
            print(r, flush=True)

        for kind, encoding in (("image", None), ("segmentation", None), ("segmentation", "compresso")):
            src, data = sources[kind]
            tag = f"{kind}_{encoding or 'same'}"
            label = kind if encoding is None else f"{kind} -> {encoding}"
            best = min(cloudvolume_copy(src.url, (root / f"cv_{tag}_{i}").as_uri(), encoding)
                       for i in range(args.repeat))
            check((root / f"cv_{tag}_0").as_uri(), data)
            row(kind, label, "CloudVolume read+write, 1 process (peer)", 1, best)

            times = []
            for i in range(args.repeat):
                rep = transfer(src.url, root / f"serial_{tag}_{i}", encoding=encoding, workers=0, progress=False)
                times.append(rep.seconds)
            check(root / f"serial_{tag}_0", data)
            row(kind, label, "emkit transfer --workers 0 (serial)", 0, min(times))

            for n in (1, 2):
                t0 = time.perf_counter()
                transfer(src.url, root / f"cold_{tag}_{n}", encoding=encoding, workers=n, progress=False)
                cold = time.perf_counter() - t0
                check(root / f"cold_{tag}_{n}", data)
                with Cluster(n_workers=n, quiet=True) as cluster:
                    warm(cluster.client)
                    times = []
                    for i in range(args.repeat):
                        r = transfer(src.url, root / f"dask{n}_{tag}_{i}", encoding=encoding, client=cluster,
                                     progress=False)
                        times.append(r.seconds)
                check(root / f"dask{n}_{tag}_0", data)
                tasks = ",".join(map(str, _task_box(root / f"dask{n}_{tag}_0")))
                row(kind, label, f"emkit transfer --workers {n}", n, min(times), cold, tasks)

    res = {
        "title": f"emkit transfer throughput ({'x'.join(map(str, size))} voxels, local disk)",
        "command": "python benchmarks/transfer.py",
        "machine": f"{platform.machine()}, {machine_cores()} cores, Python {platform.python_version()}",
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "notes": ("Same storage chunk (16, 128, 128) as the source; same encoding (image raw, segmentation "
                  "compressed_segmentation) except the `-> compresso` rows, which re-encode. MVx/s = z*y*x voxels / seconds / 1e6, best of "
                  f"{args.repeat}. emkit seconds: chunk map on a started, warmed cluster (with done-markers); "
                  "cold wall s: one `transfer(workers=N)` call including starting its LocalCluster. The peer "
                  "reads the whole volume into memory, then writes it (parallel=1; see stack.md pitfall 1). "
                  f"Load average when the benchmark started: {load:.1f} (other work on the machine skews timings)."),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _task_box(dest) -> tuple:
    from emkit.runtime import Markers, markers_url

    return tuple(Markers(markers_url(dest, "transfer")).params()["task_size_zyx"])


if __name__ == "__main__":
    sys.exit(main())
