"""Training the alignment field net self-supervised on phantom section pairs (issue 9 §4; paper,
*Alignment at 1024 nm & 64 nm*; SEAMLeSS, Mitchell et al. 2019).

One pair (:func:`make_pair`)
----------------------------
Two adjacent sections ``z`` (reference) and ``z + 1`` of a phantom generated with folds,
cracks, a slip and (partly) missing sections (``PAIR_DEFECTS``); the moving section is moved by
a random known field ``T`` of the kind the rough-aligned sections still carry (a translation of
up to ``max_shift_px``, a rotation of up to ``max_rotation_deg`` about the centre and a smooth
distortion of RMS ``distortion_px``, as :mod:`emkit.phantom.unaligned` makes them). Pairs where
either section has less tissue than ``FineParams.min_tissue`` (missing sections) are skipped.
The fold/crack masks of both sections (the moving one moved by ``T``) are the ``relax`` input.

Loss (self-supervised: the true field is **not** used)
------------------------------------------------------
``MSE(reference, warp(moving, P))`` over the tissue of both (both sections Gaussian-blurred
by 1 and 2 working px and standardised over the shared tissue: see :func:`field_loss` for why)
``+ smooth_weight · mean(s · |∇P|²)`` with ``s = mask_relax`` inside the fold/crack masks and
1 elsewhere — :func:`emkit.align.fine.pair_field`'s objective with its defaults
(:class:`~emkit.align.fine.FineParams`). Adam at ``lr``. Half the samples get a random smooth
``init`` (the net must also refine an estimate). A pool of prepared pairs is refreshed by
``refresh`` new pairs per step; each draw gets one of the 8 flips/transposes (images and masks
together: the loss needs no field truth, so no field has to be rotated).

Validation (held-out phantom seed ``val_seed``)
-----------------------------------------------
The same self-supervised loss on fixed pairs chooses ``best.pt``. The true field of each pair
(``compose(invert(compose(D[z+1], T)), D[z])``, ``D`` the phantom's defect displacements) is used
only to report the residual ``|P - truth|`` (median px at the image pixel, over the reference's
tissue outside fold/crack/missing masks, dilated by 4 px, where the moving section was imaged):
(a) zero field, (b) the net alone, and at the end (c) :func:`~emkit.align.fine.pair_field` as is
(block-matching init + gradient descent) and (d) ``pair_field`` started from the net's field, and
the better of (c) and (d) by ``pair_field``'s own score (no truth). ``python -m
emkit.align.fieldnet_train RUN`` scores a run's best.pt so (e.g. a run stopped early).

Measured (run ``runs/field``: 1,500 iterations, 18 min on the shared 2-core CPU; median / 95th
percentile px at 8 nm, 12–13 pairs of 256² per seed), validation seed 2999 / fresh seeds 3999,
4999: (a) 7.56 / 7.10 / 8.60, (b) 5.01 / 4.90 / 5.39, (c) 2.02 / 2.63 / 2.10, (d) 2.21 / 2.87 /
2.92, better of (c), (d) 1.85 / 2.42 / 1.90. The net's field as the only init does not beat block
matching (so it is not the default and is not shipped); run as a second start it helps.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..train.runs import saved_train_config, start_run
from .fieldnet import FieldNetConfig

__all__ = ["FieldTrainConfig", "PairParams", "make_pair", "make_phantoms", "train_field", "train_field_cli",
           "evaluate_pairs", "evaluate_run", "validation_pairs", "PAIR_DEFECTS"]

#: Defects of the training and validation phantoms (folds and cracks several times).
PAIR_DEFECTS = "fold,crack,fold,crack,fold,crack,slip,partial_missing,missing"


@dataclass(frozen=True)
class PairParams:
    """Random known moves of the moving section (pixels of the 8 nm image, degrees)."""

    max_shift_px: float = 8.0
    max_rotation_deg: float = 0.5
    distortion_px: float = 1.5
    distortion_length_px: float = 48.0


@dataclass(frozen=True)
class FieldTrainConfig:
    """Training of the field net; defaults give the shipped ``field`` model.

    out_dir : folder for last.pt, best.pt, log.json.
    iterations, batch_size, lr : gradient steps, pairs per step, Adam learning rate.
    patch : side of the training crop in working px (a multiple of the net's ``multiple``;
        ``patch × k`` image px must fit the phantom's sections).
    widths, working_nm : the net (:class:`~emkit.align.fieldnet.FieldNetConfig`).
    phantom_seeds, phantom_size : training phantoms (z, y, x voxels at 40 × 8 × 8 nm).
    val_seed, val_pairs : the held-out validation phantom and how many of its pairs (the first
        ``val_pairs`` usable ones, at most all of them) score.
    pool, refresh : prepared pairs kept, new pairs per step.
    smooth_weight, mask_relax : λ and the factor inside fold/crack masks (default FineParams').
    pairs : :class:`PairParams` as a dict.
    final_eval : score (a)–(d) on the validation pairs at the end (with best.pt).
    val_interval, checkpoint_interval, seed, threads, device, init, progress : as for ``emkit train``.
    """

    out_dir: str = "runs/field"
    iterations: int = 1500
    batch_size: int = 8
    lr: float = 1e-3
    patch: int = 64
    widths: tuple = (16, 32, 64, 128)
    working_nm: float = 32.0
    phantom_seeds: tuple = (2001, 2002, 2003)
    phantom_size: tuple = (16, 256, 256)
    val_seed: int = 2999
    val_pairs: int = 12
    pool: int = 96
    refresh: int = 2
    smooth_weight: float = 10.0
    mask_relax: float = 0.02
    pairs: dict = None
    final_eval: bool = True
    val_interval: int = 100
    checkpoint_interval: int = 100
    seed: int = 0
    threads: int | None = 1
    device: str = "cpu"
    init: str | None = None
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "phantom_seeds", tuple(int(s) for s in self.phantom_seeds))
        object.__setattr__(self, "phantom_size", tuple(int(s) for s in self.phantom_size))
        object.__setattr__(self, "pairs", asdict(PairParams(**(self.pairs or {}))))
        for name in ("iterations", "batch_size", "val_interval", "checkpoint_interval", "val_pairs", "pool"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
        if not (self.lr > 0):
            raise InputError(f"lr must be positive, got {self.lr}")
        cfg = self.net_config()
        if self.patch < cfg.multiple or self.patch % cfg.multiple:
            raise InputError(f"patch {self.patch} must be a positive multiple of {cfg.multiple} (2**(levels-1) for "
                             f"widths {self.widths})")
        if not self.phantom_seeds:
            raise InputError("no training phantoms: give phantom_seeds")
        if self.val_seed in self.phantom_seeds:
            raise InputError(f"val_seed {self.val_seed} is also a training seed")
        if len(self.phantom_size) != 3 or self.phantom_size[0] < 3 or min(self.phantom_size[1:]) < 32:
            raise InputError(f"phantom_size must be (z >= 3, y >= 32, x >= 32), got {self.phantom_size}")
        k = max(1, int(round(self.working_nm / 8.0)))
        if self.patch * k > min(self.phantom_size[1:]):
            raise InputError(f"patch {self.patch} working px = {self.patch * k} image px does not fit phantom "
                             f"sections of {self.phantom_size[1:]} (give a smaller --patch or a larger --phantom-size)")
        if self.device not in ("cpu", "cuda", "auto") and not str(self.device).startswith("cuda:"):
            raise InputError(f"device must be cpu, cuda or auto, got {self.device!r}")

    def net_config(self) -> FieldNetConfig:
        return FieldNetConfig(working_nm=self.working_nm, widths=self.widths)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# -- pairs ------------------------------------------------------------------------------------------------
def make_phantoms(seeds, size):
    """Phantoms (40 × 8 × 8 nm) with :data:`PAIR_DEFECTS`, one per seed."""
    from ..phantom import make_phantom

    return [make_phantom(tuple(size), seed=int(s), defects=PAIR_DEFECTS) for s in seeds]


def _defects(ph, z, kinds=("fold", "crack")):
    m = np.zeros(ph.image.shape[1:], bool)
    for k in kinds:
        if k in ph.masks:
            m |= ph.masks[k][z] > 0
    return m


def _random_move(shape, pp: PairParams, rng) -> np.ndarray:
    """A random field T (2, y, x) px: rigid move about the centre composed after a smooth distortion."""
    from ..phantom.unaligned import UnalignedParams, _distortion
    from . import fields as F

    c = (np.asarray(shape, float) - 1) / 2
    th = np.deg2rad(rng.uniform(-pp.max_rotation_deg, pp.max_rotation_deg))
    t = rng.uniform(-pp.max_shift_px, pp.max_shift_px, 2)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    m = np.zeros((2, 3))
    m[:, :2] = R
    m[:, 2] = c - R @ c + t
    rigid = np.asarray(F.affine_field(m, shape), np.float32)
    if pp.distortion_px <= 0:
        return rigid
    up = UnalignedParams(distortion_px=pp.distortion_px, distortion_length_px=pp.distortion_length_px)
    return np.asarray(F.compose(_distortion(tuple(shape), up, rng), rigid), np.float32)


def pair_sections(ph, min_tissue=None):
    """Indices z of the phantom's usable pairs (z, z+1): both sections with enough tissue."""
    from .fine import FineParams, tissue

    p = FineParams()
    mt = p.min_tissue if min_tissue is None else min_tissue
    frac = np.array([tissue(ph.image[z], p).mean() for z in range(ph.image.shape[0])])
    return [z for z in range(len(frac) - 1) if frac[z] >= mt and frac[z + 1] >= mt]


def make_pair(ph, z: int, rng, pp: PairParams | dict | None = None, *, truth: bool = False) -> dict:
    """Reference ``ph.image[z]`` and moving ``warp(ph.image[z + 1], T)`` for a random ``T``.

    Returns a dict: ``reference``, ``moving`` (uint8 (y, x)), ``ref_tissue``, ``mov_tissue``
    (bool; :func:`emkit.align.fine.tissue` outside the fold/crack masks), ``relax`` (bool: fold or
    crack in either section), and with ``truth`` the true field ``truth`` (2, y, x) px
    (``warp(moving, truth) ≈ reference``) and ``score_mask`` (bool, where the residual is scored).
    """
    import torch
    from scipy.ndimage import binary_dilation

    from . import fields as F
    from .fine import FineParams, tissue

    pp = PairParams(**pp) if isinstance(pp, dict) else (pp or PairParams())
    p = FineParams()
    shape = ph.image.shape[1:]
    T = _random_move(shape, pp, rng)
    with torch.no_grad():
        mov = F.warp(ph.image[z + 1], T)
        valid = F.warp_labels(np.ones(shape, np.uint8), T) > 0
        mov = np.where(valid, mov, 0).astype(np.uint8)
        rel_m = F.warp_labels(_defects(ph, z + 1).astype(np.uint8), T) > 0
    rel_r = _defects(ph, z)
    out = {"reference": ph.image[z], "moving": mov, "relax": rel_r | rel_m,
           "ref_tissue": tissue(ph.image[z], p, rel_r), "mov_tissue": tissue(mov, p, rel_m)}
    if truth:
        D = ph.displacement  # (2, z, y, x): clean -> image
        with torch.no_grad():
            A = F.compose(np.ascontiguousarray(D[:, z + 1]), T)
            P = F.compose(F.invert(A, iterations=60, tol=1e-4), np.ascontiguousarray(D[:, z]))
        kinds = ("fold", "crack", "missing", "partial_missing")
        bad = _defects(ph, z, kinds) | (F.warp_labels(_defects(ph, z + 1, kinds).astype(np.uint8), T) > 0)
        bad = binary_dilation(bad, iterations=4)
        with torch.no_grad():
            seen = F.warp(valid.astype(np.float32), P) > 0.99
        out["truth"] = np.asarray(P, np.float32)
        out["score_mask"] = out["ref_tissue"] & ~bad & seen
    return out


def _prepare(pair, cfg: FieldNetConfig, patch: int | None, rng) -> dict:
    """A pair at the working pixel (optionally a random ``patch``-side crop), float32 arrays."""
    from .fieldnet import net_inputs, working_factor

    k = working_factor((8.0, 8.0), cfg)
    keys = ("reference", "moving", "ref_tissue", "mov_tissue", "relax")
    if patch is not None:
        ny, nx = pair["reference"].shape
        s = patch * k
        y0, x0 = int(rng.integers(0, ny - s + 1)), int(rng.integers(0, nx - s + 1))
        pair = {kk: pair[kk][y0:y0 + s, x0:x0 + s] for kk in keys}
    inp = net_inputs(pair["reference"], pair["moving"], ref_tissue=pair["ref_tissue"], mov_tissue=pair["mov_tissue"],
                     relax=pair["relax"], factor=k, multiple=cfg.multiple)
    return {kk: inp[kk] for kk in keys}


def _transform(a, t):
    if t & 1:
        a = a[..., ::-1, :]
    if t & 2:
        a = a[..., :, ::-1]
    if t & 4:
        a = np.swapaxes(a, -1, -2)
    return a


def _batch(items, rng, augment=True):
    keys = ("reference", "moving", "ref_tissue", "mov_tissue", "relax")
    out = {k: [] for k in keys}
    for it in items:
        t = int(rng.integers(0, 8)) if augment else 0
        for k in keys:
            out[k].append(np.ascontiguousarray(_transform(it[k], t)))
    return {k: np.stack(v)[:, None].astype(np.float32) for k, v in out.items()}


def _random_init(n, shape, rng, amp=1.0):
    """Smooth random fields (n, 2, y, x) (working px), RMS about ``amp``."""
    import torch

    coarse = torch.from_numpy(rng.normal(0, amp, (n, 2, 3, 3)).astype(np.float32))
    return torch.nn.functional.interpolate(coarse, size=tuple(shape), mode="bilinear", align_corners=True)


def _gauss_blur(x, sigma: float):
    """Separable Gaussian blur of (N, C, y, x) (reflecting edges), torch."""
    import torch

    F_ = torch.nn.functional
    r = max(1, int(np.ceil(3 * sigma)))
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F_.conv2d(F_.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F_.conv2d(F_.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


#: Gaussian blurs (working px) of the image term (see :func:`field_loss`).
LOSS_SIGMAS = (1.0, 2.0)


def field_loss(field, ref, mov, ref_t, mov_t, relax, smooth_weight, mask_relax, sigmas=LOSS_SIGMAS):
    """The self-supervised loss (torch, batch of (N, 1, y, x) images, (N, 2, y, x) fields).

    Image term: for each blur ``sigma`` (working px), the mean squared difference of the reference
    and the warped moving section, both Gaussian-blurred and standardised (zero mean, unit variance)
    over their shared tissue, per pair (= 2 − 2·NCC); averaged over blurs and pairs. Blurring and
    standardising (not in the paper, which says MSE) remove a degenerate minimum of the plain MSE
    measured here: warping by half a pixel blurs the moving section, which lowers the MSE of two
    only partly correlated sections, and a net trained on the plain MSE learnt a constant
    (−0.4, −0.4) px field; blurring also widens the basin of the displacements the net must find.
    Smoothness: ``smooth_weight ·`` mean squared field gradient, relaxed to ``mask_relax`` inside
    ``relax``. Returns ``(loss, image_term, smooth_term)``."""
    import torch

    from . import fields as F

    with torch.no_grad():
        w = ref_t * (F.warp(mov_t, field) > 0.5).float()
        w = (w > 0.5).float()
    n = w.sum((1, 2, 3), keepdim=True).clamp_min(1.0)

    def standard(a):
        m = (w * a).sum((1, 2, 3), keepdim=True) / n
        v = (w * (a - m) ** 2).sum((1, 2, 3), keepdim=True) / n
        return (a - m) / v.clamp_min(1e-6).sqrt()

    terms = []
    for s in sigmas:
        r, m = (_gauss_blur(ref, s), _gauss_blur(mov, s)) if s > 0 else (ref, mov)
        d = (standard(F.warp(m, field)) - standard(r)) ** 2
        terms.append(((w * d).sum((1, 2, 3), keepdim=True) / n).mean())
    image_term = torch.stack(terms).mean()
    wsm = 1.0 - (1.0 - mask_relax) * relax
    wy = torch.minimum(wsm[:, :, 1:], wsm[:, :, :-1])
    wx = torch.minimum(wsm[:, :, :, 1:], wsm[:, :, :, :-1])
    dy = field[:, :, 1:] - field[:, :, :-1]
    dx = field[:, :, :, 1:] - field[:, :, :, :-1]
    sm = (wy * dy ** 2).sum(1).mean() + (wx * dx ** 2).sum(1).mean()
    return image_term + smooth_weight * sm, image_term, sm


def _git_revision() -> str | None:
    from ..detect.train import _git_revision as rev

    return rev()


# -- evaluation -------------------------------------------------------------------------------------------
def _residual(field, pair) -> np.ndarray:
    e = np.hypot(field[0] - pair["truth"][0], field[1] - pair["truth"][1])
    return e[pair["score_mask"]]


def _summary(errs) -> dict:
    e = np.concatenate(errs) if errs else np.zeros(0)
    if e.size == 0:
        return {"median_px": None, "p95_px": None, "n_pixels": 0}
    return {"median_px": round(float(np.median(e)), 4), "p95_px": round(float(np.percentile(e, 95)), 4),
            "pair_medians_px": [round(float(np.median(x)), 3) if x.size else None for x in errs],
            "n_pixels": int(e.size)}


def evaluate_pairs(model, pairs, *, methods=("zero", "net", "pair_field", "net+pair_field"),
                   resolution_yx=(8.0, 8.0), fine_params=None) -> dict:
    """Residual against the true field (median, 95th percentile px over ``score_mask``) of each
    method on ``pairs`` (from :func:`make_pair` with ``truth=True``): ``zero`` (a), ``net`` (b:
    :func:`~emkit.align.fieldnet.predict_field`), ``pair_field`` (c: block matching + gradient
    descent, :func:`emkit.align.fine.pair_field`), ``net+pair_field`` (d: the net's field as
    ``init`` of the same gradient descent), and with both (c) and (d) ``better_score``: per pair
    the one of them with the higher normalised cross-correlation after the move (``pair_field``'s
    ``score``; no truth). Also the seconds each method took."""
    from .fieldnet import load_fieldnet, predict_field, to_field_grid
    from .fine import FineParams, field_factor, pair_field

    p = fine_params or FineParams()
    net = load_fieldnet(model) if any(m.startswith("net") for m in methods) else None
    both = "pair_field" in methods and "net+pair_field" in methods
    errs = {m: [] for m in methods + (("better_score",) if both else ())}
    secs = {m: 0.0 for m in methods}
    for pr in pairs:
        kw = dict(relax=pr["relax"], ref_tissue=pr["ref_tissue"], mov_tissue=pr["mov_tissue"],
                  resolution_yx=resolution_yx)
        net_field = None
        scored = {}
        for m in methods:
            t0 = time.perf_counter()
            if m == "zero":
                f = np.zeros_like(pr["truth"])
            elif m == "net":
                f = net_field = predict_field(pr["reference"], pr["moving"], model=net, **kw)
            elif m == "pair_field":
                f, info = pair_field(pr["reference"], pr["moving"], params=p, **kw)
                scored[m] = (info["score"], f)
            elif m == "net+pair_field":
                if net_field is None:
                    net_field = predict_field(pr["reference"], pr["moving"], model=net, **kw)
                ny, nx = pr["reference"].shape
                fct = field_factor(resolution_yx, (ny, nx), p)
                mult = int(np.lcm.reduce([fct, *p.mips]))
                shape_f = (-(-ny // mult) * mult // fct, -(-nx // mult) * mult // fct)
                f, info = pair_field(pr["reference"], pr["moving"], params=p,
                                     init=to_field_grid(net_field, fct, shape_f), **kw)
                scored[m] = (info["score"], f)
            else:
                raise InputError(f"unknown method {m!r}")
            secs[m] += time.perf_counter() - t0
            errs[m].append(_residual(np.asarray(f), pr))
        if both:   # no truth: the one of (c), (d) whose moved section correlates better with the reference
            errs["better_score"].append(_residual(np.asarray(max(scored.values(), key=lambda t: t[0])[1]), pr))
    out = {m: {**_summary(errs[m]), "seconds": round(secs[m], 2)} for m in methods}
    if both:
        out["better_score"] = {**_summary(errs["better_score"]),
                               "seconds": round(secs["pair_field"] + secs["net+pair_field"], 2)}
    return out


def validation_pairs(config: FieldTrainConfig):
    """The fixed validation pairs of a run (with truth) and the generator that drew them."""
    vph = make_phantoms([config.val_seed], config.phantom_size)[0]
    vz = pair_sections(vph)
    if not vz:
        raise InputError(f"the validation phantom (seed {config.val_seed}) holds no usable section pair")
    vrng = np.random.default_rng([config.seed, 7919])
    pp = PairParams(**config.pairs)
    return [make_pair(vph, vz[i], vrng, pp, truth=True) for i in range(min(config.val_pairs, len(vz)))], vrng


def evaluate_run(out_dir, checkpoint: str = "best.pt", *, threads: int | None = 1) -> dict:
    """Score (a)–(d) (:func:`evaluate_pairs`) of a run's checkpoint on the run's validation pairs
    (rebuilt from the configuration saved in the checkpoint) and store them in the run's
    ``log.json`` as ``final_evaluation``. For a run stopped before its end (the end of
    :func:`train_field` does the same). ``python -m emkit.align.fieldnet_train RUN [CHECKPOINT]``."""
    import torch

    from ..nets.checkpoint import load_checkpoint
    from .fieldnet import load_fieldnet

    if threads:
        torch.set_num_threads(int(threads))
    out = Path(str(out_dir))
    ck = out / checkpoint
    extra = load_checkpoint(ck).get("extra") or {}
    saved = extra.get("train_config")
    if not isinstance(saved, dict):
        raise InputError(f"{ck} holds no train_config")
    config = FieldTrainConfig(**{k: v for k, v in saved.items() if k in _FIELDS})
    t0 = time.time()
    vpairs, _ = validation_pairs(config)
    ev = {"checkpoint": checkpoint, "iteration": extra.get("iteration"), "val_seed": config.val_seed,
          "pairs": len(vpairs), "scores": evaluate_pairs(load_fieldnet(ck), vpairs),
          "seconds": None, "threads": threads}
    ev["seconds"] = round(time.time() - t0, 1)
    logp = out / "log.json"
    if logp.is_file():
        log = json.loads(logp.read_text())
        log["final_evaluation"] = ev
        logp.write_text(json.dumps(log, indent=1))
    return ev


# -- training ---------------------------------------------------------------------------------------------
def train_field(config: FieldTrainConfig, *, resume: bool = False, command: str | None = None) -> dict:
    """Train the field net; write ``out_dir/last.pt``, ``best.pt`` (lowest validation loss — the
    self-supervised loss, no truth) and ``log.json`` (config, losses, validation curve with the
    residuals (a), (b), and at the end (a)–(d) of best.pt). Returns a summary dict."""
    import torch

    from .fieldnet import build_fieldnet, load_fieldnet, run_net, save_fieldnet

    if not isinstance(config, FieldTrainConfig):
        raise InputError(f"train_field needs a FieldTrainConfig, got {type(config).__name__}")
    device, out, last, best = start_run(config.out_dir, resume=resume, device=config.device,
                                        threads=config.threads, seed=config.seed)
    t_start = time.time()
    cfg = config.net_config()
    pp = PairParams(**config.pairs)
    phs = make_phantoms(config.phantom_seeds, config.phantom_size)
    zs = [pair_sections(ph) for ph in phs]
    if not any(zs):
        raise InputError("the training phantoms hold no usable section pair (too little tissue)")
    vpairs, vrng = validation_pairs(config)
    vprep = [_prepare(pr, cfg, None, vrng) for pr in vpairs]
    vb = _batch(vprep, vrng, augment=False)
    model = build_fieldnet(cfg)
    if config.init:
        model.load_state_dict(load_fieldnet(config.init).state_dict())
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    log = {"config": config.to_dict(), "train_config": config.to_dict(), "net_config": cfg.to_dict(),
           "command": command, "git_revision": _git_revision(), "device": device,
           "train": {"iteration": [], "loss": []}, "validation": [], "best": None,
           "n_parameters": int(sum(p.numel() for p in model.parameters()))}
    it0 = 0
    if resume:
        from ..nets.checkpoint import load_checkpoint

        blob = load_checkpoint(last)
        model.load_state_dict(blob["state_dict"])
        opt.load_state_dict(blob["training"]["optimizer"])
        rng.bit_generator.state = json.loads(blob["training"]["rng"])
        it0 = int(blob["extra"]["iteration"])
        if it0 >= config.iterations:
            raise InputError(f"cannot resume: {last} is at iteration {it0}; give --iterations above it")
        log = json.loads((out / "log.json").read_text())
        log.setdefault("resumes", []).append({"from_iteration": it0, "command": command,
                                              "git_revision": _git_revision()})
        log["config"]["iterations"] = log["train_config"]["iterations"] = config.iterations

    def new_item():
        i = int(rng.integers(0, len(phs)))
        while not zs[i]:
            i = int(rng.integers(0, len(phs)))
        z = zs[i][int(rng.integers(0, len(zs[i])))]
        return _prepare(make_pair(phs[i], z, rng, pp), cfg, config.patch, rng)

    pool = [new_item() for _ in range(min(config.pool, max(config.batch_size, 8)))]
    log["startup_seconds"] = round(time.time() - t_start, 1)
    T = lambda a: torch.from_numpy(a).to(device)  # noqa: E731

    def validate():
        model.eval()
        with torch.no_grad():
            b = {k: T(v) for k, v in vb.items()}
            zero = torch.zeros((len(vprep), 2, *vb["reference"].shape[-2:]), device=device)
            fld = run_net(model, b["reference"], b["moving"], b["relax"], zero)
            loss, img, sm = field_loss(fld, b["reference"], b["moving"], b["ref_tissue"], b["mov_tissue"], b["relax"],
                                       config.smooth_weight, config.mask_relax)
        model.train()
        res = evaluate_pairs(model, vpairs, methods=("zero", "net"))
        return {"loss": round(float(loss), 5), "image": round(float(img), 5), "smooth": round(float(sm), 6),
                "residual_zero_median_px": res["zero"]["median_px"], "residual_net_median_px": res["net"]["median_px"],
                "residual_net_p95_px": res["net"]["p95_px"]}

    def extra(it):
        return {"iteration": it, "seed": config.seed, "git_revision": log["git_revision"], "command": command,
                "train_config": config.to_dict(), "validation": log["validation"][-1] if log["validation"] else None}

    t_loop = time.time()
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, initial=it0, desc="train field", unit="it")
    for it in range(it0 + 1, config.iterations + 1):
        for _ in range(config.refresh):
            item = new_item()
            if len(pool) < config.pool:
                pool.append(item)
            else:
                pool[int(rng.integers(0, len(pool)))] = item
        b = _batch([pool[int(i)] for i in rng.integers(0, len(pool), config.batch_size)], rng)
        b = {k: T(v) for k, v in b.items()}
        n, shape = config.batch_size, b["reference"].shape[-2:]
        init = _random_init(n, shape, rng).to(device)
        init = init * T((rng.random(n) < 0.5).astype(np.float32))[:, None, None, None]
        fld = run_net(model, b["reference"], b["moving"], b["relax"], init)
        loss, _, _ = field_loss(fld, b["reference"], b["moving"], b["ref_tissue"], b["mov_tissue"], b["relax"],
                                config.smooth_weight, config.mask_relax)
        opt.zero_grad()
        loss.backward()
        opt.step()
        log["train"]["iteration"].append(it)
        log["train"]["loss"].append(round(float(loss.detach()), 5))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if it % config.val_interval == 0 or it == config.iterations:
            v = {"iteration": it, **validate()}
            log["validation"].append(v)
            if log["best"] is None or v["loss"] < log["best"]["loss"]:
                log["best"] = v
                save_fieldnet(model, best, extra=extra(it))
        if it % config.checkpoint_interval == 0 or it == config.iterations or it % config.val_interval == 0:
            save_fieldnet(model, last, extra=extra(it),
                          training={"optimizer": opt.state_dict(), "rng": json.dumps(rng.bit_generator.state)})
            log["seconds_per_iteration"] = round((time.time() - t_loop) / max(1, it - it0), 3)
            log["wall_seconds"] = round(time.time() - t_start, 1)
            (out / "log.json").write_text(json.dumps(log, indent=1))
    if bar is not None:
        bar.close()
    if config.final_eval:
        t0 = time.time()
        log["final_evaluation"] = {"checkpoint": "best.pt", "best_iteration": log["best"]["iteration"],
                                   "val_seed": config.val_seed, "pairs": len(vpairs),
                                   "scores": evaluate_pairs(load_fieldnet(best), vpairs),
                                   "seconds": None}
        log["final_evaluation"]["seconds"] = round(time.time() - t0, 1)
    log["wall_seconds"] = round(time.time() - t_start, 1)
    (out / "log.json").write_text(json.dumps(log, indent=1))
    return {"out": str(out), "last": str(last), "best": str(best), "iterations": config.iterations,
            "n_parameters": log["n_parameters"], "best_validation": log["best"],
            "final_evaluation": log.get("final_evaluation"),
            "seconds_per_iteration": log.get("seconds_per_iteration"), "wall_seconds": log.get("wall_seconds")}


def train_field_cli(args) -> dict:
    """``emkit train field``: build a :class:`FieldTrainConfig` from the argparse namespace of
    ``emkit train`` (iterations, out, seed, resume, device, threads, lr, widths, patch, init,
    batch_size, val_interval, checkpoint_interval, no_progress, phantom_size, phantom_seeds) and train.

    The field net trains on generated phantom pairs only: ``--data`` and ``--val-data`` are
    refused; ``--preset phantom`` (or nothing) is the default; ``--patch`` takes one side in
    working px (Y,X or Z,Y,X: the last value); ``--phantom-size Z,Y,X``; ``--phantom-seeds``.
    """
    import shlex
    import sys

    g = lambda name: getattr(args, name, None)  # noqa: E731
    argv = sys.argv[sys.argv.index("train"):] if "train" in sys.argv else None
    command = ("emkit " + " ".join(shlex.quote(a) for a in argv)) if argv else None
    if g("data") or g("val_data"):
        raise InputError("emkit train field trains on generated phantom section pairs; --data/--val-data are not "
                         f"used (got {list(g('data') or []) + list(g('val_data') or [])})")
    if not g("out"):
        raise InputError("--out is required")
    if g("resume"):
        return train_field(resumed_config(g("out"), iterations=g("iterations"), threads=g("threads"),
                                          device=g("device"), val_interval=g("val_interval"),
                                          checkpoint_interval=g("checkpoint_interval"),
                                          progress=not g("no_progress")), resume=True, command=command)
    kw = {"out_dir": g("out")}
    for name in ("iterations", "seed", "device", "threads", "lr", "init", "val_interval", "checkpoint_interval",
                 "batch_size"):
        if g(name) is not None:
            kw[name] = g(name)
    if g("widths") is not None:
        kw["widths"] = tuple(g("widths"))
    if g("patch") is not None:
        p = g("patch")
        kw["patch"] = int(p[-1] if isinstance(p, (tuple, list)) else p)
    if g("phantom_size") is not None:
        kw["phantom_size"] = tuple(g("phantom_size"))
    if g("phantom_seeds") is not None:
        kw["phantom_seeds"] = tuple(g("phantom_seeds"))
    kw["progress"] = not g("no_progress")
    try:
        config = FieldTrainConfig(**kw)
    except TypeError as e:
        raise InputError(str(e)) from None
    return train_field(config, resume=False, command=command)


RESUME_OPTIONS = ("iterations", "threads", "device", "val_interval", "checkpoint_interval", "progress")


def resumed_config(out_dir, **changes) -> FieldTrainConfig:
    """The :class:`FieldTrainConfig` saved in ``out_dir/last.pt`` with ``out_dir`` and the options of
    :data:`RESUME_OPTIONS` replaced (``None`` keeps the saved value)."""
    return FieldTrainConfig(**saved_train_config(out_dir, changes, RESUME_OPTIONS, _FIELDS, "field-net"))


_FIELDS = [f.name for f in fields(FieldTrainConfig)]


if __name__ == "__main__":  # python -m emkit.align.fieldnet_train RUN [CHECKPOINT]
    import sys

    print(json.dumps(evaluate_run(sys.argv[1], *(sys.argv[2:3] or ["best.pt"])), indent=1))
