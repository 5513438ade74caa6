"""Copy a layer — rechunked, re-encoded, cropped — chunk by chunk on the runtime, or in one go.

Two paths give the same result:

* :func:`transfer` — chunked, parallel (dask) or serial, resumable: each task copies a box made
  of whole storage chunks of the destination, then leaves a done-marker under
  ``<dest>/.emkit/transfer/``.
* :func:`copy_array` — reads the whole box into memory and writes it at once (small volumes).

Resuming
--------
A destination that already exists is refused unless ``overwrite=True`` — except when it was
created by an interrupted :func:`transfer` with the *same* parameters (source, bbox, chunk
size, task size, encoding): then the transfer resumes implicitly, skipping chunks whose markers
exist and recomputing only the others. Re-running a finished transfer therefore does nothing.
With ``overwrite=True`` the destination (markers included) is deleted and copied afresh.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .errors import BboxError, InputError, LayerExistsError
from .geometry import Bbox, as_vec3, parse_bbox
from .io.kinds import get_kind
from .io.layer import Layer, layer_exists, normalize_url

__all__ = ["transfer", "copy_array", "CopyTask", "TransferReport", "default_task_size", "RUN_NAME"]

RUN_NAME = "transfer"  # markers live under <dest>/.emkit/transfer/
_TASK_BYTES = 4 * 2**20  # default task: about 4 MiB of voxels


@dataclass(frozen=True)
class CopyTask:
    """Chunk task: copy ``chunk`` from the layer at ``src_url`` to the layer at ``dest_url``."""

    src_url: str
    dest_url: str

    def __call__(self, chunk: Bbox, read_bbox: Bbox) -> None:
        src = Layer.open(self.src_url)
        dest = Layer.open(self.dest_url)
        dest.write(src.read(chunk), chunk.start)


@dataclass(frozen=True)
class TransferReport:
    """What :func:`transfer` did.

    ``voxels`` counts z * y * x of the region (channels not counted); ``seconds`` is the time
    of the chunk map (cluster start excluded), ``wall_seconds`` includes starting the cluster;
    ``mvx_per_s`` is voxels / seconds / 1e6 (chunks skipped by a resume are counted as voxels).
    """

    src: str
    dest: str
    bbox: str
    voxels: int
    bytes: int
    seconds: float
    wall_seconds: float
    chunks: int
    executed: int
    skipped: int
    resumed: bool
    dashboard_link: str = ""

    @property
    def mvx_per_s(self) -> float:
        return self.voxels / self.seconds / 1e6 if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        if not self.executed:
            return (f"{self.dest} is already complete: all {self.chunks} chunk(s) of the transfer from {self.src} "
                    "are marked done; nothing copied (use --overwrite to copy again)")
        how = f"{self.executed} chunk(s) copied"
        if self.skipped:
            how += f", {self.skipped} already done (resumed)"
        return (f"{self.voxels:,} voxels ({self.bytes / 2**20:.1f} MiB) from {self.src} to {self.dest} "
                f"in {self.seconds:.2f} s: {self.mvx_per_s:.2f} MVx/s; {how}")

    def to_dict(self) -> dict:
        return {**asdict(self), "mvx_per_s": self.mvx_per_s}


def default_task_size(storage_chunk: Sequence[int], shape: Sequence[int], bytes_per_voxel: int,
                      target_bytes: int = _TASK_BYTES, min_tasks: int = 8) -> tuple[int, int, int]:
    """A task box (z, y, x) made of whole storage chunks.

    The storage chunk is doubled along x, y, z in turn while the box stays under
    ``target_bytes``, inside ``shape`` (rounded up to whole chunks) and the region still splits
    into at least ``min_tasks`` tasks (or as many as it has chunks), so that workers share it.
    """
    cs = as_vec3(storage_chunk, "chunk size", positive=True)
    shape = as_vec3(shape, "shape", positive=True)
    limit = [-(-s // c) * c for s, c in zip(shape, cs)]

    def ntasks(box):
        return int(np.prod([-(-s // b) for s, b in zip(shape, box)]))

    floor = min(int(min_tasks), ntasks(cs))
    size = list(cs)
    grew = True
    while grew:
        grew = False
        for ax in (2, 1, 0):
            trial = list(size)
            trial[ax] *= 2
            if (trial[ax] <= limit[ax] and int(np.prod(trial)) * bytes_per_voxel <= target_bytes
                    and ntasks(trial) >= floor):
                size, grew = trial, True
    return tuple(size)


def _resolve(src_url, dest_url, chunk_size, encoding, bbox):
    src = Layer.open(src_url)
    dest_url = normalize_url(dest_url)
    if dest_url.rstrip("/") == src.url.rstrip("/"):
        raise InputError(f"destination {dest_url} is the source; give another URL")
    if bbox is None:
        bbox = src.bbox
    elif isinstance(bbox, str):
        bbox = parse_bbox(bbox)
    elif not isinstance(bbox, Bbox):
        bbox = Bbox(*bbox)
    if bbox.empty:
        raise BboxError(f"empty bbox {bbox}")
    if not src.bbox.contains(bbox):
        raise BboxError(f"bbox {bbox} (z,y,x voxels) lies outside source layer {src.url} bounds {src.bbox}")
    chunk_size = as_vec3(src.chunk_size if chunk_size is None else chunk_size, "chunk size", positive=True)
    encoding = encoding or src.encoding
    kind = get_kind(src.kind.name)
    if encoding not in kind.encodings:
        raise InputError(f"encoding {encoding!r} does not fit kind {kind.name!r}; expected one of {', '.join(kind.encodings)}")
    return src, dest_url, bbox, chunk_size, encoding


def _create_dest(src: Layer, dest_url: str, bbox: Bbox, chunk_size, encoding, overwrite: bool) -> Layer:
    compress = src.info.get("emkit", {}).get("compress") if encoding == src.encoding else None
    return Layer.create(
        dest_url, src.kind.name, bbox.shape, resolution=src.resolution, voxel_offset=bbox.start,
        chunk_size=chunk_size, num_channels=src.num_channels, channel_names=src.channel_names,
        encoding=encoding, compress=compress, overwrite=overwrite,
        description=f"emkit transfer of {src.url} bbox {bbox}")


def copy_array(src_url: str | os.PathLike, dest_url: str | os.PathLike, *, chunk_size=None, encoding: str | None = None,
               bbox: Bbox | str | None = None, overwrite: bool = False) -> Layer:
    """Copy a layer (or the ``bbox`` of it) through one in-memory array: ``Layer.read`` + ``Layer.write``.

    For volumes that fit in memory; same parameters and same result as :func:`transfer`.
    Returns the destination layer.
    """
    src, dest_url, bbox, chunk_size, encoding = _resolve(src_url, dest_url, chunk_size, encoding, bbox)
    if layer_exists(dest_url) and not overwrite:
        raise LayerExistsError(f"a layer already exists at {dest_url}; pass overwrite=True (--overwrite) to replace it")
    data = src.read(bbox)
    dest = _create_dest(src, dest_url, bbox, chunk_size, encoding, overwrite)
    dest.write(data, bbox.start)
    return dest


def transfer(
    src_url: str | os.PathLike,
    dest_url: str | os.PathLike,
    *,
    chunk_size=None,
    task_size=None,
    encoding: str | None = None,
    bbox: Bbox | str | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    retries: int = 3,
    progress: bool = True,
) -> TransferReport:
    """Copy, rechunk and re-encode a layer chunk by chunk; resumes an interrupted transfer.

    The destination gets the source's kind, dtype, resolution, channels and channel names; its
    bounds are ``bbox`` (so a crop keeps its global voxel coordinates).

    Parameters
    ----------
    src_url : source layer (URL or local path).
    dest_url : destination layer (URL or local path); must not exist, unless ``overwrite`` or
        it holds an interrupted transfer with the same parameters (then it resumes).
    chunk_size : storage chunk (z, y, x) of the destination; default the source's.
    task_size : box (z, y, x) one task copies; a multiple of ``chunk_size`` (so tasks write whole
        chunks and never share a chunk file). Default: about 4 MiB of voxels.
    encoding : destination encoding (e.g. ``raw``, ``jpeg``, ``compressed_segmentation``,
        ``compresso``, ``fpzip``); default the source's.
    bbox : region to copy (Bbox or ``"z0:z1,y0:y1,x0:x1"``, voxels); default the whole layer.
    overwrite : delete an existing destination first.
    workers : 0 = serial in this process; N = local cluster of N worker processes;
        None = local cluster sized to the machine.
    scheduler : address of a running dask scheduler to use instead.
    client : a ``distributed.Client`` or :class:`emkit.runtime.Cluster` to use instead.
    retries : extra attempts of a failing chunk.
    progress : progress bar and dashboard link.

    Returns
    -------
    TransferReport

    Raises
    ------
    InputError : missing source, bad encoding or chunk/task size, destination is the source.
    BboxError : ``bbox`` outside the source.
    LayerExistsError : destination exists (and is not a resumable transfer) without ``overwrite``.
    TaskFailedError : a chunk failed after its retries (names the bbox).
    """
    from .runtime import Markers, check_aligned, map_chunks, markers_url

    src, dest_url, bbox, chunk_size, encoding = _resolve(src_url, dest_url, chunk_size, encoding, bbox)
    task_size = (default_task_size(chunk_size, bbox.shape, src.dtype.itemsize * src.num_channels)
                 if task_size is None else as_vec3(task_size, "task size", positive=True))
    check_aligned(bbox, task_size, chunk_size, bbox, what="task")
    params = {"src": src.url, "bbox_zyx": [list(bbox.start), list(bbox.stop)], "chunk_size_zyx": list(chunk_size),
              "task_size_zyx": list(task_size), "encoding": encoding, "kind": src.kind.name}
    markers = Markers(markers_url(dest_url, RUN_NAME))

    resumed = False
    if layer_exists(dest_url) and not overwrite:
        old = markers.params()
        if old is None:
            raise LayerExistsError(f"a layer already exists at {dest_url}; pass overwrite=True (--overwrite) to replace it")
        try:
            markers.bind(params)
        except InputError as exc:
            raise LayerExistsError(f"{dest_url} holds an interrupted transfer with other parameters ({exc}); "
                                   "rerun it with the same parameters to resume, or pass overwrite=True") from None
        resumed = True
    else:
        _create_dest(src, dest_url, bbox, chunk_size, encoding, overwrite)
        markers.reset()  # stale markers of a run that died before creating the layer
        markers.bind(params)
    dest = Layer.open(dest_url)

    t0 = time.perf_counter()
    rep = map_chunks(CopyTask(src.url, dest.url), bbox, task_size, origin=bbox.start, markers=markers,
                     client=client, workers=workers, scheduler=scheduler, retries=retries,
                     progress=progress, desc="transfer")
    wall = time.perf_counter() - t0
    return TransferReport(
        src=src.url, dest=dest.url, bbox=str(bbox), voxels=bbox.size,
        bytes=bbox.size * src.num_channels * src.dtype.itemsize, seconds=rep.seconds, wall_seconds=wall,
        chunks=rep.total, executed=rep.executed, skipped=rep.skipped, resumed=resumed,
        dashboard_link=rep.dashboard_link)
