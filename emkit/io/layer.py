"""A :class:`Layer`: one Precomputed volume read and written through CloudVolume.

Arrays in and out are numpy, C order, axes ``(c, z, y, x)`` — or ``(z, y, x)`` for
single-channel kinds (image, segmentation, mask). CloudVolume speaks ``(x, y, z, c)``; this
module is the one place that converts. URLs may be ``file://``, ``gs://``, ``s3://`` or a plain
local path.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import BboxError, InputError, LayerExistsError
from ..geometry import Bbox, as_vec3
from .kinds import LayerKind, get_kind

__all__ = ["Layer", "normalize_url", "layer_exists", "join_url", "default_chunk_size"]

_REMOTE = ("gs://", "s3://", "http://", "https://", "matrix://", "mem://")


def normalize_url(url: str | os.PathLike) -> str:
    """``file://`` URL with an absolute path for a plain local path; other URLs unchanged."""
    url = os.fspath(url)
    if url.startswith("precomputed://"):
        url = url[len("precomputed://"):]
    if url.startswith("file://"):
        return "file://" + os.path.abspath(os.path.expanduser(url[len("file://"):]))
    if url.startswith(_REMOTE):
        return url.rstrip("/")
    if "://" in url:
        raise InputError(f"unsupported URL scheme in {url!r}; use a local path, file://, gs:// or s3://")
    return "file://" + os.path.abspath(os.path.expanduser(url))


