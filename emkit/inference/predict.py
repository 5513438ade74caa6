"""Inference over an array: overlapping patches, batched through the net, blended seamlessly.

:func:`predict` is the array form (notebooks, tests); :func:`predict_box` computes the output of
one box of a volume from the volume's *global* patch grid (see :mod:`emkit.inference.blend`) and
is what both :func:`predict` and the chunked layer form (:mod:`emkit.inference.chunked`) run, so
the two agree exactly.

The net follows emkit's model interface: ``model(x)`` takes float32 ``(B, in_channels, z, y, x)``
in [0, 1] and returns logits ``(B, C, z, y, x)`` of the same spatial size; ``model.head_slices``
names the channels of each head; ``model.input_multiple`` (z, y, x) divides valid input sizes;
``model.config.patch_size`` / ``model.config.resolution`` (z, y, x, voxels / nm) say how it was
trained. Every head is a sigmoid head, so outputs are ``sigmoid(logits)`` in [0, 1].
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..errors import InputError
from ..geometry import Bbox, as_vec3
from .blend import PatchGrid
from .resample import (MAX_DOWNSAMPLE, RESOLUTION_TOLERANCE, Resampling, block_mean, coarse_box, plan_resampling,
                       upsample_linear)

__all__ = ["predict", "predict_box", "predict_box_resampled", "channel_names", "select_heads", "default_heads",
           "output_kind", "check_resolution", "model_resolution", "model_patch_size", "model_input_multiple",
           "resolve_device", "normalize_image", "DEFAULT_OVERLAP"]

DEFAULT_OVERLAP = 0.25  # fraction of the patch shared with each neighbour (z, y, x)

# names of the semantic net's channels: design.md labels 1..5 (0, background, has no channel)
SEMANTIC_CLASSES = ("soma", "axon", "dendrite", "glia", "vessel")


# ---- the model's facts ---------------------------------------------------------------------------
def _config(model):
    return getattr(model, "config", None)


def model_patch_size(model) -> tuple[int, int, int]:
    """The patch (z, y, x) the net was trained on (``model.config.patch_size``)."""
    ps = getattr(_config(model), "patch_size", None)
    if ps is None:
        raise InputError("the model has no config.patch_size; pass patch_size=(z, y, x)")
    return as_vec3(ps, "model patch size", positive=True)


def model_input_multiple(model) -> tuple[int, int, int]:
    """What input sizes (z, y, x) must be a multiple of (``model.input_multiple``; default 1)."""
    return as_vec3(getattr(model, "input_multiple", (1, 1, 1)), "model input multiple", positive=True)


def _in_channels(model) -> int:
    n = getattr(model, "in_channels", None)
    if n is None:
        n = getattr(_config(model), "in_channels", 1)
    return int(n)


def _head_slices(model) -> dict[str, slice]:
    hs = getattr(model, "head_slices", None)
    if not hs:
        raise InputError("the model has no head_slices (dict of head name -> channel slice)")
    return dict(hs)


def default_heads(model) -> list[str]:
    """Heads written when none are asked for: the ``affinity`` head alone when the net has a
    3-channel one (boundary nets: their long-range and other heads are auxiliary training targets,
    paper, Methods: Boundary detection), else every head in the model's order (semantic nets)."""
    hs = _head_slices(model)
    aff = hs.get("affinity")
    if aff is not None and len(range(*aff.indices(10**9))) == 3:
        return ["affinity"]
    return list(hs)


def select_heads(model, heads: Sequence[str] | str | None = None) -> tuple[list[str], list[int]]:
    """The heads asked for and their channel indices.

    ``heads`` may be a list of names, one comma-separated string (``"affinity,myelin"``),
    ``"all"`` (every head, in the model's order) or None: :func:`default_heads` (the affinity
    head of a boundary net, every head of other nets).
    """
    hs = _head_slices(model)
    if heads is None:
        names = default_heads(model)
    elif isinstance(heads, str) and heads.strip() == "all":
        names = list(hs)
    else:
        names = [h.strip() for h in heads.split(",")] if isinstance(heads, str) else [str(h) for h in heads]
        names = [h for h in names if h]
        unknown = [h for h in names if h not in hs]
        if unknown or not names:
            raise InputError(f"unknown head(s) {unknown or names!r}; the model has: {', '.join(hs)} (or 'all')")
        if len(set(names)) != len(names):
            raise InputError(f"head named twice in {names!r}")
    channels = []
    for h in names:
        channels.extend(range(*hs[h].indices(10**9)))
    return names, channels


