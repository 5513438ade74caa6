"""Typed configuration of the nets: :class:`HeadSpec`, :class:`NetConfig` (no torch import).

Everything here is plain Python so that a checkpoint's config can be read, printed and compared
without torch. Axis order is always (z, y, x); resolutions are nm per voxel.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from ..errors import InputError

__all__ = [
    "HeadSpec", "NetConfig", "HEAD_KINDS", "PAPER_RESOLUTION", "PAPER_LONG_RANGE_OFFSETS",
    "long_range_offsets", "derive_downsample", "derive_patch_size", "boundary_heads", "semantic_heads", "cleft_heads",
    "CLEFT_WIDTHS",
]

#: Paper, Methods: Synapse detection — "a Residual Symmetric U-Net ... with 32, 40, and 80 feature
#: maps at the different levels of the U-Net hierarchy, ReLU nonlinearity, and Instance Normalization".
CLEFT_WIDTHS = (32, 40, 80)

#: Paper, Methods: Boundary detection — "the voxel resolution of 8 × 8 × 40 nm³" (z, y, x here).
PAPER_RESOLUTION = (40.0, 8.0, 8.0)

#: Paper, Methods: Boundary detection — long-range affinity (x, y, z) offsets (-5,0,0), (-10,0,0),
#: (-15,0,0), (0,-5,0), (0,-10,0), (0,-15,0), (0,0,-2), (0,0,-3), (0,0,-4). In emkit's convention
#: (emkit.affinity: channel with offset o links v and v - o, offsets zyx) these are the positive
#: offsets below, listed z first like the nearest-neighbour channels.
PAPER_LONG_RANGE_OFFSETS = ((2, 0, 0), (3, 0, 0), (4, 0, 0),
                            (0, 5, 0), (0, 10, 0), (0, 15, 0),
                            (0, 0, 5), (0, 0, 10), (0, 0, 15))

#: What each head kind is trained on (targets: :mod:`emkit.train.targets`; losses:
#: :mod:`emkit.train.losses`).
HEAD_KINDS = {
    "affinity": "nearest-neighbour affinities (3 channels z, y, x) from gt/segmentation",
    "long_range": "long-range affinities (one channel per NetConfig.offsets) from gt/segmentation",
    "myelin": "myelin probability (1 channel) from gt/myelin (mask layer); optional",
    "vessel": "blood-vessel wall (1 channel): gt/semantic == 5 and gt/segmentation != 0",
    "semantic": "semantic classes 1..5 (soma+nucleus, axon, dendrite, glia, vessel), one channel each",
    "cleft": "synaptic cleft probability (1 channel) from gt/clefts (cleft ids > 0 = synaptic)",
    "partner": "synaptic partner voxel maps (presynaptic, postsynaptic), one channel each, given the image and one "
               "cleft's mask (emkit.synapse.partners)",
}


def _vec3(v, name, typ=int, positive=True):
    try:
        t = tuple(typ(x) for x in v)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be three numbers (z, y, x), got {v!r}") from None
    if len(t) != 3 or (positive and any(x <= 0 for x in t)):
        raise InputError(f"{name} must be three positive numbers (z, y, x), got {v!r}")
    return t


@dataclass(frozen=True)
class HeadSpec:
    """One output head: ``channels`` consecutive output channels named ``name``.

    ``kind`` (a key of :data:`HEAD_KINDS`) says which target and loss train it.
    """

    name: str
    channels: int
    kind: str

    def __post_init__(self):
        if self.kind not in HEAD_KINDS:
            raise InputError(f"HeadSpec.kind must be one of {sorted(HEAD_KINDS)}, got {self.kind!r}")
        if not isinstance(self.channels, int) or self.channels < 1:
            raise InputError(f"HeadSpec.channels must be a positive integer, got {self.channels!r}")
        if not self.name or not isinstance(self.name, str):
            raise InputError(f"HeadSpec.name must be a non-empty string, got {self.name!r}")


def long_range_offsets(resolution=PAPER_RESOLUTION) -> tuple[tuple[int, int, int], ...]:
    """Long-range affinity offsets (zyx voxels) for data at ``resolution`` (z, y, x nm).

    At the paper's 40×8×8 nm these are :data:`PAPER_LONG_RANGE_OFFSETS`. Elsewhere the same
    physical distances are kept (z: 80, 120, 160 nm; y and x: 40, 80, 120 nm), rounded to whole
    voxels, at least 2 voxels and strictly increasing per axis.
    """
    res = _vec3(resolution, "resolution", float)
    if tuple(res) == PAPER_RESOLUTION:
        return PAPER_LONG_RANGE_OFFSETS
    out = []
    for axis, nms in ((0, (80.0, 120.0, 160.0)), (1, (40.0, 80.0, 120.0)), (2, (40.0, 80.0, 120.0))):
        prev = 1
        for nm in nms:
            d = max(int(round(nm / res[axis])), prev + 1)
            prev = d
            o = [0, 0, 0]
            o[axis] = d
            out.append(tuple(o))
    return tuple(out)


def derive_downsample(resolution, levels: int) -> tuple[tuple[int, int, int], ...]:
    """Per-level down-sampling factors (z, y, x) that follow the data's anisotropy.

    At each level an axis is halved when its current resolution is within 1.5× of the finest
    axis; so 40×8×8 nm gives (1,2,2), (1,2,2), then (2,2,2) once the voxels are roughly
    isotropic (40×32×32), and isotropic 10 nm FIB-SEM gives (2,2,2) at every level.
    """
    res = list(_vec3(resolution, "resolution", float))
    if levels < 0:
        raise InputError(f"levels must be >= 0, got {levels}")
    out = []
    for _ in range(levels):
        finest = min(res)
        f = tuple(2 if r <= 1.5 * finest else 1 for r in res)
        res = [r * k for r, k in zip(res, f)]
        out.append(f)
    return tuple(out)


def derive_patch_size(resolution, downsample, voxels: int = 16 * 128 * 128) -> tuple[int, int, int]:
    """A training patch (z, y, x) of about ``voxels`` voxels, roughly cubic in nm, each side a
    multiple of the net's input multiple (the product of the down-sampling factors).

    At 40×8×8 nm with (1,2,2),(1,2,2),(2,2,2) this is 22×112×112; at isotropic 10 nm 64×64×64.
    """
    res = _vec3(resolution, "resolution", float)
    mult = [1, 1, 1]
    for f in downsample:
        mult = [m * k for m, k in zip(mult, f)]
    inv = [1.0 / r for r in res]
    scale = (voxels / math.prod(inv)) ** (1.0 / 3.0)
    size = []
    for a in range(3):
        s = max(int(round(inv[a] * scale / mult[a])), 1) * mult[a]
        # a side must leave at least 2 voxels at the coarsest level (InstanceNorm needs > 1 voxel)
        size.append(max(s, 2 * mult[a]) if mult[a] > 1 else max(s, 1))
    return tuple(size)


def boundary_heads(myelin: bool = False, vessel: bool = False, long_range: bool = True) -> tuple[HeadSpec, ...]:
    """The boundary net's heads (paper, Methods: Boundary detection): nearest affinities (3),
    long-range affinities (9), optionally myelin (1) and vessel wall (1)."""
    heads = [HeadSpec("affinity", 3, "affinity")]
    if long_range:
        heads.append(HeadSpec("long_range", 9, "long_range"))
    if myelin:
        heads.append(HeadSpec("myelin", 1, "myelin"))
    if vessel:
        heads.append(HeadSpec("vessel", 1, "vessel"))
    return tuple(heads)


def cleft_heads() -> tuple[HeadSpec, ...]:
    """The cleft net's head: 1 channel, synaptic vs non-synaptic voxel (paper, Methods: Synapse
    detection; binary cross-entropy)."""
    return (HeadSpec("cleft", 1, "cleft"),)


def semantic_heads() -> tuple[HeadSpec, ...]:
    """The semantic net's head: 5 classes (paper, Methods: Semantic labeling)."""
    return (HeadSpec("semantic", 5, "semantic"),)


