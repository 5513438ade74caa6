"""Residual Symmetric U-Net (Lee et al. 2017) as modified in the paper (Methods: Boundary
detection, Semantic labeling).

Layout (widths w0..wn, down-sampling factors f1..fn from :class:`~emkit.nets.config.NetConfig`)::

    input conv (1,5,5) in->w0, IN, ReLU
    level 0: ResModule(w0)                      ─────────────── skip 0 ──┐
      max-pool f1, ResModule(w0->w1)            ── skip 1 ──┐            │
        ...                                                  │            │
          max-pool fn, ResModule(w_{n-1}->wn)   (bottom)     │            │
        nearest upsample fn, conv 1x1x1 wn->w_{n-1}, + skip n-1, ResModule(w_{n-1})
      ...                                                                 │
    nearest upsample f1, conv 1x1x1 w1->w0, + skip 0, ResModule(w0)  ◄────┘
    output conv (1,5,5) w0->C  [or (1,5,5) w0->w0, IN, ReLU, 1x1x1 w0->C when output_1x1]

ResModule(a->b): conv 3x3x3 a->b, IN, ReLU; then the residual branch of three 3x3x3 convs
(Lee et al. had two: the paper "added an extra convolution layer to every residual module"),
IN after each, ReLU between, added to the module's first activation, ReLU. Skip connections
add (symmetric), every convolution uses 'same' padding, so the output has the input's size.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .config import NetConfig

__all__ = ["RSUNet"]

_K3 = (3, 3, 3)
_K5 = (1, 5, 5)  # the paper's 5×5×1 (x, y, z) in z, y, x order


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters and state-dict keys) that keeps PyTorch's CPU on its fast
    oneDNN (mkldnn) kernels.

    PyTorch picks its slow reference kernel (``slow_conv3d``, ~3-10× slower, forward and
    backward) for a batch of one when ``C · z · y`` is at most 20480, ignoring x — typical of
    anisotropic EM patches (few sections) and of the deeper levels of any net. Two exact
    reformulations avoid it (same sums; only their order may differ):

    * the spatial axes are permuted so that the smallest comes last, when that lifts
      ``C · a · b`` over the limit (thin anisotropic patches);
    * otherwise (isotropic patches: every permutation stays under the limit) the volume is cut
      in two halves along its longest axis, each with the kernel's halo, run as a batch of two
      (a batch above one always takes oneDNN), and the two valid halves are joined again.

    Nothing changes on GPUs, for batches above one, or where the heuristic already picks oneDNN.
    Measured (1 thread, forward + backward of a 3×3×3 conv C→C): 16×32³ 277 → 24 ms,
    32×16³ 39 → 8 ms, 64×8³ 12 → 6.5 ms (``benchmarks/training_speed.py`` has the net-level rows).
    """

    _LIMIT = 20480

    def forward(self, x):
        if x.device.type != "cpu" or x.shape[0] > 1 or not torch.backends.mkldnn.is_available():
            return super().forward(x)
        k = self.kernel_size
        if (k[-1] > 3 and k[-2] > 3) or x.shape[1] * x.shape[2] * x.shape[3] > self._LIMIT or k == (1, 1, 1):
            return super().forward(x)
        sp = x.shape[2:]
        order = sorted(range(3), key=lambda a: -sp[a])          # largest spatial axes first
        if x.shape[1] * sp[order[0]] * sp[order[1]] <= self._LIMIT:
            return self._split_forward(x, order[0])
        perm = (0, 1) + tuple(2 + a for a in order)
        inv = [0] * 5
        for i, p in enumerate(perm):
            inv[p] = i
        y = nn.functional.conv3d(x.permute(perm), self.weight.permute(perm), self.bias, stride=1,
                                 padding=tuple(self.padding[a] for a in order))
        return y.permute(inv)

    def _split_forward(self, x, axis: int):
        """The convolution of ``x`` (batch 1) as a batch of its two halves along spatial ``axis``."""
        n = x.shape[2 + axis]
        halo = self.padding[axis]
        h = (n + 1) // 2                     # first half: outputs [0, h); second: [h, n)
        if self.stride != (1, 1, 1) or n - h - halo < 0 or h <= halo:
            return super().forward(x)
        d = 2 + axis
        a = x.narrow(d, 0, h + halo)                 # outputs 0..h-1 need inputs up to h-1+halo
        b = x.narrow(d, n - h - halo, h + halo)      # the same length, ending at the volume's end
        y = super().forward(torch.cat([a, b], 0))
        first = y[:1].narrow(d, 0, h)
        skip = 2 * h - n + halo                      # b's outputs before z = h (and its false top halo)
        second = y[1:].narrow(d, skip, n - h)
        return torch.cat([first, second], d)


