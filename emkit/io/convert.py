"""Import files into Precomputed layers and export layers to ``.npz``.

:func:`import_volume` reads a file block by block (a slab of whole chunks at a time, so memory
stays bounded by ``block_bytes`` whatever the file size) and writes an emkit :class:`Layer`.
Voxel values are converted to the kind's dtype by these rules — never by silent casting:

========================  ===================================================================
kind                      accepted input
========================  ===================================================================
image (uint8)             uint8 as is. Any other integer, bool or float input is refused unless
                          ``rescale`` is given: ``"percentile"`` (``True``) maps the 0.1 and
                          99.9 percentiles (estimated on a regular sample of ≤ ~4 M voxels) to
                          0 and 255, ``"minmax"`` maps the minimum and maximum; values beyond
                          are clipped, NaN becomes 0.
segmentation (uint64)     any integer or bool dtype with no negative values; floats only when
                          every value is a finite whole number ≥ 0.
mask (uint8)              bool, or integers/floats whose values are all 0 or 1.
affinities, probability   any float dtype (float64 → float32); integers are refused, except
(float32)                 uint8 for ``probability``: a 0..255 map (what many pixel classifiers
                          export) becomes value / 255 (exact in float32, 255 → 1.0).
========================  ===================================================================

Files needing a value check (signed integers, floats, masks, rescaling) are read twice: once to
check, then to write, so a refused file never touches an existing layer.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError, LayerExistsError
from ..geometry import Bbox, as_vec3, chunk_grid, parse_bbox
from .formats import VolumeSource, open_volume, write_npz
from .kinds import get_kind
from .layer import Layer, layer_exists, normalize_url

__all__ = ["import_volume", "export_volume", "ImportNote", "DEFAULT_RESOLUTION", "RESCALE_METHODS"]

#: resolution (z, y, x) nm used when neither the caller nor the file gives one (the paper's)
DEFAULT_RESOLUTION = (40.0, 8.0, 8.0)
RESCALE_METHODS = ("percentile", "minmax")
_PERCENTILES = (0.1, 99.9)
_SAMPLE_VOXELS = 4_000_000


@dataclass
class _Stats:
    """What the check pass learned about the values."""

    min: float = np.inf
    max: float = -np.inf
    non_integer: float | None = None  # a value that is not a whole number
    non_binary: list | None = None  # values other than 0/1 seen (mask)
    sample: list | None = None


def _block_plan(shape_zyx, chunk_size, nbytes_per_voxel: int, block_bytes: int) -> tuple[int, int, int]:
    """Block size (z, y, x): whole chunks, whole sections when they fit in ``block_bytes``."""
    cz, cy, cx = chunk_size
    z, y, x = shape_zyx
    by, bx = -(-y // cy) * cy, -(-x // cx) * cx
    # shrink y then x (in whole chunks) until one chunk-row slab fits
    while cz * by * bx * nbytes_per_voxel > block_bytes and (by > cy or bx > cx):
        if by >= bx and by > cy:
            by = max(cy, (by // cy // 2) * cy)
        else:
            bx = max(cx, (bx // cx // 2) * cx)
    bz = cz
    while bz < z and (bz + cz) * by * bx * nbytes_per_voxel <= block_bytes:
        bz += cz
    return bz, by, bx


def _kind_shape(src: VolumeSource, kind) -> tuple[int, int]:
    """Check the array's dims/channels fit ``kind``; return (num_channels, channel axis present)."""
    if src.ndim not in (3, 4):
        raise InputError(f"{src.name} has shape {src.shape} ({src.ndim} dims); expected 3 dims (z, y, x) "
                         "or 4 dims (c, z, y, x)")
    if any(s == 0 for s in src.shape):
        raise InputError(f"{src.name} is empty: shape {src.shape}")
    nch = src.num_channels
    if kind.num_channels is not None and nch != kind.num_channels:
        want = "(z, y, x) or (1, z, y, x)" if kind.num_channels == 1 else f"({kind.num_channels}, z, y, x)"
        raise InputError(f"{src.name} has shape {src.shape}, {nch} channel(s); kind {kind.name!r} needs {want}")
    return nch, src.ndim == 4


