"""The training loop: :class:`TrainConfig`, :class:`Trainer`, :func:`train`.

Per iteration ``i`` the samples are drawn with ``numpy.random.default_rng([seed, i, b])``, so the
data a run sees does not depend on its history: a resumed run (model, AMSGrad state and
iteration restored from ``OUT/last.pt``) continues exactly as if it had never stopped.

Outputs in ``out_dir``: ``last.pt`` (every ``checkpoint_interval`` iterations and at the end;
also holds the optimizer state for ``resume``), ``best.pt`` (best validation score), and
``log.json`` (configs, loss curve, validation figures, timings).

Validation (every ``val_interval`` iterations and at the end) runs the net over one crop of the
validation volume (no augmentation): the loss of every head, and for boundary nets the adapted
Rand error of watershed + mean-affinity agglomeration cut at ``threshold`` against the ground
truth (:mod:`emkit.segment`, :func:`emkit.evaluate.adapted_rand_error`); for semantic nets the
mean IoU over the five classes; for cleft nets the cleft precision, recall and F1 of the connected
components of the thresholded map (:func:`emkit.synapse.cleft_components`, paper's 40-voxel size
filter scaled to the resolution) against the true clefts
(:func:`emkit.evaluate.synapses.cleft_precision_recall`: a predicted and a true cleft match when
they overlap), and the voxel F1. The best checkpoint minimises ARAND (boundary) or maximises mean
IoU (semantic) or cleft F1 (cleft; ties: the lower validation loss).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from ..errors import InputError, LayerExistsError

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train", "adapted_model", "split_per_section", "cleft_scores",
           "TASKS"]

TASKS = ("boundary", "semantic", "cleft")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (frozen; JSON round-trip). Paper values cited per field."""

    task: str = "boundary"
    """"boundary" (affinities, long-range affinities [, myelin, vessel]), "semantic" (5 classes) or
    "cleft" (synaptic clefts, 1 channel, from gt/clefts)."""
    data: tuple[str, ...] = ()
    """Dataset folders (paths or URLs); see :mod:`emkit.train.sampler`. Empty with preset "phantom":
    phantoms are generated."""
    val_data: tuple[str, ...] = ()
    """Validation dataset folders; empty: the last ``data`` folder's last 20 % in y is held out
    (or, if too small for that, validation uses training data and the log says so)."""
    preset: str | None = None
    """"phantom" or None (:mod:`emkit.train.presets`)."""
    iterations: int = 1000
    """Gradient steps in total (a resumed run continues up to this)."""
    batch_size: int = 1
    """Patches per step (paper: 1 per GPU)."""
    lr: float = 1e-3
    """AMSGrad learning rate (paper, Boundary detection: α = 0.001)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AMSGrad β1, β2 (paper)."""
    eps: float = 1e-8
    """AMSGrad ε (paper)."""
    widths: tuple[int, ...] = (16, 32, 64, 128)
    """Feature maps per U-Net level (see NetConfig)."""
    downsample: tuple[tuple[int, int, int], ...] | None = None
    """Per-level factors; None: derived from the data's resolution."""
    patch_size: tuple[int, int, int] | None = None
    """Training patch (z, y, x); None: derived from the data's resolution."""
    heads: tuple[str, ...] | None = None
    """Head kinds; None: ("affinity", "long_range") for boundary (+ "myelin" when every dataset
    has gt/myelin), ("semantic",) for semantic, ("cleft",) for cleft."""
    output_1x1: bool = False
    """Extra 1×1×1 output convolution (paper's semantic net)."""
    augment: str = "auto"
    """Augmentation preset of :mod:`emkit.train.augment` ("boundary", "semantic", "cleft", "isotropic",
    "none"); "auto": the task's name, except "isotropic" for a boundary net on (near-)isotropic
    data (largest / smallest voxel side < 1.5: FIB-SEM has no cut sections to lose)."""
    rebalance_semantic: bool = False
    """Patch-wise class rebalancing of the semantic channels too, as for affinities (each class's
    positives and negatives carry half the weight). The paper uses plain BCE for semantic labels;
    rebalancing helps a class that is rare in the ground truth (glia in the phantoms)."""
    rebalance_cleft: bool = False
    """Patch-wise class rebalancing of the cleft channel (synaptic and non-synaptic voxels carry half
    the weight each). Not the paper's (plain BCE, 375,000 iterations; Methods, Synapse detection):
    with a few hundred CPU iterations it makes the rare synaptic voxels count from the start."""
    init: str | None = None
    """Start from these weights (fine-tuning): a checkpoint path or a shipped model name
    ("boundary", "semantic", "cleft": the shipped model of that family trained nearest the data's
    resolution, as ``emkit infer`` picks; "boundary_iso": that one). The net's configuration
    (widths, heads, resolution) is the checkpoint's, its patch too unless ``patch_size`` is given;
    the optimizer starts afresh. When the data's resolution differs from the
    checkpoint's, the weights are *adapted*: the same widths and heads (every weight keeps its
    shape), with the down-sampling factors, long-range offsets and patch re-derived for the data's
    resolution (or ``downsample`` / ``patch_size`` when given); the log says so."""
    balance: str = "auto"
    """Where training patches fall: "classes" (centred on a voxel of a semantic class drawn
    uniformly, so rare classes are seen as often as common ones — the paper added sparse vessel
    ground truth for the same reason, Methods: Semantic labeling), "clefts" (80 % of the patches
    centred on a voxel of a cleft drawn uniformly, the rest uniform: synaptic voxels are rare),
    "none" (uniform), or "auto": "classes" for semantic nets, "clefts" for cleft nets, "none" for
    boundary nets."""
    planar_labels: bool = False
    """The labels were drawn section by section (2D ids per section, e.g. the connected components
    of a per-section membrane mask): affinities that cross sections (z and long-range z) are
    loss-masked, label 0 is judged in-plane by ``background="auto"``, and validation splits the
    segmentation per section (as the ISBI 2012 challenge scored)."""
    input_masks: tuple[str, ...] = ()
    """Mask names whose voxels are zeroed in the input (as ``emkit infer --mask-in``)."""
    loss_masks: tuple[str, ...] | str = "auto"
    """Mask names excluded from the loss; "auto": see :mod:`emkit.train.sampler`."""
    background: str = "auto"
    """Label 0: "ignore" (edges touching it do not count: unlabelled), "boundary" (edges touching it
    are boundaries, target 0) or "auto": "boundary" when label 0 separates the bodies everywhere in
    the training data (no two bodies touch: membranes labelled 0, as in FlyEM's FIB-SEM ground
    truth), else "ignore" (:func:`emkit.train.targets.resolve_background`)."""
    seed: int = 0
    """Seeds weights (torch) and data (numpy, per iteration)."""
    device: str = "cpu"
    """"cpu", "cuda" or "auto"."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    workers: int = 0
    """Processes that sample, augment and make targets of the next batches while the net trains
    (forked; Linux). 0: in the training process. The batches are the same for any number (each is
    seeded by (seed, iteration, item)), so this changes speed, not results: it keeps a GPU busy."""
    val_interval: int = 100
    checkpoint_interval: int = 100
    val_size: tuple[int, int, int] | None = None
    """Validation crop (z, y, x); None: twice the patch per axis, clipped to the volume."""
    threshold: float = 0.5
    """Agglomeration cut for validation ARAND (paper: constraints act below 0.5)."""
    out_dir: str | None = None
    phantom_size: tuple[int, int, int] = (64, 256, 256)
    """Size of generated phantoms (preset "phantom")."""
    phantom_seeds: tuple[int, ...] = ()
    """Training phantom seeds; empty: presets.PHANTOM_TRAIN_SEEDS."""
    phantom_val_seed: int | None = None
    """Validation phantom seed; None: presets.PHANTOM_VAL_SEED."""
    phantom_defects: str = "default"
    progress: bool = True

    def __post_init__(self):
        s = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if self.task not in TASKS:
            raise InputError(f"task must be one of {TASKS}, got {self.task!r}")
        s("data", tuple(str(d) for d in ((self.data,) if isinstance(self.data, str) else self.data)))
        s("val_data", tuple(str(d) for d in ((self.val_data,) if isinstance(self.val_data, str) else self.val_data)))
        if not self.data and self.preset != "phantom":
            raise InputError("no training data: give --data DATASET... or --preset phantom")
        for k in ("iterations", "batch_size", "val_interval", "checkpoint_interval"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"TrainConfig.{k} must be a positive integer, got {v!r}")
        if not isinstance(self.workers, (int, np.integer)) or self.workers < 0:
            raise InputError(f"TrainConfig.workers must be an integer >= 0, got {self.workers!r}")
        if not (self.lr > 0):
            raise InputError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if self.device not in ("cpu", "cuda", "auto") and not str(self.device).startswith("cuda:"):
            raise InputError(f"TrainConfig.device must be cpu, cuda or auto, got {self.device!r}")
        if self.balance not in ("auto", "none", "classes", "clefts"):
            raise InputError(f"TrainConfig.balance must be 'auto', 'none', 'classes' or 'clefts', got {self.balance!r}")
        if self.background not in ("auto", "ignore", "boundary"):
            raise InputError(f"TrainConfig.background must be 'auto', 'ignore' or 'boundary', got {self.background!r}")
        for k in ("widths", "patch_size", "val_size", "phantom_size", "phantom_seeds", "input_masks", "betas"):
            v = getattr(self, k)
            if v is not None:
                s(k, tuple(v))
        if self.heads is not None:
            s("heads", tuple(self.heads))
        if self.downsample is not None:
            s("downsample", tuple(tuple(int(x) for x in f) for f in self.downsample))
        if not isinstance(self.loss_masks, str):
            s("loss_masks", tuple(self.loss_masks))
        elif self.loss_masks != "auto":
            s("loss_masks", tuple(m for m in self.loss_masks.split(",") if m))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        extra = sorted(set(d) - names)
        if extra:
            raise InputError(f"unknown TrainConfig fields {extra}")
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    out_dir: Path
    last: Path
    best: Path | None
    log: dict
    model: object


def _git_revision() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def _is_isotropic(resolution) -> bool:
    r = [float(x) for x in resolution]
    return max(r) < 1.5 * min(r)


def _make_augmenter(name: str, task: str, resolution=None):
    """(callable (sample, rng, output_shape) -> sample, read_size function or None, note)."""
    if name == "auto":
        name = "isotropic" if task == "boundary" and resolution is not None and _is_isotropic(resolution) else task
    if name in (None, "none"):
        return None, None, "none"
    from . import augment as aug_mod  # part of emkit: an ImportError here is a broken install, not "no augmentation"

    params = aug_mod.preset(name)
    Augmenter = aug_mod.Augmenter

    def run(sample, rng, output_shape):
        return Augmenter(params, rng)(sample, output_shape)

    return run, Augmenter(params, np.random.default_rng(0)).required_input_shape, name


class Trainer:
    """A training run. ``Trainer(config).run()`` → :class:`TrainResult`.

    ``resume=True`` continues from ``config.out_dir/last.pt`` (model, optimizer, iteration, log);
    without it an ``out_dir`` that already holds a run raises LayerExistsError.
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False, command: str | None = None):
        import torch

        self.git_revision = _git_revision()  # the code this run started with, not what HEAD is at a later save

        from ..nets import NetConfig, RSUNet, boundary_heads, cleft_heads
        from ..nets.config import HeadSpec
        from .presets import PHANTOM_TRAIN_SEEDS, PHANTOM_VAL_SEED, prepare_phantoms
        from .sampler import PatchSampler, open_dataset, split_region
        from .targets import resolve_background

        if not isinstance(config, TrainConfig):
            raise InputError(f"Trainer needs a TrainConfig, got {type(config).__name__}")
        self.command = command
        self.out_dir = Path(config.out_dir) if config.out_dir else None
        ckpt = None
        if self.out_dir is not None:
            last = self.out_dir / "last.pt"
            if resume:
                if not last.is_file():
                    raise InputError(f"cannot resume: {last} does not exist")
                from ..nets import load_checkpoint

                ckpt = load_checkpoint(last)
                saved = TrainConfig.from_dict(ckpt["training"]["train_config"])
                keep = {k: getattr(config, k) for k in ("iterations", "device", "threads", "workers", "progress", "out_dir",
                                                          "val_interval", "checkpoint_interval")}
                config = replace(saved, **keep)
            elif last.exists() or (self.out_dir / "log.json").exists():
                raise LayerExistsError(f"{self.out_dir} already holds a training run; resume it (--resume) or "
                                       "choose another --out")
        elif resume:
            raise InputError("resume needs out_dir")
        self.config = cfg = config
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        dev = cfg.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise InputError("device 'cuda' asked for, but torch sees no GPU; use --device cpu")
        self.device = torch.device(dev)

        # data --------------------------------------------------------------------------------
        data, val_data = list(cfg.data), list(cfg.val_data)
        if not data:  # preset phantom
            root = (self.out_dir or Path(".")) / "data"
            seeds = cfg.phantom_seeds or PHANTOM_TRAIN_SEEDS
            vseed = PHANTOM_VAL_SEED if cfg.phantom_val_seed is None else cfg.phantom_val_seed
            data = prepare_phantoms(root, cfg.phantom_size, seeds, cfg.phantom_defects, progress=cfg.progress)
            if not val_data:
                val_data = prepare_phantoms(root, cfg.phantom_size, [vseed], cfg.phantom_defects,
                                            progress=cfg.progress)
        need = {"boundary": ("labels",), "semantic": ("semantic",), "cleft": ("clefts",)}[cfg.task]
        only = ("clefts",) if cfg.task == "cleft" else None  # a cleft net reads no other ground truth
        vols = [open_dataset(u, need=need, only=only) for u in data]
        vvols = [open_dataset(u, need=need, only=only) for u in val_data]
        res = vols[0].resolution
        for v in vols + vvols:
            if tuple(v.resolution) != tuple(res):
                raise InputError(f"datasets differ in resolution: {vols[0].url} has {res}, {v.url} has "
                                 f"{v.resolution} (z, y, x nm); train one net per resolution")

        # net ---------------------------------------------------------------------------------
        if cfg.heads is None:
            if cfg.task == "boundary":
                heads = boundary_heads(myelin=all(v.has("myelin") for v in vols))
            elif cfg.task == "cleft":
                heads = cleft_heads()
            else:
                heads = (HeadSpec("semantic", 5, "semantic"),)
        else:
            heads = tuple(HeadSpec(k, _HEAD_CHANNELS.get(k, 9), k) for k in cfg.heads)
        net_cfg = NetConfig(widths=cfg.widths, downsample=cfg.downsample, heads=heads, patch_size=cfg.patch_size,
                            resolution=res, output_1x1=cfg.output_1x1)
        init_state = None
        self.init_note = None
        if cfg.init and ckpt is None:
            from ..nets import load_model

            ref, chosen = _resolve_init(cfg.init, res)
            start = load_model(ref)
            net_cfg = start.config
            self.init_note = chosen
            want = {"semantic": "semantic", "cleft": "cleft"}.get(cfg.task, "affinity")
            if want not in {h.kind for h in net_cfg.heads}:
                raise InputError(f"--init {cfg.init} has heads {[h.name for h in net_cfg.heads]}, no {want!r} head for "
                                 f"a {cfg.task} net")
            if tuple(net_cfg.resolution) != tuple(float(r) for r in res):
                net_cfg, note = _adapt_config(net_cfg, res, cfg, str(ref))
                self.init_note = "; ".join(n for n in (chosen, note) if n)
            elif cfg.patch_size is not None and tuple(cfg.patch_size) != tuple(net_cfg.patch_size):
                net_cfg = net_cfg.replace(patch_size=tuple(cfg.patch_size))  # a training choice: no weight depends on it
            init_state = start.state_dict()
        if ckpt is not None:
            net_cfg = NetConfig.from_dict(ckpt["config"])
        self.net_config = net_cfg
        torch.manual_seed(cfg.seed)
        self.model = RSUNet(net_cfg).to(self.device)
        if init_state is not None:
            self.model.load_state_dict(init_state)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                          amsgrad=True)

        # samplers ----------------------------------------------------------------------------
        self.val_note = "held-out dataset" if vvols else None
        train_items = [(v, None) for v in vols]
        val_items = [(v, None) for v in vvols]
        if not vvols:
            split = split_region(vols[-1].size, net_cfg.patch_size)
            if split is not None:
                train_items[-1] = (vols[-1], split[0])
                val_items = [(vols[-1], split[1])]
                self.val_note = f"last 20% (y) of {vols[-1].url} held out"
            else:
                val_items = [(vols[-1], None)]
                self.val_note = f"validation on training data ({vols[-1].url} too small to split)"
        from ..geometry import Bbox

        def _items(items):
            return [(v, r if r is not None else Bbox((0, 0, 0), v.size)) for v, r in items]

        aug, read_size, self.augment_note = _make_augmenter(cfg.augment, cfg.task, res)
        self.background = "ignore"
        if any(h.kind in ("affinity", "long_range", "vessel") for h in net_cfg.heads):
            self.background = resolve_background(cfg.background, [_label_probe(v) for v in vols],
                                                 axes=(1, 2) if cfg.planar_labels else (0, 1, 2))
        self.sampler = PatchSampler(_items(train_items), net_cfg.patch_size, input_masks=cfg.input_masks,
                                    loss_masks=cfg.loss_masks, augmenter=aug, read_size=read_size,
                                    balance=cfg.balance if cfg.balance != "auto" else
                                    {"semantic": "classes", "cleft": "clefts"}.get(cfg.task, "none"))
        # the validation sampler only reads the validation crop (_validation_sample): a validation volume may be
        # smaller than the training patch
        vshape = [r.shape for _, r in _items(val_items)]
        vpatch = tuple(min([p] + [sh[a] for sh in vshape]) for a, p in enumerate(net_cfg.patch_size))
        self.val_sampler = PatchSampler(_items(val_items), vpatch, input_masks=cfg.input_masks,
                                        loss_masks=cfg.loss_masks)
        self.val_sample = self._validation_sample()

        # state -------------------------------------------------------------------------------
        self.iteration = 0
        self.log = {"train_config": cfg.to_dict(), "net_config": net_cfg.to_dict(),
                    "n_parameters": self.model.n_parameters(), "device": str(self.device),
                    "augment": self.augment_note, "validation_source": self.val_note,
                    "background": self.background, "init": self.init_note,
                    "train": {"iteration": [], "loss": [], "heads": {h.name: [] for h in heads}, "seconds": []},
                    "validation": [], "best": None}
        if ckpt is not None:
            self.model.load_state_dict(ckpt["state_dict"])
            tr = ckpt["training"]
            self.optimizer.load_state_dict(tr["optimizer"])
            self.iteration = int(tr["iteration"])
            self.log = json.loads(tr["log"])
            self.background = self.log.get("background", self.background)
            torch.set_rng_state(tr["torch_rng"])

    # ---------------------------------------------------------------------------------------------
    def _validation_sample(self) -> dict:
        from ..geometry import Bbox

        vol, region = self.val_sampler.items[0]
        m = self.net_config.input_multiple
        want = self.config.val_size or tuple(2 * p for p in self.net_config.patch_size)
        size = tuple(max(min(w, r) // k * k, k) for w, r, k in zip(want, region.shape, m))
        if any(s > r for s, r in zip(size, region.shape)):
            raise InputError(f"validation region {region.shape} of {vol.url} is smaller than the net's input "
                             f"multiple {m} (z, y, x)")
        start = tuple(a + (r - s) // 2 for a, r, s in zip(region.start, region.shape, size))
        return self.val_sampler.read(vol, Bbox(start, tuple(a + s for a, s in zip(start, size))))

    @property
    def _rebalance(self) -> tuple[str, ...]:
        return (("semantic",) if self.config.rebalance_semantic else ()) + (
            ("cleft",) if self.config.rebalance_cleft else ())

    def _batch_arrays(self, samples) -> tuple[np.ndarray, dict]:
        """Input ``(b, 1, z, y, x)`` and targets ``{head: (target, weight)}`` as numpy arrays."""
        from ..nets import normalize
        from .targets import make_targets

        x = np.ascontiguousarray(np.stack([normalize(s["image"])[None] for s in samples]))
        tg = [make_targets(s, self.net_config, self.background, self.config.planar_labels) for s in samples]
        targets = {name: (np.stack([d[name][0] for d in tg]), np.stack([d[name][1] for d in tg])) for name in tg[0]}
        return x, targets

    def _to_device(self, arrays):
        import torch

        x, targets = arrays
        return (torch.from_numpy(x).to(self.device),
                {k: (torch.from_numpy(t).to(self.device), torch.from_numpy(v).to(self.device))
                 for k, (t, v) in targets.items()})

    def _batch(self, samples):
        return self._to_device(self._batch_arrays(samples))

    def batch_arrays(self, iteration: int) -> tuple[np.ndarray, dict]:
        """The training batch of ``iteration`` (numpy; a pure function of the seed and the iteration)."""
        return self._batch_arrays([self.sampler.sample(np.random.default_rng([self.config.seed, iteration, b]))
                                   for b in range(self.config.batch_size)])

    def step(self, arrays=None) -> dict:
        """One gradient step (iteration ``self.iteration``); returns the losses.

        ``arrays``: the batch of this iteration from :meth:`batch_arrays` (made here when None).
        """
        from .losses import head_losses

        if arrays is None:
            arrays = self.batch_arrays(self.iteration)
        x, targets = self._to_device(arrays)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses = head_losses(self.model(x), targets, self.net_config, rebalance=self._rebalance)
        total = sum(losses.values())
        total.backward()
        self.optimizer.step()
        self.iteration += 1
        return {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in losses.items()}}

    def validate(self) -> dict:
        """Validation figures of the current net (see the module docstring)."""
        import torch

        from .losses import head_losses

        s = self.val_sample
        x, targets = self._batch([s])
        self.model.eval()
        with torch.no_grad():
            logits = self.model(x)
            losses = head_losses(logits, targets, self.net_config, rebalance=self._rebalance)
            prob = torch.sigmoid(logits)[0].cpu().numpy()
        out = {"iteration": self.iteration, "loss": float(sum(float(v) for v in losses.values())),
               **{f"loss_{k}": float(v) for k, v in losses.items()}}
        sl = self.net_config.head_slices
        kinds = {h.kind: h.name for h in self.net_config.heads}
        if "affinity" in kinds and "labels" in s:
            out.update(_segmentation_scores(prob[sl[kinds["affinity"]]], s["labels"], s["mask"],
                                            self.config.threshold, planar=self.config.planar_labels))
        if "semantic" in kinds and "semantic" in s:
            out["mean_iou"] = _mean_iou(prob[sl[kinds["semantic"]]], s["semantic"], s["mask"])
        if "cleft" in kinds and "clefts" in s:
            out.update(cleft_scores(prob[sl[kinds["cleft"]]][0], s["clefts"], self.net_config.resolution))
        return out

    def _score(self, v: dict):
        if "arand" in v and np.isfinite(v["arand"]):
            return v["arand"]
        if "mean_iou" in v:
            return -v["mean_iou"]
        if "cleft_f1" in v:
            return (-v["cleft_f1"], v["loss"])
        return v["loss"]

    def _extra(self, metrics=None) -> dict:
        return {"command": self.command, "seed": self.config.seed, "git_revision": self.git_revision,
                "iteration": self.iteration, "task": self.config.task, "metrics": metrics,
                "train_config": self.config.to_dict(), "validation_source": self.val_note}

    def save_last(self) -> Path | None:
        import torch

        from ..nets import save

        if self.out_dir is None:
            return None
        training = {"optimizer": self.optimizer.state_dict(), "iteration": self.iteration,
                    "train_config": self.config.to_dict(), "log": json.dumps(self.log),
                    "torch_rng": torch.get_rng_state()}
        last_val = self.log["validation"][-1] if self.log["validation"] else None
        return save(self.model, self.out_dir / "last.pt", extra=self._extra(last_val), training=training)

    def _write_log(self):
        if self.out_dir is not None:
            (self.out_dir / "log.json").write_text(json.dumps(self.log, indent=1))

    def run(self) -> TrainResult:
        """Train up to ``config.iterations`` (validating, checkpointing, logging on the way)."""
        from tqdm.auto import tqdm

        cfg = self.config
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=cfg.iterations, initial=self.iteration, desc=f"training {cfg.task} net", unit="it",
                   disable=not cfg.progress)
        prefetch = _Prefetcher(self, cfg.workers) if cfg.workers and self.iteration < cfg.iterations else None
        t_run = time.perf_counter()
        try:
            self._loop(bar, prefetch)
        finally:
            if prefetch is not None:
                prefetch.close()
        bar.close()
        self.log["wall_seconds"] = round(float(self.log.get("wall_seconds") or 0.0) + time.perf_counter() - t_run, 1)
        secs = self.log["train"]["seconds"]
        self.log["seconds_per_iteration"] = float(np.median(secs)) if secs else None
        self._write_log()
        out = self.out_dir
        return TrainResult(out_dir=out, last=out / "last.pt" if out else None,
                           best=(out / "best.pt") if out and (out / "best.pt").exists() else None,
                           log=self.log, model=self.model)

    def _eta(self, step_seconds, val_seconds) -> dict:
        """Estimate (and print to stderr, and log) the time left: median step time × steps left
        + validations left × the time of the last validation (checkpoints are not counted)."""
        cfg = self.config
        left = cfg.iterations - self.iteration
        per = float(np.median(step_seconds)) if len(step_seconds) else float("nan")
        n_val = sum(1 for i in range(self.iteration + 1, cfg.iterations + 1)
                    if i % cfg.val_interval == 0 or i == cfg.iterations)
        v = float(val_seconds[-1]) if val_seconds else None
        eta = per * left + (v or 0.0) * n_val
        finish = time.strftime("%H:%M", time.localtime(time.time() + eta))
        rec = {"iteration": self.iteration, "seconds_per_iteration": round(per, 3), "iterations_left": left,
               "validation_seconds": None if v is None else round(v, 2), "eta_seconds": round(eta, 1),
               "finish_clock": finish}
        self.log.setdefault("eta", []).append(rec)
        val = (f" + {n_val} validation(s) x {v:.1f} s" if v is not None
               else f" + {n_val} validation(s) (not timed yet)")
        rate = f" ({1 / per:.2f} it/s)" if per > 0 else ""
        print(f"emkit train: ETA {_hms(eta)} (about {finish}): {left} iterations left x {per:.2f} s/iteration"
              f"{rate}{val}", file=sys.stderr, flush=True)
        if self.device.type == "cpu" and eta > LONG_CPU_RUN_SECONDS:
            rec["warning"] = (f"this run would take about {_hms(eta)} on this CPU; for a first try use fewer "
                              f"iterations (--iterations), a smaller net (--widths, e.g. 8,16,32,64) or patch "
                              f"(--patch), or a GPU (--device cuda)")
            print(f"emkit train: warning: {rec['warning']}", file=sys.stderr, flush=True)
        return rec

    def _loop(self, bar, prefetch) -> None:
        from ..nets import save

        cfg = self.config
        tr = self.log["train"]
        first = self.iteration
        val_seconds: list[float] = []
        while self.iteration < cfg.iterations:
            t0 = time.perf_counter()
            losses = self.step(None if prefetch is None else prefetch.get(self.iteration))
            tr["iteration"].append(self.iteration)
            tr["loss"].append(losses["loss"])
            tr["seconds"].append(round(time.perf_counter() - t0, 4))
            for k in tr["heads"]:
                tr["heads"][k].append(losses.get(k))
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.4f}")
            done = self.iteration >= cfg.iterations
            if self.iteration - first == min(_ETA_AFTER, cfg.iterations - first) and not done:
                self._eta(tr["seconds"][-(self.iteration - first):], val_seconds)
            if self.iteration % cfg.val_interval == 0 or done:
                tv = time.perf_counter()
                v = self.validate()
                val_seconds.append(time.perf_counter() - tv)
                if len(val_seconds) == 1 and not done:
                    self._eta(tr["seconds"][-(self.iteration - first):], val_seconds)
                self.log["validation"].append(v)
                best = self.log["best"]
                if best is None or self._score(v) < self._score(best):
                    self.log["best"] = v
                    if self.out_dir is not None:
                        save(self.model, self.out_dir / "best.pt", extra=self._extra(v))
                if cfg.progress:
                    bar.write(f"iteration {self.iteration}: " + ", ".join(
                        f"{k} {val:.4f}" for k, val in v.items() if k != "iteration" and isinstance(val, float)),
                        file=sys.stderr)
            if self.iteration % cfg.checkpoint_interval == 0 or done:
                self.save_last()
                self._write_log()