def channel_names(model, heads: Sequence[str] | str | None = None) -> list[str]:
    """Names of the output channels for ``heads``: ``affinity_z, affinity_y, affinity_x``,
    ``semantic_soma … semantic_vessel``, ``myelin``, ``long_range_0 …``."""
    hs = _head_slices(model)
    names, _ = select_heads(model, heads)
    out = []
    for h in names:
        n = len(range(*hs[h].indices(10**9)))
        if n == 1:
            out.append(h)
        elif h == "affinity" and n == 3:
            out.extend(f"affinity_{a}" for a in "zyx")
        elif h == "semantic" and n == len(SEMANTIC_CLASSES):
            out.extend(f"semantic_{c}" for c in SEMANTIC_CLASSES)
        else:
            out.extend(f"{h}_{i}" for i in range(n))
    return out


def output_kind(model, heads: Sequence[str] | str | None = None) -> str:
    """``affinities`` when only the 3-channel affinity head is asked for, else ``probability``."""
    names, channels = select_heads(model, heads)
    return "affinities" if names == ["affinity"] and len(channels) == 3 else "probability"


def model_resolution(model):
    """The net's training voxel size (z, y, x nm, ``model.config.resolution``), or None."""
    mres = getattr(_config(model), "resolution", None)
    return None if mres is None else as_vec3(mres, "model resolution", positive=True, dtype=float)


def check_resolution(model, resolution, *, tolerance: float = RESOLUTION_TOLERANCE,
                     max_downsample: int = MAX_DOWNSAMPLE, what: str = "the image", hint: str = "") -> Resampling:
    """How an image of voxel size ``resolution`` (z, y, x nm) is brought to the net's training
    resolution: :func:`emkit.inference.resample.plan_resampling` (whole-factor averaging up to
    ``max_downsample`` per axis, then within ``tolerance``; refuses otherwise, warns above 10 %).
    Identity when the model records no resolution or ``resolution`` is None."""
    if resolution is None:
        return Resampling((1.0, 1.0, 1.0), None, (1, 1, 1))
    return plan_resampling(model_resolution(model), resolution, tolerance=tolerance, max_downsample=max_downsample,
                           what=what, hint=hint)