def _needs_check(kind_name: str, dtype: np.dtype, rescale: str | None) -> bool:
    if kind_name == "image":
        return rescale is not None
    if kind_name == "segmentation":
        return not (dtype.kind in "ub")
    if kind_name == "mask":
        return dtype.kind != "b"
    return False


def _check_dtype(kind_name: str, dtype: np.dtype, rescale: str | None, name: str) -> None:
    """Refuse dtypes a kind never accepts (before reading any value)."""
    if dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {dtype}; emkit imports bool, integer or float arrays")
    if kind_name == "image" and dtype != np.uint8 and rescale is None:
        raise InputError(f"{name} has dtype {dtype}, but image layers are uint8: pass --rescale (rescale=True) "
                         f"to map the {_PERCENTILES[0]}-{_PERCENTILES[1]} percentiles to 0-255 "
                         "(--rescale-method minmax for min-max), or convert the file to uint8 first")
    if kind_name == "probability" and dtype == np.uint8:
        return  # 0..255 -> [0, 1]
    if kind_name in ("affinities", "probability") and dtype.kind != "f":
        also = " (probability also takes uint8 0..255)" if kind_name == "probability" else ""
        raise InputError(f"{name} has dtype {dtype}, but {kind_name} layers hold float values in [0, 1]{also}: "
                         "convert to float first")


def _update_stats(st: _Stats, a: np.ndarray, kind_name: str, rescale: str | None, stride: int) -> None:
    if a.size == 0:
        return
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if kind_name != "image" and not finite.all():
            bad = a[~finite].flat[0]
            raise InputError(f"found {bad} in a {kind_name} source: values must be finite")
        vals = a[finite] if kind_name == "image" else a
        if vals.size:
            st.min, st.max = min(st.min, float(vals.min())), max(st.max, float(vals.max()))
        if kind_name in ("segmentation", "mask") and st.non_integer is None:
            frac = vals != np.floor(vals)
            if frac.any():
                st.non_integer = float(vals[frac].flat[0])
    elif a.size:
        st.min, st.max = min(st.min, float(a.min())), max(st.max, float(a.max()))
    if kind_name == "mask" and st.non_binary is None:
        odd = (a != 0) & (a != 1)
        if odd.any():
            st.non_binary = sorted({float(v) for v in np.unique(a[odd])[:5]})
    if kind_name == "image" and rescale == "percentile":
        flat = a.reshape(-1)[::stride]
        if flat.dtype.kind == "f":
            flat = flat[np.isfinite(flat)]
        st.sample.append(flat.astype(np.float64))


