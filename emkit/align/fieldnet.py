"""The alignment field net (issue 9 §4; paper, *Alignment at 1024 nm & 64 nm*; SEAMLeSS,
Mitchell et al. 2019): a small 2D U-Net that, given a pair of sections and the current field
estimate, predicts the displacement field that aligns the moving section to the reference.

Convention
----------
Fields are those of :mod:`emkit.align.fields`: float ``(2, y, x)``, ``(dy, dx)`` in pixels of
the grid they live on, with ``warp(moving, field) ≈ reference``. :func:`predict_field` takes and
returns fields on the *image* grid (pixels of ``resolution_yx``); inside, the net works at its
own pixel size ``FieldNetConfig.working_nm`` (images area-averaged by the whole factor
``k = round(working_nm / pixel)``), and its field (working px) is bilinearly upsampled to the
image grid (pixel centres, :func:`emkit.align.fields.resample`'s convention) and multiplied by
``k``.

Inputs (channels, in order; at the working pixel)
--------------------------------------------------
``reference``, ``moving``: grey values normalised over tissue (zero mean, unit std; 0 outside
tissue: the normalisation of :func:`emkit.align.fine.pair_field`); ``moving`` is the moving
section already warped by the current estimate ``init``. ``init_dy``, ``init_dx``: the current
estimate (working px). ``relax``: 1 inside fold and crack masks (either section), where the
field may tear. The net predicts a correction ``Δ`` (working px; its last convolution starts at
zero, so an untrained net returns ``init``), and the field is ``compose(init, Δ)`` (warping by
``init`` then by ``Δ``).

Training (:mod:`emkit.align.fieldnet_train`) is self-supervised as in the paper: the loss is
``MSE(reference, warp(moving, field))`` over tissue plus ``λ ·`` the smoothness of the field,
relaxed inside the fold/crack masks — the objective :func:`emkit.align.fine.pair_field` then
minimises per pair by gradient descent, starting from the net's field.

Not in the paper (it gives no architecture for the aligner here): two 3 × 3 convolutions with a
leaky ReLU per level, average pooling, bilinear up-sampling, no normalisation layers.

Checkpoints use emkit's container (``emkit.nets.checkpoint.FORMAT``) with ``config``
``{"arch": "fieldnet", ...}``. torch is imported inside the functions that need it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError

__all__ = ["ARCH", "INPUT_CHANNELS", "FieldNetConfig", "build_fieldnet", "save_fieldnet", "load_fieldnet",
           "net_inputs", "predict_field", "to_field_grid"]

ARCH = "fieldnet"
#: Input channels of the field net, in order.
INPUT_CHANNELS = ("reference", "moving", "init_dy", "init_dx", "relax")


@dataclass(frozen=True)
class FieldNetConfig:
    """Configuration of the field net.

    working_nm : in-plane pixel size (nm) the net sees (images are area-averaged to it by the
        nearest whole factor; 32 nm = mip 2 of 8 nm sections).
    widths : feature maps per level, first to deepest (``len - 1`` poolings by 2).
    convs_per_level : 3 × 3 convolutions per level.
    channels : the input channels (fixed: :data:`INPUT_CHANNELS`).
    """

    working_nm: float = 32.0
    widths: tuple = (16, 32, 64, 128)
    convs_per_level: int = 2
    channels: tuple = INPUT_CHANNELS

    def __post_init__(self):
        try:
            w = tuple(int(x) for x in self.widths)
        except (TypeError, ValueError):
            raise InputError(f"FieldNetConfig.widths must be feature-map counts, got {self.widths!r}") from None
        if not w or any(x < 1 for x in w):
            raise InputError(f"FieldNetConfig.widths must be positive feature-map counts, got {self.widths!r}")
        object.__setattr__(self, "widths", w)
        object.__setattr__(self, "channels", tuple(str(c) for c in self.channels))
        if self.channels != INPUT_CHANNELS:
            raise InputError(f"FieldNetConfig.channels must be {INPUT_CHANNELS}, got {self.channels!r}")
        if not (isinstance(self.convs_per_level, int) and self.convs_per_level >= 1):
            raise InputError(f"FieldNetConfig.convs_per_level must be an integer >= 1, got {self.convs_per_level!r}")
        if not (isinstance(self.working_nm, (int, float)) and np.isfinite(self.working_nm) and self.working_nm > 0):
            raise InputError(f"FieldNetConfig.working_nm must be a positive number, got {self.working_nm!r}")

    @property
    def multiple(self) -> int:
        """Working-grid sides are padded to multiples of this (2 ** number of poolings)."""
        return 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"], d["channels"] = list(self.widths), list(self.channels)
        d["arch"] = ARCH
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FieldNetConfig":
        d = dict(d)
        if d.pop("arch", None) != ARCH:
            raise InputError(f"not a {ARCH} configuration: {d!r}")
        return cls(**{**d, "widths": tuple(d.get("widths", cls.widths)),
                      "channels": tuple(d.get("channels", INPUT_CHANNELS))})


def build_fieldnet(config: FieldNetConfig | None = None):
    """A fresh :class:`torch.nn.Module`: input (N, 5, y, x) (:data:`INPUT_CHANNELS`), output the
    correction (N, 2, y, x) (dy, dx working px; zero for a fresh net); y, x multiples of
    ``config.multiple``."""
    import torch
    from torch import nn

    cfg = config or FieldNetConfig()
    if not isinstance(cfg, FieldNetConfig):
        raise InputError(f"config must be a FieldNetConfig, got {type(cfg).__name__}")

    def block(a, b):
        layers = []
        for i in range(cfg.convs_per_level):
            layers += [nn.Conv2d(a if i == 0 else b, b, 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
        return nn.Sequential(*layers)

    class FieldNet(nn.Module):
        def __init__(self):
            super().__init__()
            w = cfg.widths
            self.config = cfg
            self.down = nn.ModuleList([block(len(INPUT_CHANNELS) if i == 0 else w[i - 1], w[i]) for i in range(len(w))])
            self.up = nn.ModuleList([block(w[i + 1] + w[i], w[i]) for i in range(len(w) - 1)])
            self.out = nn.Conv2d(w[0], 2, 3, padding=1)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def forward(self, x):
            m = cfg.multiple
            if x.ndim != 4 or x.shape[1] != len(INPUT_CHANNELS) or x.shape[-1] % m or x.shape[-2] % m:
                raise InputError(f"the field net takes (N, {len(INPUT_CHANNELS)}, y, x) with y, x multiples of {m}; "
                                 f"got {tuple(x.shape)}")
            skips = []
            for i, blk in enumerate(self.down):
                x = blk(x if i == 0 else nn.functional.avg_pool2d(x, 2))
                skips.append(x)
            x = skips.pop()
            for i in reversed(range(len(self.up))):
                x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                x = self.up[i](torch.cat([x, skips.pop()], dim=1))
            return self.out(x)

    return FieldNet()


def save_fieldnet(model, path, *, extra: dict | None = None, training: dict | None = None):
    """Write ``model`` (weights, config, provenance ``extra``) in emkit's checkpoint container,
    atomically (temporary file, then rename). ``training`` (optimizer state...) only for resuming."""
    import os
    from pathlib import Path

    import torch

    from ..nets.checkpoint import FORMAT, _jsonable

    if not (hasattr(model, "config") and isinstance(model.config, FieldNetConfig)):
        raise InputError(f"save_fieldnet needs a field net (build_fieldnet), got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "config": model.config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "extra": _jsonable(extra or {})}
    if training is not None:
        blob["training"] = training
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_fieldnet(ref="field"):
    """The field net: a shipped model name (``"field"``), a checkpoint path, or a model (returned
    as is). In eval mode, with ``model.extra`` (provenance) attached. The last file loaded is kept
    (and given again while the file is unchanged): do not train the returned model in place."""
    from pathlib import Path

    from ..nets.checkpoint import load_checkpoint, models_dir

    if hasattr(ref, "config") and hasattr(ref, "forward"):
        if not isinstance(ref.config, FieldNetConfig):
            raise InputError(f"model {type(ref).__name__} is not a field net (its config is not a FieldNetConfig)")
        return ref
    if not isinstance(ref, (str, Path)):
        raise InputError(f"model must be a shipped model name, a checkpoint path or a field net, got {ref!r}")
    p = Path(str(ref))
    if not (p.suffix == ".pt" or p.exists()):
        cand = models_dir() / f"{ref}.pt"
        if not cand.is_file():
            raise InputError(f"no shipped field model {str(ref)!r} in {models_dir()} (give a checkpoint path, "
                             "or train one: emkit train field --preset phantom --out runs/field)")
        p = cand
    st = p.stat() if p.is_file() else None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size) if st else None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    blob = load_checkpoint(p)
    cfg = blob.get("config", {})
    if not isinstance(cfg, dict) or cfg.get("arch") != ARCH:
        arch = cfg.get("arch") if isinstance(cfg, dict) else None
        raise InputError(f"{str(p)!r} is not a field net checkpoint (config arch {arch!r})")
    model = build_fieldnet(FieldNetConfig.from_dict(cfg))
    model.load_state_dict(blob["state_dict"])
    model.extra = blob.get("extra", {})
    model.eval()
    if key is not None:
        _CACHE.clear()  # one file at a time: a pipeline aligns every pair with the same net
        _CACHE[key] = model
    return model


#: The last loaded checkpoint (path, mtime, size) → model: pair after pair reuse it.
_CACHE: dict = {}


# -- inputs at the working pixel --------------------------------------------------------------------------
def _area(a: np.ndarray, k: int, shape) -> np.ndarray:
    """(…, y, x) edge-padded to ``shape`` × k and averaged over k × k blocks → (…, *shape)."""
    a = np.asarray(a, np.float32)
    H, W = shape[0] * k, shape[1] * k
    pad = [(0, 0)] * (a.ndim - 2) + [(0, H - a.shape[-2]), (0, W - a.shape[-1])]
    if any(p[1] for p in pad):
        a = np.pad(a, pad, mode="edge")
    s = a.shape[:-2] + (shape[0], k, shape[1], k)
    return a.reshape(s).mean(axis=(-3, -1))


def to_field_grid(field, factor: int, shape=None) -> np.ndarray:
    """A full-resolution field (2, y, x) (px) on a grid ``factor`` times coarser: area averages
    of ``factor × factor`` blocks (the end edge-padded), values stay full-resolution px — the
    ``init`` of :func:`emkit.align.fine.pair_field`. ``shape`` (y', x') of the grid defaults to
    ``ceil(y / factor), ceil(x / factor)``; it may be larger (more edge padding)."""
    f = np.asarray(field, np.float32)
    if f.ndim != 3 or f.shape[0] != 2:
        raise InputError(f"field must have shape (2, y, x), got {f.shape}")
    factor = int(factor)
    if factor < 1:
        raise InputError(f"factor must be an integer >= 1, got {factor}")
    ny, nx = f.shape[1:]
    if shape is None:
        shape = (-(-ny // factor), -(-nx // factor))
    shape = tuple(int(s) for s in shape)
    if shape[0] * factor < ny or shape[1] * factor < nx:
        raise InputError(f"grid {shape} × {factor} does not cover the field's {(ny, nx)}")
    return _area(f, factor, shape)


def _norm(a, m):
    if m.sum() < 16:
        return np.zeros_like(a, dtype=np.float32)
    return np.where(m, (a - a[m].mean()) / max(float(a[m].std()), 1e-3), 0).astype(np.float32)


def working_factor(resolution_yx, config: FieldNetConfig) -> int:
    """Whole factor from the image pixel to the net's working pixel (at least 1)."""
    return max(1, int(round(config.working_nm / float(min(resolution_yx)))))