@dataclass(frozen=True)
class NetConfig:
    """Architecture of an :class:`emkit.nets.RSUNet` (frozen; JSON round-trip).

    Paper, Methods: Boundary detection / Semantic labeling — Residual Symmetric U-Net (Lee et al.
    2017) with an extra convolution in every residual module, 3×3×3 convolutions except the
    5×5×1 (x, y, z; kernel (1, 5, 5) in z, y, x) input and output convolutions, ReLU and
    InstanceNorm.
    """

    in_channels: int = 1
    """Input channels (EM: 1)."""
    widths: tuple[int, ...] = (16, 32, 64, 128)
    """Feature maps per level, finest first; depth = len(widths) (paper boundary net: DeepEM's
    28, 36, 48, 64, 80; semantic net: 32, 64, 128, 256, 512)."""
    downsample: tuple[tuple[int, int, int], ...] | None = None
    """Down/up-sampling factor (z, y, x) between level i and i + 1 (len(widths) - 1 entries);
    None: derived from ``resolution`` by :func:`derive_downsample`."""
    heads: tuple[HeadSpec, ...] = field(default_factory=boundary_heads)
    """Output heads, in channel order."""
    patch_size: tuple[int, int, int] | None = None
    """Training / inference input size (z, y, x voxels); None: :func:`derive_patch_size`."""
    resolution: tuple[float, float, float] = PAPER_RESOLUTION
    """Voxel size (z, y, x nm) of the data the net is trained for."""
    offsets: tuple[tuple[int, int, int], ...] | None = None
    """Long-range affinity offsets (zyx voxels; channel with offset o links v and v - o); None:
    :func:`long_range_offsets` of ``resolution``."""
    output_1x1: bool = False
    """An extra 1×1×1 convolution at the output (paper's semantic net, 'fifth modification')."""

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        try:
            widths = tuple(int(w) for w in self.widths)
        except (TypeError, ValueError):
            raise InputError(f"NetConfig.widths must be positive integers, got {self.widths!r}") from None
        if not widths or any(w < 1 for w in widths):
            raise InputError(f"NetConfig.widths must be positive integers, got {self.widths!r}")
        set_("widths", widths)
        if not isinstance(self.in_channels, int) or self.in_channels < 1:
            raise InputError(f"NetConfig.in_channels must be a positive integer, got {self.in_channels!r}")
        set_("resolution", _vec3(self.resolution, "NetConfig.resolution", float))
        if self.downsample is None:
            ds = derive_downsample(self.resolution, len(widths) - 1)
        else:
            ds = tuple(_vec3(f, "NetConfig.downsample entry") for f in self.downsample)
            if len(ds) != len(widths) - 1:
                raise InputError(f"NetConfig.downsample needs {len(widths) - 1} entries (one per level below the "
                                 f"first of widths {widths}), got {len(ds)}")
        set_("downsample", ds)
        heads = tuple(h if isinstance(h, HeadSpec) else HeadSpec(**h) for h in self.heads)
        if not heads:
            raise InputError("NetConfig.heads must not be empty")
        names = [h.name for h in heads]
        if len(set(names)) != len(names):
            raise InputError(f"NetConfig.heads names must be unique, got {names}")
        set_("heads", heads)
        offs = long_range_offsets(self.resolution) if self.offsets is None else tuple(
            _vec3(o, "NetConfig.offsets entry", int, positive=False) for o in self.offsets)
        if any(o == (0, 0, 0) for o in offs):
            raise InputError(f"NetConfig.offsets must be non-zero, got {offs}")
        set_("offsets", offs)
        for h in heads:
            if h.kind == "affinity" and h.channels != 3:
                raise InputError(f"head {h.name!r} of kind 'affinity' needs 3 channels (z, y, x), got {h.channels}")
            if h.kind == "long_range" and h.channels != len(offs):
                raise InputError(f"head {h.name!r} of kind 'long_range' needs one channel per offset "
                                 f"({len(offs)}), got {h.channels}")
            if h.kind == "semantic" and h.channels != 5:
                raise InputError(f"head {h.name!r} of kind 'semantic' needs 5 channels, got {h.channels}")
            if h.kind in ("myelin", "vessel", "cleft", "partner") and h.channels != 1:
                raise InputError(f"head {h.name!r} of kind {h.kind!r} needs 1 channel, got {h.channels}")
        if self.patch_size is None:
            set_("patch_size", derive_patch_size(self.resolution, ds))
        else:
            ps = _vec3(self.patch_size, "NetConfig.patch_size")
            m = self.input_multiple
            if any(p % k for p, k in zip(ps, m)):
                raise InputError(f"NetConfig.patch_size {ps} must be a multiple of the input multiple {m} (z, y, x)")
            set_("patch_size", ps)
        set_("output_1x1", bool(self.output_1x1))

    # facts ------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def input_multiple(self) -> tuple[int, int, int]:
        """Input sides (z, y, x) must be multiples of this (product of the down-sampling factors)."""
        m = [1, 1, 1]
        for f in self.downsample:
            m = [a * b for a, b in zip(m, f)]
        return tuple(m)

    @property
    def out_channels(self) -> int:
        return sum(h.channels for h in self.heads)

    @property
    def head_slices(self) -> dict[str, slice]:
        out, c = {}, 0
        for h in self.heads:
            out[h.name] = slice(c, c + h.channels)
            c += h.channels
        return out

    def head(self, name: str) -> HeadSpec:
        for h in self.heads:
            if h.name == name:
                return h
        raise InputError(f"no head {name!r}; heads are {[h.name for h in self.heads]}")

    # JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["downsample"] = [list(f) for f in self.downsample]
        d["heads"] = [asdict(h) for h in self.heads]
        d["patch_size"] = list(self.patch_size)
        d["resolution"] = list(self.resolution)
        d["offsets"] = [list(o) for o in self.offsets]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetConfig":
        names = {f.name for f in fields(cls)}
        extra = sorted(set(d) - names)
        if extra:
            raise InputError(f"unknown NetConfig fields {extra}; expected some of {sorted(names)}")
        kw = dict(d)
        if "heads" in kw:
            kw["heads"] = tuple(HeadSpec(**h) if isinstance(h, dict) else h for h in kw["heads"])
        for k in ("widths", "patch_size", "resolution"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        for k in ("downsample", "offsets"):
            if kw.get(k) is not None:
                kw[k] = tuple(tuple(x) for x in kw[k])
        return cls(**kw)

    def replace(self, **changes) -> "NetConfig":
        return replace(self, **changes)
