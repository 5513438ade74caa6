"""Volumes in common files: ``.npz``, ``.npy``, HDF5 (incl. CREMI), tiff stacks and zarr.

Arrays in files are ``(c,) z, y, x`` (C order). :func:`open_volume` opens one array lazily as a
:class:`VolumeSource` whose :meth:`VolumeSource.read` returns a block, so large files are read
slab by slab (h5py and zarr slice on disk, uncompressed tiffs and ``.npy`` are memory-mapped,
compressed tiffs are decoded page by page). :func:`write_npz` writes the ``.npz`` that
``emkit export`` produces.

Supported sources
-----------------
- ``.npy`` : one array (memory-mapped).
- ``.npz`` : one or more arrays; an emkit export (``data`` + ``resolution``, ``offset``, ``kind``)
  is recognised and its resolution and offset are used.
- HDF5 (``.h5``, ``.hdf5``, ``.hdf``, ``.cremi``) : any dataset by ``key`` (``volumes/raw``);
  the CREMI layout is recognised (``volumes/raw``, ``volumes/labels/neuron_ids``,
  ``volumes/labels/clefts``, ``resolution`` attribute in nm (z, y, x) and ``offset`` in nm).
- tiff : a multi-page file (pages are z) or a folder of single-page files sorted naturally
  (``2.tif`` before ``10.tif``). ImageJ and OME-TIFF voxel sizes are read when present.
- zarr (v2 or v3) : an array, or a group whose arrays are picked by ``key``; ``resolution`` /
  ``offset`` attributes (nm, z, y, x) and OME-Zarr ``multiscales`` (level 0) are understood.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError, LayerExistsError

__all__ = ["VolumeSource", "ArrayInfo", "detect_format", "list_arrays", "open_volume", "read_volume",
           "write_npz", "natural_key", "CREMI_KEYS"]

#: arrays the CREMI layout uses for each kind (picked when no key is given)
CREMI_KEYS = {"image": "volumes/raw", "segmentation": "volumes/labels/neuron_ids"}
#: small metadata arrays in an emkit ``.npz`` export, never volumes
_NPZ_META = ("resolution", "offset", "kind", "channels")
_TIFF_EXT = (".tif", ".tiff")
_H5_EXT = (".h5", ".hdf5", ".hdf", ".cremi", ".he5")
_UNIT_NM = {"nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "um": 1e3, "µm": 1e3, "\u00b5m": 1e3, "micron": 1e3,
            "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3, "mm": 1e6, "millimeter": 1e6, "angstrom": 0.1,
            "å": 0.1}


@dataclass(frozen=True)
class ArrayInfo:
    """An array found in a file: its key (path inside the file), shape and dtype."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{self.key} {tuple(self.shape)} {np.dtype(self.dtype).name}"