# ------------------------------------------------------------------ batch prefetch in workers ----
_PREFETCH_TRAINER = None  # the Trainer whose sampler forked workers use (inherited through fork)


def _prefetch_batch(iteration: int):
    return _PREFETCH_TRAINER.batch_arrays(iteration)


class _Prefetcher:
    """Forked worker processes make the batches of the next iterations, in order, ``2 × workers``
    ahead. The parent makes the first batch itself before forking, so numba's compiled kernels
    are inherited, not compiled again in every worker."""

    def __init__(self, trainer: Trainer, workers: int):
        import multiprocessing as mp

        global _PREFETCH_TRAINER
        if "fork" not in mp.get_all_start_methods():
            raise InputError("TrainConfig.workers > 0 needs the 'fork' start method (Linux); use workers=0 here")
        self.next = trainer.iteration
        self.stop = trainer.config.iterations
        self.depth = 2 * int(workers)
        self.first = (trainer.iteration, trainer.batch_arrays(trainer.iteration))
        _PREFETCH_TRAINER = trainer
        self.pool = mp.get_context("fork").Pool(int(workers))
        self.pending: dict[int, object] = {}
        self.next += 1
        self._fill()

    def _fill(self) -> None:
        while self.next < self.stop and len(self.pending) < self.depth:
            self.pending[self.next] = self.pool.apply_async(_prefetch_batch, (self.next,))
            self.next += 1

    def get(self, iteration: int):
        if self.first is not None and self.first[0] == iteration:
            arrays, self.first = self.first[1], None
        else:
            arrays = self.pending.pop(iteration).get()
        self._fill()
        return arrays

    def close(self) -> None:
        global _PREFETCH_TRAINER
        self.pool.terminate()
        self.pool.join()
        _PREFETCH_TRAINER = None


