"""The paper's 2D U-Net for fold, crack and resin detection (Methods, *Fold & crack detection*).

Architecture (paper): at every level three 3 × 3 non-strided convolutions; 4 down-samplings by
2 × 2 max pooling, 4 up-samplings by nearest-neighbour interpolation (each followed by three 3 × 3
convolutions on the up-sampled features concatenated with the level's skip features, as in
Ronneberger et al. 2015); feature maps 16, 32, 64, 128, 256 from the first to the deepest level;
one 3 × 3 output convolution; a 256 × 256 px field of view. Convolutions are zero-padded ("same"),
so a tile of ``n × n`` px (``n`` a multiple of 16) gives ``n × n`` outputs.

Not in the paper (it says nothing about them): each convolution is followed by batch
normalisation and a ReLU (trains from scratch in minutes on a CPU); emkit's net has three output
channels (fold, crack, resin) instead of separate nets — the paper trained one net per defect
with the same architecture; resin comes from the same net run on a coarser image (see
:mod:`emkit.detect.defect_masks`).

Checkpoints use emkit's checkpoint container (``emkit.nets.checkpoint.FORMAT``) with a
``config`` of ``{"arch": "unet2d", ...}`` (see :class:`UNet2DConfig`). torch is imported inside
the functions that need it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError

__all__ = ["UNet2DConfig", "build_unet2d", "save_unet2d", "load_unet2d", "ARCH", "DEFECT_CHANNELS"]

ARCH = "unet2d"
#: Output channels of the defect net, in order.
DEFECT_CHANNELS = ("fold", "crack", "resin")


@dataclass(frozen=True)
class UNet2DConfig:
    """Configuration of the 2D U-Net (defaults: the paper's, Methods *Fold & crack detection*).

    widths : feature maps per level, first to deepest (paper: 16, 32, 64, 128, 256 → 4 down-samplings).
    convs_per_level : 3 × 3 convolutions per level (paper: three).
    channels : names of the output channels (sigmoid probabilities).
    field_of_view : tile side in working pixels (paper: 256).
    working_nm : in-plane pixel size (nm) the net sees for folds and cracks.
    resin_working_nm : in-plane pixel size (nm) of the resin pass (same net, coarser image).
    norm : batch normalisation after each convolution (not in the paper).
    """

    widths: tuple = (16, 32, 64, 128, 256)
    convs_per_level: int = 3
    channels: tuple = DEFECT_CHANNELS
    field_of_view: int = 256
    working_nm: float = 16.0
    resin_working_nm: float = 32.0
    norm: bool = True

    def __post_init__(self):
        w = tuple(int(x) for x in self.widths)
        if len(w) < 1 or any(x < 1 for x in w):
            raise InputError(f"widths must be positive feature-map counts, got {self.widths!r}")
        object.__setattr__(self, "widths", w)
        object.__setattr__(self, "channels", tuple(str(c) for c in self.channels))
        if self.convs_per_level < 1:
            raise InputError(f"convs_per_level must be >= 1, got {self.convs_per_level}")
        if not self.channels:
            raise InputError("the net needs at least one output channel")
        if self.field_of_view % (2 * self.multiple) or self.field_of_view <= 0:
            raise InputError(f"field_of_view {self.field_of_view} must be a positive multiple of "
                             f"{2 * self.multiple} (twice 2**(levels-1), for 50 % overlapping tiles)")
        if self.working_nm <= 0 or self.resin_working_nm <= 0:
            raise InputError(f"working pixel sizes must be positive, got {self.working_nm}, {self.resin_working_nm}")

    @property
    def multiple(self) -> int:
        """Tile sides must be multiples of this (2 ** number of down-samplings)."""
        return 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"], d["channels"] = list(self.widths), list(self.channels)
        d["arch"] = ARCH
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNet2DConfig":
        d = dict(d)
        if d.pop("arch", ARCH) != ARCH:
            raise InputError(f"not a {ARCH} configuration: {d!r}")
        return cls(**{**d, "widths": tuple(d.get("widths", cls.widths)),
                      "channels": tuple(d.get("channels", DEFECT_CHANNELS))})


def build_unet2d(config: UNet2DConfig | None = None):
    """A fresh :class:`torch.nn.Module` for ``config``: input (N, 1, y, x) float in [0, 1],
    output (N, channels, y, x) logits; y and x multiples of ``config.multiple``."""
    import torch
    from torch import nn

    cfg = config or UNet2DConfig()

    def block(a, b):
        layers = []
        for i in range(cfg.convs_per_level):
            layers.append(nn.Conv2d(a if i == 0 else b, b, 3, padding=1, bias=not cfg.norm))
            if cfg.norm:
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers)

    class UNet2D(nn.Module):
        def __init__(self):
            super().__init__()
            w = cfg.widths
            self.config = cfg
            self.down = nn.ModuleList([block(1 if i == 0 else w[i - 1], w[i]) for i in range(len(w))])
            self.up = nn.ModuleList([block(w[i + 1] + w[i], w[i]) for i in range(len(w) - 1)])
            self.out = nn.Conv2d(w[0], len(cfg.channels), 3, padding=1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            m = cfg.multiple
            if x.ndim != 4 or x.shape[1] != 1 or x.shape[-1] % m or x.shape[-2] % m:
                raise InputError(f"the U-Net takes (N, 1, y, x) with y, x multiples of {m}; got {tuple(x.shape)}")
            skips = []
            for i, blk in enumerate(self.down):
                x = blk(x if i == 0 else self.pool(x))
                skips.append(x)
            x = skips.pop()
            for i in reversed(range(len(self.up))):
                x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
                x = self.up[i](torch.cat([x, skips.pop()], dim=1))
            return self.out(x)

    return UNet2D()


def save_unet2d(model, path, *, extra: dict | None = None, training: dict | None = None):
    """Write ``model`` (weights, config, provenance ``extra``) in emkit's checkpoint container,
    atomically (temporary file, then rename)."""
    import os
    from pathlib import Path

    import torch

    from ..nets.checkpoint import FORMAT, _jsonable

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


def load_unet2d(ref="defects"):
    """The defect net: a shipped model name (``"defects"``), a checkpoint path, or a model
    (returned as is). In eval mode, with ``model.extra`` (provenance) attached."""
    from pathlib import Path

    from ..nets.checkpoint import load_checkpoint, models_dir

    if hasattr(ref, "config") and hasattr(ref, "forward"):
        return ref
    p = Path(str(ref))
    if not (p.suffix == ".pt" or p.exists()):
        cand = models_dir() / f"{ref}.pt"
        if not cand.is_file():
            raise InputError(f"no shipped defect model {ref!r} in {models_dir()} (give a checkpoint path, "
                             "or train one: emkit train defects --preset phantom --out runs/defects)")
        p = cand
    blob = load_checkpoint(p)
    cfg = blob.get("config", {})
    if not isinstance(cfg, dict) or cfg.get("arch") != ARCH:
        raise InputError(f"{str(p)!r} is not a defect net (2D U-Net) checkpoint")
    model = build_unet2d(UNet2DConfig.from_dict(cfg))
    model.load_state_dict(blob["state_dict"])
    model.extra = blob.get("extra", {})
    return model.eval()