@dataclass
class VolumeSource:
    """One array in a file, read lazily.

    Attributes
    ----------
    path : the file (or folder) it comes from.
    key : the array's name inside the file (None for single-array formats).
    format : ``npy``, ``npz``, ``hdf5``, ``tiff``, ``tiff-folder`` or ``zarr``.
    shape : ``(z, y, x)`` or ``(c, z, y, x)`` as stored.
    dtype : numpy dtype as stored.
    resolution : voxel size in nm (z, y, x) from the file's metadata, or None.
    offset : first voxel (z, y, x) in voxels from the file's metadata, or None.
    notes : what was inferred from the file (to show the user).
    """

    path: str
    key: str | None
    format: str
    shape: tuple[int, ...]
    dtype: np.dtype
    _reader: Callable[[tuple[slice, slice, slice]], np.ndarray] = field(repr=False)
    resolution: tuple[float, float, float] | None = None
    offset: tuple[int, int, int] | None = None
    notes: list[str] = field(default_factory=list)
    _closer: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Spatial shape (z, y, x)."""
        return tuple(int(s) for s in self.shape[-3:])

    @property
    def num_channels(self) -> int:
        return int(self.shape[0]) if self.ndim == 4 else 1

    @property
    def name(self) -> str:
        return self.path if self.key is None else f"{self.path}:{self.key}"

    def read(self, zyx: Sequence[slice] | None = None) -> np.ndarray:
        """Read the block ``zyx`` (three slices, z, y, x; default: everything) as numpy.

        The channel axis, if any, is always read whole: the result is ``(c, z, y, x)`` or
        ``(z, y, x)`` like the stored array.
        """
        if zyx is None:
            zyx = tuple(slice(0, s) for s in self.shape_zyx)
        zyx = tuple(slice(*s.indices(n)[:2]) for s, n in zip(zyx, self.shape_zyx))
        return np.asarray(self._reader(zyx))

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> "VolumeSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# helpers ----------------------------------------------------------------------------------------
def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``img2.tif`` < ``img10.tif``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _is_zarr_dir(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, m)) for m in ("zarr.json", ".zarray", ".zgroup"))


def _tiff_files(folder: str) -> list[str]:
    names = [n for n in os.listdir(folder) if n.lower().endswith(_TIFF_EXT) and not n.startswith(".")]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path``: ``npy``, ``npz``, ``hdf5``, ``tiff``, ``tiff-folder`` or ``zarr``.

    Files are recognised by their first bytes (then their extension); folders are zarr when they
    hold zarr metadata, tiff folders when they hold ``.tif``/``.tiff`` files.

    Raises
    ------
    InputError
        The path does not exist or is no format emkit reads.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"no such file or folder: {path!r}")
    if os.path.isdir(path):
        if _is_zarr_dir(path) or path.rstrip("/").endswith(".zarr"):
            return "zarr"
        if os.path.exists(os.path.join(path, "info")):
            raise InputError(f"{path!r} is a Precomputed layer, not a file to import; use emkit transfer to copy layers")
        if _tiff_files(path):
            return "tiff-folder"
        raise InputError(f"folder {path!r} holds neither a zarr array/group nor .tif/.tiff files")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        return "npz"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    ext = os.path.splitext(path)[1].lower()
    known = ".npy, .npz, HDF5 (.h5/.hdf5/.hdf), tiff (.tif/.tiff, or a folder of them), zarr"
    raise InputError(f"cannot read {path!r} (extension {ext or 'none'!r}, not a recognised file); expected {known}")


def _to_nm(value: float, unit: str | None) -> float | None:
    if unit is None:
        return None
    factor = _UNIT_NM.get(str(unit).strip().lower())
    return None if factor is None else float(value) * factor


def _vec3_attr(value) -> tuple[float, float, float] | None:
    try:
        vals = tuple(float(v) for v in np.asarray(value).ravel())
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == 3 else None


def _offset_from_nm(offset_nm, resolution, notes: list[str], where: str) -> tuple[int, int, int] | None:
    """Voxel offset from an ``offset`` attribute in nm (CREMI, funlib), when it divides evenly."""
    off = _vec3_attr(offset_nm)
    if off is None or resolution is None:
        return None
    vox = [o / r for o, r in zip(off, resolution)]
    if not all(abs(v - round(v)) < 1e-6 for v in vox):
        notes.append(f"ignored offset attribute {off} nm of {where}: not whole voxels at {resolution} nm")
        return None
    out = tuple(int(round(v)) for v in vox)
    if any(out):
        notes.append(f"voxel offset {out} (z, y, x) from the offset attribute {off} nm of {where}")
    return out


def _attrs_meta(attrs, notes: list[str], where: str):
    res = _vec3_attr(attrs["resolution"]) if "resolution" in attrs else None
    if res is not None and any(r <= 0 for r in res):
        res = None
    if res is not None:
        notes.append(f"resolution {res} nm (z, y, x) from the resolution attribute of {where}")
    off = _offset_from_nm(attrs["offset"], res, notes, where) if "offset" in attrs else None
    return res, off


# listing ----------------------------------------------------------------------------------------
def _h5_arrays(f) -> list[ArrayInfo]:
    import h5py

    out = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.shape is not None:
            out.append(ArrayInfo(name, tuple(obj.shape), obj.dtype))

    f.visititems(visit)
    return out


def _zarr_arrays(node) -> list[ArrayInfo]:
    import zarr

    if isinstance(node, zarr.Array):
        return [ArrayInfo("", tuple(node.shape), node.dtype)]
    out = []
    for name, member in node.members(max_depth=None):
        if isinstance(member, zarr.Array):
            out.append(ArrayInfo(name, tuple(member.shape), np.dtype(member.dtype)))
    return sorted(out, key=lambda a: natural_key(a.key))


def _open_zarr(path: str):
    import zarr

    try:
        return zarr.open(path, mode="r")
    except Exception as exc:  # zarr raises several types for a bad store
        raise InputError(f"cannot read {path!r} as zarr: {exc}") from None


def list_arrays(path: str | os.PathLike) -> list[ArrayInfo]:
    """Every array in ``path`` with its key, shape and dtype (single-array formats: key ``""``)."""
    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            out = []
            for k in z.files:
                shape, dtype = _npz_member_header(z, k)
                out.append(ArrayInfo(k, shape, dtype))
            return out
    if fmt == "hdf5":
        with _open_h5(path) as f:
            return _h5_arrays(f)
    if fmt == "zarr":
        return _zarr_arrays(_open_zarr(path))
    with open_volume(path) as src:
        return [ArrayInfo("", src.shape, src.dtype)]


def _npz_member_header(z, key):
    """Shape and dtype of an npz member without loading it."""
    from numpy.lib import format as npformat

    with z.zip.open(key + ".npy") as fh:
        version = npformat.read_magic(fh)
        read = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, _, dtype = read(fh)
    return tuple(shape), np.dtype(dtype)


def _open_h5(path: str):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"cannot read {path!r} as HDF5: {exc}") from None


# key choice ---------------------------------------------------------------------------------------
def _choose_key(path: str, arrays: list[ArrayInfo], key: str | None, kind: str | None,
                preferred: str | None = None) -> str:
    keys = [a.key for a in arrays]
    listing = "; ".join(str(a) for a in arrays) or "none"
    if key is not None:
        key = key.strip("/")
        if key not in keys:
            raise InputError(f"no array {key!r} in {path}; it holds: {listing}")
        return key
    if kind in CREMI_KEYS and CREMI_KEYS[kind] in keys:
        return CREMI_KEYS[kind]
    if preferred is not None and preferred in keys:
        return preferred
    volumes = [a for a in arrays if len(a.shape) in (3, 4)]
    if len(volumes) == 1:
        return volumes[0].key
    if len(arrays) == 1:
        return arrays[0].key
    raise InputError(f"{path} holds {len(arrays)} arrays ({listing}); choose one with --key NAME (key=...)")


# openers ------------------------------------------------------------------------------------------
def _from_array(path, key, fmt, arr, notes=None, resolution=None, offset=None, closer=None) -> VolumeSource:
    def reader(zyx):
        return arr[(Ellipsis, *zyx)]

    return VolumeSource(path, key, fmt, tuple(arr.shape), np.dtype(arr.dtype), reader, resolution, offset,
                        notes or [], closer)


def _open_npy(path: str) -> VolumeSource:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"cannot read {path!r} as .npy: {exc}") from None
    return _from_array(path, None, "npy", arr)


def _open_npz(path: str, key, kind) -> VolumeSource:
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {path!r} as .npz: {exc}") from None
    with z:
        arrays = [ArrayInfo(k, *_npz_member_header(z, k)) for k in z.files]
        is_export = "data" in z.files
        pick = _choose_key(path, [a for a in arrays if not (is_export and a.key in _NPZ_META)] if key is None
                           else arrays, key, kind, preferred="data")
        arr = z[pick]  # npz members are zip entries: loaded whole
        notes, res, off = [], None, None
        if is_export and pick == "data":
            if "resolution" in z.files:
                res = _vec3_attr(z["resolution"])
                if res is not None:
                    notes.append(f"resolution {res} nm (z, y, x) from the npz 'resolution' array")
            if "offset" in z.files:
                o = _vec3_attr(z["offset"])
                off = None if o is None else tuple(int(v) for v in o)
    return _from_array(path, pick, "npz", arr, notes, res, off)


def _open_hdf5(path: str, key, kind) -> VolumeSource:
    f = _open_h5(path)
    try:
        pick = _choose_key(path, _h5_arrays(f), key, kind)
        ds = f[pick]
        notes: list[str] = []
        res, off = _attrs_meta(ds.attrs, notes, f"{path}:{pick}")
        if res is None and "resolution" in f.attrs:
            res, off = _attrs_meta(f.attrs, notes, path)
    except BaseException:
        f.close()
        raise
    return _from_array(path, pick, "hdf5", ds, notes, res, off, closer=f.close)


def _ome_scale(attrs, notes, where):
    """(dataset path, resolution nm zyx) of level 0 of OME-Zarr ``multiscales`` metadata."""
    ms = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if not ms:
        return None, None
    ms = ms[0]
    ds = ms["datasets"][0]
    res = None
    axes = ms.get("axes") or []
    for t in ds.get("coordinateTransformations", []):
        if t.get("type") == "scale" and len(t.get("scale", [])) >= 3:
            scale = t["scale"][-3:]
            units = [a.get("unit") if isinstance(a, dict) else None for a in axes[-3:]] if len(axes) >= 3 else [None] * 3
            nm = [_to_nm(s, u) for s, u in zip(scale, units)]
            if all(v is not None and v > 0 for v in nm):
                res = tuple(nm)
                notes.append(f"resolution {res} nm (z, y, x) from OME-Zarr multiscales of {where}")
    return ds["path"], res


def _open_zarr_volume(path: str, key, kind) -> VolumeSource:
    import zarr

    root = _open_zarr(path)
    notes: list[str] = []
    ome_notes: list[str] = []
    ome_path, ome_res = (None, None)
    if isinstance(root, zarr.Group):
        ome_path, ome_res = _ome_scale(dict(root.attrs), ome_notes, path)
    pick = _choose_key(path, _zarr_arrays(root), key, kind, preferred=ome_path)
    arr = root if pick == "" else root[pick]
    res, off = _attrs_meta(dict(arr.attrs), notes, f"{path}:{pick}" if pick else path)
    if res is None and pick == ome_path and ome_res is not None:  # the OME scale is level 0's
        res = ome_res
        notes += ome_notes
    return _from_array(path, pick or None, "zarr", arr, notes, res, off)


def _tiff_resolution(tif, notes, where) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in nm from ImageJ or OME-TIFF metadata, when all three are given."""
    if tif.is_ome and tif.ome_metadata:
        m = re.search(r"<Pixels\b[^>]*>", tif.ome_metadata)
        if m:
            tag = m.group(0)
            vals = []
            for ax in ("Z", "Y", "X"):
                size = re.search(rf'PhysicalSize{ax}="([^"]+)"', tag)
                unit = re.search(rf'PhysicalSize{ax}Unit="([^"]+)"', tag)
                vals.append(None if size is None else _to_nm(float(size.group(1)), unit.group(1) if unit else "µm"))
            if all(v is not None and v > 0 for v in vals):
                notes.append(f"resolution {tuple(vals)} nm (z, y, x) from OME-TIFF metadata of {where}")
                return tuple(vals)
    meta = tif.imagej_metadata if tif.is_imagej else None
    if meta:
        page = tif.pages[0]
        unit = meta.get("unit")
        spacing = meta.get("spacing")
        xr, yr = page.tags.get("XResolution"), page.tags.get("YResolution")
        if unit and spacing and xr is not None and yr is not None:
            try:
                x = xr.value[1] / xr.value[0]
                y = yr.value[1] / yr.value[0]
            except (ZeroDivisionError, TypeError, IndexError):
                return None
            vals = [_to_nm(v, unit) for v in (float(spacing), y, x)]
            if all(v is not None and v > 0 for v in vals):
                notes.append(f"resolution {tuple(vals)} nm (z, y, x) from ImageJ metadata of {where}")
                return tuple(vals)
    return None


