"""Check emkit's GPU path end to end on a machine with a CUDA GPU, and time it against the CPU.

Steps (each recorded as rows of ``OUT/gpu_check.json``, written after every step, so a run cut
short still leaves what it did; a failing step records its traceback and the script goes on):

a. ``info``: torch / CUDA / GPU, nvidia-smi, versions of emkit's dependencies.
b. ``phantom``: ``emkit phantom`` 64×256×256, seed 0 (and, in parallel, the training phantoms of e).
c. ``infer``: ``emkit infer boundary … --heads affinity --workers 0`` with ``--device cpu`` and with
   ``--device cuda``; the two affinity layers (float32) compared voxel by voxel.
d. ``segment``: ``emkit segment`` (threshold 0.5) + ``emkit evaluate`` against
   ``gt/image_frame/segmentation`` on the cuda affinities (and on the cpu ones); ARAND ≈ 0.029 on CPU
   (benchmarks/results/shipped_boundary.json).
e. ``train``: ``emkit train boundary --preset phantom`` on cuda (300 iterations, validation every 150)
   and 20 iterations of the same on cpu: iterations/s, loss curve, validation ARAND.
f. ``torchbench``: plain torch over the same patch grid and batch size as ``emkit infer`` (the shipped
   boundary net; forward only, and numpy→device→numpy like emkit), TF32 on/off and bf16 autocast,
   the cpu-vs-cuda difference of one batch, warm in-process ``infer_layers`` / ``predict``, and the
   ceiling of one training step (forward + backward + AMSGrad) of the preset net.

Usage (device): ``PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT``.
Smoke test without a GPU: ``.venv/bin/python benchmarks/gpu_check.py --device cpu --small --out /tmp/gc``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EMKIT = [sys.executable, "-m", "emkit.cli.main"]
T0 = time.perf_counter()


def _env():
    env = dict(os.environ)
    pp = env.get("PYTHONPATH", "")
    if str(REPO) not in pp.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join([p for p in (pp, str(REPO)) if p])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def sh(args, timeout=300, check=True):
    """Run ``args`` (list) in the repo; returns (stdout, stderr, seconds). Raises with the output's tail."""
    t = time.perf_counter()
    args = [str(a) for a in args]
    print("  $ " + " ".join(a if a != sys.executable else "python3" for a in args), flush=True)
    try:
        r = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        tail = lambda s: (s.decode(errors="replace") if isinstance(s, bytes) else (s or ""))[-3000:]  # noqa: E731
        raise RuntimeError(f"timed out after {timeout} s: {' '.join(args)}\nstdout: {tail(e.stdout)}\n"
                           f"stderr: {tail(e.stderr)}") from None
    dt = time.perf_counter() - t
    if check and r.returncode != 0:
        raise RuntimeError(f"exit {r.returncode} after {dt:.1f} s: {' '.join(args)}\nstdout: {r.stdout[-3000:]}\n"
                           f"stderr: {r.stderr[-5000:]}")
    return r.stdout, r.stderr, dt


def emkit(*args, timeout=300):
    return sh([*EMKIT, *args], timeout=timeout)


class Recorder:
    def __init__(self, out: Path, args):
        self.out = out
        self.rows: list[dict] = []
        self.machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        self.command = "PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py " + " ".join(args)
        self.notes: list[str] = []

    def add(self, row: dict):
        row = {"t_s": round(time.perf_counter() - T0, 1), **row}
        self.rows.append(row)
        print("ROW " + json.dumps(row), flush=True)
        self.write()

    def write(self):
        res = {"title": "emkit GPU path check: infer, segment, train on cuda vs cpu",
               "command": self.command, "machine": self.machine, "date": datetime.date.today().isoformat(),
               "rows": self.rows, "notes": " ".join(self.notes)}
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(res, indent=1, default=str))
        os.replace(tmp, self.out / "gpu_check.json")