def _conv(a, b, k):
    return Conv3d(a, b, kernel_size=k, padding=tuple(s // 2 for s in k), bias=True)


def _norm(c):
    return nn.InstanceNorm3d(c, affine=True, track_running_stats=False)


class ResModule(nn.Module):
    """conv a->b, IN, ReLU, then a residual branch of ``n_res`` 3x3x3 convs (IN after each)."""

    def __init__(self, a: int, b: int, n_res: int = 3):
        super().__init__()
        self.pre = nn.Sequential(_conv(a, b, _K3), _norm(b), nn.ReLU(inplace=True))
        layers = []
        for i in range(n_res):
            layers += [_conv(b, b, _K3), _norm(b)]
            if i < n_res - 1:
                layers.append(nn.ReLU(inplace=True))
        self.res = nn.Sequential(*layers)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.pre(x)
        return self.act(x + self.res(x))


class UpBlock(nn.Module):
    """Nearest-neighbour upsampling by ``factor``, 1x1x1 conv a->b, then add the skip."""

    def __init__(self, a: int, b: int, factor):
        super().__init__()
        self.factor = tuple(int(f) for f in factor)
        self.conv = nn.Conv3d(a, b, kernel_size=1, bias=True)

    def forward(self, x, skip):
        if any(f > 1 for f in self.factor):
            x = nn.functional.interpolate(x, scale_factor=self.factor, mode="nearest")
        return self.conv(x) + skip


class RSUNet(nn.Module):
    """Residual Symmetric U-Net of ``config`` (:class:`~emkit.nets.config.NetConfig`).

    ``model(x)`` takes float32 ``(B, in_channels, z, y, x)`` with values in [0, 1] (see
    :func:`emkit.nets.normalize`) and returns logits ``(B, C, z, y, x)`` of the same spatial
    size, the heads' channels concatenated in ``config.heads`` order (:attr:`head_slices`).
    Each side of the input must be a multiple of :attr:`input_multiple`.
    """

    def __init__(self, config: NetConfig):
        super().__init__()
        if not isinstance(config, NetConfig):
            raise InputError(f"RSUNet needs a NetConfig, got {type(config).__name__}")
        self.config = config
        w = config.widths
        self.input = nn.Sequential(_conv(config.in_channels, w[0], _K5), _norm(w[0]), nn.ReLU(inplace=True))
        self.enc = nn.ModuleList([ResModule(w[0], w[0])])
        self.pools = nn.ModuleList()
        for i in range(1, len(w)):
            f = config.downsample[i - 1]
            self.pools.append(nn.MaxPool3d(kernel_size=f, stride=f))
            self.enc.append(ResModule(w[i - 1], w[i]))
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(len(w) - 1, 0, -1):
            self.ups.append(UpBlock(w[i], w[i - 1], config.downsample[i - 1]))
            self.dec.append(ResModule(w[i - 1], w[i - 1]))
        c = config.out_channels
        if config.output_1x1:
            self.output = nn.Sequential(_conv(w[0], w[0], _K5), _norm(w[0]), nn.ReLU(inplace=True),
                                        nn.Conv3d(w[0], c, kernel_size=1))
        else:
            self.output = _conv(w[0], c, _K5)

    # facts ------------------------------------------------------------------------------------
    @property
    def head_slices(self) -> dict[str, slice]:
        """``{head name: slice of output channels}``."""
        return self.config.head_slices

    @property
    def input_multiple(self) -> tuple[int, int, int]:
        """Each input side (z, y, x) must be a multiple of this."""
        return self.config.input_multiple

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_input(self, shape) -> None:
        """Raise InputError if a (B, C, z, y, x) shape does not fit the net."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != 5:
            raise InputError(f"RSUNet input must be (batch, channel, z, y, x), got shape {shape}")
        if shape[1] != self.config.in_channels:
            raise InputError(f"RSUNet input has {shape[1]} channels, the net expects {self.config.in_channels}")
        m = self.input_multiple
        if any(s % k for s, k in zip(shape[2:], m)):
            raise InputError(f"RSUNet input size {shape[2:]} (z, y, x) must be a multiple of {m} "
                             f"(the product of the down-sampling factors {self.config.downsample})")
        low = [s // k for s, k in zip(shape[2:], m)]
        if all(s == 1 for s in low):
            raise InputError(f"RSUNet input size {shape[2:]} (z, y, x) is too small: the coarsest level would be "
                             f"a single voxel (InstanceNorm needs more); use at least twice {m} on one axis")

    def forward(self, x):
        self.check_input(x.shape)
        x = self.input(x)
        skips = []
        for i, mod in enumerate(self.enc):
            if i > 0:
                x = self.pools[i - 1](x)
            x = mod(x)
            skips.append(x)
        for j, (up, mod) in enumerate(zip(self.ups, self.dec)):
            x = mod(up(x, skips[-2 - j]))
        return self.output(x)
