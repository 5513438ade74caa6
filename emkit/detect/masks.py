"""Input and output masks of the boundary net (paper, Methods, *Segmentation masks*).

* Input mask: slips (from the misalignment maps, :mod:`emkit.detect.misalignment`) plus the
  folds, cracks and resin of ``defect_masks`` (the phantom's truth, or a detector's output).
* Output mask: every location masked in the input mask for ``consecutive`` (paper: three)
  consecutive sections — all sections of such a run — plus, with
  ``MisalignmentParams.output_steps`` (the paper's rule; not emkit's default, see there), steps.

Both are uint8 (z, y, x), 1 = masked, on the image's grid: what ``emkit infer --mask-in`` /
``--mask-out`` take (as mask layers on the image's grid). Slip and step locations come from the
patch grid of the maps (see :func:`emkit.detect.misalignment.misalignment_maps`) and are
repeated over the image pixels each patch covers; a step masks section z of the pair
(z - 1, z), like the phantom's ``step`` mask; a slip masks the slipped section.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .misalignment import (MisalignmentParams, _check_image, _params, classify_regions, misalignment_maps,
                           upsample_patches)

__all__ = ["segmentation_masks", "segmentation_masks_layers", "consecutive_runs", "true_segmentation_masks",
           "slip_interpolated_truth"]


def consecutive_runs(mask: np.ndarray, n: int) -> np.ndarray:
    """bool (z, y, x): True at every section of a run of at least ``n`` consecutive sections
    where ``mask`` is nonzero (at the same y, x)."""
    m = np.asarray(mask) != 0
    out = np.zeros(m.shape, bool)
    nz = m.shape[0]
    if n < 1 or nz < n:
        return out
    start = m[: nz - n + 1].copy()
    for j in range(1, n):                                   # n is small (3): loop over offsets
        start &= m[j: nz - n + 1 + j]
    for j in range(n):
        out[j: nz - n + 1 + j] |= start
    return out


def segmentation_masks(image, params: MisalignmentParams | None = None, defect_masks: dict | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Input and output masks of boundary detection for ``image``.

    Parameters
    ----------
    image : uint8 (0-255) or float (0-1) array (z, y, x).
    params : :class:`MisalignmentParams` (maps, threshold, ``input_defects``, ``consecutive``).
    defect_masks : ``{kind: array (z, y, x)}``, nonzero = defect, on the image's grid; the kinds
        in ``params.input_defects`` (fold, crack, resin) go into the input mask, other kinds are
        ignored. E.g. ``phantom.masks`` or a detector's output.

    Returns
    -------
    (mask_in, mask_out) : uint8 (z, y, x), 1 = masked.

    Raises
    ------
    InputError : bad image, bad params, a defect mask of another shape.
    """
    p = _params(params)
    image = _check_image(image)
    if defect_masks is not None and not isinstance(defect_masks, dict):
        raise InputError(f"defect_masks must be a dict {{kind: mask (z, y, x)}}, got {type(defect_masks).__name__}")
    return _masks_from_maps(misalignment_maps(image, p), image.shape, p, defect_masks)


def _masks_from_maps(maps, shape, p: MisalignmentParams, defect_masks) -> tuple[np.ndarray, np.ndarray]:
    slip, step = classify_regions(maps, p)
    mask_in = upsample_patches(slip, shape, p).astype(np.uint8)
    for kind in p.input_defects:
        m = (defect_masks or {}).get(kind)
        if m is None:
            continue
        m = np.asarray(m)
        if m.shape != tuple(shape):
            raise InputError(f"defect mask {kind!r} has shape {m.shape}; the image has shape {tuple(shape)}")
        mask_in |= (m != 0).astype(np.uint8)
    mask_out = consecutive_runs(mask_in, p.consecutive)
    if p.output_steps:
        mask_out |= upsample_patches(step, shape, p)
    return mask_in, mask_out.astype(np.uint8)