_ETA_AFTER = 10
LONG_CPU_RUN_SECONDS = 3 * 3600
"""On a CPU, an ETA above this (s) prints a warning naming the smaller settings."""
"""Iterations timed before the first ETA is printed."""


def _hms(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


_HEAD_CHANNELS = {"affinity": 3, "long_range": 9, "myelin": 1, "vessel": 1, "semantic": 5, "cleft": 1}


def _segmentation_scores(aff, labels, mask, threshold, planar: bool = False) -> dict:
    """Watershed + agglomeration of predicted affinities, scored against ``labels`` (``planar``:
    the segmentation is split per section first, as labels drawn section by section are)."""
    from ..evaluate import adapted_rand_error, voi
    from ..segment import AgglomerationParams, agglomerate, region_graph, watershed

    aff = np.ascontiguousarray(aff, dtype=np.float32)
    sv = watershed(aff)
    hist = agglomerate(region_graph(sv, aff), AgglomerationParams())
    seg = hist.segmentation(sv, threshold)
    if planar:
        seg = split_per_section(seg)
    gt = np.where(mask != 0, labels, 0).astype(np.uint64)
    err, _, _ = adapted_rand_error(seg, gt)
    vs, vm = voi(seg, gt)
    return {"arand": float(err), "voi_split": float(vs), "voi_merge": float(vm)}


def cleft_scores(prob, clefts, resolution, threshold: float = 0.5) -> dict:
    """Validation scores of a (z, y, x) cleft probability map against true cleft ids ``clefts``:
    ``cleft_precision``, ``cleft_recall``, ``cleft_f1`` (connected components of ``prob >
    threshold`` with the paper's size filter, :func:`emkit.synapse.cleft_components`, matched to
    the true clefts by overlap, :func:`emkit.evaluate.synapses.cleft_precision_recall`),
    ``cleft_n_pred``, ``cleft_n_true`` and the voxel F1 ``cleft_voxel_f1``."""
    from ..evaluate.synapses import cleft_precision_recall
    from ..synapse import CleftParams, cleft_components

    prob = np.asarray(prob, dtype=np.float32)
    gt = np.asarray(clefts)
    if gt.shape != prob.shape:
        raise InputError(f"cleft probability of shape {prob.shape} and ground truth of shape {gt.shape} differ")
    labels, _ = cleft_components(np.clip(prob, 0.0, 1.0), resolution, CleftParams(threshold=threshold))
    sc = cleft_precision_recall(labels, gt.astype(np.uint64), resolution=resolution)
    p, t = prob > threshold, gt != 0
    tp = int(np.count_nonzero(p & t))
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    return {"cleft_precision": float(sc.precision), "cleft_recall": float(sc.recall), "cleft_f1": float(sc.f1),
            "cleft_n_pred": int(sc.n_pred), "cleft_n_true": int(sc.n_true),
            "cleft_voxel_f1": float(2 * tp / denom) if denom else 1.0}


def split_per_section(seg) -> np.ndarray:
    """(z, y, x) segmentation with every segment split per section: id ``s`` in section ``z``
    becomes ``s * nz + z + 1`` (0 stays 0), so no segment spans two sections (ISBI 2012-style 2D
    scoring of a 3D segmentation)."""
    seg = np.asarray(seg)
    nz = seg.shape[0]
    z = np.arange(nz, dtype=np.uint64).reshape(nz, 1, 1)
    out = seg.astype(np.uint64) * np.uint64(nz) + z + np.uint64(1)
    return np.where(seg == 0, np.uint64(0), out)


def _mean_iou(prob, semantic, mask) -> float:
    """Mean IoU over classes present in the ground truth or the prediction (argmax of 5 classes;
    only labelled, unmasked voxels)."""
    ok = (semantic != 0) & (mask != 0)
    if not ok.any():
        return float("nan")
    pred = prob.argmax(0)[ok] + 1
    gt = semantic[ok].astype(np.int64)
    ious = []
    for c in range(1, 6):
        p, g = pred == c, gt == c
        u = np.count_nonzero(p | g)
        if u:
            ious.append(np.count_nonzero(p & g) / u)
    return float(np.mean(ious))


def _adapt_config(start_cfg, resolution, cfg: TrainConfig, name: str):
    """The configuration of a net initialised from weights trained at another resolution: same
    widths, heads and output layers (every weight keeps its shape), down-sampling factors,
    long-range offsets and patch derived for ``resolution`` (or taken from ``cfg``). Returns
    (NetConfig, note)."""
    from ..nets import NetConfig

    try:
        new = NetConfig(in_channels=start_cfg.in_channels, widths=start_cfg.widths, downsample=cfg.downsample,
                        heads=start_cfg.heads, patch_size=cfg.patch_size, resolution=tuple(float(r) for r in resolution),
                        output_1x1=start_cfg.output_1x1)
    except InputError as e:
        raise InputError(f"--init {name}: its weights (trained at {tuple(start_cfg.resolution)} nm) cannot be "
                         f"adapted to data at {tuple(resolution)} nm: {e}") from None
    note = (f"weights of {name} (trained at {'x'.join(f'{r:g}' for r in start_cfg.resolution)} nm, down-sampling "
            f"{[list(f) for f in start_cfg.downsample]}) adapted to {'x'.join(f'{float(r):g}' for r in resolution)} nm: "
            f"down-sampling {[list(f) for f in new.downsample]}, long-range offsets {[list(o) for o in new.offsets]}, "
            f"patch {list(new.patch_size)}; every weight keeps its shape")
    return new, note


def adapted_model(init, resolution, *, downsample=None, patch_size=None):
    """The net ``--init init`` starts from on data at ``resolution`` (z, y, x nm), before any
    training: the checkpoint's weights (a family name picks the shipped model nearest
    ``resolution``), adapted as :class:`TrainConfig`.init describes when the resolutions differ.
    Returns ``(RSUNet, note)``: what was chosen and adapted (None when neither).

    This is the "before" of a fine-tuning run: score it to see what fine-tuning gained.
    """
    from ..nets import RSUNet, load_model

    ref, chosen = _resolve_init(init, resolution)
    start = load_model(ref)
    if tuple(start.config.resolution) == tuple(float(r) for r in resolution):
        return start, chosen
    probe = TrainConfig(data=("unused",), downsample=downsample, patch_size=patch_size)
    cfg, note = _adapt_config(start.config, resolution, probe, str(ref))
    note = "; ".join(n for n in (chosen, note) if n)
    model = RSUNet(cfg)
    model.load_state_dict(start.state_dict())
    model.extra = {"adapted_from": str(ref), "note": note}
    return model.eval(), note


def _resolve_init(init, resolution) -> tuple[str, str | None]:
    """A family name ("boundary", "semantic", "cleft") that is not a path → the shipped model of that family
    (``<family>``, ``<family>_*``) trained nearest ``resolution`` (smallest sum over z, y, x of
    |log(data nm / net nm)|), as ``emkit infer`` chooses; anything else as given. Returns
    (reference, note or None)."""
    import math

    from ..nets import checkpoint

    s = str(init)
    if s not in ("boundary", "semantic", "cleft") or Path(s).exists() or not hasattr(checkpoint, "shipped_models"):
        return s, None
    models = checkpoint.shipped_models(s)
    if len(models) < 2:
        return s, None
    dist = {n: sum(abs(math.log(float(a) / float(b))) for a, b in zip(resolution, f["resolution"]))
            for n, f in models.items()}
    best = min(models, key=lambda n: (dist[n], n))
    res = "x".join(f"{float(r):g}" for r in resolution)
    return best, (f"--init {s}: shipped {best} (trained at {'x'.join(f'{r:g}' for r in models[best]['resolution'])} nm), "
                  f"the nearest to the data's {res} nm of {sorted(models)}")


def _label_probe(vol, max_shape=(64, 256, 256)) -> np.ndarray:
    """The labels of ``vol`` (in memory), or of a central crop of at most ``max_shape`` voxels."""
    from ..geometry import Bbox

    if "labels" in vol.arrays:
        return vol.arrays["labels"]
    size = tuple(vol.size)
    shape = tuple(min(s, m) for s, m in zip(size, max_shape))
    start = tuple((s - k) // 2 for s, k in zip(size, shape))
    return vol.read("labels", Bbox(start, tuple(a + k for a, k in zip(start, shape))))


def train(config: TrainConfig, *, resume: bool = False, command: str | None = None) -> TrainResult:
    """Train a net as ``config`` says (see :class:`Trainer`)."""
    return Trainer(config, resume=resume, command=command).run()