def _tiff_layout(axes: str, shape: tuple[int, ...], where: str):
    """Map a tifffile series (axes, shape) to our (c,) z, y, x. Returns (out_shape, pages_per_z, chan_last)."""
    ax = axes.upper()
    if ax.endswith("S") and ax[:-1].endswith("YX"):  # samples per pixel (RGB): channels last in pages
        core, nsamp = ax[:-1], shape[-1]
        shape = shape[:-1]
        if "C" in core:
            raise InputError(f"{where}: tiff with both channels and samples (axes {axes}) is not supported")
        zs = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        return (nsamp, zs, *shape[-2:]), 1, True
    if not ax.endswith("YX"):
        raise InputError(f"{where}: tiff axes {axes} do not end in Y, X")
    lead = ax[:-2]
    if "C" in lead:
        ci = lead.index("C")
        if ci != len(lead) - 1:
            raise InputError(f"{where}: tiff axes {axes}: only channel-innermost page order (…CYX) is supported")
        nch = shape[ci]
        zs = int(np.prod(shape[:ci])) if ci else 1
        return (nch, zs, *shape[-2:]), nch, False
    zs = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return (zs, *shape[-2:]), 1, False


def _open_tiff(path: str) -> VolumeSource:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        raise InputError(f"cannot read {path!r} as tiff: {exc}") from None
    try:
        series = tif.series[0]
        notes: list[str] = []
        res = _tiff_resolution(tif, notes, path)
        out_shape, per_z, chan_last = _tiff_layout(series.axes, tuple(series.shape), path)
        dtype = np.dtype(series.dtype)
        hw = tuple(int(v) for v in out_shape[-2:])
        nch = out_shape[0] if len(out_shape) == 4 else 1
        page_shape = (*hw, nch) if chan_last else hw
        pages_mm = None
        if series.dataoffset is not None:  # uncompressed and contiguous: memory-map it
            try:
                pages_mm = tifffile.memmap(path, series=0, mode="r").reshape(-1, *page_shape)
            except (ValueError, OSError):
                pages_mm = None

        def pages(zs: slice) -> np.ndarray:
            p0, p1 = zs.start * per_z, zs.stop * per_z
            if pages_mm is not None:
                return pages_mm[p0:p1]
            if p1 <= p0:
                return np.zeros((0, *page_shape), dtype)
            return np.asarray(tif.asarray(key=range(p0, p1), series=0)).reshape(-1, *page_shape)

        def reader(zyx):
            zs, ys, xs = zyx
            data = pages(zs)
            if chan_last:  # (z, y, x, s) -> (s, z, y, x)
                return np.moveaxis(np.asarray(data[:, ys, xs, :]), -1, 0)
            if per_z > 1:  # pages are (z, c) -> (c, z, y, x)
                return np.asarray(data.reshape(-1, per_z, *hw)[:, :, ys, xs]).transpose(1, 0, 2, 3)
            return np.asarray(data[:, ys, xs])

    except BaseException:
        tif.close()
        raise
    return VolumeSource(path, None, "tiff", tuple(int(s) for s in out_shape), dtype, reader, res, None, notes,
                        tif.close)


