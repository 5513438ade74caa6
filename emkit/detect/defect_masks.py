"""Fold, crack and resin masks from an image with the defect net (paper, Methods, *Fold & crack
detection*, *Resin detection*).

How the net is run
------------------
* Two passes of the same 2D U-Net (:mod:`emkit.detect.unet2d`), section by section: folds and
  cracks on the image averaged to about ``working_nm`` per pixel (paper: 64 nm; emkit 16 nm,
  see below), resin on the image averaged to about ``resin_working_nm`` (paper: 2048 nm; emkit
  32 nm). The averaging factor is a whole number per axis, ``max(1, round(working nm / image
  nm))``; when both passes get the same factor one pass serves all three channels.
* Why one net at two pixel sizes rather than a second resin net: resin (tissue-free areas) is
  large and blob-like and needs context more than detail, so a coarser image suits it, as in the
  paper; training the one net on samples at both pixel sizes (:mod:`emkit.detect.train`) costs
  one training run instead of two on emkit's shared CPU, and the resin pass costs a quarter of
  the fold pass.
* Why 16 and 32 nm instead of the paper's 64 and 2048 nm: the paper's folds are microns wide and
  its resin areas tens of microns; the phantom's (and emkit's simulated) folds and cracks are
  32-96 nm bands and its resin areas 160-480 nm across (``emkit.defects.DefectSpec`` at 8 nm),
  which would vanish at the paper's pixel sizes. The ratio of pixel size to defect size is about
  the paper's for folds.
* Tiling (paper: chunks of 2048 × 2048 px with 50 % overlap): each section is cut into tiles of
  ``tile_px`` working pixels (default the net's 256 px field of view) at a stride of half a tile,
  on a grid anchored at the volume's first voxel; each tile contributes its central half
  (``tile_px / 2`` squared), so every working pixel is predicted by exactly one tile with a
  quarter tile of context on each side. Beyond the volume's edge the net sees the section
  mirrored or zeros, per kind (``DefectParams.padding``; a kind with another padding is a separate
  run of the net).
* Per tile, the probabilities of working pixels without data (all zero) are set to 0, and regions
  above the threshold smaller than ``DefectParams.min_size`` are dropped (optionally after
  averaging over flips of the tile, ``DefectParams.flips``).
* The probabilities are repeated back to the image's pixels (nearest neighbour) and thresholded
  (per kind, ``DefectParams.threshold``).

Because every output pixel depends only on its tile, which is fixed by the grid, the chunked form
(:func:`detect_defects_layers`) equals the array form (:func:`detect_defects`) for any chunking
whose y/x sizes are whole output blocks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .unet2d import DEFECT_CHANNELS

__all__ = ["DefectParams", "detect_defects", "detect_defects_layers", "defect_probabilities", "predicted_masks",
           "predicted_mask_layers", "block_px"]

RUN_NAME = "detect"


def _per_kind(value, name, check) -> tuple:
    """A number or ``{kind: number}`` (kinds missing from the mapping keep ``default``) → sorted
    ((kind, value), ...) over every kind."""
    if isinstance(value, (dict, tuple, list)):
        d = dict(value.items() if isinstance(value, dict) else value)
        bad = [k for k in d if k not in DEFECT_CHANNELS]
        if bad:
            raise InputError(f"{name} must be a number or map fold/crack/resin to numbers; got kinds {bad!r}")
        missing = [k for k in DEFECT_CHANNELS if k not in d]
        if missing:
            raise InputError(f"{name} must give a value for every kind (fold, crack, resin); missing {missing!r}")
    else:
        d = {k: value for k in DEFECT_CHANNELS}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not check(v):
            raise InputError(f"{name} for {k} is out of range: {v!r}")
    return tuple(sorted(d.items()))


#: Per-kind thresholds and component sizes of the shipped net, chosen on the validation phantom
#: (seed 1999, 24 × 256 × 256, every defect kind; never the test seeds) — see emkit/models/defects.json.
SHIPPED_THRESHOLD = (("crack", 0.8), ("fold", 0.4), ("resin", 0.7))
SHIPPED_MIN_SIZE = (("crack", 50), ("fold", 200), ("resin", 50))


@dataclass(frozen=True)
class DefectParams:
    """Parameters of defect detection.

    threshold : a pixel is a defect where the net's probability exceeds this: one number for all
        kinds or ``{kind: number}`` (default: per kind, chosen for the shipped net on the
        validation phantom, :data:`SHIPPED_THRESHOLD`; the paper gives none).
    min_size : per tile, connected regions (8-connected, working pixels) of probability above the
        threshold smaller than this many working pixels are dropped (their probability set to 0);
        one number or ``{kind: number}``; 0 keeps everything. Default :data:`SHIPPED_MIN_SIZE`
        (chosen with the thresholds: the net's false alarms are small specks, true folds and cracks
        are lines across the field). Sizes are measured inside the tile (the net's field of view,
        context included), so each output pixel still depends on its tile alone and the chunked
        form equals the array form. Not in the paper.
    flips : test-time augmentation: average the probabilities over this many of the 8 in-plane
        flips/transposes of each tile (1, 2, 4 or 8; 1 = none; time grows in proportion). Not in
        the paper.
    tile_px : tile side in working pixels; default (None) the net's field of view (paper: 256 px).
        Tiles overlap by half (paper: 50 %). A multiple of twice the net's input multiple (32).
    channels : which defects to detect (default all three: fold, crack, resin).
    padding : per kind, what the net sees beyond the volume's edge: ``"reflect"`` (the section
        mirrored, as training samples smaller than a crop were) or ``"zero"`` (emkit's "no data").
        Chosen per kind on the validation phantom (seed 1999, 24 × 256 × 256, every defect kind)
        for the first shipped net (iteration 700): with mirroring its fold IoU fell from 0.40 to
        0.07 (a membrane mirrored at the edge reads as a dark band), with zeros its crack IoU from
        0.63 to 0.13 (the tissue/zero edge reads as a crack); resin 0.71 vs 0.68. Not in the paper
        (its chunks lie inside a section far larger than a tile).

    Working pixels without data (all zero, e.g. a missing tile or the border a slip uncovers) are
    never a defect (probability 0), as in training.
    """

    threshold: float | dict | tuple = SHIPPED_THRESHOLD
    tile_px: int | None = None
    channels: tuple = DEFECT_CHANNELS
    padding: tuple = (("fold", "zero"), ("crack", "reflect"), ("resin", "reflect"))
    min_size: int | dict | tuple = SHIPPED_MIN_SIZE
    flips: int = 1

    def __post_init__(self):
        object.__setattr__(self, "threshold", _per_kind(self.threshold, "threshold", lambda v: 0 < v < 1))
        object.__setattr__(self, "min_size", tuple((k, int(v)) for k, v in _per_kind(
            self.min_size, "min_size", lambda v: v >= 0 and float(v) == int(v))))
        if self.flips not in (1, 2, 4, 8):
            raise InputError(f"flips must be 1, 2, 4 or 8, got {self.flips!r}")
        ch = tuple(self.channels)
        bad = [c for c in ch if c not in DEFECT_CHANNELS]
        if bad or not ch:
            raise InputError(f"channels must be among {', '.join(DEFECT_CHANNELS)}; got {ch!r}")
        object.__setattr__(self, "channels", ch)
        pad = dict(self.padding.items() if isinstance(self.padding, dict) else self.padding)
        bad = {k: v for k, v in pad.items() if k not in DEFECT_CHANNELS or v not in ("zero", "reflect")}
        if bad:
            raise InputError(f"padding must map fold/crack/resin to 'zero' or 'reflect'; got {bad!r}")
        object.__setattr__(self, "padding", tuple(sorted(pad.items())))
        if self.tile_px is not None and int(self.tile_px) < 1:
            raise InputError(f"tile_px must be positive, got {self.tile_px}")

    def threshold_of(self, kind: str) -> float:
        return float(dict(self.threshold)[kind])

    def min_size_of(self, kind: str) -> int:
        return int(dict(self.min_size)[kind])


def _params(p) -> DefectParams:
    if p is None:
        return DefectParams()
    if isinstance(p, dict):
        return DefectParams(**p)
    if not isinstance(p, DefectParams):
        raise InputError(f"params must be DefectParams (or a dict of its fields), got {type(p).__name__}")
    return p


def _tile(model, p: DefectParams) -> int:
    cfg = model.config
    t = int(p.tile_px or cfg.field_of_view)
    if t % (2 * cfg.multiple):
        raise InputError(f"tile_px {t} must be a multiple of {2 * cfg.multiple} for this net (tiles overlap by half)")
    return t


def _factors(resolution, nm) -> tuple[int, int]:
    return tuple(max(1, int(round(nm / float(r)))) for r in resolution[1:])


def _passes(model, resolution, p: DefectParams) -> list[tuple[tuple[int, int], str, tuple[str, ...]]]:
    """[(factors (fy, fx), padding, channels)] — the fold/crack pass and the resin pass, split by
    padding (one net run per entry)."""
    cfg = model.config
    fine, coarse = _factors(resolution, cfg.working_nm), _factors(resolution, cfg.resin_working_nm)
    pad = dict(p.padding)
    groups: dict = {}
    for c in p.channels:
        f = coarse if c == "resin" else fine
        groups.setdefault((f, pad.get(c, "reflect")), []).append(c)
    return [(f, mode, tuple(ch)) for (f, mode), ch in groups.items()]


def block_px(model, resolution, params=None) -> tuple[int, int]:
    """Side (y, x image pixels) of the output block of one tile of the coarsest pass: chunk y/x
    sizes must be multiples of the least common multiple over passes (see :func:`_chunk_multiple`)."""
    p = _params(params)
    t = _tile(model, p)
    m = [1, 1]
    for (fy, fx), _, _ in _passes(model, resolution, p):
        m = [math.lcm(m[0], fy * t // 2), math.lcm(m[1], fx * t // 2)]
    return tuple(m)


def _area_mean(sec, fy, fx):
    """Mean of fy × fx blocks of (z, y, x), the end padded by edge replication to whole blocks."""
    v = np.asarray(sec, dtype=np.float32)
    if fy == fx == 1:
        return v
    ny, nx = v.shape[-2:]
    py, px = (-ny) % fy, (-nx) % fx
    if py or px:
        v = np.pad(v, ((0, 0), (0, py), (0, px)), mode="edge")
    return v.reshape(v.shape[0], v.shape[1] // fy, fy, v.shape[2] // fx, fx).mean(axis=(2, 4))


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Indices ``i`` (any integers) mirrored into 0..n-1 like numpy's ``reflect`` padding."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i < n, i, period - i)


#: The 8 in-plane flips/transposes as (transpose, flip y, flip x), identity first; ``flips=n``
#: averages the first n (2: + x flip; 4: + y flips; 8: + transposes).
_DIHEDRAL = ((False, False, False), (False, False, True), (False, True, False), (False, True, True),
             (True, False, False), (True, False, True), (True, True, False), (True, True, True))


def _predict_tile(model, tile_img, idx, flips, device):
    """Probabilities (len(idx), ty, tx) of one tile, averaged over ``flips`` flips/transposes."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(tile_img))[None, None].to(device)
    acc = None
    for tr, fy, fx in _DIHEDRAL[:flips]:
        xi = x
        dims = [d for d, on in ((2, fy), (3, fx)) if on]
        if tr:
            xi = xi.transpose(2, 3)
        if dims:
            xi = xi.flip(dims)
        yi = torch.sigmoid(model(xi))
        if dims:
            yi = yi.flip(dims)
        if tr:
            yi = yi.transpose(2, 3)
        acc = yi if acc is None else acc + yi
    return (acc / flips)[0, idx].cpu().numpy()


def _clean_tile(prob, tile_img, channels, p):
    """Zero the probabilities of no-data working pixels and of regions above threshold smaller than
    the kind's ``min_size`` (see :class:`DefectParams`). In place; returns ``prob``."""
    from scipy.ndimage import label

    prob[:, tile_img == 0] = 0.0
    eight = np.ones((3, 3), bool)
    for i, c in enumerate(channels):
        ms = p.min_size_of(c)
        if ms <= 1:
            continue
        lab, n = label(prob[i] > p.threshold_of(c), structure=eight)
        if n:
            small = np.bincount(lab.ravel()) < ms
            small[0] = False
            prob[i][small[lab]] = 0.0
    return prob


def _run_pass(model, region, region_start, vol_size, f, channels, tile, out_start, out_stop, padding="reflect",
              device="cpu", params=None):
    """Probabilities (len(channels), z, oy, ox) of image pixels [out_start, out_stop) (y, x,
    volume coordinates; out_start a multiple of the pass's block) from ``region`` (image float
    0-1, z, y, x), which covers image pixels [region_start, region_start + shape) clipped to the
    volume of y/x size ``vol_size``."""
    import torch

    p = _params(params)
    fy, fx = f
    h = tile // 2
    q = h // 2
    idx = [model.config.channels.index(c) for c in channels]
    # working grid: the region is trimmed to start on a working-pixel boundary (the chunk origin
    # is a multiple of the block; the halo is more than the tiles' context plus one working pixel)
    ky, kx = (-region_start[0]) % fy, (-region_start[1]) % fx     # start on this pass's working grid
    region, region_start = region[:, ky:, kx:], (region_start[0] + ky, region_start[1] + kx)
    w = _area_mean(region, fy, fx)
    w0 = (region_start[0] // fy, region_start[1] // fx)
    nw = (-(-vol_size[0] // fy), -(-vol_size[1] // fx))
    b0 = (out_start[0] // (fy * h), out_start[1] // (fx * h))
    b1 = (-(-out_stop[0] // (fy * h)), -(-out_stop[1] // (fx * h)))
    # working canvas over [b0*h - q, b1*h + q): outside the volume the section is mirrored at its
    # edge (numpy's "reflect"; repeated for pads longer than the section), as in training
    c0 = (b0[0] * h - q, b0[1] * h - q)
    cs = ((b1[0] - b0[0]) * h + 2 * q, (b1[1] - b0[1]) * h + 2 * q)
    jy = _reflect(np.arange(c0[0], c0[0] + cs[0]), nw[0]) - w0[0]
    jx = _reflect(np.arange(c0[1], c0[1] + cs[1]), nw[1]) - w0[1]
    if jy.min() < 0 or jx.min() < 0 or jy.max() >= w.shape[1] or jx.max() >= w.shape[2]:
        raise InputError("internal: the region read does not cover the tiles' context")
    canvas = w[:, jy][:, :, jx]
    if padding == "zero":
        iy, ix = np.arange(c0[0], c0[0] + cs[0]), np.arange(c0[1], c0[1] + cs[1])
        canvas[:, (iy < 0) | (iy >= nw[0]), :] = 0.0
        canvas[:, :, (ix < 0) | (ix >= nw[1])] = 0.0
    prob = np.zeros((len(idx), w.shape[0], cs[0] - 2 * q, cs[1] - 2 * q), np.float32)
    with torch.no_grad():
        for z in range(w.shape[0]):
            for by in range(b1[0] - b0[0]):
                for bx in range(b1[1] - b0[1]):
                    t = canvas[z, by * h:by * h + tile, bx * h:bx * h + tile]
                    if not t.any():
                        continue                                     # no data: no defect (0 probability)
                    y = _clean_tile(_predict_tile(model, t, idx, p.flips, device), t, channels, p)
                    prob[:, z, by * h:(by + 1) * h, bx * h:(bx + 1) * h] = y[:, q:q + h, q:q + h]
    # back to image pixels (nearest) over [b0 * block, ...), then the wanted window
    up = prob.repeat(fy, axis=2).repeat(fx, axis=3)
    oy, ox = out_start[0] - b0[0] * fy * h, out_start[1] - b0[1] * fx * h
    return up[:, :, oy:oy + out_stop[0] - out_start[0], ox:ox + out_stop[1] - out_start[1]]


def _as_float(image):
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"defect detection needs an image of 3 dimensions (z, y, x), got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if np.issubdtype(image.dtype, np.floating):
        if image.size and (np.nanmin(image) < 0 or np.nanmax(image) > 1):
            raise InputError("a float image must hold intensities in [0, 1]")
        return image.astype(np.float32)
    raise InputError(f"defect detection needs a uint8 (0-255) or float (0-1) image, got dtype {image.dtype}")


def _check_resolution(resolution):
    from ..geometry import as_vec3

    return tuple(float(r) for r in as_vec3(resolution, "resolution", positive=True, dtype=float))


def _load(model):
    import torch

    from .unet2d import load_unet2d

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return load_unet2d(model)


def defect_probabilities(image, *, resolution, model="defects", params=None, threads: int | None = None) -> dict:
    """The net's probabilities ``{channel: float32 (z, y, x)}`` on the image's grid (see the
    module docstring for the passes and tiling). Arguments as :func:`detect_defects`."""
    import torch

    img = _as_float(image)
    res = _check_resolution(resolution)
    p = _params(params)
    net = _load(model)
    if threads:
        torch.set_num_threads(int(threads))
    tile = _tile(net, p)
    out = {}
    for f, mode, chans in _passes(net, res, p):
        pr = _run_pass(net, img, (0, 0), img.shape[1:], f, chans, tile, (0, 0), img.shape[1:], mode, params=p)
        out.update({c: pr[i] for i, c in enumerate(chans)})
    return {c: out[c] for c in p.channels}


def detect_defects(image, *, resolution, model="defects", params: DefectParams | dict | None = None,
                   threads: int | None = None) -> dict:
    """Fold, crack and resin masks of ``image``.

    Parameters
    ----------
    image : uint8 (0-255) or float (0-1) array (z, y, x); sections are processed independently.
    resolution : (z, y, x) nm per voxel (the in-plane size chooses the averaging, see the module
        docstring).
    model : ``"defects"`` (the shipped net), a checkpoint path, or a loaded net.
    params : :class:`DefectParams` (threshold, tile size, channels).
    threads : torch CPU threads (default: torch's current setting).

    Returns
    -------
    ``{"fold": bool (z, y, x), "crack": ..., "resin": ...}`` (the channels of ``params``) on the
    image's grid.

    Raises
    ------
    InputError : not a 3D uint8/float image, bad resolution or params, no such model.
    """
    p = _params(params)
    probs = defect_probabilities(image, resolution=resolution, model=model, params=p, threads=threads)
    return {c: v > p.threshold_of(c) for c, v in probs.items()}


def predicted_masks(image, resolution, *, model="defects", params=None, misalignment_params=None):
    """Input and output masks of boundary detection from the image alone: detected folds, cracks
    and resin (:func:`detect_defects`) plus slips (and steps, with
    ``MisalignmentParams.output_steps``) from the misalignment maps
    (:func:`emkit.detect.segmentation_masks`).

    Returns
    -------
    (mask_in, mask_out, defects) : uint8 (z, y, x) masks (1 = masked) and the detected
        ``{kind: bool (z, y, x)}``.
    """
    from .masks import segmentation_masks
    from .misalignment import MisalignmentParams

    defects = detect_defects(image, resolution=resolution, model=model, params=params)
    mp = misalignment_params or MisalignmentParams.for_resolution(_check_resolution(resolution)[2])
    m_in, m_out = segmentation_masks(image, mp, defect_masks=defects)
    return m_in, m_out, defects


# --------------------------------------------------------------------------------------------
class _DetectTask:
    """Chunk task: defect masks of ``chunk`` (reads ``read_bbox``: the chunk plus the tiles' context)."""

    def __init__(self, image_url, out_urls, model, params, threads=None):
        self.image_url, self.out_urls, self.model, self.params = image_url, dict(out_urls), model, params
        self.threads = threads
        self._net = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_net"] = None
        return d

    def __call__(self, chunk, read_bbox) -> None:
        import torch

        from ..io.layer import Layer

        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self._net is None:
            self._net = _load(self.model)
        layer = Layer.open(self.image_url)
        img = _as_float(layer.read(read_bbox))
        o = layer.voxel_offset
        vol = tuple(layer.size[1:])
        rs = (read_bbox.start[1] - o[1], read_bbox.start[2] - o[2])
        cs = (chunk.start[1] - o[1], chunk.start[2] - o[2])
        ce = (chunk.stop[1] - o[1], chunk.stop[2] - o[2])
        z0 = chunk.start[0] - read_bbox.start[0]
        img = img[z0:z0 + chunk.stop[0] - chunk.start[0]]
        res = tuple(layer.resolution)
        p = self.params
        tile = _tile(self._net, p)
        for f, mode, chans in _passes(self._net, res, p):
            pr = _run_pass(self._net, img, rs, vol, f, chans, tile, cs, ce, mode, params=p)
            for i, c in enumerate(chans):
                Layer.open(self.out_urls[c]).write(np.ascontiguousarray((pr[i] > p.threshold_of(c)).astype(np.uint8)),
                                                   chunk.start)


def detect_defects_layers(image_url, out_dir, *, model="defects", params: DefectParams | dict | None = None,
                          chunk_size=None, workers: int | None = 0, client=None, scheduler: str | None = None,
                          overwrite: bool = False, retries: int = 3, progress: bool = False,
                          threads: int | None = None) -> dict:
    """Chunked :func:`detect_defects`: write ``out_dir/masks/fold``, ``masks/crack`` and
    ``masks/resin`` (mask layers, uint8, 1 = defect, on the image's grid and storage chunks —
    what ``emkit masks --defects OUT_DIR`` and ``--defect KIND=URL`` take).

    Parameters
    ----------
    image_url : image layer (uint8, one channel, z, y, x).
    out_dir : folder (or URL) for the mask layers.
    model, params : as :func:`detect_defects`.
    chunk_size : task chunk (z, y, x image voxels): whole storage chunks; y/x multiples of
        :func:`block_px` (one tile's output block of every pass) unless they span the volume.
        Default: a storage chunk of sections, the whole section in y/x.
    workers, client, scheduler, retries, progress : as :func:`emkit.runtime.map_chunks`
        (default serial, in this process).
    overwrite : replace existing mask layers. Without it an interrupted run with the same
        parameters resumes (finished chunks are skipped); other existing layers are refused.
    threads : torch threads per task.

    Returns
    -------
    ``{kind: mask layer URL}``.

    Raises
    ------
    InputError : not a one-channel image layer, chunk size not aligned, bad params.
    LayerExistsError : outputs exist (and are not a resumable run of the same parameters).
    """
    from ..errors import LayerExistsError
    from ..geometry import as_vec3
    from ..io.layer import Layer, join_url, layer_exists, normalize_url
    from ..runtime import Markers, check_aligned, map_chunks, markers_url

    image = Layer.open(image_url)
    if image.kind.name != "image":
        raise InputError(f"{image.url} is a {image.kind.name} layer; expected an image layer (uint8)")
    if image.num_channels != 1:
        raise InputError(f"{image.url} has {image.num_channels} channels; defect detection needs one")
    p = _params(params)
    net = _load(model)
    block = block_px(net, image.resolution, p)
    if chunk_size is None:
        chunk_size = (image.chunk_size[0], *(-(-n // c) * c for n, c in zip(image.size[1:], image.chunk_size[1:])))
    chunk_size = as_vec3(chunk_size, "chunk size", positive=True)
    check_aligned(image.bbox, chunk_size, image.chunk_size, image.bbox, what="defect detection")
    bad = [f"{ax}: {c}" for ax, c, b, n in zip("yx", chunk_size[1:], block, image.size[1:]) if c % b and c < n]
    if bad:
        raise InputError(f"chunk size {tuple(chunk_size)} must be a multiple of {block} px in y, x (one tile's "
                         f"output block of each pass; or span the volume) ({'; '.join(bad)})")
    out_dir = normalize_url(out_dir)
    urls = {c: join_url(out_dir, "masks", c) for c in p.channels}
    if image.url.rstrip("/") in {u.rstrip("/") for u in urls.values()}:
        raise InputError(f"output {out_dir} would overwrite the image; give another folder")
    model_id = str(model) if isinstance(model, str) else getattr(net, "extra", {}).get("command", "model object")
    run_params = {"image": image.url, "model": model_id, "threshold": dict(p.threshold), "min_size": dict(p.min_size),
                  "flips": p.flips, "tile_px": _tile(net, p),
                  "channels": list(p.channels), "padding": dict(p.padding), "chunk_size_zyx": [int(c) for c in chunk_size]}
    markers = Markers(markers_url(urls[p.channels[0]], RUN_NAME))
    existing = [u for u in urls.values() if layer_exists(u)]
    if existing and not overwrite:
        if markers.params() is None or len(existing) != len(urls):
            raise LayerExistsError(f"a layer already exists at {existing[0]}; pass overwrite=True (--overwrite) to "
                                   "replace it")
        try:
            markers.bind(run_params)
        except InputError as exc:
            raise LayerExistsError(f"{out_dir} holds an interrupted detection with other parameters ({exc}); rerun "
                                   "with the same parameters to resume, or pass overwrite=True") from None
    else:
        for c, url in urls.items():
            Layer.create(url, "mask", image.size, resolution=image.resolution, voxel_offset=image.voxel_offset,
                         chunk_size=image.chunk_size, overwrite=overwrite,
                         description=f"emkit detect: {c} (defect net, paper Methods 'Fold & crack detection' / "
                                     f"'Resin detection') of {image.url}")
        markers.reset()
        markers.bind(run_params)
    # context: a quarter tile of the coarsest pass on each side, plus rounding to its working grid
    t = _tile(net, p)
    halo_yx = [0, 0]
    for f, _, _ in _passes(net, image.resolution, p):
        for i in range(2):
            halo_yx[i] = max(halo_yx[i], f[i] * (t // 4) + f[i] * (t // 2))
    task = _DetectTask(image.url, urls, model if isinstance(model, str) else net, p, threads)
    map_chunks(task, image.bbox, chunk_size, halo=(0, *halo_yx), origin=image.bbox.start, clip=image.bbox,
               markers=markers, client=client, scheduler=scheduler, workers=workers, retries=retries,
               progress=progress, desc="detect")
    return urls


def predicted_mask_layers(image_url, out_dir, *, model="defects", params=None, misalignment_params=None,
                          workers: int | None = 0, client=None, scheduler: str | None = None, overwrite: bool = False,
                          progress: bool = False) -> tuple[str, str]:
    """Layer form of :func:`predicted_masks`: detect folds, cracks and resin into
    ``out_dir/defects_found/masks/*`` (:func:`detect_defects_layers`), then write the boundary
    net's masks into ``out_dir/masks_found/mask_in`` and ``mask_out``
    (:func:`emkit.detect.segmentation_masks_layers` with the detected defects) — what
    ``emkit detect IMAGE OUT_DIR/defects_found`` followed by ``emkit masks IMAGE OUT_DIR/masks_found
    --defects OUT_DIR/defects_found`` write. Returns (mask_in_url, mask_out_url) for
    :func:`emkit.inference.infer_layers` (``mask_in_url=``, ``mask_out_url=``)."""
    from ..io.layer import join_url, normalize_url
    from .masks import segmentation_masks_layers

    base = normalize_url(out_dir)
    found = detect_defects_layers(image_url, join_url(base, "defects_found"), model=model, params=params,
                                  workers=workers, client=client, scheduler=scheduler, overwrite=overwrite,
                                  progress=progress)
    urls = segmentation_masks_layers(image_url, join_url(base, "masks_found"), params=misalignment_params,
                                     defect_mask_urls=found, workers=workers, client=client, scheduler=scheduler,
                                     overwrite=overwrite, progress=progress)
    return urls[0], urls[1]