def join_url(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a folder URL or local path (result is a normalized URL)."""
    base = normalize_url(base).rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts]])


def local_path(url: str) -> str | None:
    """Filesystem path of a ``file://`` URL, else None."""
    url = normalize_url(url)
    return url[len("file://"):] if url.startswith("file://") else None


def _delete_layer_files(url: str, cf) -> None:
    """Delete every file of the layer at ``url`` (and, locally, its emptied folders)."""
    cf.delete(list(cf.list()))
    path = local_path(url)
    if path is not None and os.path.isdir(path):
        for dirpath, dirnames, filenames in os.walk(path, topdown=False):
            if dirpath != path and not os.listdir(dirpath):
                os.rmdir(dirpath)


def layer_exists(url: str) -> bool:
    """True when ``url`` already holds a Precomputed ``info`` file."""
    from cloudfiles import CloudFiles

    return CloudFiles(normalize_url(url)).exists("info")


def default_chunk_size(resolution_nm) -> tuple[int, int, int]:
    """Storage chunk (z, y, x) spanning about 1 µm on each axis, in powers of two from 8 to 256.

    (40, 8, 8) nm gives (16, 128, 128); (10, 10, 10) nm gives (64, 64, 64); (50, 4, 4) nm gives
    (16, 256, 256).
    """
    res = as_vec3(resolution_nm, "resolution", positive=True, dtype=float)
    chunk = [int(min(256, max(8, 2 ** int(np.floor(np.log2(1024.0 / r)))))) for r in res]
    while np.prod(chunk) > 2 ** 20:  # at most 1 Mi voxels per chunk
        chunk[int(np.argmax(chunk))] //= 2
    return tuple(chunk)


class Layer:
    """A Precomputed volume of one emkit kind.

    Use :meth:`create` for a new layer and :meth:`open` (or ``Layer(url)``) for an existing one.

    Parameters
    ----------
    url : str
        Layer location: local path, ``file://``, ``gs://`` or ``s3://``.
    """

    def __init__(self, url: str | os.PathLike):
        from cloudvolume import CloudVolume
        from cloudvolume.exceptions import InfoUnavailableError

        self.url = normalize_url(url)
        from cloudfiles import CloudFiles

        path = local_path(self.url)
        if path is not None and os.path.isfile(path):
            raise InputError(f"{self.url} is a file, not a Precomputed layer folder")
        try:
            info = CloudFiles(self.url).get_json("info")
        except ValueError as exc:  # JSONDecodeError
            raise InputError(f"the info file of {self.url} is not valid JSON: {exc}") from None
        if info is None:
            raise InputError(f"no Precomputed layer at {self.url} (missing 'info' file)")
        meta = info.get("emkit", {})
        # one compress setting per layer, kept for its whole life (stack.md, pitfall 2)
        compress = meta.get("compress")
        compress = None if compress is None else ("gzip" if compress else False)
        try:
            self._cv = CloudVolume(self.url, mip=0, info=info, fill_missing=True, bounded=True, parallel=1,
                                   progress=False, non_aligned_writes=True, cache=False, compress=compress)
        except InfoUnavailableError:  # pragma: no cover - info checked above
            raise InputError(f"no Precomputed layer at {self.url} (missing 'info' file)") from None
        self.kind: LayerKind = get_kind(meta.get("kind") or self._infer_kind())
        self.channel_names: tuple[str, ...] = tuple(
            meta.get("channels") or self.kind.channel_names or [f"c{i}" for i in range(self.num_channels)])

    # construction -----------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | os.PathLike) -> "Layer":
        """Open an existing layer."""
        return cls(url)

    @classmethod
    def create(
        cls,
        url: str | os.PathLike,
        kind: str,
        size: Sequence[int],
        *,
        resolution: Sequence[float] = (40, 8, 8),
        voxel_offset: Sequence[int] = (0, 0, 0),
        chunk_size: Sequence[int] | None = None,
        num_channels: int | None = None,
        channel_names: Sequence[str] | None = None,
        encoding: str | None = None,
        compress: bool | None = None,
        overwrite: bool = False,
        description: str = "",
    ) -> "Layer":
        """Create a new, empty layer.

        Parameters
        ----------
        url : layer location (local path or URL).
        kind : ``image`` (uint8), ``affinities`` (float32, 3 channels z, y, x),
            ``probability`` (float32, ``num_channels``), ``segmentation`` (uint64), ``mask`` (uint8).
        size : volume size in voxels (z, y, x).
        resolution : voxel size in nm (z, y, x); default (40, 8, 8), the paper's.
        voxel_offset : first voxel (z, y, x) in voxels.
        chunk_size : storage chunk (z, y, x); default :func:`default_chunk_size` of the
            resolution ((16, 128, 128) at 40×8×8 nm, (64, 64, 64) at 10 nm isotropic), clipped to ``size``.
        num_channels : channel count (``probability`` only; the other kinds fix it).
        channel_names : what each channel means (stored in the info file).
        encoding : Precomputed encoding; default depends on the kind.
        compress : gzip chunk files; default depends on the kind.
        overwrite : replace an existing layer at ``url`` (its files are deleted first).
        """
        from cloudfiles import CloudFiles
        from cloudvolume import CloudVolume

        k = get_kind(kind)
        url = normalize_url(url)
        size = as_vec3(size, "size", positive=True)
        resolution = as_vec3(resolution, "resolution", positive=True, dtype=float)
        voxel_offset = as_vec3(voxel_offset, "voxel offset")
        if chunk_size is None:
            chunk_size = tuple(min(c, s) for c, s in zip(default_chunk_size(resolution), size))
        chunk_size = as_vec3(chunk_size, "chunk size", positive=True)
        if k.num_channels is None:
            if num_channels is None or int(num_channels) < 1:
                raise InputError(f"kind {kind!r} needs num_channels >= 1, got {num_channels!r}")
            nch = int(num_channels)
        else:
            if num_channels not in (None, k.num_channels):
                raise InputError(f"kind {kind!r} has {k.num_channels} channel(s), got num_channels={num_channels}")
            nch = k.num_channels
        names = tuple(channel_names) if channel_names is not None else (k.channel_names or tuple(f"c{i}" for i in range(nch)))
        if len(names) != nch:
            raise InputError(f"channel_names has {len(names)} names for {nch} channel(s): {names!r}")
        encoding = encoding or k.encoding
        if encoding not in k.encodings:
            raise InputError(f"encoding {encoding!r} does not fit kind {kind!r}; expected one of {', '.join(k.encodings)}")
        compress = k.compress if compress is None else bool(compress)

        cf = CloudFiles(url)
        if cf.exists("info"):
            if not overwrite:
                raise LayerExistsError(f"a layer already exists at {url}; pass overwrite=True (--overwrite) to replace it")
            _delete_layer_files(url, cf)
        else:
            path = local_path(url)
            if path is not None and os.path.isfile(path):
                raise InputError(f"cannot create a layer at {url}: it is a file, not a folder")
            if path is not None and os.path.isdir(path) and os.listdir(path):
                # a folder of something else: never delete what we did not write, even with overwrite
                raise LayerExistsError(f"cannot create a layer at {url}: the folder is not empty and holds no "
                                       "Precomputed 'info' file (choose an empty or new folder)")

        # whole-number resolutions stay ints so the scale key reads "8_8_40", not "8.0_8.0_40.0"
        resolution = tuple(int(r) if float(r).is_integer() else r for r in resolution)
        info = CloudVolume.create_new_info(
            num_channels=nch,
            layer_type=k.layer_type,
            data_type=k.dtype.name,
            encoding=encoding,
            resolution=resolution[::-1],
            voxel_offset=voxel_offset[::-1],
            volume_size=size[::-1],
            chunk_size=chunk_size[::-1],
            compressed_segmentation_block_size=(8, 8, 8),
        )
        info["emkit"] = {"kind": k.name, "channels": list(names), "compress": compress}
        cv = CloudVolume(url, info=info, parallel=1, progress=False)
        cv.commit_info()
        cv.provenance.description = description or f"emkit {k.name} layer"
        cv.provenance.owners = []
        cv.commit_provenance()
        return cls(url)

    def _infer_kind(self) -> str:
        info = self._cv.info
        if info["type"] == "segmentation":
            return "segmentation"
        dt = np.dtype(info["data_type"])
        n = int(info["num_channels"])
        if dt == np.uint8 and n == 1:
            return "image"
        if dt == np.float32:
            return "affinities" if n == 3 else "probability"
        raise InputError(f"layer {self.url} has type {info['type']!r}, dtype {dt}, {n} channel(s): "
                         "not a kind emkit knows (image uint8, affinities/probability float32, segmentation uint64, mask uint8)")

    # facts (all z, y, x) ---------------------------------------------------------------------
    @property
    def info(self) -> dict:
        return self._cv.info

    @property
    def resolution(self) -> tuple[float, float, float]:
        """Voxel size in nm (z, y, x)."""
        return tuple(float(v) for v in self._cv.resolution[::-1])

    @property
    def voxel_offset(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self._cv.voxel_offset[::-1])

    @property
    def size(self) -> tuple[int, int, int]:
        """Volume size in voxels (z, y, x)."""
        return tuple(int(v) for v in self._cv.volume_size[::-1])

    @property
    def chunk_size(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self._cv.chunk_size[::-1])

    @property
    def num_channels(self) -> int:
        return int(self._cv.num_channels)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._cv.dtype)

    @property
    def encoding(self) -> str:
        return self._cv.encoding

    @property
    def bbox(self) -> Bbox:
        """The layer's bounds in voxels (z, y, x)."""
        return Bbox.from_shape(self.size, self.voxel_offset)

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape that :meth:`read` returns for the whole layer."""
        return self._array_shape(self.size)

    @property
    def multichannel(self) -> bool:
        return self.kind.num_channels != 1

    def _array_shape(self, zyx) -> tuple[int, ...]:
        return (self.num_channels, *zyx) if self.multichannel else tuple(zyx)

    def __repr__(self) -> str:
        return (f"Layer({self.url!r}, kind={self.kind.name}, size={self.size}, resolution={self.resolution} nm, "
                f"offset={self.voxel_offset}, chunk={self.chunk_size}, channels={self.num_channels})")

    def describe(self) -> dict:
        """Facts of the layer as a JSON-able dict (what ``emkit info`` prints)."""
        return {
            "url": self.url, "kind": self.kind.name, "dtype": self.dtype.name,
            "size_zyx": list(self.size), "voxel_offset_zyx": list(self.voxel_offset),
            "resolution_nm_zyx": list(self.resolution), "chunk_size_zyx": list(self.chunk_size),
            "num_channels": self.num_channels, "channels": list(self.channel_names),
            "encoding": self.encoding, "layer_type": self.info["type"],
        }

    # I/O --------------------------------------------------------------------------------------
    def _check_bbox(self, bbox: Bbox) -> Bbox:
        if not isinstance(bbox, Bbox):
            bbox = Bbox(*bbox)
        if bbox.empty:
            raise BboxError(f"empty bbox {bbox} for layer {self.url}")
        if not self.bbox.contains(bbox):
            raise BboxError(f"bbox {bbox} (z,y,x voxels) lies outside layer {self.url} bounds {self.bbox}")
        return bbox

    def read(self, bbox: Bbox | None = None) -> np.ndarray:
        """Read voxels in ``bbox`` (default: all) as ``(c, z, y, x)`` or ``(z, y, x)``.

        Chunks never written read as zeros.
        """
        bbox = self.bbox if bbox is None else self._check_bbox(bbox)
        sl = tuple(slice(a, b) for a, b in zip(bbox.start[::-1], bbox.stop[::-1]))
        arr = np.asarray(self._cv[sl])  # x, y, z, c
        arr = np.ascontiguousarray(arr.transpose(3, 2, 1, 0))
        return arr if self.multichannel else arr[0]

    def write(self, array: np.ndarray, offset: Sequence[int] | None = None) -> Bbox:
        """Write ``array`` (``(c, z, y, x)`` or ``(z, y, x)``) with its first voxel at ``offset``.

        ``offset`` is in voxels (z, y, x), default the layer's voxel offset. Returns the bbox
        written. The array must already have the layer's dtype (no silent casting).
        """
        array = np.asarray(array)
        if array.dtype != self.dtype:
            raise InputError(f"array dtype {array.dtype} does not fit layer {self.url} "
                             f"(kind {self.kind.name}, dtype {self.dtype})")
        if self.multichannel:
            if array.ndim == 3 and self.num_channels == 1:
                array = array[None]
            if array.ndim != 4 or array.shape[0] != self.num_channels:
                raise InputError(f"array of shape {array.shape} does not fit layer {self.url}: expected "
                                 f"(c={self.num_channels}, z, y, x)")
        else:
            if array.ndim == 4 and array.shape[0] == 1:
                array = array[0]
            if array.ndim != 3:
                raise InputError(f"array of shape {array.shape} does not fit layer {self.url}: expected (z, y, x)")
            array = array[None]
        offset = self.voxel_offset if offset is None else as_vec3(offset, "offset")
        bbox = self._check_bbox(Bbox.from_shape(array.shape[1:], offset))
        sl = tuple(slice(a, b) for a, b in zip(bbox.start[::-1], bbox.stop[::-1]))
        self._cv[sl] = array.transpose(3, 2, 1, 0)
        return bbox