def _open_tiff_folder(path: str) -> VolumeSource:
    import tifffile

    files = _tiff_files(path)
    try:
        with tifffile.TiffFile(files[0]) as first:
            shape, dtype = tuple(first.series[0].shape), np.dtype(first.series[0].dtype)
            notes: list[str] = []
            res = _tiff_resolution(first, notes, files[0])
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        raise InputError(f"cannot read {files[0]!r} as tiff: {exc}") from None
    if len(shape) != 2:
        raise InputError(f"{files[0]}: a folder of tiffs needs one 2D section per file (y, x), got shape {shape}")
    notes.append(f"{len(files)} sections from {os.path.basename(files[0])} to {os.path.basename(files[-1])} "
                 "(natural sort order)")

    def reader(zyx):
        zs, ys, xs = zyx
        out = np.empty((len(range(zs.start, zs.stop)), *shape), dtype)
        for i, z in enumerate(range(zs.start, zs.stop)):
            try:
                page = tifffile.imread(files[z])
            except (tifffile.TiffFileError, OSError, ValueError) as exc:
                raise InputError(f"cannot read {files[z]!r} as tiff: {exc}") from None
            if page.shape != shape or page.dtype != dtype:
                raise InputError(f"{files[z]}: shape {page.shape} dtype {page.dtype} differs from the first "
                                 f"section {files[0]} ({shape}, {dtype})")
            out[i] = page
        return out[:, ys, xs]

    return VolumeSource(path, None, "tiff-folder", (len(files), *shape), dtype, reader, res, None, notes)