def step(rec: Recorder, name: str, budget: float, fn, *a, **kw):
    """Run one step; record its failure (traceback) instead of stopping; skip once past ``budget``."""
    el = time.perf_counter() - T0
    print(f"== {name} (t={el:.0f} s)", flush=True)
    if el > budget:
        rec.add({"step": name, "ok": False, "error": f"skipped: {el:.0f} s elapsed, budget {budget:.0f} s"})
        return None
    try:
        return fn(*a, **kw)
    except Exception:  # noqa: BLE001 - record and go on
        tb = traceback.format_exc()
        print(tb, flush=True)
        rec.add({"step": name, "ok": False, "error": tb[-6000:]})
        return None


# ---- steps ------------------------------------------------------------------------------------------
def s_info(rec: Recorder, cfg):
    import importlib.metadata as md

    import torch

    row = {"step": "info", "ok": True, "python": platform.python_version(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        row["cudnn"] = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001
        pass
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        row.update(gpu=torch.cuda.get_device_name(0), gpu_capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                   gpu_memory_gib=round(p.total_memory / 2**30, 1), gpu_sms=p.multi_processor_count,
                   cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
        rec.machine = (f"{row['gpu']} ({row['gpu_memory_gib']} GiB), torch {torch.__version__} (CUDA {torch.version.cuda}), "
                       f"{os.cpu_count()} cores, Python {platform.python_version()}")
    else:
        rec.machine = f"no GPU: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"
    vers = {}
    for d in ("numpy", "scipy", "numba", "llvmlite", "scikit-image", "pandas", "pyarrow", "cloud-volume", "cloud-files",
              "connected-components-3d", "fastremap", "zfpy", "fpzip", "compressed-segmentation", "tqdm", "dask"):
        try:
            vers[d] = md.version(d)
        except md.PackageNotFoundError:
            vers[d] = None
    row["versions"] = vers
    if shutil.which("nvidia-smi"):
        try:
            out, _, _ = sh(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit",
                            "--format=csv,noheader"], timeout=30)
            row["nvidia_smi"] = out.strip()
        except Exception as e:  # noqa: BLE001
            row["nvidia_smi"] = f"failed: {e}"
    rec.add(row)


def s_phantom(rec: Recorder, cfg):
    """The evaluation phantom, and in parallel the training phantoms (prepare_phantoms reuses them)."""
    d = cfg.work / "ph"
    procs = []
    data = cfg.work / "train_dev" / "data"
    for s in ((*cfg.train_seeds, 199) if cfg.need_train else ()):
        t = data / f"phantom_{s}"
        args = [*EMKIT, "phantom", str(t), "--size", cfg.train_size, "--seed", str(s), "--quiet"]
        procs.append((s, subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True)))
    out, _, dt = emkit("phantom", d, "--size", cfg.size, "--seed", "0", "--quiet", timeout=300)
    rec.add({"step": "phantom", "ok": True, "size": cfg.size, "seed": 0, "seconds": round(dt, 1),
             "summary": out.strip().splitlines()[0] if out.strip() else "",
             "note": f"run alongside {len(procs)} training phantoms of {cfg.train_size}"})
    t = time.perf_counter()
    bad = []
    for s, p in procs:
        try:
            o, e = p.communicate(timeout=max(10, 300 - (time.perf_counter() - t)))
        except subprocess.TimeoutExpired:
            p.kill()
            o, e = p.communicate()
            bad.append(f"seed {s}: timed out")
            continue
        if p.returncode != 0:
            bad.append(f"seed {s}: exit {p.returncode}: {e[-2000:]}")
    rec.add({"step": "phantom_train", "ok": not bad, "size": cfg.train_size, "seeds": [*cfg.train_seeds, 199],
             "extra_wait_s": round(time.perf_counter() - t, 1), **({"error": "\n".join(bad)} if bad else {})})


_INFER_RE = re.compile(r"in ([\d.]+) s \(([\d,]+) voxels/s\)")


def s_infer(rec: Recorder, cfg, device: str, tag: str):
    """``emkit infer`` on ``device``, written to ``ph/aff_<tag>`` (tag: dev or cpu)."""
    d = cfg.work / "ph"
    out_url = d / f"aff_{tag}"
    out, err, dt = emkit("infer", "boundary", d / "image", out_url, "--heads", "affinity", "--workers", "0",
                         "--device", device, "--quiet", timeout=400)
    m = _INFER_RE.search(out)
    row = {"step": "infer", "ok": True, "device": device, "layer": f"aff_{tag}", "size": cfg.size, "wall_s": round(dt, 1),
           "summary": out.strip()}
    if m:
        row.update(map_s=float(m.group(1)), voxels_per_s=int(m.group(2).replace(",", "")))
    rec.add(row)


def s_compare(rec: Recorder, cfg):
    import numpy as np

    from emkit.io import Layer

    d = cfg.work / "ph"
    la, lb = Layer.open(d / "aff_cpu"), Layer.open(d / "aff_dev")
    a, b = la.read(), lb.read()
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    rec.add({"step": "compare_affinities", "ok": True, "a": "cpu", "b": cfg.device, "dtype": str(a.dtype),
             "layer_dtype": str(la.dtype), "layer_encoding": getattr(la, "encoding", None), "shape": list(a.shape),
             "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
             "p99_99_abs_diff": float(np.quantile(diff, 0.9999)),
             "frac_gt_1e-3": float((diff > 1e-3).mean()), "frac_gt_1e-2": float((diff > 1e-2).mean()),
             "frac_0.5_flips": float(((a > 0.5) != (b > 0.5)).mean()),
             "within_1e-3": bool(diff.max() <= 1e-3)})


def s_segment(rec: Recorder, cfg, tag: str):
    d = cfg.work / "ph"
    aff = d / f"aff_{tag}"
    seg = d / f"seg_{tag}"
    out, _, t_seg = emkit("segment", aff, seg, "--threshold", "0.5", "--workers", "0", "--quiet", timeout=300)
    res, _, t_ev = emkit("evaluate", seg / "segmentation", d / "gt/image_frame/segmentation", "--worst", "0",
                         timeout=300)
    s = json.loads(res)
    rec.add({"step": "segment_evaluate", "ok": True, "affinities_from": f"aff_{tag} ({cfg.device if tag == 'dev' else 'cpu'})", "threshold": 0.5,
             "arand": round(s["arand"], 4), "voi_split": round(s["voi_split"], 3), "voi_merge": round(s["voi_merge"], 3),
             "segment_s": round(t_seg, 1), "evaluate_s": round(t_ev, 1),
             "cpu_reference_arand": 0.0294 if cfg.size == "64,256,256" else None})


def s_torchbench(rec: Recorder, cfg):
    jf = cfg.work / "torchbench.json"
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", "torchbench", "--device", cfg.device,
            "--work", str(cfg.work), "--size", cfg.size] + (["--small"] if cfg.small else [])
    try:
        sh(args, timeout=300)
    finally:  # rows the worker managed to write, also when it failed
        for r in (json.loads(jf.read_text()) if jf.is_file() else []):
            rec.add({"step": "torchbench", "ok": "error" not in r, **r})