def true_segmentation_masks(phantom, params: MisalignmentParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The masks :func:`segmentation_masks` should find, from a phantom's truth (same rules).

    Input mask: the phantom's ``slip`` sections and the kinds in ``params.input_defects`` (fold,
    crack, resin); output mask: locations masked in the input for ``params.consecutive``
    sections, plus the ``step`` sections when ``params.output_steps``.

    Parameters
    ----------
    phantom : :class:`emkit.phantom.Phantom` (its ``masks`` are in the image frame).
    params : :class:`MisalignmentParams` (default: emkit's defaults).

    Returns
    -------
    (mask_in, mask_out) : uint8 (z, y, x), 1 = masked.
    """
    p = _params(params)
    masks = getattr(phantom, "masks", None)
    if not isinstance(masks, dict):
        raise InputError(f"expected a phantom (with a dict of masks), got {type(phantom).__name__}")
    shape = tuple(phantom.shape)
    mask_in = np.zeros(shape, np.uint8)
    for kind in ("slip", *p.input_defects):
        if kind in masks:
            mask_in |= (np.asarray(masks[kind]) != 0).astype(np.uint8)
    mask_out = consecutive_runs(mask_in, p.consecutive)
    if p.output_steps and "step" in masks:
        mask_out |= np.asarray(masks["step"]) != 0
    return mask_in, mask_out.astype(np.uint8)


def slip_interpolated_truth(phantom) -> np.ndarray:
    """A phantom's segmentation in the image frame, except on slip sections, which keep the
    displacement of the section before (after, for a slip at z = 0): what a masked segmentation
    should be scored against.

    The input mask blanks a slipped section and the boundary net fills it in from its neighbours
    (the paper's *slip interpolation*: emkit's boundary net is trained on exactly this target,
    see :mod:`emkit.train.sampler`), so the segmentation of a slip section follows its
    neighbours, not the slipped image. Scoring it against the slipped truth counts every object
    of the section as displaced, masked or not.

    Returns
    -------
    uint64 (z, y, x) like ``phantom.in_image_frame(phantom.segmentation)``.
    """
    from ..defects import warp

    d = np.array(phantom.displacement, np.float32, copy=True)
    slips = sorted(int(z) for z in phantom.defect_sections.get("slip", []))
    for z in slips:
        nb = z - 1 if z > 0 else z + 1
        if 0 <= nb < d.shape[1] and nb not in slips:
            d[:, z] = d[:, nb]
    return warp(phantom.segmentation, d, order=0)


# --------------------------------------------------------------------------------------------
def _halo(p: MisalignmentParams) -> tuple[int, int, int]:
    """Context (z, y, x image voxels) a chunk needs so that its masks equal the whole volume's.

    z: the output mask at z needs the input mask at z ± (consecutive - 1); a slip at s needs
    sections s - 1..s + 1 (and s - 1 inside the block), a step at z needs z - 2..z + 1: so
    ``max(consecutive, 2) + 1`` sections. y/x: a slip at a patch needs the slips of
    ``slip_fill_radius`` patches around it, a smoothed map ``smooth_radius`` patches around it
    and each patch the high-pass filter's reach (its Gaussian radius in working px), rounded up
    to whole patches so the block stays on the volume's patch grid.
    """
    ext = p.patch_px * p.downsample
    reach = int(4.0 * float(p.highpass_sigma_px) + 0.5)                 # scipy's Gaussian radius
    patches = p.smooth_radius + -(-reach // p.patch_px) + p.slip_fill_radius
    return (max(p.consecutive, 2) + 1, patches * ext, patches * ext)


class _MasksTask:
    """Chunk task: masks of ``chunk`` from the image (and defect masks) over ``read_bbox``."""

    def __init__(self, image_url, in_url, out_url, defect_urls, params, maps_url=None):
        self.image_url, self.in_url, self.out_url = image_url, in_url, out_url
        self.defect_urls, self.params, self.maps_url = dict(defect_urls), params, maps_url

    def __call__(self, chunk, read_bbox) -> None:
        from ..io.layer import Layer

        layer = Layer.open(self.image_url)
        image = _check_image(layer.read(read_bbox))
        defects = {k: Layer.open(u).read(read_bbox) for k, u in self.defect_urls.items()}
        maps = misalignment_maps(image, self.params)
        m_in, m_out = _masks_from_maps(maps, image.shape, self.params, defects or None)
        sl = chunk.slices(read_bbox.start)
        Layer.open(self.in_url).write(np.ascontiguousarray(m_in[sl]), chunk.start)
        Layer.open(self.out_url).write(np.ascontiguousarray(m_out[sl]), chunk.start)
        if self.maps_url:
            ext = self.params.patch_px * self.params.downsample
            rel = [a - r for a, r in zip(chunk.start, read_bbox.start)]
            n = [chunk.stop[0] - chunk.start[0]] + [-(-(b - a) // ext) for a, b in zip(chunk.start[1:], chunk.stop[1:])]
            py, px = rel[1] // ext, rel[2] // ext
            part = maps[:, rel[0]:rel[0] + n[0], py:py + n[1], px:px + n[2]]
            o = layer.voxel_offset
            start = (chunk.start[0], (chunk.start[1] - o[1]) // ext + o[1] // ext, (chunk.start[2] - o[2]) // ext + o[2] // ext)
            Layer.open(self.maps_url).write(np.ascontiguousarray(part, dtype=np.float32), start)


def segmentation_masks_layers(image_url, out_dir, *, chunk_size=None, params: MisalignmentParams | None = None,
                              defect_mask_urls: dict | None = None, workers: int | None = 0, client=None,
                              scheduler: str | None = None, overwrite: bool = False, retries: int = 3,
                              progress: bool = False, maps: bool = False) -> tuple[str, ...]:
    """Chunked :func:`segmentation_masks`: write ``out_dir/mask_in`` and ``out_dir/mask_out``.

    Parameters
    ----------
    image_url : image layer (uint8, z, y, x).
    out_dir : folder (or URL) for the two mask layers (kind ``mask``, uint8, 1 = masked, on the
        image's grid and storage chunks: what ``emkit infer --mask-in/--mask-out`` take).
    chunk_size : task chunk (z, y, x image voxels): a multiple of the image's storage chunk, and
        y/x multiples of the patch extent (``patch_px * downsample``); default the whole volume
        rounded up to the storage chunk (one task).
    params : :class:`MisalignmentParams`; default ``MisalignmentParams.for_resolution`` of the
        image's x resolution (``downsample`` 8 at 8 nm, 16 at 4 nm).
    defect_mask_urls : ``{kind: mask layer URL}`` on the image's grid (kinds in
        ``params.input_defects`` are used).
    workers, client, scheduler, retries, progress : as :func:`emkit.runtime.map_chunks`
        (default serial).
    overwrite : replace existing mask layers.
    maps : also write the misalignment maps as ``out_dir/maps``: a ``probability`` layer of K
        channels (``distance_1`` … ``distance_K``: correlation of section z with z - k, NaN = no
        answer) on the patch grid — resolution ``patch_extent`` times the image's in y/x, voxel
        offset the image's divided by it (which must then divide the image's y/x offset).

    Each task reads its chunk plus a halo (see :func:`_halo`) and computes the masks there, so
    the layers equal :func:`segmentation_masks` of the whole volume, whatever the chunking.

    Returns
    -------
    (mask_in_url, mask_out_url), plus maps_url when ``maps``.

    Raises
    ------
    InputError : not an image layer, defect mask not a mask layer on the image's grid, chunk size
        not aligned. LayerExistsError : an output exists without ``overwrite``.
    """
    from ..geometry import as_vec3
    from ..io.grid import check_same_grid
    from ..io.layer import Layer, join_url, normalize_url
    from ..runtime import check_aligned, map_chunks

    image = Layer.open(image_url)
    if image.kind.name != "image":
        raise InputError(f"{image.url} is a {image.kind.name} layer; expected an image layer (uint8)")
    # a layer knows its pixel size: by default patches are correlated at about 64 nm per pixel
    p = MisalignmentParams.for_resolution(image.resolution[2]) if params is None else _params(params)
    if image.num_channels != 1:
        raise InputError(f"{image.url} has {image.num_channels} channels; misalignment maps need one")
    urls = {}
    for kind, url in (defect_mask_urls or {}).items():
        if kind not in p.input_defects:
            continue
        m = Layer.open(url)
        if m.kind.name != "mask":
            raise InputError(f"defect mask {kind!r} {m.url} is a {m.kind.name} layer; expected a mask layer")
        check_same_grid(image, m, what=f"defect mask {kind!r}")
        urls[kind] = m.url
    ext = p.patch_px * p.downsample
    if chunk_size is None:
        chunk_size = tuple(-(-n // c) * c for n, c in zip(image.size, image.chunk_size))
    chunk_size = as_vec3(chunk_size, "chunk size", positive=True)
    check_aligned(image.bbox, chunk_size, image.chunk_size, image.bbox, what="masks")
    bad = [f"{ax}: {c}" for ax, c, n in zip("yx", chunk_size[1:], image.size[1:]) if c % ext and c < n]
    if bad:
        raise InputError(f"chunk size {tuple(chunk_size)} must be a multiple of the patch extent {ext} px "
                         f"(patch_px * downsample) in y and x ({'; '.join(bad)})")
    out_dir = normalize_url(out_dir)
    in_url, out_url = join_url(out_dir, "mask_in"), join_url(out_dir, "mask_out")
    if image.url.rstrip("/") in (in_url.rstrip("/"), out_url.rstrip("/")):
        raise InputError(f"output {out_dir} would overwrite the image; give another folder")
    for url, what in ((in_url, "input"), (out_url, "output")):
        Layer.create(url, "mask", image.size, resolution=image.resolution, voxel_offset=image.voxel_offset,
                     chunk_size=image.chunk_size, overwrite=overwrite,
                     description=f"emkit {what} mask of boundary detection (slips/steps, paper Methods "
                                 f"'Segmentation masks') for {image.url}")
    maps_url = None
    halo = _halo(p)
    if maps:
        off = image.voxel_offset
        if off[1] % ext or off[2] % ext:
            raise InputError(f"the maps layer needs the image's y/x voxel offset {off[1:]} to be a multiple of the "
                             f"patch extent {ext} px (patch_px * downsample)")
        maps_url = join_url(out_dir, "maps")
        msize = (image.size[0], -(-image.size[1] // ext), -(-image.size[2] // ext))
        mchunk = (image.chunk_size[0], min(msize[1], -(-chunk_size[1] // ext)), min(msize[2], -(-chunk_size[2] // ext)))
        Layer.create(maps_url, "probability", msize, resolution=(image.resolution[0], image.resolution[1] * ext,
                                                                 image.resolution[2] * ext),
                     voxel_offset=(off[0], off[1] // ext, off[2] // ext), chunk_size=mchunk,
                     num_channels=p.max_distance, channel_names=[f"distance_{k}" for k in range(1, p.max_distance + 1)],
                     overwrite=overwrite,
                     description=f"emkit misalignment maps (correlation of section z with z - k) of {image.url}")
        halo = (max(halo[0], p.max_distance), *halo[1:])
    task = _MasksTask(image.url, in_url, out_url, urls, p, maps_url)
    map_chunks(task, image.bbox, chunk_size, halo=halo, origin=image.bbox.start, clip=image.bbox,
               client=client, scheduler=scheduler, workers=workers, retries=retries, progress=progress,
               desc="masks")
    return (in_url, out_url, maps_url) if maps else (in_url, out_url)
