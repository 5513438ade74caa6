"""Training the defect net (fold, crack, resin) on simulated defects (paper, Methods, *Fold &
crack detection*, *Resin detection*).

The paper trained on manually annotated folds, cracks and resin (3,830 / 3,894 / 50 samples of
256 × 256 px). emkit has no annotated defects; it simulates them with :mod:`emkit.defects` —
the same code that damages the phantom — on clean backgrounds: phantoms generated without
defects and, when given, real EM volumes (``DefectTrainConfig.backgrounds``). So every
training sample has an exact mask.

One sample (:func:`make_sample`)
--------------------------------
1. A background, a section and a scale: the fold/crack scale (``working_nm``) or the resin scale
   (``resin_working_nm``), each half of the time, so the one net works at both (the resin pass
   runs it on the coarser image, see :mod:`emkit.detect.defect_masks`); a background too small for
   the coarse scale (under ``2 × patch`` px there) gets the fold/crack scale. A section smaller than
   the crop is mirrored at its edges.
2. A crop of ``1.25 × 2 × patch`` px of the background at *half* the working pixel size (the
   "fine" level: the image averaged by a whole factor), damaged by :func:`emkit.defects.apply_defects`
   with sizes scaled so that they are physically the phantom's defaults (``DefectSpec`` sizes
   are pixels at 8 nm) times a random factor 0.6-1.6: 0-2 folds, 0-2 cracks, resin, a partial
   section, and distractors (a partly missing rectangle, blur) that must *not* be detected.
3. Averaged 2 × 2 to the working pixel (soft targets: the fraction of each working pixel in the
   defect; resin target = resin ∪ partial: both are tissue-free), a random ``patch × patch`` crop.
4. Augmentations (paper): one of the 8 in-plane flips/rotations and brightness & contrast
   (:func:`emkit.train.augment.ops.brightness_contrast`, the boundary net's).

Loss: binary cross-entropy plus soft Dice (1 - Dice, per channel over the batch; the defects are
thin and rare, so BCE alone learns to predict nothing first). Adam (AMSGrad) at ``lr``.
Validation: a fixed set of samples from other seeds (a validation phantom, other sections of
the real volumes); the score is the IoU per channel of prediction > 0.5 with target > 0.5,
and best.pt is the checkpoint of the best mean IoU.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..train.runs import saved_train_config, start_run
from .unet2d import DEFECT_CHANNELS, UNet2DConfig

__all__ = ["DefectTrainConfig", "train_defects", "train_defects_cli", "make_sample", "load_backgrounds",
           "Background", "defect_iou", "resumed_config", "recalibrate_batchnorm", "average_checkpoints"]

#: ``DefectSpec`` sizes are pixels of the phantom's 8 nm images.
SPEC_NM = 8.0


@dataclass(frozen=True)
class DefectTrainConfig:
    """Training of the defect net; defaults give the shipped ``defects`` model.

    out_dir : folder for last.pt, best.pt, log.json.
    iterations, batch_size, lr : gradient steps, samples per step, Adam (AMSGrad) learning rate.
    patch : training tile side in working px (a multiple of 16; the net is fully convolutional,
        inference uses the paper's 256 px field of view).
    widths : the U-Net's feature maps (paper: 16, 32, 64, 128, 256).
    working_nm, resin_working_nm : in-plane pixel sizes of the two passes (see
        :class:`~emkit.detect.unet2d.UNet2DConfig`).
    phantom_seeds, phantom_size : defect-free training phantoms (z, y, x voxels at 40 × 8 × 8 nm).
    val_seed : the validation phantom's seed; val_samples : size of the fixed validation set.
    backgrounds : more clean backgrounds: image layer URLs, or TIFF stacks as ``PATH@Z,Y,X``
        (resolution in nm), e.g. ``isbi.tif@50,4,4``. Their first 3/4 of sections train, the
        rest validates.
    real_fraction : share of samples drawn on ``backgrounds`` (when there are any).
    val_interval : validate every this many iterations (and at the end).
    seed, threads, device, init, progress : as for ``emkit train``.
    """

    out_dir: str = "runs/defects"
    iterations: int = 3000
    batch_size: int = 8
    lr: float = 1e-3
    patch: int = 128
    widths: tuple = (16, 32, 64, 128, 256)
    working_nm: float = 16.0
    resin_working_nm: float = 32.0
    phantom_seeds: tuple = (1001, 1002, 1003)
    phantom_size: tuple = (12, 640, 640)
    val_seed: int = 1999
    val_samples: int = 48
    backgrounds: tuple = ()
    real_fraction: float = 0.4
    val_interval: int = 100
    seed: int = 0
    threads: int | None = 1
    device: str = "cpu"
    init: str | None = None
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "phantom_seeds", tuple(int(s) for s in self.phantom_seeds))
        object.__setattr__(self, "phantom_size", tuple(int(s) for s in self.phantom_size))
        object.__setattr__(self, "backgrounds", tuple(str(b) for b in self.backgrounds))
        for name in ("iterations", "batch_size", "val_interval", "val_samples"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        m = 2 ** (len(self.widths) - 1)
        if self.patch < m or self.patch % m:
            raise InputError(f"patch {self.patch} must be a positive multiple of {m} (2**(levels-1) for widths "
                             f"{self.widths})")
        if not self.phantom_seeds and not self.backgrounds:
            raise InputError("no training backgrounds: give phantom_seeds or backgrounds")
        if len(self.phantom_size) != 3 or min(self.phantom_size) < 1:
            raise InputError(f"phantom_size must be 3 positive sizes (z, y, x), got {self.phantom_size}")
        if not 0 <= self.real_fraction <= 1:
            raise InputError(f"real_fraction must be in [0, 1], got {self.real_fraction}")
        if self.device not in ("cpu", "cuda", "auto") and not str(self.device).startswith("cuda:"):
            raise InputError(f"device must be cpu, cuda or auto, got {self.device!r}")

    def net_config(self) -> UNet2DConfig:
        return UNet2DConfig(widths=self.widths, working_nm=self.working_nm, resin_working_nm=self.resin_working_nm)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --------------------------------------------------------------------------------------------
@dataclass
class Background:
    """A clean image volume (float32 0-1, z, y, x) and its in-plane pixel size (nm); ``levels``
    caches whole-factor averages (factor → volume)."""

    name: str
    volume: np.ndarray
    pixel_nm: float
    levels: dict = field(default_factory=dict)

    def level(self, factor: int) -> np.ndarray:
        if factor not in self.levels:
            self.levels[factor] = area_mean(self.volume, factor)
        return self.levels[factor]


def area_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor × factor`` in-plane blocks of a (..., y, x) array (the end is padded by
    edge replication to a whole block). float32."""
    v = np.asarray(volume, dtype=np.float32)
    if factor == 1:
        return v
    ny, nx = v.shape[-2:]
    py, px = (-ny) % factor, (-nx) % factor
    if py or px:
        v = np.pad(v, [(0, 0)] * (v.ndim - 2) + [(0, py), (0, px)], mode="edge")
    s = v.shape[:-2] + (v.shape[-2] // factor, factor, v.shape[-1] // factor, factor)
    return v.reshape(s).mean(axis=(-3, -1))


def _read_background(spec: str) -> Background:
    path, at, res = spec.rpartition("@")
    if at:
        try:
            r = tuple(float(x) for x in res.split(","))
            assert len(r) == 3 and min(r) > 0
        except (ValueError, AssertionError):
            raise InputError(f"background {spec!r}: the resolution after '@' must be Z,Y,X nm, e.g. @50,4,4") from None
        import tifffile

        if not Path(path).is_file():
            raise InputError(f"background {path!r} does not exist")
        vol = np.asarray(tifffile.imread(path))
        if vol.ndim != 3 or vol.dtype != np.uint8:
            raise InputError(f"background {path!r} must be a uint8 (z, y, x) stack, got {vol.dtype} {vol.shape}")
        return Background(Path(path).name, vol.astype(np.float32) / 255.0, r[2])
    from ..io.layer import Layer

    layer = Layer.open(spec)
    if layer.kind.name != "image":
        raise InputError(f"background {spec!r} is a {layer.kind.name} layer; expected an image layer "
                         "(or a TIFF stack as PATH@Z,Y,X)")
    return Background(layer.url, layer.read().astype(np.float32) / 255.0, float(layer.resolution[2]))


def load_backgrounds(config: DefectTrainConfig) -> tuple[list, list, list, list]:
    """(train phantoms, train real, validation phantoms, validation real) :class:`Background` lists."""
    from ..phantom import make_phantom

    ph = [Background(f"phantom seed {s}", make_phantom(config.phantom_size, seed=s, defects="none").image
                     .astype(np.float32) / 255.0, 8.0) for s in config.phantom_seeds]
    vph = [Background(f"phantom seed {config.val_seed}", make_phantom(config.phantom_size, seed=config.val_seed,
                                                                       defects="none").image.astype(np.float32) / 255.0,
                      8.0)]
    real, vreal = [], []
    for spec in config.backgrounds:
        b = _read_background(spec)
        nz = b.volume.shape[0]
        cut = max(1, int(round(nz * 0.75))) if nz > 1 else 1
        real.append(Background(b.name, b.volume[:cut], b.pixel_nm))
        if nz > 1:
            vreal.append(Background(b.name + " (held-out sections)", b.volume[cut:], b.pixel_nm))
    return ph, real, vph, vreal


def _scaled_spec(fine_nm: float, rng):
    from ..defects import DefectSpec

    f = SPEC_NM / fine_nm * rng.uniform(0.6, 1.6)
    d = DefectSpec()

    def sc(r):
        return (r[0] * f, r[1] * f)

    return replace(d, fold_band_px=sc(d.fold_band_px), fold_lost_px=sc(d.fold_lost_px), crack_gap_px=sc(d.crack_gap_px),
                   decay_px=sc(d.decay_px), blur_sigma_px=sc(d.blur_sigma_px), resin_radius_px=sc(d.resin_radius_px),
                   resin_sections=(1, 1), fold_level=float(rng.uniform(0.03, 0.2)),
                   crack_level=float(rng.uniform(0.85, 0.98)), resin_level=float(rng.uniform(0.75, 0.92)))


def make_sample(background: Background, working_nm: float, patch: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """One training sample: image float32 (patch, patch) in [0, 1] and soft targets float32
    (3, patch, patch) — fold, crack, resin — at about ``working_nm`` per pixel (see the module
    docstring)."""
    from ..defects import apply_defects
    from ..train.augment.ops import brightness_contrast, flip_rotate_array

    fine = max(1, int(round(working_nm / 2 / background.pixel_nm)))
    vol = background.level(fine)
    fine_nm = background.pixel_nm * fine
    side = int(2 * patch * 1.25)
    z = int(rng.integers(0, vol.shape[0]))
    sec = vol[z]
    if min(sec.shape) < side:
        py, px = max(0, side - sec.shape[0]), max(0, side - sec.shape[1])
        sec = np.pad(sec, ((py // 2, py - py // 2), (px // 2, px - px // 2)), mode="reflect")
    y0 = int(rng.integers(0, sec.shape[0] - side + 1))
    x0 = int(rng.integers(0, sec.shape[1] - side + 1))
    crop = np.ascontiguousarray(sec[y0:y0 + side, x0:x0 + side])[None]
    plan = {}
    for kind, p, most in (("fold", 0.55, 2), ("crack", 0.55, 2), ("resin", 0.35, 1), ("partial", 0.12, 1),
                          ("partial_missing", 0.08, 1), ("blur", 0.1, 1)):
        n = int(rng.random() < p) * int(rng.integers(1, most + 1))
        if n:
            plan[kind] = [0] * n
    res = apply_defects(crop, list(plan), rng, spec=_scaled_spec(fine_nm, rng), sections=plan) if plan else None
    img = res.image[0] if res else crop[0]
    zero = np.zeros(img.shape, np.float32)
    m = res.masks if res else {}
    tgt = np.stack([m.get("fold", zero)[0] if "fold" in m else zero, m["crack"][0] if "crack" in m else zero,
                    ((m["resin"][0] if "resin" in m else zero) + (m["partial"][0] if "partial" in m else zero)) > 0]
                   ).astype(np.float32)
    tgt *= img > 0                                          # no data (a missing rectangle) is no defect
    img, tgt = area_mean(img, 2), area_mean(tgt, 2)
    o = side // 2 - patch
    oy, ox = int(rng.integers(0, o + 1)), int(rng.integers(0, o + 1))
    img, tgt = img[oy:oy + patch, ox:ox + patch], tgt[:, oy:oy + patch, ox:ox + patch]
    cfg = int(rng.integers(0, 16)) & ~1                     # in-plane flips/transposes only (no z flip)
    img = flip_rotate_array(img[None], cfg)[0]
    tgt = flip_rotate_array(tgt, cfg)
    img = brightness_contrast({"image": np.clip(img, 0, 1)[None].astype(np.float32)}, rng)["image"][0]
    return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(tgt, dtype=np.float32)


def _draw(config, ph, real, rng, n):
    xs, ys = [], []
    for _ in range(n):
        pool = real if (real and (not ph or rng.random() < config.real_fraction)) else ph
        bg = pool[int(rng.integers(0, len(pool)))]
        wnm = config.working_nm if rng.random() < 0.5 else config.resin_working_nm
        fine = max(1, int(round(wnm / 2 / bg.pixel_nm)))
        if min(bg.volume.shape[1:]) / fine < 2 * config.patch:   # too small at the coarse scale: mostly mirror
            wnm = config.working_nm
        x, y = make_sample(bg, wnm, config.patch, rng)
        xs.append(x)
        ys.append(y)
    return np.stack(xs)[:, None], np.stack(ys)


def defect_iou(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """IoU of two boolean masks; None when both are empty."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    union = int((p | t).sum())
    return None if union == 0 else float((p & t).sum()) / union


def _loss(logits, target):
    import torch

    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dims = (0, 2, 3)
    dice = (2 * (p * target).sum(dims) + 1.0) / (p.sum(dims) + target.sum(dims) + 1.0)
    return bce + (1 - dice).mean()


def _git_revision() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001 - provenance is best effort
        return None


def _validate(model, vx, vy, device, batch=8) -> dict:
    import torch

    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(vx), batch):
            preds.append(torch.sigmoid(model(torch.from_numpy(vx[i:i + batch]).to(device))).cpu().numpy())
    model.train()
    p = np.concatenate(preds) > 0.5
    t = vy > 0.5
    out = {}
    for c, name in enumerate(DEFECT_CHANNELS):
        out[name] = defect_iou(p[:, c], t[:, c])
    vals = [v for v in out.values() if v is not None]
    out["mean_iou"] = float(np.mean(vals)) if vals else 0.0
    return out


def train_defects(config: DefectTrainConfig, *, resume: bool = False, command: str | None = None) -> dict:
    """Train the defect net; write ``out_dir/last.pt``, ``best.pt`` (best validation mean IoU)
    and ``log.json`` (config, losses, validation curve, timings). Returns a summary dict.

    ``resume`` continues the run in ``out_dir`` from its last.pt (the data stream continues from the
    saved generator state; give the run's own configuration, e.g. :func:`resumed_config`, which
    ``emkit train defects --resume`` uses; ``lr`` may be lowered).
    """
    import torch

    from .unet2d import build_unet2d, load_unet2d, save_unet2d

    if not isinstance(config, DefectTrainConfig):
        raise InputError(f"train_defects needs a DefectTrainConfig, got {type(config).__name__}")
    device, out, last, best = start_run(config.out_dir, resume=resume, device=config.device,
                                        threads=config.threads, seed=config.seed)
    t_start = time.time()
    ph, real, vph, vreal = load_backgrounds(config)
    vrng = np.random.default_rng([config.seed, 7919])
    vx, vy = _draw(replace(config, real_fraction=config.real_fraction), vph, vreal, vrng, config.val_samples)
    model = build_unet2d(config.net_config())
    if config.init:
        model.load_state_dict(load_unet2d(config.init).state_dict())
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, amsgrad=True)
    rng = np.random.default_rng(config.seed)
    log = {"config": config.to_dict(), "net_config": config.net_config().to_dict(), "command": command,
           "git_revision": _git_revision(), "train": {"iteration": [], "loss": []}, "validation": [],
           "best": None, "n_parameters": int(sum(p.numel() for p in model.parameters()))}
    it0 = 0
    if resume:
        from ..nets.checkpoint import load_checkpoint

        blob = load_checkpoint(last)
        model.load_state_dict(blob["state_dict"])
        opt.load_state_dict(blob["training"]["optimizer"])
        for group in opt.param_groups:                  # a resume may lower the learning rate
            group["lr"] = config.lr
        rng.bit_generator.state = json.loads(blob["training"]["rng"])
        it0 = int(blob["extra"]["iteration"])
        if it0 >= config.iterations:
            raise InputError(f"cannot resume: {last} is at iteration {it0}; give --iterations above it")
        log = json.loads((out / "log.json").read_text())
        log.setdefault("resumes", []).append({"from_iteration": it0, "iterations": config.iterations,
                                              "command": command, "git_revision": _git_revision(),
                                              "threads": config.threads, "device": config.device,
                                              "lr": config.lr})
        log["config"]["iterations"] = config.iterations
    log["startup_seconds"] = round(time.time() - t_start, 1)

    def extra(it):
        return {"iteration": it, "seed": config.seed, "git_revision": log["git_revision"], "command": command,
                "train_config": config.to_dict(), "validation": log["validation"][-1] if log["validation"] else None}

    t_loop = time.time()
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, initial=it0, desc="train defects", unit="it")
    for it in range(it0 + 1, config.iterations + 1):
        x, y = _draw(config, ph, real, rng, config.batch_size)
        logits = model(torch.from_numpy(x).to(device))
        loss = _loss(logits, torch.from_numpy(y).to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        log["train"]["iteration"].append(it)
        log["train"]["loss"].append(round(float(loss.detach()), 5))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}")
        if it % config.val_interval == 0 or it == config.iterations:
            v = {"iteration": it, **_validate(model, vx, vy, device)}
            log["validation"].append(v)
            if log["best"] is None or v["mean_iou"] > log["best"]["mean_iou"]:
                log["best"] = v
                save_unet2d(model, best, extra=extra(it))
            save_unet2d(model, last, extra=extra(it),
                        training={"optimizer": opt.state_dict(), "rng": json.dumps(rng.bit_generator.state)})
            log["seconds_per_iteration"] = round((time.time() - t_loop) / max(1, it - it0), 3)
            log["wall_seconds"] = round(time.time() - t_start, 1)
            (out / "log.json").write_text(json.dumps(log, indent=1))
    if bar is not None:
        bar.close()
    return {"out": str(out), "last": str(last), "best": str(best), "iterations": config.iterations,
            "n_parameters": log["n_parameters"], "best_validation": log["best"],
            "seconds_per_iteration": log.get("seconds_per_iteration"), "wall_seconds": log.get("wall_seconds")}


def train_defects_cli(args) -> dict:
    """``emkit train defects``: build a :class:`DefectTrainConfig` from the argparse namespace of
    ``emkit train`` (task, data, val_data, preset, iterations, out, seed, resume, device,
    threads, lr, widths, patch, init, no_progress) and train.

    ``--data`` adds clean backgrounds (image layer URLs or ``TIFF@Z,Y,X``) to the generated
    phantoms; ``--preset phantom`` (or nothing) generates phantom backgrounds; ``--val-data``
    is not used (validation samples come from a held-out phantom seed and the last quarter of
    each background's sections); ``--patch`` takes one side (Y,X or Z,Y,X: the last value).
    """
    import shlex
    import sys

    g = lambda name: getattr(args, name, None)  # noqa: E731
    argv = sys.argv[sys.argv.index("train"):] if "train" in sys.argv else None
    command = ("emkit " + " ".join(shlex.quote(a) for a in argv)) if argv else None
    if g("resume"):
        return train_defects(resumed_config(g("out"), iterations=g("iterations"), threads=g("threads"),
                                            device=g("device"), val_interval=g("val_interval"), lr=g("lr"),
                                            progress=not g("no_progress")), resume=True, command=command)
    kw = {"out_dir": g("out")}
    for src, dst in (("iterations", "iterations"), ("seed", "seed"), ("device", "device"), ("threads", "threads"),
                     ("lr", "lr"), ("widths", "widths"), ("init", "init")):
        if g(src) is not None:
            kw[dst] = g(src)
    if g("patch") is not None:
        p = g("patch")
        kw["patch"] = int(p[-1] if isinstance(p, (tuple, list)) else p)
    if g("val_interval") is not None:
        kw["val_interval"] = g("val_interval")
    if g("data"):
        kw["backgrounds"] = tuple(g("data"))
    kw["progress"] = not g("no_progress")
    if not kw["out_dir"]:
        raise InputError("--out is required")
    try:
        config = DefectTrainConfig(**kw)
    except TypeError as e:
        raise InputError(str(e)) from None
    return train_defects(config, resume=False, command=command)


#: Options a resumed run may change; everything else is the saved run's (data, net, seed, lr...).
RESUME_OPTIONS = ("iterations", "threads", "device", "val_interval", "progress", "lr")


def resumed_config(out_dir, **changes) -> DefectTrainConfig:
    """The :class:`DefectTrainConfig` saved in ``out_dir/last.pt`` with ``out_dir`` and the
    options of :data:`RESUME_OPTIONS` replaced (``None`` keeps the saved value): ``emkit train
    defects --out RUN --resume --iterations N`` continues the run with its own data and net."""
    return DefectTrainConfig(**saved_train_config(out_dir, changes, RESUME_OPTIONS, _FIELDS, "defect-net"))


_FIELDS = [f.name for f in fields(DefectTrainConfig)]


def recalibrate_batchnorm(model, config: DefectTrainConfig, *, n_batches: int = 40, seed: int = 12345,
                          backgrounds: tuple | None = None):
    """Replace the batch-norm running statistics of ``model`` by the population statistics of
    ``n_batches`` training batches (drawn as training draws them, generator ``seed``); in place,
    returns the model in eval mode.

    Why: training keeps running statistics with momentum 0.1, i.e. the last ~10 batches; its
    batches mix two pixel sizes and two kinds of background, so the statistics swing, and with
    them the validation scores (a checkpoint can lose resin entirely in eval mode and recover
    with statistics from 40 batches). ``backgrounds``: ``(phantoms, real)`` from
    :func:`load_backgrounds` (default: loaded from ``config``).
    """
    import torch

    if int(n_batches) < 1:
        raise InputError(f"n_batches must be >= 1, got {n_batches}")
    ph, real = backgrounds if backgrounds is not None else load_backgrounds(config)[:2]
    rng = np.random.default_rng(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise InputError("the model has no batch-norm layers to recalibrate")
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                                   # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(int(n_batches)):
            x, _ = _draw(config, ph, real, rng, config.batch_size)
            model(torch.from_numpy(x).to(next(model.parameters()).device))
    for m, mom in zip(norms, saved):
        m.momentum = mom
    return model.eval()


def average_checkpoints(paths):
    """A defect net whose weights are the mean of the checkpoints' (same configuration; batch-norm
    statistics averaged too — recalibrate them with :func:`recalibrate_batchnorm`)."""
    import torch

    from .unet2d import load_unet2d

    if not paths:
        raise InputError("average_checkpoints needs at least one checkpoint")
    nets = [load_unet2d(str(p)) for p in paths]
    if any(n.config != nets[0].config for n in nets):
        raise InputError("checkpoints to average must share one net configuration")
    state = {}
    for k, v in nets[0].state_dict().items():
        if v.is_floating_point():
            state[k] = torch.stack([n.state_dict()[k] for n in nets]).mean(0)
        else:
            state[k] = v
    nets[0].load_state_dict(state)
    nets[0].extra = {"averaged": [str(p) for p in paths]}
    return nets[0]

