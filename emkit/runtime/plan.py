"""Planning: cut a region into small, serialisable chunk task specs.

A :class:`ChunkSpec` is what travels to a worker: the output box the task must write and the
box it may read (the output box grown by a halo and clipped to the data). Both are voxels,
axes (z, y, x), half-open.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from ..errors import BboxError, InputError
from ..geometry import Bbox, as_vec3, chunk_grid

__all__ = ["ChunkSpec", "plan_chunks", "count_chunks", "check_aligned", "chunk_name", "storage_task_size"]


def chunk_name(bbox: Bbox) -> str:
    """File-name-safe name of a box: ``z0-z1_y0-y1_x0-x1`` (voxels)."""
    return "_".join(f"{a}-{b}" for a, b in zip(bbox.start, bbox.stop))


def storage_task_size(storage_chunk: Sequence[int], shape: Sequence[int], task_size=None,
                      default_factors=(1, 4, 4)) -> tuple[int, int, int]:
    """A task box of whole storage chunks (z, y, x voxels): ``task_size`` (which must be a multiple
    of ``storage_chunk``) or ``storage_chunk × default_factors``, clipped to the chunks covering
    ``shape``. Tasks that write whole storage chunks never share one."""
    chunk = tuple(int(c) for c in storage_chunk)
    ts = (tuple(c * f for c, f in zip(chunk, default_factors)) if task_size is None
          else as_vec3(task_size, "task size", positive=True))
    if any(t % c for t, c in zip(ts, chunk)):
        raise InputError(f"task size {tuple(ts)} must be a multiple of the storage chunk {chunk} (z,y,x)")
    return tuple(min(t, -(-int(s) // c) * c) for t, s, c in zip(ts, shape, chunk))


@dataclass(frozen=True)
class ChunkSpec:
    """One chunk task.

    Attributes
    ----------
    index : position of the chunk in the plan (C order, z slowest).
    chunk : output box the task writes (voxels, z, y, x); never overlaps another chunk's.
    read_bbox : box the task may read: ``chunk`` grown by the halo and clipped to the data bounds.
    """

    index: int
    chunk: Bbox
    read_bbox: Bbox

    @property
    def name(self) -> str:
        """Name of the chunk's done-marker (``z0-z1_y0-y1_x0-x1``)."""
        return chunk_name(self.chunk)


def plan_chunks(bounds: Bbox, chunk_size, *, halo=0, origin=None, clip: Bbox | None = None) -> Iterator[ChunkSpec]:
    """Yield the chunk specs covering ``bounds``, lazily, in C order (z slowest).

    Parameters
    ----------
    bounds : region to cover (voxels, z, y, x).
    chunk_size : output chunk size (z, y, x) in voxels.
    halo : voxels of context (scalar or z, y, x) added on every side of the read box.
    origin : corner the chunk grid is aligned to (z, y, x); default ``bounds.start``.
        Chunks at the edges are clipped to ``bounds``.
    clip : box the read box is clipped to (e.g. the source layer's bounds); default ``bounds``.
    """
    if not isinstance(bounds, Bbox):
        raise InputError(f"bounds must be a Bbox, got {bounds!r}")
    halo = as_vec3(halo, "halo")
    if any(h < 0 for h in halo):
        raise InputError(f"halo must be >= 0 on every axis (z, y, x), got {halo}")
    clip = bounds if clip is None else clip
    for i, chunk in enumerate(chunk_grid(bounds, chunk_size, origin)):
        yield ChunkSpec(i, chunk, chunk.grow(halo).intersect(clip))


def count_chunks(bounds: Bbox, chunk_size, origin=None) -> int:
    """Number of chunks :func:`plan_chunks` yields (without building them)."""
    cs = as_vec3(chunk_size, "chunk size", positive=True)
    origin = bounds.start if origin is None else as_vec3(origin, "grid origin")
    if bounds.empty:
        raise BboxError(f"cannot chunk an empty bbox {bounds}")
    n = 1
    for a, b, c, o in zip(bounds.start, bounds.stop, cs, origin):
        first = o + ((a - o) // c) * c
        n *= -(-(b - first) // c)
    return n


def check_aligned(bounds: Bbox, chunk_size, storage_chunk: Sequence[int], layer_bbox: Bbox, *, what="task") -> None:
    """Raise InputError unless chunks of ``chunk_size`` over ``bounds`` write whole storage chunks.

    Tasks that write whole storage chunks of the output layer never race with each other
    (no read-modify-write of a shared chunk file). That holds when ``chunk_size`` is a multiple
    of the storage chunk on every axis and ``bounds`` starts on the storage grid (aligned at the
    layer's voxel offset) and stops on it or at the layer's edge.

    Parameters
    ----------
    bounds : region the tasks cover (voxels, z, y, x).
    chunk_size : task chunk size (z, y, x).
    storage_chunk : the output layer's storage chunk size (z, y, x).
    layer_bbox : the output layer's bounds (voxels, z, y, x).
    """
    cs = as_vec3(chunk_size, f"{what} chunk size", positive=True)
    sc = as_vec3(storage_chunk, "storage chunk size", positive=True)
    bad = [f"{ax}: {c} is not a multiple of {s}" for ax, c, s in zip("zyx", cs, sc) if c % s]
    if bad:
        raise InputError(f"{what} chunk size {cs} (z, y, x) must be a multiple of the output layer's storage "
                         f"chunk {sc} so that tasks write whole chunks ({'; '.join(bad)})")
    if not layer_bbox.contains(bounds):
        raise BboxError(f"bbox {bounds} (z,y,x voxels) lies outside the output layer bounds {layer_bbox}")
    o = layer_bbox.start
    for ax, a, b, s, lo, hi in zip("zyx", bounds.start, bounds.stop, sc, o, layer_bbox.stop):
        if (a - lo) % s or ((b - lo) % s and b != hi):
            raise InputError(f"bbox {bounds} (z,y,x voxels) is not aligned to the output layer's storage chunks "
                             f"{sc} starting at {tuple(o)} (axis {ax}); tasks would share chunk files")