def open_volume(path: str | os.PathLike, key: str | None = None, kind: str | None = None) -> VolumeSource:
    """Open one array of a file lazily.

    Parameters
    ----------
    path : file or folder (see the module docstring for formats).
    key : array inside an npz / HDF5 / zarr group (e.g. ``volumes/raw``). When None, the only
        volume in the file is used; for CREMI files ``kind="image"`` picks ``volumes/raw`` and
        ``kind="segmentation"`` picks ``volumes/labels/neuron_ids``.
    kind : the layer kind the array is meant for (only used to pick a key).

    Returns
    -------
    VolumeSource
        Close it (or use it as a context manager) when done.

    Raises
    ------
    InputError
        Missing or unreadable path, unknown key, or several arrays and no key.
    """
    path = os.fspath(path)
    fmt = detect_format(path)
    if key is not None and fmt in ("npy", "tiff", "tiff-folder"):
        raise InputError(f"--key {key!r} given but {path} ({fmt}) holds a single array")
    if fmt == "npy":
        return _open_npy(path)
    if fmt == "npz":
        return _open_npz(path, key, kind)
    if fmt == "hdf5":
        return _open_hdf5(path, key, kind)
    if fmt == "zarr":
        return _open_zarr_volume(path, key, kind)
    if fmt == "tiff":
        return _open_tiff(path)
    return _open_tiff_folder(path)