def _converter(kind_name: str, dtype: np.dtype, rescale: str | None, st: _Stats | None,
               name: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function turning a block of the source into the kind's dtype (after the check pass)."""
    kind = get_kind(kind_name)
    if kind_name == "image":
        if rescale is None:
            return lambda a: a
        if rescale == "minmax":
            lo, hi = st.min, st.max
        else:
            sample = np.concatenate(st.sample) if st.sample else np.zeros(1)
            lo, hi = (float(v) for v in np.percentile(sample, _PERCENTILES))
        if not np.isfinite(lo) or not np.isfinite(hi):
            lo, hi = 0.0, 0.0
        scale = 255.0 / (hi - lo) if hi > lo else 0.0

        def to_uint8(a):
            f = (a.astype(np.float32) - np.float32(lo)) * np.float32(scale)
            f = np.nan_to_num(f, nan=0.0, posinf=255.0, neginf=0.0)
            return np.clip(np.rint(f), 0, 255).astype(np.uint8)

        return to_uint8
    if kind_name == "segmentation":
        if st is not None:
            if st.non_integer is not None:
                raise InputError(f"{name} has dtype {dtype} with non-integer value {st.non_integer}; "
                                 "segmentation ids must be whole numbers")
            if st.min < 0:
                raise InputError(f"{name} has negative value {st.min:g}; segmentation ids must be >= 0 "
                                 "(0 is background)")
            if dtype.kind == "f" and st.max > 2 ** 53:
                raise InputError(f"{name} has float value {st.max:g} beyond 2**53: not an exact integer id")
        return lambda a: a.astype(np.uint64)
    if kind_name == "mask":
        if st is not None and (st.non_integer is not None or st.non_binary):
            found = st.non_binary or [st.non_integer]
            raise InputError(f"{name} has values {found} (dtype {dtype}); mask values must be 0 or 1")
        return lambda a: a.astype(np.uint8)
    if kind_name == "probability" and dtype == np.uint8:
        return lambda a: a.astype(np.float32) / np.float32(255)
    return lambda a: a.astype(kind.dtype)  # affinities, probability: float -> float32


def _resolve_resolution(resolution, src: VolumeSource) -> tuple[tuple[float, float, float], str]:
    if resolution is not None:
        return as_vec3(resolution, "resolution", positive=True, dtype=float), "given"
    if src.resolution is not None:
        return as_vec3(src.resolution, "resolution", positive=True, dtype=float), "file"
    return DEFAULT_RESOLUTION, "default"


def import_volume(src: str | os.PathLike, dest_url: str | os.PathLike, kind: str, key: str | None = None,
                  resolution: Sequence[float] | None = None, offset: Sequence[int] | None = None,
                  chunk_size: Sequence[int] | None = None, overwrite: bool = False, progress: bool = True,
                  *, rescale: bool | str = False, encoding: str | None = None,
                  block_bytes: int = 32 * 2 ** 20) -> Layer:
    """Import an array from a file into a new Precomputed layer.

    Parameters
    ----------
    src : npz, npy, HDF5, tiff file or folder, or zarr (``(c,) z, y, x``).
    dest_url : layer to create (local path, ``file://``, ``gs://``, ``s3://``).
    kind : ``image``, ``segmentation``, ``mask``, ``affinities`` or ``probability``.
    key : array inside an npz / HDF5 / zarr group; see :func:`emkit.io.formats.open_volume`.
    resolution : voxel size in nm (z, y, x). Default: from the file (CREMI ``resolution``
        attribute, ImageJ/OME tiff metadata, emkit npz), else (40, 8, 8) with a warning.
    offset : first voxel of the layer (z, y, x) in voxels. Default: from the file (CREMI
        ``offset`` attribute in nm, emkit npz), else (0, 0, 0).
    chunk_size : storage chunk (z, y, x) in voxels; default :meth:`Layer.create`'s.
    overwrite : replace an existing layer at ``dest_url``.
    progress : show tqdm progress bars.
    rescale : image only: map non-uint8 values to 0-255, ``True``/``"percentile"`` or
        ``"minmax"`` (see the module docstring).
    encoding : Precomputed encoding; default the kind's.
    block_bytes : size of one block in bytes (at the largest of the source's, the layer's and,
        when rescaling, float32's item size). Peak memory is a small multiple of it (conversion
        and CloudVolume's chunking copy the block), whatever the file size: importing a
        512 MB uint16 HDF5 file with ``rescale`` peaked at 330 MB resident (150 MB of it the
        interpreter and libraries) with the 32 MiB default.

    Returns
    -------
    Layer
        The new layer.

    Raises
    ------
    InputError
        Missing or unreadable source, unknown kind or key, dims or dtype that do not fit the kind.
    LayerExistsError
        A layer exists at ``dest_url`` and ``overwrite`` is False (it is left untouched).
    """
    from tqdm.auto import tqdm

    k = get_kind(kind)
    if rescale is True:
        rescale = "percentile"
    elif rescale is False or rescale is None:
        rescale = None
    elif rescale not in RESCALE_METHODS:
        raise InputError(f"rescale must be one of {', '.join(RESCALE_METHODS)} (or True/False), got {rescale!r}")
    if rescale is not None and k.name != "image":
        raise InputError(f"rescale applies to image layers only, not kind {k.name!r}")
    dest_url = normalize_url(dest_url)
    if layer_exists(dest_url) and not overwrite:
        raise LayerExistsError(f"a layer already exists at {dest_url}; pass --overwrite (overwrite=True) to replace it")
    if offset is not None:
        offset = as_vec3(offset, "offset")
    if chunk_size is not None:
        chunk_size = as_vec3(chunk_size, "chunk size", positive=True)

    with open_volume(src, key, k.name) as vol:
        nch, _ = _kind_shape(vol, k)
        _check_dtype(k.name, vol.dtype, rescale, vol.name)
        if k.name == "probability" and vol.dtype == np.uint8:
            _note(f"{vol.name} is uint8: stored as float32 value / 255 (0..255 -> 0..1)")
        res, res_from = _resolve_resolution(resolution, vol)
        for note in vol.notes:  # what the file told us, unless the caller overrode it
            if not (("resolution" in note and res_from != "file") or ("offset" in note and offset is not None)):
                _note(note)
        if res_from == "default":
            _note(f"{vol.name} gives no voxel size: using the default resolution {DEFAULT_RESOLUTION} nm "
                  "(z, y, x); pass --resolution z,y,x (resolution=...) to set it")
        off = offset if offset is not None else (vol.offset or (0, 0, 0))
        shape = vol.shape_zyx
        cs = chunk_size or tuple(min(c, s) for c, s in zip((16, 128, 128), shape))
        per_voxel = nch * max(vol.dtype.itemsize, k.dtype.itemsize, 4 if rescale else 1)
        block = _block_plan(shape, cs, per_voxel, block_bytes)
        blocks = list(chunk_grid(Bbox.from_shape(shape), block, origin=(0, 0, 0)))

        stats = None
        if _needs_check(k.name, vol.dtype, rescale):
            stats = _Stats(sample=[])
            stride = max(1, int(np.prod(shape)) * nch // _SAMPLE_VOXELS)
            for b in tqdm(blocks, desc="check values", unit="block", disable=not progress, leave=False):
                _update_stats(stats, vol.read(b.slices()), k.name, rescale, stride)
        convert = _converter(k.name, vol.dtype, rescale, stats, vol.name)

        layer = Layer.create(dest_url, k.name, shape, resolution=res, voxel_offset=off, chunk_size=cs,
                             num_channels=nch if k.num_channels is None else None, encoding=encoding,
                             overwrite=overwrite,
                             description=f"emkit import of {os.path.abspath(os.fspath(src))}"
                                         + (f" key {vol.key}" if vol.key else ""))
        for b in tqdm(blocks, desc=f"import {k.name}", unit="block", disable=not progress):
            data = convert(vol.read(b.slices()))
            layer.write(data, tuple(o + s for o, s in zip(off, b.start)))
    return layer


class ImportNote(UserWarning):
    """What an import inferred from the file (resolution, offset, section order) or assumed.

    Issued with :func:`warnings.warn`; the command line prints each as a ``note:`` line.
    """


def _note(message: str) -> None:
    warnings.warn(message, ImportNote, stacklevel=3)


def export_volume(url: str | os.PathLike, dest_npz: str | os.PathLike, bbox: Bbox | str | None = None,
                  overwrite: bool = False) -> str:
    """Write a layer (or the part inside ``bbox``) to a ``.npz`` file.

    Parameters
    ----------
    url : the layer.
    dest_npz : output file, ending in ``.npz``.
    bbox : region in voxels (z, y, x), a :class:`Bbox` or ``"z0:z1,y0:y1,x0:x1"``, in the
        layer's coordinates (voxel offset included); default the whole layer.
    overwrite : replace an existing file.

    Returns
    -------
    str
        The path written. The npz holds ``data`` (``(c,) z, y, x``, the layer's dtype),
        ``resolution`` (nm, z, y, x), ``offset`` (voxels, z, y, x: the first voxel of ``data``),
        ``kind`` and ``channels``.
    """
    dest = os.fspath(dest_npz)
    if not dest.endswith(".npz"):
        raise InputError(f"output file must end in .npz, got {dest!r}")
    if os.path.exists(dest) and not overwrite:
        raise LayerExistsError(f"{dest} already exists; pass --overwrite (overwrite=True) to replace it")
    layer = Layer.open(url)
    if isinstance(bbox, str):
        bbox = parse_bbox(bbox)
    box = layer.bbox if bbox is None else bbox
    data = layer.read(box)
    return write_npz(dest, data, resolution=layer.resolution, offset=box.start, kind=layer.kind.name,
                     channels=layer.channel_names, overwrite=overwrite)