def s_train(rec: Recorder, cfg, device: str, iterations: int, val_interval: int, tag: str):
    """``emkit train boundary --preset phantom`` on ``device`` into ``train_<tag>``: tag dev generates
    (reuses) the phantoms under train_dev/data; tag cpu trains on the same folders given as --data."""
    out_dir = cfg.work / f"train_{tag}"
    data = cfg.work / "train_dev" / "data"
    common = ["train", "boundary", "--preset", "phantom", "--device", device, "--iterations", str(iterations),
              "--val-interval", str(val_interval), "--checkpoint-interval", str(val_interval), "--seed", "0",
              "--out", out_dir, "--no-progress"]
    if tag == "dev":
        extra = ["--phantom-size", cfg.train_size, "--phantom-seeds", ",".join(map(str, cfg.train_seeds))]
    else:  # same phantoms, given as data
        extra = ["--data", *[data / f"phantom_{s}" for s in cfg.train_seeds], "--val-data", data / "phantom_199"]
    remaining = max(120, cfg.budget + 90 - (time.perf_counter() - T0))
    t = time.perf_counter()
    failure = None
    try:
        emkit(*common, *extra, timeout=int(min(400, remaining)))
    except Exception:  # noqa: BLE001 - a run cut short may still have written log.json (every checkpoint)
        failure = traceback.format_exc()[-6000:]
        if not (out_dir / "log.json").is_file():
            raise
    dt = time.perf_counter() - t
    log = json.loads((out_dir / "log.json").read_text())
    tr = log["train"]
    secs, loss = tr["seconds"], tr["loss"]
    k = max(1, min(20, len(loss) // 5))
    import statistics

    val = [{kk: (round(v, 4) if isinstance(v, float) else v) for kk, v in x.items()
            if kk in ("iteration", "loss", "arand", "voi_split", "voi_merge")} for x in log["validation"]]
    sp = log.get("seconds_per_iteration")
    # steps after the first few (cuDNN/JIT warm-up) only
    steady = secs[min(5, len(secs) - 1):] if secs else []
    row = {"step": "train", "ok": failure is None, **({"error": failure} if failure else {}), "device": device, "log_device": log.get("device"), "iterations": len(loss),
           "n_parameters": log.get("n_parameters"), "wall_s": round(dt, 1), "train_loop_s": round(sum(secs), 2),
           "median_s_per_it": sp, "it_per_s_median": round(1 / sp, 2) if sp else None,
           "it_per_s_steady_mean": round(len(steady) / sum(steady), 2) if steady and sum(steady) > 0 else None,
           "loss_first": round(statistics.mean(loss[:k]), 4), "loss_last": round(statistics.mean(loss[-k:]), 4),
           "loss_fell": statistics.mean(loss[-k:]) < statistics.mean(loss[:k]), "validation": val,
           "validation_source": log.get("validation_source"), "augment": log.get("augment"),
           "patch": log.get("net_config", {}).get("patch_size"), "widths": log.get("net_config", {}).get("widths")}
    if len(val) >= 2 and all("arand" in v for v in val):
        row["val_arand_fell"] = val[-1]["arand"] < val[0]["arand"]
    rec.add(row)
    shutil.copy(out_dir / "log.json", cfg.out / f"train_log_{tag}.json")


# ---- worker: plain torch over emkit's patch grid --------------------------------------------------------
def worker_torchbench(args) -> int:
    import numpy as np
    import torch

    from emkit.inference import PatchGrid, infer_layers, predict
    from emkit.inference.predict import model_input_multiple, model_patch_size
    from emkit.io import Layer
    from emkit.nets import load_model

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    work = Path(args.work)
    d = work / "ph"
    rows = []
    jf = work / "torchbench.json"

    def flush():
        jf.write_text(json.dumps(rows, indent=1, default=str))

    def sync():
        if cuda:
            torch.cuda.synchronize()

    image = Layer.open(d / "image")
    img = image.read()  # (z, y, x) uint8
    model = load_model("boundary").to(dev).eval()
    B = 4  # emkit infer's default --batch-size
    grid = PatchGrid(image.size, model_patch_size(model), 0.25, model_input_multiple(model))
    patches = grid.patches()
    P = grid.patch
    nvox = int(np.prod(image.size))
    x = img.astype(np.float32) / 255
    batches = []
    for b in range(0, len(patches), B):
        arr = np.stack([x[p.slices()][None] for p in patches[b:b + B]])
        batches.append(np.ascontiguousarray(arr))
    base = {"patch": list(P), "batch_size": B, "n_patches": len(patches), "volume": list(image.size),
            "device": str(dev), "torch_threads": torch.get_num_threads()}
    reps = 1 if args.small else 3

    def timed(fn, what, **extra):
        fn()  # warm-up (cuDNN algorithm choice, allocator)
        sync()
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t)
        rows.append({"what": what, **base, **extra, "seconds": round(best, 4),
                     "volume_voxels_per_s": round(nvox / best), "patch_voxels_per_s": round(len(patches) * np.prod(P) / best)})
        print("  " + json.dumps(rows[-1]), flush=True)
        flush()

    aff = model.head_slices["affinity"]
    idx = torch.arange(aff.start, aff.stop, device=dev)

    def numpy_roundtrip():  # what predict_box does per batch, minus blending and I/O
        with torch.inference_mode():
            for arr in batches:
                y = model(torch.from_numpy(arr).to(dev))
                torch.sigmoid(y.index_select(1, idx).float()).cpu().numpy()

    gpu_batches = [torch.from_numpy(a).to(dev) for a in batches]

    def forward_only():
        with torch.inference_mode():
            for xb in gpu_batches:
                model(xb)

    def set_tf32(on):
        if cuda:
            torch.backends.cudnn.allow_tf32 = on
            torch.backends.cuda.matmul.allow_tf32 = on

    timed(numpy_roundtrip, "plain torch: numpy->device, forward, sigmoid(affinity)->numpy, all patches")
    timed(forward_only, "plain torch: forward only (inputs already on device), all patches")
    if cuda:
        set_tf32(False)
        timed(forward_only, "plain torch: forward only, TF32 off")
        set_tf32(True)

        def bf16():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                for xb in gpu_batches:
                    model(xb)
        try:
            timed(bf16, "plain torch: forward only, bf16 autocast")
        except Exception as e:  # noqa: BLE001
            rows.append({"what": "bf16 autocast", "error": repr(e)})
        # cpu vs cuda on the first batch: how far apart the sigmoid outputs are, TF32 on and off
        cpu_model = load_model("boundary").eval()
        with torch.inference_mode():
            xb = torch.from_numpy(batches[0])
            ref = torch.sigmoid(cpu_model(xb)[:, aff]).numpy()
            for tf in (True, False):
                set_tf32(tf)
                got = torch.sigmoid(model(xb.to(dev))[:, aff]).cpu().numpy()
                dd = np.abs(ref.astype(np.float64) - got)
                rows.append({"what": f"cpu vs cuda, first batch, affinity sigmoid, TF32 {'on' if tf else 'off'}",
                             "max_abs_diff": float(dd.max()), "mean_abs_diff": float(dd.mean())})
                print("  " + json.dumps(rows[-1]), flush=True)
            set_tf32(True)
        flush()

    # warm emkit in-process: array form (blending, no I/O) and layer form (I/O, markers)
    for i in range(2):
        t = time.perf_counter()
        predict(model, img, heads="affinity", batch_size=B, device=dev, progress=False)
        sync()
        dt = time.perf_counter() - t
        rows.append({"what": f"emkit predict (array, blending), in-process run {i + 1}", **base, "seconds": round(dt, 3),
                     "volume_voxels_per_s": round(nvox / dt)})
        print("  " + json.dumps(rows[-1]), flush=True)
        flush()
    for i in range(2):
        rep = infer_layers("boundary", d / "image", work / f"aff_warm_{i}", heads="affinity", device=str(dev), workers=0,
                           overwrite=True, progress=False)
        rows.append({"what": f"emkit infer_layers (layer I/O, serial), in-process run {i + 1}", **base,
                     "seconds": round(rep.seconds, 3), "wall_seconds": round(rep.wall_seconds, 3),
                     "volume_voxels_per_s": round(rep.voxels_per_s), "chunks": rep.chunks,
                     "chunk_size": list(rep.chunk_size)})
        print("  " + json.dumps(rows[-1]), flush=True)
        flush()

    # ceiling of one training step of the preset net (no data loading, no augmentation)
    from emkit.nets import NetConfig, RSUNet, boundary_heads
    from emkit.train.presets import PRESETS

    pr = PRESETS["phantom"]["boundary"]
    torch.manual_seed(0)
    net = RSUNet(NetConfig(widths=pr["widths"], heads=boundary_heads(), patch_size=pr["patch_size"],
                           resolution=(40, 8, 8))).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, amsgrad=True)
    xt = torch.rand(1, 1, *pr["patch_size"], device=dev)
    tt = (torch.rand(1, net.config.out_channels, *pr["patch_size"], device=dev) > 0.5).float()

    def train_step(n):
        def f():
            for _ in range(n):
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt), tt)
                loss.backward()
                opt.step()
                float(loss.detach())
        return f
    n = 1 if args.small else 30
    train_step(1 if args.small else 3)()
    sync()
    t = time.perf_counter()
    train_step(n)()
    sync()
    dt = time.perf_counter() - t
    rows.append({"what": "plain torch training step ceiling (preset net, batch 1, fwd+bwd+AMSGrad, no data)",
                 "device": str(dev), "patch": list(pr["patch_size"]), "widths": list(pr["widths"]),
                 "steps": n, "it_per_s": round(n / dt, 2)})
    print("  " + json.dumps(rows[-1]), flush=True)
    flush()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="folder for gpu_check.json (default: a temporary folder, printed)")
    ap.add_argument("--device", default="cuda", help="the device under test (cuda; cpu for a smoke test)")
    ap.add_argument("--small", action="store_true", help="tiny sizes and few iterations (smoke test)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--budget", type=float, default=330, help="seconds after which remaining steps are skipped")
    ap.add_argument("--size", default=None, help="evaluation phantom z,y,x (default 64,256,256; --small 16,128,128)")
    ap.add_argument("--iterations", type=int, default=None, help="cuda training iterations (default 300)")
    ap.add_argument("--only", default=None, help="comma-separated steps to run (default all): info, phantom, infer, "
                                                  "compare, segment, torchbench, train")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "torchbench":
        return worker_torchbench(args)

    argv_txt = sys.argv[1:] if argv is None else list(argv)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check_out_"))
        out.mkdir(parents=True, exist_ok=True)
        cfg = argparse.Namespace(
            out=out, device=args.device, small=args.small, budget=args.budget,
            work=Path(args.work or tmp), size=args.size or ("16,128,128" if args.small else "64,256,256"),
            train_size="20,240,240" if args.small else "32,256,256",
            train_seeds=(101,) if args.small else (101, 102, 103),
            it_dev=args.iterations or (2 if args.small else 300), val_dev=2 if args.small else 150,
            it_cpu=1 if args.small else 20)
        cfg.need_train = args.only is None or "train" in args.only.split(",")
        cfg.work.mkdir(parents=True, exist_ok=True)
        rec = Recorder(out, argv_txt)
        rec.notes.append(f"Evaluation phantom {cfg.size} seed 0; training phantoms {cfg.train_size} seeds "
                         f"{list(cfg.train_seeds)} + validation 199; preset 'phantom' net. Timings: wall_s includes "
                         "process start, imports and model load; map_s / voxels_per_s are emkit's own figure "
                         "(chunk map only). Device under test: " + cfg.device + ".")
        B = cfg.budget
        only = set(args.only.split(",")) if args.only else None

        def run(key, name, fn, *a):
            if only is None or key in only:
                step(rec, name, B, fn, *a)

        run("info", "info", s_info, rec, cfg)
        run("phantom", "phantom", s_phantom, rec, cfg)
        run("infer", f"infer {cfg.device}", s_infer, rec, cfg, cfg.device, "dev")
        run("infer", "infer cpu", s_infer, rec, cfg, "cpu", "cpu")
        run("compare", "compare", s_compare, rec, cfg)
        run("segment", f"segment+evaluate {cfg.device}", s_segment, rec, cfg, "dev")
        run("torchbench", "torchbench", s_torchbench, rec, cfg)
        run("train", f"train {cfg.device}", s_train, rec, cfg, cfg.device, cfg.it_dev, cfg.val_dev, "dev")
        run("train", "train cpu", s_train, rec, cfg, "cpu", cfg.it_cpu, cfg.it_cpu, "cpu")
        run("segment", "segment+evaluate cpu", s_segment, rec, cfg, "cpu")
        ok = sum(1 for r in rec.rows if r.get("ok"))
        bad = [r["step"] for r in rec.rows if not r.get("ok")]
        rec.notes.append(f"{ok} rows ok, failed: {bad or 'none'}; total {time.perf_counter() - T0:.0f} s.")
        rec.write()
        print(f"wrote {out / 'gpu_check.json'}; failed steps: {bad or 'none'}; {time.perf_counter() - T0:.0f} s",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