def net_inputs(reference, moving, *, ref_tissue, mov_tissue, relax, factor: int, multiple: int) -> dict:
    """Sections → float32 arrays at the working pixel (padded at the end to multiples of
    ``multiple``): ``reference``, ``moving`` (normalised over tissue, 0 outside), ``ref_tissue``,
    ``mov_tissue`` (fractions), ``relax`` (max over each block), ``shape`` (working grid)."""
    from .fine import _grey

    ref, mov = _grey(reference), _grey(moving)
    ny, nx = ref.shape
    k = int(factor)
    gy, gx = -(-ny // k), -(-nx // k)
    gy, gx = -(-gy // multiple) * multiple, -(-gx // multiple) * multiple
    rt, mt = np.asarray(ref_tissue, bool), np.asarray(mov_tissue, bool)

    def down(a, fill=0.0):
        a = np.asarray(a, np.float32)
        H, W = gy * k, gx * k
        a = np.pad(a, ((0, H - ny), (0, W - nx)), constant_values=fill)
        return a.reshape(gy, k, gx, k).mean(axis=(1, 3))

    rx = np.asarray(relax, np.float32)
    rxw = np.pad(rx, ((0, gy * k - ny), (0, gx * k - nx))).reshape(gy, k, gx, k).max(axis=(1, 3))
    return {"reference": down(_norm(ref, rt)), "moving": down(_norm(mov, mt)), "ref_tissue": down(rt),
            "mov_tissue": down(mt), "relax": rxw.astype(np.float32), "shape": (gy, gx)}


def run_net(model, ref_w, mov_w, relax_w, init_w):
    """One pass of the net on torch tensors at the working pixel: ref_w, mov_w, relax_w
    (N, 1, y, x), init_w (N, 2, y, x) working px → the field ``compose(init, Δ)`` (N, 2, y, x),
    differentiable (training and inference share it)."""
    import torch

    from . import fields as F

    moved = F.warp(mov_w, init_w) if bool(init_w.detach().abs().max() > 0) else mov_w
    x = torch.cat([ref_w, moved, init_w, relax_w], dim=1)
    delta = model(x)
    return F.compose(init_w, delta)


def predict_field(reference, moving, *, model="field", init=None, relax=None, resolution_yx=(8, 8),
                  ref_tissue=None, mov_tissue=None, device: str = "cpu") -> np.ndarray:
    """The field net's field ``P`` with ``warp(moving, P) ≈ reference``.

    Parameters
    ----------
    reference, moving : sections (y, x), uint8 (0–255) or float (0–1), same shape.
    model : a shipped model name (default ``"field"``), a checkpoint path or a loaded field net.
    init : optional current estimate, float ``(2, y, x)`` on the image grid (px), or on a grid
        ``k`` times coarser for a whole ``k`` (e.g. :func:`emkit.align.fine.pair_field`'s field
        grid, values in full-resolution px; padded grids allowed). Default zero.
    relax : optional bool (y, x): fold/crack masks of either section (the field may tear there).
    resolution_yx : pixel size (nm) of the sections; the net works at ``config.working_nm``.
    ref_tissue, mov_tissue : bool (y, x), where each section holds tissue (default
        :func:`emkit.align.fine.tissue` of each, as in ``pair_field``).
    device : torch device.

    Returns
    -------
    float32 ``(2, y, x)``: ``(dy, dx)`` in pixels of the image grid (:mod:`emkit.align.fields`
    convention), bilinearly upsampled from the net's working grid.
    """
    import torch

    from .fine import FineParams, _grey, tissue

    net = load_fieldnet(model)
    cfg = net.config
    ref, mov = _grey(reference), _grey(moving)
    if ref.ndim != 2 or ref.shape != mov.shape:
        raise InputError(f"predict_field needs two sections (y, x) of the same shape, got {ref.shape} and {mov.shape}")
    try:
        res = tuple(float(r) for r in resolution_yx)
    except (TypeError, ValueError):
        raise InputError(f"resolution_yx must be two pixel sizes (nm), got {resolution_yx!r}") from None
    if len(res) != 2 or not all(np.isfinite(r) and r > 0 for r in res):
        raise InputError(f"resolution_yx must be two positive pixel sizes (nm), got {resolution_yx!r}")
    ny, nx = ref.shape
    if min(ny, nx) < 8:
        raise InputError(f"predict_field needs sections of at least 8 px a side, got {ref.shape}")
    p = FineParams()
    rt = tissue(reference, p) if ref_tissue is None else np.asarray(ref_tissue, bool)
    mt = tissue(moving, p) if mov_tissue is None else np.asarray(mov_tissue, bool)
    rx = np.zeros((ny, nx), bool) if relax is None else np.asarray(relax, bool)
    for name, a in (("ref_tissue", rt), ("mov_tissue", mt), ("relax", rx)):
        if a.shape != (ny, nx):
            raise InputError(f"{name} of shape {a.shape} does not fit the sections of shape {(ny, nx)}")
    k = working_factor(res, cfg)
    inp = net_inputs(ref, mov, ref_tissue=rt, mov_tissue=mt, relax=rx, factor=k, multiple=cfg.multiple)
    gy, gx = inp["shape"]
    init_w = np.zeros((2, gy, gx), np.float32)
    if init is not None:
        full = _init_full(init, (ny, nx))
        init_w = _area(full, k, (gy, gx)) / k
    T = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    net.to(device)
    with torch.no_grad():
        fw = run_net(net, T(inp["reference"])[None, None].to(device), T(inp["moving"])[None, None].to(device),
                     T(inp["relax"])[None, None].to(device), T(init_w)[None].to(device))
        up = torch.nn.functional.interpolate(fw, size=(gy * k, gx * k), mode="bilinear", align_corners=False) * k
    return np.ascontiguousarray(up[0, :, :ny, :nx].cpu().numpy(), dtype=np.float32)


def _init_full(init, shape_yx) -> np.ndarray:
    """``init`` on the image grid: as is when it has the image's shape, else bilinearly
    upsampled from a grid a whole factor coarser (values already full-resolution px)."""
    import torch

    a = np.asarray(init, np.float32)
    ny, nx = shape_yx
    if a.ndim != 3 or a.shape[0] != 2:
        raise InputError(f"init must be a field (2, y, x), got shape {a.shape}")
    if a.shape[1:] == (ny, nx):
        return a
    gy, gx = a.shape[1:]
    k = -(-ny // gy) if gy else 0
    if gy < 1 or gx < 1 or k < 1 or gy * k < ny or gx * k < nx or gy * k >= ny + 2 * k or gx * k >= nx + 2 * k \
            or -(-nx // gx) != k:
        raise InputError(f"init of shape {a.shape} is neither on the sections' grid {(2, ny, nx)} nor on a grid a "
                         "whole factor coarser")
    up = torch.nn.functional.interpolate(torch.from_numpy(a)[None], size=(gy * k, gx * k), mode="bilinear",
                                         align_corners=False)[0]
    return up[:, :ny, :nx].numpy()
