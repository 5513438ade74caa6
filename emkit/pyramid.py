"""Image pyramids: extra, coarser scales (mips) in a layer's own Precomputed info.

Neuroglancer switches between the scales of one ``info`` by zoom, so a pyramid lets a viewer
show a large volume zoomed out without reading every voxel (paper: *Data access and
visualization*; Igneous downsamples the same way). Two forms give equal results:

* :func:`downsample` — one level over a numpy array (tinybrain does the work);
* :func:`pyramid_layers` — every level over a Precomputed layer, chunk by chunk on
  :func:`emkit.runtime.map_chunks` (serially or on dask), written as scales 1..N of the layer;
  like Igneous' downsample tasks, one task reads a box once and writes several mips from it.

How voxels are combined depends on the layer kind: image, affinities and probability layers are
**averaged** (``tinybrain.downsample_with_averaging``), segmentation and mask layers take the
**mode** of each block (``tinybrain.downsample_segmentation``: an id never mixes with another).

Factor rule (:func:`mip_factors`): at each mip an axis is halved when its voxel size is at most
half the coarsest axis' voxel size; when no axis is that fine, all three are halved. So
40×8×8 nm gives 2×2×1 (x, y) twice (→ 40×16×16 → 40×32×32), then 2×2×2; isotropic 10 nm
gives 2×2×2 from the start; ssTEM at 50×4×4 nm gives 2×2×1 three times. Level ``k`` voxel ``j``
covers level ``k-1`` voxels ``[j·f, (j+1)·f)`` on the global grid (a partial block at the high
end of the volume is reduced over the voxels it has), so a layer's voxel offset must be a multiple
of the cumulative factor.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .errors import InputError, LayerExistsError
from .geometry import Bbox, as_vec3

__all__ = ["downsample", "pyramid", "mip_factors", "pyramid_layers", "PyramidReport", "MODE_KINDS",
           "AVERAGE_KINDS"]

#: layer kinds reduced by the mode of each block (labels never mix)
MODE_KINDS = ("segmentation", "mask")
#: layer kinds reduced by averaging
AVERAGE_KINDS = ("image", "affinities", "probability")


def _method(kind: str) -> str:
    if kind in MODE_KINDS:
        return "mode"
    if kind in AVERAGE_KINDS:
        return "average"
    raise InputError(f"kind must be one of {', '.join(AVERAGE_KINDS + MODE_KINDS)} (averaged: "
                     f"{', '.join(AVERAGE_KINDS)}; mode: {', '.join(MODE_KINDS)}), got {kind!r}")


def mip_factors(resolution: Sequence[float], mips: int) -> list[tuple[int, int, int]]:
    """Downsampling factor (z, y, x) of each mip 1..``mips`` (see the module's factor rule).

    Parameters
    ----------
    resolution : voxel size of mip 0 in nm (z, y, x).
    mips : number of levels above mip 0.
    """
    res = np.array(as_vec3(resolution, "resolution", positive=True, dtype=float))
    mips = int(mips)
    if mips < 0:
        raise InputError(f"mips must be >= 0, got {mips}")
    out = []
    for _ in range(mips):
        fine = res <= res.max() / 2 + 1e-9
        f = np.where(fine, 2, 1) if fine.any() else np.full(3, 2)
        out.append(tuple(int(v) for v in f))
        res = res * f
    return out


def downsample(volume: np.ndarray, factor: Sequence[int], kind: str) -> np.ndarray:
    """One pyramid level of ``volume``: averaged (image kinds) or mode (segmentation, mask).

    Parameters
    ----------
    volume : array (z, y, x), or (c, z, y, x) for multi-channel kinds (channels are kept).
    factor : reduction per axis (z, y, x), whole numbers >= 1, e.g. (1, 2, 2).
    kind : layer kind: ``image``, ``affinities``, ``probability`` (averaged; the dtype is kept,
        integers rounded as tinybrain does) or ``segmentation``, ``mask`` (mode of each block).

    Returns
    -------
    numpy.ndarray of shape ``ceil(shape / factor)`` (a partial block at the high end of an axis is
    reduced over the voxels it has), same dtype and axis order as ``volume``.
    """
    import tinybrain

    method = _method(kind)
    volume = np.asarray(volume)
    f = as_vec3(factor, "factor", positive=True)
    if volume.ndim not in (3, 4):
        raise InputError(f"volume must be (z, y, x) or (c, z, y, x), got shape {volume.shape}")
    if volume.ndim == 4 and method == "mode":
        raise InputError(f"kind {kind!r} takes a (z, y, x) volume, got shape {volume.shape}")
    if f == (1, 1, 1):
        return volume.copy()
    if method == "mode" and volume.dtype == np.bool_:
        raise InputError("a mask volume must be an integer array (uint8), not bool")
    # tinybrain works in x, y, z(, c): hand it the transposed (Fortran-ordered) view, factor x, y, z
    xyz = volume.T if volume.ndim == 3 else volume.transpose(3, 2, 1, 0)
    fx = tuple(f[::-1]) + ((1,) if volume.ndim == 4 else ())
    if method == "average":
        (out,) = tinybrain.downsample_with_averaging(xyz, fx, num_mips=1)
    else:
        (out,) = tinybrain.downsample_segmentation(xyz, fx, num_mips=1)
    out = out.T if volume.ndim == 3 else out.transpose(3, 2, 1, 0)
    out = np.ascontiguousarray(out, dtype=volume.dtype)
    expect = tuple(-(-s // k) for s, k in zip(volume.shape[-3:], f))
    if out.shape[-3:] != expect:  # pragma: no cover - tinybrain's contract
        raise RuntimeError(f"tinybrain returned shape {out.shape} for {volume.shape} / {f}")
    return out


def pyramid(volume: np.ndarray, factors: Sequence[Sequence[int]], kind: str) -> list[np.ndarray]:
    """Levels 1..N of ``volume``: :func:`downsample` applied with each factor in turn."""
    out, cur = [], volume
    for f in factors:
        cur = downsample(cur, f, kind)
        out.append(cur)
    return out


# chunked ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PyramidReport:
    """What :func:`pyramid_layers` wrote: per mip its factor, resolution (nm), size (z, y, x)."""

    url: str
    kind: str
    method: str
    factors: list
    resolutions: list
    sizes: list
    chunks: int
    seconds: float
    dashboard_link: str = ""

    def summary(self) -> str:
        lines = [f"{self.url}: {len(self.factors)} mip(s) added ({self.method} of each block; "
                 f"{self.chunks} chunk task(s) in {self.seconds:.2f} s)"]
        for i, (f, r, s) in enumerate(zip(self.factors, self.resolutions, self.sizes), start=1):
            lines.append(f"  mip {i}: factor {','.join(map(str, f))} -> {'x'.join(f'{v:g}' for v in r)} nm, "
                         f"size {','.join(map(str, s))}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def default_mips(size: Sequence[int], resolution: Sequence[float], target: int = 128) -> int:
    """Mips until the volume's y and x extents are both at most ``target`` voxels (at least 1, at most 8)."""
    size = np.array(size, float)
    n = 0
    for f in mip_factors(resolution, 8):
        if max(size[1], size[2]) <= target:
            break
        size = np.ceil(size / np.array(f))
        n += 1
    return max(1, n)


def _scale_key(res_xyz) -> str:
    return "_".join(f"{int(r)}" if float(r).is_integer() else f"{r:g}" for r in res_xyz)


def _make_scales(base: dict, factors) -> list[dict]:
    """Scale dicts (Precomputed, x, y, z) of mips 1..N after ``base`` (mip 0)."""
    scales, prev = [], base
    for f in factors:
        fx = np.array(f[::-1])
        res = [float(r) * k for r, k in zip(prev["resolution"], fx)]
        res = [int(r) if float(r).is_integer() else r for r in res]
        off = [int(o) // int(k) for o, k in zip(prev["voxel_offset"], fx)]
        size = [-(-(int(o) + int(s)) // int(k)) - oo for o, s, k, oo in zip(prev["voxel_offset"], prev["size"], fx, off)]
        chunk = [int(min(c, s)) for c, s in zip(base["chunk_sizes"][0], size)]
        sc = {"key": _scale_key(res), "resolution": res, "voxel_offset": off, "size": size,
              "chunk_sizes": [chunk], "encoding": base["encoding"]}
        if "compressed_segmentation_block_size" in base:
            sc["compressed_segmentation_block_size"] = base["compressed_segmentation_block_size"]
        scales.append(sc)
        prev = sc
    return scales


def _open_mip(url: str, info: dict, mip: int, compress):
    from cloudvolume import CloudVolume

    return CloudVolume(url, mip=mip, info=info, fill_missing=True, bounded=True, parallel=1, progress=False,
                       non_aligned_writes=True, cache=False, compress=compress)


def _compress_of(info: dict):
    c = info.get("emkit", {}).get("compress")
    return None if c is None else ("gzip" if c else False)


def _read(cv, bbox: Bbox, multichannel: bool) -> np.ndarray:
    sl = tuple(slice(a, b) for a, b in zip(bbox.start[::-1], bbox.stop[::-1]))
    arr = np.ascontiguousarray(np.asarray(cv[sl]).transpose(3, 2, 1, 0))
    return arr if multichannel else arr[0]


@dataclass(frozen=True)
class DownsampleTask:
    """Chunk task: write mips ``first .. first + len(factors) - 1`` of one box from mip ``first - 1``.

    ``chunk`` is the box at the last (coarsest) of these mips; the task reads the matching box of
    mip ``first - 1`` once and downsamples it level by level (as Igneous' tasks make several mips
    from one read), writing each level's box (whole storage chunks, or up to the volume's end).
    """

    url: str
    first: int
    factors: tuple
    kind: str
    multichannel: bool

    def __call__(self, chunk: Bbox, read_bbox: Bbox) -> None:
        from .mesh import _files

        info = _files(self.url).get_json("info")
        compress = _compress_of(info)
        src = _open_mip(self.url, info, self.first - 1, compress)
        sb = Bbox.from_shape(tuple(int(v) for v in src.volume_size[::-1]), tuple(int(v) for v in src.voxel_offset[::-1]))
        cum = np.prod(np.array(self.factors), axis=0)
        rb = Bbox(tuple(int(v) for v in np.array(chunk.start) * cum),
                  tuple(int(v) for v in np.array(chunk.stop) * cum)).intersect(sb)
        arr = _read(src, rb, self.multichannel)
        start = np.array(rb.start)
        for k, f in enumerate(self.factors):
            arr = downsample(arr, f, self.kind)
            start = start // np.array(f)
            dst = _open_mip(self.url, info, self.first + k, compress)
            out = arr if self.multichannel else arr[None]
            sl = tuple(slice(int(a), int(a) + n) for a, n in zip(start[::-1], out.shape[1:][::-1]))
            dst[sl] = out.transpose(3, 2, 1, 0)


#: largest box (bytes of the finer mip) one pyramid task reads; more mips per task while it fits
TASK_READ_BYTES = 64 * 2**20


def _passes(scales: list, factors, bytes_per_voxel: int, task_size=None) -> list[tuple[int, int, tuple]]:
    """Group mips into passes ``(first, last, task box at last)``: one read of mip ``first - 1`` per task.

    A pass grows while the box its tasks read stays under :data:`TASK_READ_BYTES`. The task box
    is ``task_size`` (default the storage chunk) of the pass' last mip, in whole storage chunks.
    """
    out, first = [], 1
    n = len(factors)
    while first <= n:
        best = None
        for last in range(first, n + 1):
            sc = scales[last]
            chunk = sc["chunk_sizes"][0][::-1]
            size = sc["size"][::-1]
            ts = chunk if task_size is None else task_size
            ts = tuple(min(-(-t // c) * c, -(-s // c) * c) for t, c, s in zip(ts, chunk, size))
            cum = np.prod(np.array(factors[first - 1:last]), axis=0)
            read = int(np.prod(np.array(ts) * cum)) * bytes_per_voxel
            if best is None or read <= TASK_READ_BYTES:
                best = (first, last, ts)
            if read > TASK_READ_BYTES:
                break
        out.append(best)
        first = best[1] + 1
    return out


def pyramid_layers(
    url: str | os.PathLike,
    *,
    mips: int | None = None,
    factors: Sequence[Sequence[int]] | None = None,
    task_size=None,
    overwrite: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    retries: int = 3,
    progress: bool = True,
) -> PyramidReport:
    """Add mips 1..N to the layer at ``url``, chunk by chunk (equal to :func:`pyramid` of the array).

    Parameters
    ----------
    url : image, probability, affinities, segmentation or mask layer (URL or local path).
    mips : levels to add; default :func:`default_mips` (until y and x are at most 128 voxels).
    factors : factor (z, y, x) of each level; default :func:`mip_factors` of the resolution.
    task_size : output box (z, y, x) of one task at the coarsest mip of its pass, in voxels of that
        mip, rounded up to whole storage chunks (so tasks never share a chunk file); default the
        storage chunk. A task reads the matching box of the pass' finer mip once and writes every
        mip of the pass from it; passes take as many mips as keep that read under
        :data:`TASK_READ_BYTES` (64 MiB).
    overwrite : replace scales the layer already has above mip 0 (their files are deleted first);
        without it a layer with extra scales is refused (LayerExistsError).
    workers, scheduler, client : where to run (see :func:`emkit.runtime.map_chunks`): 0 = in this
        process, N = a local dask cluster of N workers (one for all levels), None = sized to the machine.
    retries : extra attempts of a failing chunk.
    progress : progress bars.

    Returns
    -------
    PyramidReport
    """
    from .io import Layer
    from .mesh import _files
    from .runtime import map_chunks

    layer = Layer.open(url)
    kind = layer.kind.name
    method = _method(kind)
    info = layer.info
    if factors is None:
        n = default_mips(layer.size, layer.resolution) if mips is None else int(mips)
        if n < 1:
            raise InputError(f"mips must be >= 1, got {mips}")
        factors = mip_factors(layer.resolution, n)
    else:
        factors = [as_vec3(f, "factor", positive=True) for f in factors]
        if mips is not None and int(mips) != len(factors):
            raise InputError(f"mips={mips} but {len(factors)} factors given")
        if not factors:
            raise InputError("factors must name at least one level")
    if task_size is not None:
        task_size = as_vec3(task_size, "task size", positive=True)
    cum = np.cumprod(np.array(factors), axis=0)[-1]
    bad = [o for o, c in zip(layer.voxel_offset, cum) if o % c]
    if bad:
        raise InputError(f"the voxel offset {layer.voxel_offset} (z,y,x) of {layer.url} is not a multiple of the "
                         f"cumulative factor {tuple(int(c) for c in cum)}: the coarser grids would not align; "
                         "use fewer mips or move the layer")
    scales = info["scales"]
    cf = _files(layer.url)
    if len(scales) > 1:
        if not overwrite:
            raise LayerExistsError(f"{layer.url} already has {len(scales) - 1} scale(s) above mip 0 "
                                   f"({', '.join(s['key'] for s in scales[1:])}); pass overwrite=True (--overwrite) "
                                   "to replace them")
        for s in scales[1:]:
            keys = [p for p in cf.list(prefix=s["key"] + "/")]
            if keys:
                cf.delete(keys)
        scales = scales[:1]
    info = dict(info)
    info["scales"] = scales + _make_scales(scales[0], factors)
    cf.put_json("info", info)

    from .runtime import stage_client

    t0 = time.perf_counter()
    nchunks, link = 0, ""
    with stage_client(client, workers=workers, scheduler=scheduler, progress=progress) as client:
        bpv = layer.dtype.itemsize * layer.num_channels
        for first, last, ts in _passes(info["scales"], factors, bpv, task_size):
            sc = info["scales"][last]
            bounds = Bbox.from_shape(sc["size"][::-1], sc["voxel_offset"][::-1])
            task = DownsampleTask(layer.url, first, tuple(tuple(f) for f in factors[first - 1:last]), kind,
                                  layer.multichannel)
            desc = f"pyramid mip {first}" if first == last else f"pyramid mips {first}-{last}"
            rep = map_chunks(task, bounds, ts, origin=bounds.start, client=client,
                             workers=0 if client is None else None, retries=retries, progress=progress, desc=desc)
            nchunks += rep.total
            link = rep.dashboard_link or link
    res = [list(map(float, s["resolution"][::-1])) for s in info["scales"][1:]]
    sizes = [list(s["size"][::-1]) for s in info["scales"][1:]]
    return PyramidReport(url=layer.url, kind=kind, method=method, factors=[list(f) for f in factors],
                         resolutions=res, sizes=sizes, chunks=nchunks, seconds=time.perf_counter() - t0,
                         dashboard_link=link)