def resolve_device(device=None):
    """A ``torch.device``: the one given, else CUDA when available, else CPU."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use cpu")
    return dev


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Image voxels as float32 in [0, 1]: uint8 through ``emkit.nets.normalize`` (the helper
    training uses), floats as they are."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        try:
            from ..nets import normalize
        except ImportError:  # emkit.nets not installed/built: the same rule, /255
            return image.astype(np.float32) / np.float32(255)
        return np.asarray(normalize(image), dtype=np.float32)
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32, copy=False)
    raise InputError(f"image dtype {image.dtype} not supported: expected uint8 (0..255) or float in [0, 1]")


# ---- the core: one box of a volume -----------------------------------------------------------------
def predict_box(
    model,
    read: Callable[[Bbox], np.ndarray],
    grid: PatchGrid,
    box: Bbox,
    *,
    channels: Sequence[int] | None = None,
    batch_size: int = 1,
    device=None,
    mask_out: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Blended net output over ``box`` of a volume, from the volume's global patch grid.

    Parameters
    ----------
    model : the net (eval mode, on ``device``).
    read : ``read(bbox) -> float32 (in_channels, z, y, x)``: the net's input (normalised, input
        mask applied) over ``bbox``, a box inside the volume (voxels from the volume's start).
    grid : the volume's :class:`PatchGrid`.
    box : output box (voxels from the volume's start, z, y, x), inside the volume.
    channels : output channels to keep (default: all).
    batch_size : patches per forward pass.
    device : torch device the model is on.
    mask_out : optional array of ``box.shape``; outputs are set to 0 where it is nonzero.
    progress : progress bar over batches.

    Returns
    -------
    float32 array ``(C, z, y, x)`` of ``box.shape``: sigmoid of the logits, blended.
    """
    import torch
    from tqdm.auto import tqdm

    batch_size = int(batch_size)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    patches = grid.patches(box)
    ibox = grid.input_box(box)
    x = read(ibox)
    cin = x.shape[0]
    P = grid.patch
    w = grid.weight()
    idx = None if channels is None else torch.as_tensor(list(channels), dtype=torch.long, device=device)
    acc = wsum = None
    buf = np.zeros((min(batch_size, len(patches)), cin, *P), dtype=np.float32)
    nb = -(-len(patches) // batch_size)
    with torch.inference_mode():
        for b in tqdm(range(nb), desc="patches", unit="batch", disable=not progress, leave=False):
            batch = patches[b * batch_size:(b + 1) * batch_size]
            arr = buf[:len(batch)]
            for i, p in enumerate(batch):
                src = p.intersect(ibox)
                if src.shape != P:  # only on axes shorter than the patch: zeros beyond the volume
                    arr[i] = 0
                arr[i][(slice(None), *src.slices(p.start))] = x[(slice(None), *src.slices(ibox.start))]
            y = model(torch.from_numpy(arr).to(device))
            if y.ndim != 5 or y.shape[0] != len(batch) or tuple(y.shape[2:]) != tuple(P):
                raise InputError(f"the model returned shape {tuple(y.shape)} for input {tuple(arr.shape)}; "
                                 "expected (B, C, z, y, x) of the input's spatial size")
            if idx is not None:
                y = y.index_select(1, idx)
            y = torch.sigmoid(y.float()).cpu().numpy()
            if acc is None:
                acc = np.zeros((y.shape[1], *box.shape), dtype=np.float32)
                wsum = np.zeros(box.shape, dtype=np.float32)
            for i, p in enumerate(batch):  # grid order: every voxel sums its patches in the same order
                ov = p.intersect(box)
                ws = w[ov.slices(p.start)]
                acc[(slice(None), *ov.slices(box.start))] += y[i][(slice(None), *ov.slices(p.start))] * ws
                wsum[ov.slices(box.start)] += ws
    acc /= wsum
    if mask_out is not None:
        acc[:, np.asarray(mask_out) != 0] = 0
    return acc


def predict_box_resampled(
    model,
    read: Callable[[Bbox], np.ndarray],
    grid: PatchGrid,
    box: Bbox,
    factors=(1, 1, 1),
    shape=None,
    *,
    channels: Sequence[int] | None = None,
    batch_size: int = 1,
    device=None,
    mask_out: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """:func:`predict_box` on a grid coarsened by ``factors``, returned on the image's grid.

    ``read(bbox)`` and ``box`` are in image voxels (from the volume's start); ``shape`` is the
    image volume's (z, y, x); ``grid`` is the patch grid of the *coarse* volume
    (``ceil(shape / factors)``). The net's input is the image averaged over blocks of ``factors``
    (:func:`emkit.inference.resample.block_mean`); its outputs are interpolated linearly back
    onto ``box`` (:func:`emkit.inference.resample.upsample_linear`); ``mask_out`` (``box.shape``)
    zeroes outputs on the image's grid. With factors (1, 1, 1) this is :func:`predict_box`.
    """
    factors = tuple(int(f) for f in factors)
    if factors == (1, 1, 1):
        return predict_box(model, read, grid, box, channels=channels, batch_size=batch_size, device=device,
                           mask_out=mask_out, progress=progress)
    shape = as_vec3(shape, "image shape", positive=True)
    vol = Bbox.from_shape(shape)

    def read_coarse(cb: Bbox) -> np.ndarray:
        ib = Bbox(tuple(a * f for a, f in zip(cb.start, factors)),
                  tuple(b * f for b, f in zip(cb.stop, factors))).intersect(vol)
        return block_mean(read(ib), factors)

    cbox = coarse_box(box, factors, grid.shape)
    y = predict_box(model, read_coarse, grid, cbox, channels=channels, batch_size=batch_size, device=device,
                    progress=progress)
    out = upsample_linear(y, factors, cbox.start, box, grid.shape)
    if mask_out is not None:
        out[:, np.asarray(mask_out) != 0] = 0
    return out


# ---- array form ------------------------------------------------------------------------------------
def _resolve_model(model, resolution, *, max_downsample, tolerance):
    """A model object for ``model`` (an object as is; a family name, shipped name or path loaded)."""
    import os

    if not isinstance(model, (str, os.PathLike)):
        return model
    from .chunked import _model_ref, load_model_cached
    from .models import choose_model, is_family_name

    if is_family_name(model) and resolution is not None:
        _, path, _ = choose_model(os.fspath(model), as_vec3(resolution, "resolution", positive=True, dtype=float),
                                  tolerance=tolerance, max_downsample=max_downsample)
        return load_model_cached(path, "cpu")
    return load_model_cached(_model_ref(model), "cpu")


def _as_input(image, cin: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and cin == 1:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != cin:
        raise InputError(f"image of shape {image.shape} does not fit a net with {cin} input channel(s): "
                         f"expected (z, y, x){' or (1, z, y, x)' if cin == 1 else f' ({cin}, z, y, x)'}")
    if min(image.shape[1:]) < 1:
        raise InputError(f"image of shape {image.shape} is empty")
    return image


def _check_mask(mask, shape, what: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise InputError(f"{what} of shape {mask.shape} does not match the image's (z, y, x) shape {tuple(shape)}")
    return mask


class _Prepared:
    """Model moved to the device and put in eval mode for the duration of a ``with`` block."""

    def __init__(self, model, device):
        self.model, self.device = model, device

    def __enter__(self):
        self.training = getattr(self.model, "training", False)
        self.model.to(self.device)
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.training)


def predict(
    model,
    image: np.ndarray,
    *,
    patch_size=None,
    overlap=DEFAULT_OVERLAP,
    batch_size: int = 4,
    device=None,
    mask_in: np.ndarray | None = None,
    mask_out: np.ndarray | None = None,
    heads: Sequence[str] | str | None = None,
    chunk_size=None,
    resolution=None,
    max_downsample: int = MAX_DOWNSAMPLE,
    resolution_tolerance: float = RESOLUTION_TOLERANCE,
    progress: bool = True,
) -> np.ndarray:
    """Run the net over a whole image with overlapping, blended patches.

    Parameters
    ----------
    model : a net following emkit's model interface (``emkit.nets.RSUNet`` or alike), or a name:
        a shipped family (``"boundary"``, ``"semantic"``, ``"cleft"``: with ``resolution`` the
        shipped model of that family nearest it, see :func:`emkit.inference.choose_model`; without,
        the model named so), a full shipped name or a checkpoint path. ``predict(image, "cleft",
        resolution=...)`` (image first) is accepted too.
    image : ``(z, y, x)`` uint8 (normalised by ``emkit.nets.normalize``) or float in [0, 1];
        ``(c, z, y, x)`` for nets with several input channels.
    patch_size : patch (z, y, x) voxels of the grid the net runs on (the image's, or the averaged
        one when ``resolution`` asks for resampling); default the net's training patch
        (``config.patch_size``). Must be a multiple of ``model.input_multiple``; shrinks on axes
        where the image is smaller.
    overlap : overlap of neighbouring patches: a fraction of the patch (float in [0, 1), scalar or
        z, y, x) or voxels (ints). Default 0.25.
    batch_size : patches per forward pass (does not change the result).
    device : ``"cpu"``, ``"cuda"``, … ; default CUDA when available, else CPU. The model is moved
        there (and put in eval mode while predicting; its mode is restored after).
    mask_in : ``(z, y, x)``; where nonzero (1 = defect), the net is fed 0 instead of the image
        (applied on the image's grid, before any averaging).
    mask_out : ``(z, y, x)``; where nonzero (1 = defect), all outputs are set to 0.
    heads : heads to output (names, ``"affinity,myelin"`` or ``"all"``); default
        :func:`default_heads`: the affinity head of a boundary net, every head of other nets.
    chunk_size : compute in chunks of this size (z, y, x) to bound memory; the result is the same
        (the patch grid is global, see :mod:`emkit.inference.blend`).
    resolution : the image's voxel size (z, y, x nm). When given and the net was trained at
        another, the image is averaged by whole factors per axis to the net's resolution and the
        outputs interpolated back (:mod:`emkit.inference.resample`; the rule and its limits
        ``max_downsample`` and ``resolution_tolerance`` are documented there). Default None: the
        net runs on the image's grid, unchecked.
    progress : progress bar.

    Returns
    -------
    float32 ``(C, z, y, x)`` on the image's grid: sigmoid outputs in [0, 1] of the asked heads,
    channels in head order (see :func:`channel_names`).
    """
    if isinstance(model, np.ndarray) and not isinstance(image, np.ndarray):
        model, image = image, model  # predict(image, "cleft", ...)
    model = _resolve_model(model, resolution, max_downsample=max_downsample, tolerance=resolution_tolerance)
    cin = _in_channels(model)
    x = _as_input(image, cin)
    shape = x.shape[1:]
    mask_in = _check_mask(mask_in, shape, "mask_in")
    mask_out = _check_mask(mask_out, shape, "mask_out")
    plan = check_resolution(model, resolution, tolerance=resolution_tolerance, max_downsample=max_downsample)
    patch = model_patch_size(model) if patch_size is None else as_vec3(patch_size, "patch size", positive=True)
    grid = PatchGrid(plan.net_shape(shape), patch, overlap, model_input_multiple(model))
    _, channels = select_heads(model, heads)
    device = resolve_device(device)

    def read(bbox: Bbox) -> np.ndarray:
        sl = bbox.slices()
        out = normalize_image(x[(slice(None), *sl)])
        if mask_in is not None:
            out = np.where(mask_in[sl][None] != 0, np.float32(0), out)
        return out

    vol = Bbox.from_shape(shape)
    boxes = [vol] if chunk_size is None else None
    if boxes is None:
        from ..geometry import chunk_grid

        boxes = list(chunk_grid(vol, chunk_size))
    out = np.empty((len(channels), *shape), dtype=np.float32)
    with _Prepared(model, device) as m:
        for box in boxes:
            mo = None if mask_out is None else mask_out[box.slices()]
            out[(slice(None), *box.slices())] = predict_box_resampled(
                m, read, grid, box, plan.factors, shape, channels=channels, batch_size=batch_size, device=device,
                mask_out=mo, progress=progress and len(boxes) == 1)
    return out
