"""Synaptic clefts as connected components of a thresholded cleft-probability map.

Paper (Methods, *Synapse detection*): "We made discrete predictions of synaptic clefts by
performing connected components throughout the large volume ... in 2048 × 2048 × 256 voxel
chunks, and then ran additional processing to merge the predictions from these chunks together.
These connected components were filtered by an initial size threshold at 40 voxels (at
8 × 8 × 40 nm³ resolution). During this step, we also computed bounding boxes, sizes, and
centroid coordinates for each predicted cleft" (Fig. 4c).

Hysteresis (``CleftParams.seed_threshold``, not in the paper): a component of the voxels above
``threshold`` is kept only when one of its voxels is above ``seed_threshold`` (seed high, grow low).
A component's maximum probability is a per-component statistic like its size, so both forms apply
it after merging across chunks, as the size filter, and stay equal for any chunk size.

Two forms, equal voxel for voxel and row for row:

- :func:`cleft_components` — an in-memory (z, y, x) probability array;
- :func:`cleft_components_layers` — Precomputed layers, map-reduce over chunks:

  1. *map* (one task per chunk, no halo): threshold, ``cc3d`` connected components, per
     component partial statistics (voxel count, coordinate sums, bounding box, first voxel in
     raster order, probability sum and maximum) and the chunk's six face planes of local labels;
  2. *reduce* (this process; reads only faces and statistics): at every chunk boundary plane the
     two touching global planes (tiled from the chunks' faces) are compared — same position for
     6-connectivity, the 3 × 3 in-plane shifts for 26-connectivity (this also covers chunks that
     touch only along an edge or at a corner: every cross-chunk neighbour pair straddles at least
     one boundary plane); union-find (``scipy.sparse.csgraph``) gives global components whose
     statistics are summed (maxima: the largest); the size filter and the seed test are applied
     *after* merging; ids 1..N in raster order
     of each cleft's first voxel;
  3. *relabel* (one task per chunk): the chunk's components again (deterministic) mapped to the
     final ids, written to a uint64 segmentation layer; the table is written as Parquet beside it.

Ids: 1..N in raster (z, y, x) order of each kept cleft's first voxel. Table columns: ``id``,
``size_voxels``, ``bbox_z0 … bbox_x1`` (voxels, half-open, in the array's / layer's volume
coordinates from 0), ``centroid_z_nm``, ``centroid_y_nm``, ``centroid_x_nm`` (voxel centres:
``(index + 0.5) * resolution``, plus the layer's voxel offset for layers), ``mean_prob`` (the
cleft score: mean probability over its voxels). Integer columns are equal between both forms;
``mean_prob`` sums floats in another order across chunks and agrees to ~1e-12 relative.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np

from emkit.errors import InputError, LayerExistsError
from emkit.geometry import Bbox, as_vec3

__all__ = ["CleftParams", "min_size_for", "cleft_components", "cleft_components_layers", "TABLE_COLUMNS"]

#: Paper's resolution (z, y, x nm) at which the 40-voxel size threshold was stated.
PAPER_RESOLUTION = (40.0, 8.0, 8.0)
PAPER_MIN_SIZE = 40

TABLE_COLUMNS = ("id", "size_voxels", "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1",
                 "centroid_z_nm", "centroid_y_nm", "centroid_x_nm", "mean_prob")


def min_size_for(resolution, base: int = PAPER_MIN_SIZE) -> int:
    """Size threshold in voxels at ``resolution`` (z, y, x nm) equal in volume to ``base`` voxels at
    8 × 8 × 40 nm (paper, Methods *Synapse detection*): ``round(base * 2560 nm³ / voxel volume)``,
    at least 1. E.g. 40 at (40, 8, 8), 97 at (50, 4.6, 4.6) (ssTEM), 320 at (10, 8, 8)."""
    res = as_vec3(resolution, "resolution", positive=True, dtype=float)
    vol = float(np.prod(res))
    return max(1, int(round(base * float(np.prod(PAPER_RESOLUTION)) / vol)))


@dataclass(frozen=True)
class CleftParams:
    """Parameters of cleft connected components.

    Attributes
    ----------
    threshold : a voxel is synaptic when its cleft probability is ``> threshold`` (0..1). The
        paper does not state its threshold; 0.5 is the decision boundary of the BCE-trained cleft
        net (paper, Methods *Synapse detection*: "binary cross entropy loss"). None (default):
        0.5 here; the synapse pipeline (:func:`emkit.synapse.find_synapses`, ``emkit synapses``)
        uses the threshold recorded with the cleft model it runs (``cleft_threshold`` in the
        model's ``.json``: chosen on its validation data), else 0.5.
    min_size_voxels : clefts with fewer voxels (counted after merging across chunks) are dropped.
        None (default) means :func:`min_size_for` the data's resolution: 40 voxels at
        8 × 8 × 40 nm (paper, Methods *Synapse detection*), scaled by voxel volume.
    connectivity : 26 (default: voxels touching at a face, edge or corner belong together; a
        cleft is a thin sheet that, on anisotropic 40 nm sections, often steps diagonally between
        sections) or 6 (faces only).
    seed_threshold : hysteresis (not in the paper, which states one threshold): a component of the
        voxels ``> threshold`` is kept only when at least one of its voxels is ``> seed_threshold``
        (seed at a high probability, grow at the lower ``threshold``: a cleft is found by its
        confident core and keeps its fainter rim, so it is neither missed nor split into
        fragments; faint blobs without a core are dropped). Must be above the threshold used.
        None (default): off — on the shipped cleft net hysteresis chosen on the validation phantom
        lowered the fresh-seed F1 (``benchmarks/shipped_cleft.py``, ``postprocessing``), so no
        model records one.
    """

    threshold: float | None = None
    min_size_voxels: int | None = None
    connectivity: int = 26
    seed_threshold: float | None = None

    def __post_init__(self):
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)) or not np.isfinite(t) \
                or not 0.0 <= float(t) < 1.0):
            raise InputError(f"CleftParams.threshold must be a number in [0, 1) or None, got {t!r}")
        m = self.min_size_voxels
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1):
            raise InputError(f"CleftParams.min_size_voxels must be an integer >= 1 or None, got {m!r}")
        if self.connectivity not in (6, 26) or isinstance(self.connectivity, bool):
            raise InputError(f"CleftParams.connectivity must be 6 or 26, got {self.connectivity!r}")
        h = self.seed_threshold
        if h is not None:
            if isinstance(h, bool) or not isinstance(h, (int, float, np.floating, np.integer)) or not np.isfinite(h) \
                    or not 0.0 <= float(h) < 1.0:
                raise InputError(f"CleftParams.seed_threshold must be a number in [0, 1) or None, got {h!r}")
            if float(h) <= self.threshold_value:
                raise InputError(f"CleftParams.seed_threshold {h!r} must be above the threshold "
                                 f"{self.threshold_value!r} (hysteresis: seed high, grow low)")

    @property
    def threshold_value(self) -> float:
        """The threshold used: ``threshold``, or 0.5 when it is None."""
        return 0.5 if self.threshold is None else float(self.threshold)

    @property
    def seed_value(self) -> float | None:
        """The hysteresis seed threshold, or None (off)."""
        return None if self.seed_threshold is None else float(self.seed_threshold)

    def min_size(self, resolution) -> int:
        """The size threshold in voxels at ``resolution`` (z, y, x nm)."""
        return int(self.min_size_voxels) if self.min_size_voxels is not None else min_size_for(resolution)

    def to_dict(self) -> dict:
        """The fields as a dict; ``seed_threshold`` only when set (records and resumable runs written
        before it existed stay equal)."""
        d = asdict(self)
        if d["seed_threshold"] is None:
            del d["seed_threshold"]
        return d


# ------------------------------------------------------------------ shared kernels -------------
def _check_prob(prob, what="prob") -> np.ndarray:
    a = np.asarray(prob)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise InputError(f"{what} must be a (z, y, x) array, got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.float32)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{what} must hold numbers (probabilities 0..1), got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.integer) and a.size and (a.min() < 0 or a.max() > 1):
        raise InputError(f"{what} is an integer array with values in [{a.min()}, {a.max()}]; give probabilities "
                         "0..1 (divide a 0..255 map by 255)")
    if np.issubdtype(a.dtype, np.floating) and a.size:
        if np.isnan(a).any():
            raise InputError(f"{what} holds NaN values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise InputError(f"{what} has values in [{lo:g}, {hi:g}]; cleft probabilities must be in 0..1")
    return a


def _local_components(prob: np.ndarray, params: CleftParams):
    import cc3d

    mask = prob > params.threshold_value
    labels, n = cc3d.connected_components(mask, connectivity=params.connectivity, return_N=True,
                                          out_dtype=np.uint32)
    return labels, int(n)


def _partial_stats(labels: np.ndarray, n: int, prob: np.ndarray, start, shape) -> dict:
    """Per local label 1..n: count, coordinate sums, bbox (global voxels), first voxel (global
    raster index), probability sum and maximum."""
    flat = labels.ravel()
    out = {"count": np.zeros(n, np.int64), "sum": np.zeros((n, 3), np.int64), "lo": np.zeros((n, 3), np.int64),
           "hi": np.zeros((n, 3), np.int64), "first": np.zeros(n, np.int64), "psum": np.zeros(n, np.float64),
           "pmax": np.zeros(n, np.float64)}
    if n == 0:
        return out
    nz = np.flatnonzero(flat)
    lab = flat[nz].astype(np.int64) - 1
    zyx = np.unravel_index(nz, labels.shape)
    out["count"] = np.bincount(lab, minlength=n).astype(np.int64)
    for ax in range(3):
        c = zyx[ax].astype(np.int64) + int(start[ax])
        out["sum"][:, ax] = np.bincount(lab, weights=c, minlength=n).astype(np.int64)  # exact below 2**53
        lo = np.full(n, np.iinfo(np.int64).max, np.int64)
        hi = np.full(n, -1, np.int64)
        np.minimum.at(lo, lab, c)
        np.maximum.at(hi, lab, c + 1)
        out["lo"][:, ax], out["hi"][:, ax] = lo, hi
    g = (zyx[0].astype(np.int64) + start[0]) * (shape[1] * shape[2]) + (zyx[1].astype(np.int64) + start[1]) * shape[2] \
        + zyx[2].astype(np.int64) + start[2]
    # nz is increasing: the first occurrence of each label is its first voxel in raster order
    _, idx = np.unique(lab, return_index=True)
    out["first"] = g[idx]
    pv = prob.ravel()[nz].astype(np.float64)
    out["psum"] = np.bincount(lab, weights=pv, minlength=n)
    pmax = np.full(n, -np.inf)
    np.maximum.at(pmax, lab, pv)
    out["pmax"] = pmax
    return out


def _finalize(count, sums, lo, hi, first, psum, min_size, resolution, offset=(0, 0, 0), pmax=None, seed=None):
    """Size filter (and hysteresis seed test: max probability > ``seed``), ids in raster order of
    first voxel; returns (order of kept rows, table dict)."""
    ok = count >= min_size
    if seed is not None:
        ok &= pmax > seed
    keep = np.flatnonzero(ok)
    keep = keep[np.argsort(first[keep], kind="stable")]
    res = np.asarray(resolution, np.float64)
    cnt = count[keep]
    cen = ((sums[keep] / np.maximum(cnt, 1)[:, None]) + 0.5 + np.asarray(offset, np.float64)) * res
    table = {"id": np.arange(1, keep.size + 1, dtype=np.uint64), "size_voxels": cnt.astype(np.int64)}
    for ax, a in enumerate("zyx"):
        table[f"bbox_{a}0"] = lo[keep, ax].astype(np.int64)
    for ax, a in enumerate("zyx"):
        table[f"bbox_{a}1"] = hi[keep, ax].astype(np.int64)
    for ax, a in enumerate("zyx"):
        table[f"centroid_{a}_nm"] = cen[:, ax]
    table["mean_prob"] = psum[keep] / np.maximum(cnt, 1)
    return keep, table


def _to_frame(table: dict):
    import pandas as pd

    return pd.DataFrame({k: table[k] for k in TABLE_COLUMNS})


# ------------------------------------------------------------------ array form -----------------
def cleft_components(prob, resolution=(40, 8, 8), params: CleftParams | None = None):
    """Cleft connected components of a (z, y, x) probability map.

    Parameters
    ----------
    prob : (z, y, x) cleft probability, 0..1 (float, or a bool / 0-1 integer mask).
    resolution : voxel size (z, y, x) in nm; sets the default size threshold
        (:func:`min_size_for`) and the centroids in nm.
    params : :class:`CleftParams` (default: the paper's).

    Returns
    -------
    labels : uint64 (z, y, x), 0 = no cleft, clefts 1..N in raster order of their first voxel.
    table : pandas DataFrame, one row per cleft (columns :data:`TABLE_COLUMNS`; see the module).
    """
    params = params if params is not None else CleftParams()
    if not isinstance(params, CleftParams):
        raise InputError(f"params must be a CleftParams, got {type(params).__name__}")
    resolution = as_vec3(resolution, "resolution", positive=True, dtype=float)
    prob = _check_prob(prob)
    labels, n = _local_components(prob, params)
    st = _partial_stats(labels, n, prob, (0, 0, 0), prob.shape)
    keep, table = _finalize(st["count"], st["sum"], st["lo"], st["hi"], st["first"], st["psum"],
                            params.min_size(resolution), resolution, pmax=st["pmax"], seed=params.seed_value)
    lut = np.zeros(n + 1, np.uint64)
    lut[keep + 1] = table["id"]
    return lut[labels], _to_frame(table)


# ------------------------------------------------------------------ chunked form ---------------
def _faces(labels: np.ndarray, key_base: int) -> dict:
    """The six face planes of a chunk's local labels as global keys (chunk << 32 | local)."""
    out = {}
    for ax, a in enumerate("zyx"):
        for side, sl in (("lo", 0), ("hi", -1)):
            plane = np.take(labels, sl, axis=ax).astype(np.uint64)
            out[f"{a}{side}"] = np.where(plane > 0, plane | np.uint64(key_base), np.uint64(0))
    return out


class _ChunkReader:
    """Reads and checks the probability of a box (a :class:`emkit.segment.chunked.LayerSource`)."""

    def __init__(self, url: str):
        from emkit.segment.chunked import LayerSource

        self.url = url
        self._source = LayerSource(url)

    def read(self, bbox: Bbox) -> np.ndarray:
        return _check_prob(self._source.read(bbox), f"{self.url} {bbox}")


def _chunk_index(start, chunk, grid) -> int:
    iz, iy, ix = (a // c for a, c in zip(start, chunk))
    return (iz * grid[1] + iy) * grid[2] + ix


@dataclass
class _MapTask:
    reader: object
    store: object
    params: dict
    shape: tuple
    chunk: tuple
    grid: tuple

    def __call__(self, chunk: Bbox, read_bbox: Bbox) -> None:
        from emkit.runtime import chunk_name

        prob = self.reader.read(chunk)
        labels, n = _local_components(prob, CleftParams(**self.params))
        st = _partial_stats(labels, n, prob, chunk.start, self.shape)
        idx = _chunk_index(chunk.start, self.chunk, self.grid)
        self.store.put(f"map/{chunk_name(chunk)}", {**st, **_faces(labels, idx << 32), "n": np.int64(n),
                                                   "index": np.int64(idx)})


@dataclass
class _RelabelTask:
    reader: object
    store: object
    params: dict
    out_url: str

    def __call__(self, chunk: Bbox, read_bbox: Bbox) -> None:
        from emkit.io import Layer
        from emkit.runtime import chunk_name

        prob = self.reader.read(chunk)
        labels, n = _local_components(prob, CleftParams(**self.params))
        lut = self.store.get(f"lut/{chunk_name(chunk)}")["lut"]
        if lut.size != n + 1:
            raise RuntimeError(f"relabel: chunk {chunk} has {n} components, its table has {lut.size - 1}")
        layer = Layer.open(self.out_url)
        layer.write(lut[labels], chunk.translate(layer.voxel_offset).start)


def _boundary_pairs(boxes, parts, shape, chunk, connectivity):
    """Pairs of global keys touching across chunk boundary planes."""
    pa, pb = [], []
    for ax, a in enumerate("zyx"):
        o1, o2 = [i for i in range(3) if i != ax]
        for cut in range(chunk[ax], shape[ax], chunk[ax]):
            low = np.zeros((shape[o1], shape[o2]), np.uint64)
            high = np.zeros((shape[o1], shape[o2]), np.uint64)
            for b, p in zip(boxes, parts):
                sl = (slice(b.start[o1], b.stop[o1]), slice(b.start[o2], b.stop[o2]))
                if b.stop[ax] == cut:
                    low[sl] = p[f"{a}hi"]
                elif b.start[ax] == cut:
                    high[sl] = p[f"{a}lo"]
            shifts = [(0, 0)] if connectivity == 6 else [(d1, d2) for d1 in (-1, 0, 1) for d2 in (-1, 0, 1)]
            H, W = low.shape
            for d1, d2 in shifts:
                lo_sl = (slice(max(0, -d1), H - max(0, d1)), slice(max(0, -d2), W - max(0, d2)))
                hi_sl = (slice(max(0, d1), H - max(0, -d1)), slice(max(0, d2), W - max(0, -d2)))
                x, y = low[lo_sl].ravel(), high[hi_sl].ravel()
                m = (x > 0) & (y > 0)
                if m.any():
                    e = np.unique(np.stack([x[m], y[m]], axis=1), axis=0)
                    pa.append(e[:, 0])
                    pb.append(e[:, 1])
    if not pa:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return np.concatenate(pa), np.concatenate(pb)


def cleft_components_layers(prob_url: str, out_url: str, *, chunk_size, params: CleftParams | None = None,
                            workers: int | None = 0, scheduler: str | None = None, client=None,
                            overwrite: bool = False, progress: bool = True) -> dict:
    """Cleft connected components of a probability layer, chunk by chunk (map-reduce).

    Parameters
    ----------
    prob_url : Precomputed probability layer (one channel, z, y, x; 0..1).
    out_url : segmentation layer to write (uint64 cleft ids, same grid as ``prob_url``; storage
        chunk = ``chunk_size``). The table goes beside it as ``<out_url>.parquet``.
    chunk_size : task chunk (z, y, x) voxels; any size (clipped to the volume). The result does not
        depend on it.
    params : :class:`CleftParams` (default: the paper's; size threshold from the layer's resolution).
    workers, scheduler, client : where tasks run, as in :func:`emkit.runtime.map_chunks`
        (``workers=0``: serially in this process).
    overwrite : replace an existing output layer / table; without it they are refused
        (:class:`~emkit.errors.LayerExistsError`).
    progress : progress bars.

    Returns
    -------
    dict: ``segmentation`` (URL), ``table`` (path of the Parquet file), ``n_clefts``,
    ``n_components_before_filter``, ``chunks``, ``seconds`` per stage.
    """
    import os
    import time

    from emkit.io import Layer
    from emkit.io.layer import layer_exists, local_path, normalize_url
    from emkit.runtime import chunk_name, map_chunks, put_atomic
    from emkit.segment.chunked import FileStore

    params = params if params is not None else CleftParams()
    if not isinstance(params, CleftParams):
        raise InputError(f"params must be a CleftParams, got {type(params).__name__}")
    if not layer_exists(prob_url):
        raise InputError(f"no Precomputed layer at {prob_url!r} (the cleft probability layer)")
    src = Layer.open(prob_url)
    if src.num_channels != 1:
        raise InputError(f"{src.url} has {src.num_channels} channels; give a one-channel cleft probability layer")
    out_url = normalize_url(out_url)
    if normalize_url(prob_url).rstrip("/") == out_url.rstrip("/"):
        raise InputError(f"out_url {out_url!r} is the input layer")
    table_name = out_url.rstrip("/").rsplit("/", 1)[-1] + ".parquet"
    parent_url = out_url.rstrip("/").rsplit("/", 1)[0]
    parent = local_path(parent_url)
    table_path = f"{parent}/{table_name}" if parent is not None else f"{parent_url}/{table_name}"
    if not overwrite:
        if layer_exists(out_url):
            raise LayerExistsError(f"a layer already exists at {out_url}; pass overwrite=True to replace it")
        if parent is not None and os.path.exists(table_path):
            raise LayerExistsError(f"a cleft table already exists at {table_path}; pass overwrite=True to replace it")
    shape = tuple(src.size)
    chunk = tuple(min(c, s) for c, s in zip(as_vec3(chunk_size, "chunk_size", positive=True), shape))
    grid = tuple(-(-s // c) for s, c in zip(shape, chunk))
    res = src.resolution
    min_size = params.min_size(res)
    Layer.create(out_url, "segmentation", shape, resolution=res, voxel_offset=src.voxel_offset, chunk_size=chunk,
                 overwrite=overwrite, description=f"emkit cleft components of {src.url}")
    check = Layer.open(out_url)
    from emkit.io import check_same_grid

    check_same_grid(src, check, what="cleft segmentation")
    store = FileStore(f"{out_url.rstrip('/')}/.emkit_cleft_work")
    store.delete_prefix("")
    reader = _ChunkReader(src.url)
    pd_ = params.to_dict()
    bounds = Bbox((0, 0, 0), shape)
    run = dict(client=client) if client is not None else (dict(scheduler=scheduler) if scheduler else dict(workers=workers))
    seconds = {}
    rep = map_chunks(_MapTask(reader, store, pd_, shape, chunk, grid), bounds, chunk, origin=(0, 0, 0),
                     progress=progress, desc="clefts map", **run)
    seconds["map"] = round(rep.seconds, 3)

    # reduce ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    from emkit.geometry import chunk_grid

    boxes = list(chunk_grid(bounds, chunk, (0, 0, 0)))
    parts = [store.get(f"map/{chunk_name(b)}") for b in boxes]
    idx = np.array([int(p["index"]) for p in parts], np.int64)
    ns = np.array([int(p["n"]) for p in parts], np.int64)
    offs = np.zeros(int(idx.max()) + 1 if idx.size else 1, np.int64)
    counts_by_idx = np.zeros_like(offs)
    counts_by_idx[idx] = ns
    offs[1:] = np.cumsum(counts_by_idx)[:-1]
    N = int(ns.sum())
    cat = (lambda k, dt, w=None: np.concatenate([p[k].reshape(-1, *(() if w is None else (w,)))
                                                 for p in parts]).astype(dt) if parts else np.zeros(0, dt))
    # node order = order of ``parts``; build a key -> node map via offsets in index order
    order_nodes = np.concatenate([offs[i] + np.arange(n) for i, n in zip(idx, ns)]).astype(np.int64) if N else \
        np.zeros(0, np.int64)
    count = np.zeros(N, np.int64)
    sums, lo, hi = np.zeros((N, 3), np.int64), np.zeros((N, 3), np.int64), np.zeros((N, 3), np.int64)
    first, psum, pmax = np.zeros(N, np.int64), np.zeros(N, np.float64), np.zeros(N, np.float64)
    if N:
        count[order_nodes] = cat("count", np.int64)
        sums[order_nodes] = cat("sum", np.int64, 3)
        lo[order_nodes] = cat("lo", np.int64, 3)
        hi[order_nodes] = cat("hi", np.int64, 3)
        first[order_nodes] = cat("first", np.int64)
        psum[order_nodes] = cat("psum", np.float64)
        pmax[order_nodes] = cat("pmax", np.float64)
    ka, kb = _boundary_pairs(boxes, parts, shape, chunk, params.connectivity)
    node = (lambda k: offs[(k >> np.uint64(32)).astype(np.int64)] + (k & np.uint64(0xFFFFFFFF)).astype(np.int64) - 1)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(ka.size, np.int8), (node(ka), node(kb))), shape=(N, N))
    ncomp, root = connected_components(g, directed=False) if N else (0, np.zeros(0, np.int64))
    gcount = np.bincount(root, weights=count, minlength=ncomp).astype(np.int64) if N else np.zeros(0, np.int64)
    gsum = np.zeros((ncomp, 3), np.int64)
    glo = np.full((ncomp, 3), np.iinfo(np.int64).max, np.int64)
    ghi = np.full((ncomp, 3), -1, np.int64)
    np.add.at(gsum, root, sums)
    np.minimum.at(glo, root, lo)
    np.maximum.at(ghi, root, hi)
    gfirst = np.full(ncomp, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(gfirst, root, first)
    gpsum = np.zeros(ncomp, np.float64)
    np.add.at(gpsum, root, psum)
    gpmax = np.full(ncomp, -np.inf)
    np.maximum.at(gpmax, root, pmax)
    keep, table = _finalize(gcount, gsum, glo, ghi, gfirst, gpsum, min_size, res, src.voxel_offset,
                            pmax=gpmax, seed=params.seed_value)
    final = np.zeros(ncomp, np.uint64)
    final[keep] = table["id"]
    node_id = final[root] if N else np.zeros(0, np.uint64)
    for b, i, n in zip(boxes, idx, ns):
        lut = np.zeros(n + 1, np.uint64)
        lut[1:] = node_id[offs[i]:offs[i] + n]
        store.put(f"lut/{chunk_name(b)}", {"lut": lut})
    seconds["reduce"] = round(time.perf_counter() - t0, 3)

    rep2 = map_chunks(_RelabelTask(reader, store, pd_, out_url), bounds, chunk, origin=(0, 0, 0),
                      progress=progress, desc="clefts relabel", **run)
    seconds["relabel"] = round(rep2.seconds, 3)
    buf = io.BytesIO()
    df = _to_frame(table)
    df.attrs = {}
    df.to_parquet(buf, index=False)
    put_atomic(parent_url, table_name, buf.getvalue(), durable=True)
    store.delete_prefix("")
    work = local_path(store.url)
    if work is not None and os.path.isdir(work):
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return {"segmentation": out_url, "table": table_path, "n_clefts": int(keep.size),
            "n_components_before_filter": int(ncomp), "min_size_voxels": int(min_size),
            "seed_threshold": params.seed_value, "chunks": len(boxes),
            "seconds": seconds}