def read_volume(path: str | os.PathLike, key: str | None = None, kind: str | None = None) -> np.ndarray:
    """Read a whole array from a file into memory (``(c,) z, y, x``); see :func:`open_volume`."""
    with open_volume(path, key, kind) as src:
        return src.read()


def write_npz(path: str | os.PathLike, data: np.ndarray, *, resolution: Sequence[float],
              offset: Sequence[int] = (0, 0, 0), kind: str = "", channels: Sequence[str] = (),
              overwrite: bool = False) -> str:
    """Write a volume as a compressed ``.npz`` with arrays ``data``, ``resolution`` (nm, z, y, x),
    ``offset`` (voxels, z, y, x), ``kind`` and ``channels``.

    The file is written to a temporary name and renamed, so a failed write leaves nothing behind
    and an existing file is replaced only when complete.

    Raises
    ------
    InputError
        ``path`` does not end in ``.npz`` or its folder does not exist.
    LayerExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise InputError(f"output file must end in .npz, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"output folder {folder!r} does not exist")
    if os.path.exists(path) and not overwrite:
        raise LayerExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    fd, tmp = tempfile.mkstemp(suffix=".npz", prefix=".emkit-", dir=folder)
    os.close(fd)
    try:
        np.savez_compressed(tmp, data=data, resolution=np.asarray(resolution, dtype=np.float64),
                            offset=np.asarray(offset, dtype=np.int64), kind=np.asarray(kind),
                            channels=np.asarray(list(channels), dtype=str))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
