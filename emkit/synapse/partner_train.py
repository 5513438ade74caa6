"""Training of the synaptic partner net (:mod:`emkit.synapse.partners`) on phantom synapses or on
dataset folders with ``image``, ``gt/clefts``, ``gt/segmentation`` and ``gt/synapses.parquet``.

One sample = one cleft: a patch of the net's size centred at the cleft's centroid voxel (jittered
by up to :attr:`PartnerTrainConfig.jitter` voxels), input channels image + this cleft's mask,
targets the presynaptic and the postsynaptic segment's voxels within
:attr:`emkit.synapse.PartnerParams.radius_nm` of the cleft. Loss: binary cross-entropy (paper,
Methods *Synapse detection and synaptic partner assignment*), optimizer AMSGrad (paper, Methods
*Training*: "the AMSGrad variant ... of the Adam optimizer, with α = 0.001, β1 = 0.9,
β2 = 0.999, ε = 10⁻⁸"), static learning rate 1e-3 (the partner net's "static learning rate of
1 × 10⁻³"). Augmentation: flip & rotate, brightness & contrast, missing section (three of the
paper's five for this net; warping and misalignment are left out to keep a CPU step cheap).
Validation: partner accuracy (:func:`emkit.synapse.partners.partner_accuracy`) of
:func:`~emkit.synapse.partners.assign_partners` on held-out volumes.

``train_partner(PartnerTrainConfig(...))`` writes ``OUT/last.pt``, ``OUT/best.pt`` (highest
validation accuracy, then lowest validation loss) and ``OUT/log.json``; checkpoints are
:func:`emkit.nets.save` files (``emkit.nets.load_model(path)`` loads them).
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from emkit.errors import InputError

__all__ = ["PartnerTrainConfig", "train_partner", "train_partner_cli", "PHANTOM_TRAIN_SEEDS", "PHANTOM_VAL_SEED",
           "PHANTOM_SIZE", "partner_samples"]

#: Phantom seeds used for training and validation by the ``phantom`` preset (evaluate shipped
#: weights on a seed outside both, e.g. 0).
PHANTOM_TRAIN_SEEDS = tuple(range(101, 113))
PHANTOM_VAL_SEED = 199
PHANTOM_SIZE = (64, 320, 320)


@dataclass
class PartnerTrainConfig:
    """What :func:`train_partner` does.

    Attributes
    ----------
    out_dir : folder for last.pt, best.pt, log.json.
    data : dataset folders (image, gt/clefts, gt/segmentation, gt/synapses.parquet); empty with
        ``preset="phantom"``: phantoms (no defects) of ``phantom_size`` at ``train_seeds``.
    val_data : validation folders; empty with the preset: the phantom at ``val_seed``.
    preset : ``"phantom"`` or None.
    iterations : gradient steps (paper: 2.71 million; far fewer here).
    lr : learning rate (paper: static 1e-3).
    widths : net feature maps (paper: 16, 20, 40).
    patch_nm : patch extent (z, y, x nm; default Turner et al. 2020's 720 × 640 × 640 nm).
    radius_nm : targets (and inference weights) within this distance of the cleft.
    jitter : largest random shift (z, y, x voxels) of a training patch from the cleft's centre.
    resolution : voxel size (z, y, x nm) of the phantoms (folders: read from the image layer).
    val_interval, checkpoint_interval : iterations between validations / last.pt writes.
    seed : RNG seed (sampling, augmentation, initialisation).
    threads : torch CPU threads (None: torch's default).
    device : torch device.
    init : start from this checkpoint / shipped model (weights only).
    progress : a tqdm bar.
    """

    out_dir: str = "runs/partner"
    data: tuple = ()
    val_data: tuple = ()
    preset: str | None = "phantom"
    iterations: int = 1000
    lr: float = 1e-3
    widths: tuple = (16, 20, 40)
    patch_nm: tuple = (720.0, 640.0, 640.0)
    radius_nm: float | None = 300.0
    jitter: tuple = (1, 4, 4)
    resolution: tuple = (40.0, 8.0, 8.0)
    phantom_size: tuple = PHANTOM_SIZE
    train_seeds: tuple = PHANTOM_TRAIN_SEEDS
    val_seed: int = PHANTOM_VAL_SEED
    augment: bool = True
    val_interval: int = 100
    checkpoint_interval: int = 100
    seed: int = 0
    threads: int | None = 1
    device: str = "cpu"
    init: str | None = None
    progress: bool = True

    def __post_init__(self):
        for k in ("data", "val_data", "widths", "patch_nm", "jitter", "resolution", "phantom_size", "train_seeds"):
            v = getattr(self, k)
            setattr(self, k, tuple(v) if v is not None else ())
        if self.preset not in (None, "phantom"):
            raise InputError(f"unknown preset {self.preset!r} for task 'partner'; presets: ['phantom']")
        if not self.data and self.preset is None:
            raise InputError("give dataset folders (--data) or --preset phantom")
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise InputError(f"iterations must be a non-negative integer, got {self.iterations!r}")
        if not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr!r}")
        for k in ("val_interval", "checkpoint_interval"):
            if int(getattr(self, k)) < 1:
                raise InputError(f"{k} must be >= 1, got {getattr(self, k)!r}")
        if len(self.jitter) != 3 or any(int(j) < 0 for j in self.jitter):
            raise InputError(f"jitter must be three non-negative integers (z, y, x), got {self.jitter!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ------------------------------------------------------------------ data ------------------------
def _volumes(cfg: PartnerTrainConfig, which: str):
    """[(name, image, clefts, segmentation, synapses table, resolution)] for 'train' / 'val'."""
    import pandas as pd

    out = []
    folders = cfg.data if which == "train" else cfg.val_data
    if folders:
        from emkit.io import Layer, check_same_grid, join_url

        for d in folders:
            try:
                img_l = Layer.open(join_url(str(d), "image"))
                cl_l = Layer.open(join_url(str(d), "gt/clefts"))
                seg_l = Layer.open(join_url(str(d), "gt/segmentation"))
            except Exception as e:  # noqa: BLE001
                raise InputError(f"{d}: a partner dataset folder needs layers image, gt/clefts and gt/segmentation "
                                 f"({e})") from None
            check_same_grid(img_l, cl_l, seg_l, what=f"{d} ground truth layer")
            pq = Path(str(d).replace("file://", "")) / "gt" / "synapses.parquet"
            if not pq.is_file():
                raise InputError(f"{d}: missing gt/synapses.parquet (columns cleft_id, pre_id, post_id)")
            syn = pd.read_parquet(pq)
            out.append((str(d), img_l.read(), cl_l.read(), seg_l.read(), syn, tuple(img_l.resolution)))
        return out
    from emkit.phantom import make_phantom

    seeds = cfg.train_seeds if which == "train" else (cfg.val_seed,)
    for s in seeds:
        ph = make_phantom(tuple(cfg.phantom_size), seed=int(s), resolution=tuple(cfg.resolution), defects="none")
        out.append((f"phantom seed {s}", ph.image, ph.clefts, ph.segmentation, ph.synapses, tuple(cfg.resolution)))
    return out


def partner_samples(image, clefts, segmentation, synapses, size, jitter, resolution, radius_nm):
    """Training crops around each cleft of ``synapses`` (rows cleft_id, pre_id, post_id): dicts with
    ``image`` (uint8/float), ``cleft``, ``pre``, ``post`` (uint8 masks) of shape ``size + 2 *
    jitter`` centred at the cleft's centroid voxel (zero outside the volume)."""
    from emkit.synapse.partners import _patch_box, _read_padded, _region, _sl, cleft_centers

    ids, _, _, centers = cleft_centers(clefts)
    cen = {int(i): c for i, c in zip(ids, centers)}
    big = tuple(s + 2 * int(j) for s, j in zip(size, jitter))
    shape = clefts.shape
    out = []
    for row in synapses.itertuples(index=False):
        cid = int(row.cleft_id)
        if cid not in cen:
            continue
        box = _patch_box(cen[cid], big)
        img = _read_padded(lambda b: image[_sl(b)], box, shape, image.dtype)
        cl = _read_padded(lambda b: clefts[_sl(b)], box, shape, clefts.dtype) == cid
        seg = _read_padded(lambda b: segmentation[_sl(b)], box, shape, segmentation.dtype)
        region = _region(cl, resolution, radius_nm)
        out.append({"image": img, "cleft": cl.astype(np.uint8),
                    "pre": ((seg == int(row.pre_id)) & region).astype(np.uint8),
                    "post": ((seg == int(row.post_id)) & region).astype(np.uint8)})
    return out


def _draw(samples, rng, size, jitter, augment: bool):
    from emkit.train.augment import brightness_contrast, flip_rotate, missing_section

    s = samples[int(rng.integers(len(samples)))]
    off = [int(rng.integers(0, 2 * int(j) + 1)) for j in jitter]
    sl = tuple(slice(o, o + n) for o, n in zip(off, size))
    x = {k: np.ascontiguousarray(v[sl]) for k, v in s.items()}
    if augment:
        x = flip_rotate(x, rng)
        if rng.random() < 0.5:
            x = brightness_contrast(x, rng)
        if rng.random() < 0.1:
            x = missing_section(x, rng, consecutive=1, max_single=1)
    from emkit.nets import normalize

    inp = np.stack([normalize(x["image"]), x["cleft"].astype(np.float32)])
    tgt = np.stack([x["pre"], x["post"]]).astype(np.float32)
    return inp, tgt


def _git_revision() -> str | None:
    import subprocess

    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


# ------------------------------------------------------------------ training --------------------
def train_partner(config: PartnerTrainConfig, *, resume: bool = False, command: str | None = None) -> dict:
    """Train the partner net as ``config`` says; returns a summary dict (paths, iterations, best
    validation accuracy, seconds per iteration)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from emkit.nets import load_checkpoint, load_model, save
    from emkit.synapse.partners import PartnerParams, assign_partners, build_partner_net, partner_accuracy

    if not isinstance(config, PartnerTrainConfig):
        raise InputError(f"config must be a PartnerTrainConfig, got {type(config).__name__}")
    cfg = config
    out = Path(cfg.out_dir)
    last_p, best_p, log_p = out / "last.pt", out / "best.pt", out / "log.json"
    if not resume and last_p.exists():
        raise InputError(f"{out} already holds a training run (last.pt); pass resume (--resume) or another --out")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    command = command or " ".join(shlex.quote(a) for a in sys.argv)
    rev = _git_revision()
    t_start = time.perf_counter()

    train_vols = _volumes(cfg, "train")
    val_vols = _volumes(cfg, "val") if (cfg.val_data or cfg.preset == "phantom") else []
    resolution = train_vols[0][5]
    params = PartnerParams(patch_nm=cfg.patch_nm, widths=cfg.widths, radius_nm=cfg.radius_nm)
    torch.manual_seed(cfg.seed)
    model = build_partner_net(resolution, params)
    if cfg.init:
        src = load_model(cfg.init)
        if src.config.to_dict() != model.config.to_dict():
            raise InputError(f"--init {cfg.init}: its net ({src.config.widths}, patch {src.config.patch_size}) differs "
                             f"from this run's ({model.config.widths}, patch {model.config.patch_size})")
        model.load_state_dict(src.state_dict())
    model.to(cfg.device)
    size = tuple(model.config.patch_size)
    samples = []
    for name, img, cl, seg, syn, res in train_vols:
        samples += partner_samples(img, cl, seg, syn, size, cfg.jitter, res, cfg.radius_nm)
    if not samples:
        raise InputError("no training clefts: the training volumes' synapse tables name no cleft present in gt/clefts")
    val_samples = []
    for name, img, cl, seg, syn, res in val_vols:
        val_samples += partner_samples(img, cl, seg, syn, size, (0, 0, 0), res, cfg.radius_nm)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, amsgrad=True)
    rng = np.random.default_rng(cfg.seed)
    log = {"train_loss": [], "validation": [], "n_train_clefts": len(samples), "n_val_clefts": len(val_samples)}
    it0 = 0
    if resume and last_p.exists():
        blob = load_checkpoint(last_p)
        model.load_state_dict(blob["state_dict"])
        tr = blob.get("training", {})
        opt.load_state_dict(tr["optimizer"])
        it0 = int(tr["iteration"])
        log = json.loads(log_p.read_text()) if log_p.exists() else log
        rng.bit_generator.state = json.loads(tr["rng"])
        torch.set_rng_state(tr["torch_rng"])
    del train_vols

    def extra(it, metrics):
        return {"command": command, "seed": cfg.seed, "git_revision": rev, "iteration": it,
                "train_config": cfg.to_dict(), "metrics": metrics, "task": "partner",
                "partner_params": params.to_dict()}

    def validate(it):
        model.eval()
        rec = {"iteration": it}
        if val_samples:
            with torch.inference_mode():
                losses = []
                for s in val_samples:
                    x = np.stack([_np_norm(s["image"]), s["cleft"].astype(np.float32)])[None]
                    t = np.stack([s["pre"], s["post"]]).astype(np.float32)[None]
                    y = model(torch.from_numpy(x).to(cfg.device))
                    losses.append(float(F.binary_cross_entropy_with_logits(y, torch.from_numpy(t).to(cfg.device))))
            rec["loss"] = float(np.mean(losses))
        n = correct = 0
        for name, img, cl, seg, syn, res in val_vols:
            df = assign_partners(img, cl, seg, resolution=res, model=model, params=params, progress=False)
            acc = partner_accuracy(df, syn)
            n += acc["n"]
            correct += acc["correct"]
        if n:
            rec["accuracy"], rec["n_clefts"], rec["correct"] = correct / n, n, correct
        model.train()
        return rec

    def better(a, b):
        if b is None:
            return True
        ka = (a.get("accuracy", 0.0), -a.get("loss", 0.0))
        kb = (b.get("accuracy", 0.0), -b.get("loss", 0.0))
        return ka > kb

    best = None
    for v in log["validation"]:
        if better(v, best):
            best = v
    model.train()
    step_times = []
    bar = tqdm(total=cfg.iterations, initial=it0, desc="partner train", disable=not cfg.progress)
    it = it0
    for it in range(it0 + 1, cfg.iterations + 1):
        t0 = time.perf_counter()
        x, t = _draw(samples, rng, size, cfg.jitter, cfg.augment)
        xt = torch.from_numpy(x[None]).to(cfg.device)
        tt = torch.from_numpy(t[None]).to(cfg.device)
        loss = F.binary_cross_entropy_with_logits(model(xt), tt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_times.append(time.perf_counter() - t0)
        log["train_loss"].append(round(loss.item(), 6))
        bar.update(1)
        if it % cfg.val_interval == 0 or it == cfg.iterations:
            rec = validate(it)
            log["validation"].append(rec)
            bar.set_postfix(acc=rec.get("accuracy"), loss=rec.get("loss"))
            if better(rec, best):
                best = rec
                save(model, best_p, extra=extra(it, rec))
        if it % cfg.checkpoint_interval == 0 or it == cfg.iterations:
            training = {"optimizer": opt.state_dict(), "iteration": it, "rng": json.dumps(rng.bit_generator.state),
                        "torch_rng": torch.get_rng_state()}
            save(model, last_p, extra=extra(it, log["validation"][-1] if log["validation"] else {}),
                 training=training)
            log["seconds_per_iteration_median"] = float(np.median(step_times)) if step_times else None
            log_p.write_text(json.dumps(log, indent=1))
    bar.close()
    if not last_p.exists() or it == it0:
        save(model, last_p, extra=extra(it, {}), training={"optimizer": opt.state_dict(), "iteration": it,
                                                           "rng": json.dumps(rng.bit_generator.state),
                                                           "torch_rng": torch.get_rng_state()})
    if not best_p.exists():
        save(model, best_p, extra=extra(it, {}))
    log["seconds_per_iteration_median"] = float(np.median(step_times)) if step_times else None
    log["best"] = best
    log["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    log_p.write_text(json.dumps(log, indent=1))
    return {"task": "partner", "out": str(out), "last": str(last_p), "best": str(best_p), "log": str(log_p),
            "iterations": it, "n_train_clefts": len(samples), "n_val_clefts": len(val_samples),
            "best_iteration": best["iteration"] if best else None,
            "best_val_accuracy": best.get("accuracy") if best else None,
            "seconds_per_iteration_median": log["seconds_per_iteration_median"]}


def _np_norm(img):
    from emkit.nets import normalize

    return normalize(img)


def train_partner_cli(args) -> dict:
    """``emkit train partner`` with the argparse namespace of ``emkit train`` (fields task, data,
    val_data, preset, iterations, out, seed, resume, device, threads, lr, widths, patch, init,
    val_interval, checkpoint_interval, phantom_size, phantom_seeds, no_progress; others are ignored;
    unset ones keep :class:`PartnerTrainConfig`'s defaults; ``patch`` is in voxels at the paper's
    40 × 8 × 8 nm and is converted to nm)."""
    g = lambda k, d=None: getattr(args, k, d)  # noqa: E731
    kw = {}
    data = tuple(g("data") or ())
    val = tuple(g("val_data") or ())
    preset = g("preset")
    if data:
        kw["data"], kw["preset"] = data, preset
        if val:
            kw["val_data"] = val
    else:
        kw["preset"] = preset or "phantom"
        if val:
            kw["val_data"] = val
    for src, dst in (("iterations", "iterations"), ("seed", "seed"), ("device", "device"), ("threads", "threads"),
                     ("lr", "lr"), ("init", "init"), ("val_interval", "val_interval"),
                     ("checkpoint_interval", "checkpoint_interval"), ("phantom_size", "phantom_size"),
                     ("phantom_seeds", "train_seeds")):
        v = g(src)
        if v is not None:
            kw[dst] = v
    if kw.get("device") == "auto":
        import torch

        kw["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if g("widths"):
        kw["widths"] = tuple(int(w) for w in g("widths"))
    if g("patch"):
        p = tuple(int(v) for v in g("patch"))
        if len(p) != 3:
            raise InputError(f"--patch must be three numbers (z, y, x voxels), got {p}")
        kw["patch_nm"] = tuple(float(a * r) for a, r in zip(p, PartnerTrainConfig.resolution))
    if g("out"):
        kw["out_dir"] = str(g("out"))
    kw["progress"] = not bool(g("no_progress", False))
    known = {f.name for f in fields(PartnerTrainConfig)}
    cfg = PartnerTrainConfig(**{k: v for k, v in kw.items() if k in known})
    cmd = "emkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and sys.argv[0].endswith("emkit") \
        else None
    return train_partner(cfg, resume=bool(g("resume", False)), command=cmd)
