"""Skeletons of segments: TEASAR (kimimaro), as Precomputed skeletons, and a per-neuron table.

Igneous skeletonizes the paper's segments with Kimimaro, a refined TEASAR (paper: *Data access
and visualization*). Two forms:

* :func:`skeletonize` — every segment of a numpy label volume, in one call;
* :func:`skeleton_layers` — a segmentation layer, chunk by chunk on
  :func:`emkit.runtime.map_chunks` (serially or on dask): each task skeletonizes its chunk plus
  one voxel on the high side with kimimaro's ``fix_borders`` (a skeleton that leaves a chunk ends
  at the centre of its cross-section on the shared plane, where the neighbour's begins); the
  pieces of each segment are then merged (shared vertices welded), post-processed as the whole
  volume's are (:func:`kimimaro.postprocess`: dust and ticks removed, components joined) and
  written as unsharded Precomputed skeletons (``<layer>/skeletons/<id>``, uncompressed; the
  layer's info gets ``"skeletons": "skeletons"``).

:func:`skeleton_table` makes the per-neuron table (segment id, path length in µm, branch points,
end points, and synapse counts when a synapse table is given); :func:`skeleton_layers` writes it
to Parquet when asked.

Coordinates: vertices are in nm, axes **(x, y, z)** as Precomputed stores them, at voxel
centres of the layer's global frame (voxel ``i`` at ``(i + 0.5)·r``, as the meshes of
:mod:`emkit.mesh`).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Iterable, Sequence

import numpy as np

from .errors import InputError, LayerExistsError
from .geometry import Bbox, as_vec3
from .mesh import _files

__all__ = ["SkeletonParams", "skeletonize", "merge_skeletons", "skeleton_stats", "skeleton_table",
           "skeleton_layers", "SkeletonReport", "SKELETON_DIR", "TABLE_COLUMNS"]

SKELETON_DIR = "skeletons"
_STAGING = ".emkit/skeleton_fragments"
_FRAG_RE = re.compile(r"(?:^|/)(\d+):([0-9_-]+)$")
_COUNTS = ".emkit/skeleton_counts"

#: columns of :func:`skeleton_table`, in order
TABLE_COLUMNS = ["segment_id", "path_length_um", "branch_points", "endpoints", "vertices", "voxels",
                 "synapse_count", "synapses_pre", "synapses_post"]


@dataclass(frozen=True)
class SkeletonParams:
    """TEASAR parameters (defaults: Igneous' ``SkeletonTask`` and merge, which made the paper's skeletons).

    Attributes
    ----------
    scale, const : a vertex's rolling-ball invalidation radius is ``scale · DBF + const`` nm,
        DBF the distance to the boundary (4 and 500 nm, Igneous' defaults).
    pdrf_scale, pdrf_exponent : penalty field ``pdrf_scale · (1 - DBF/max)^pdrf_exponent + DAF``
        that keeps paths central (100000 and 4).
    soma_detection_threshold, soma_acceptance_threshold, soma_invalidation_scale,
    soma_invalidation_const : kimimaro's soma handling (nm; 750, 3500, 2, 300: its defaults).
    dust_threshold : segments with fewer voxels (in the whole volume) get no skeleton (1000).
    tick_threshold : branches shorter than this (nm) are removed in post-processing (3500 nm,
        Igneous' merge default).
    fix_branching : kimimaro's improved branch placement (True).
    smooth_window : after post-processing, each path between junctions and ends is smoothed by a
        moving average over this many vertices (forward and backward, ends fixed; osteoid's
        ``average_smoothing``), which removes the staircase of the voxel lattice: on anisotropic
        40×8×8 nm voxels a raw lattice path along an oblique neurite is up to ~40 % longer than the
        neurite. 7 (emkit's choice: path lengths within ~3 % of a tube's centreline in
        tests/test_skeleton.py); 0 or 1 keeps kimimaro's raw skeleton.
    """

    scale: float = 4.0
    const: float = 500.0
    pdrf_scale: float = 100000.0
    pdrf_exponent: int = 4
    soma_detection_threshold: float = 750.0
    soma_acceptance_threshold: float = 3500.0
    soma_invalidation_scale: float = 2.0
    soma_invalidation_const: float = 300.0
    dust_threshold: int = 1000
    tick_threshold: float = 3500.0
    fix_branching: bool = True
    smooth_window: int = 7

    def __post_init__(self):
        for name in ("scale", "const", "pdrf_scale", "tick_threshold", "soma_detection_threshold",
                     "soma_acceptance_threshold", "soma_invalidation_scale", "soma_invalidation_const"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise InputError(f"SkeletonParams.{name} must be a number >= 0, got {v!r}")
        if int(self.dust_threshold) < 0:
            raise InputError(f"SkeletonParams.dust_threshold must be >= 0 voxels, got {self.dust_threshold!r}")

    def teasar(self) -> dict:
        return {k: getattr(self, k) for k in ("scale", "const", "pdrf_scale", "pdrf_exponent",
                                              "soma_detection_threshold", "soma_acceptance_threshold",
                                              "soma_invalidation_scale", "soma_invalidation_const")}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SkeletonParams":
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise InputError(f"unknown SkeletonParams field(s) {bad}; known: {sorted(known)}")
        return cls(**d)


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"labels must be a (z, y, x) volume, got shape {labels.shape}")
    if labels.dtype.kind not in "ui":
        raise InputError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.dtype.kind == "i":
        if labels.size and labels.min() < 0:
            raise InputError("labels must be >= 0 (0 is background)")
        labels = labels.astype(np.uint64)
    return labels


def _skeletonize_block(block, resolution, origin_vox, params: SkeletonParams, dust: int, ids=None) -> dict:
    """kimimaro on ``block`` (z, y, x) whose voxel 0 is global voxel ``origin_vox``; vertices in global nm (x, y, z)."""
    import kimimaro

    res_xyz = np.array(resolution[::-1], np.float64)
    skels = kimimaro.skeletonize(
        block.T, teasar_params=params.teasar(), anisotropy=tuple(res_xyz),
        object_ids=None if ids is None else [int(i) for i in ids], dust_threshold=int(dust), progress=False,
        fix_branching=bool(params.fix_branching), fix_borders=True, parallel=1)
    shift = (np.array(origin_vox[::-1], np.float64) + 0.5) * res_xyz
    out = {}
    for i, s in skels.items():
        s.vertices = (s.vertices.astype(np.float64) + shift).astype(np.float32)
        s.id = int(i)
        out[int(i)] = s
    return out


def _postprocess(skel, params: SkeletonParams):
    import kimimaro

    # dust of the skeleton itself is not removed (segments are dusted by voxel count); only ticks
    segid = skel.id
    skel = kimimaro.postprocess(skel, dust_threshold=0, tick_threshold=float(params.tick_threshold))
    if int(params.smooth_window) > 1 and len(skel.edges):
        skel = skel.average_smoothing(int(params.smooth_window), check_boundary=False)
    skel.id = segid
    return skel


def skeletonize(labels: np.ndarray, resolution: Sequence[float] = (40, 8, 8), *, ids: Iterable[int] | None = None,
                params: SkeletonParams | None = None, offset: Sequence[int] = (0, 0, 0)) -> dict:
    """TEASAR skeletons of every segment of ``labels`` (0 = background), post-processed.

    Parameters
    ----------
    labels : integer volume (z, y, x).
    resolution : voxel size in nm (z, y, x); default (40, 8, 8).
    ids : skeletonize only these ids (default: all). Segments with fewer than
        ``params.dust_threshold`` voxels get no skeleton either way; every connected piece of the
        others is skeletonized (one skeleton per id, possibly of several components).
    params : :class:`SkeletonParams`.
    offset : global voxel (z, y, x) of ``labels[0, 0, 0]``.

    Returns
    -------
    dict id -> ``cloudvolume.Skeleton`` (``.vertices`` float32 (n, 3) nm, **x, y, z**; ``.edges``;
    ``.radius`` nm), ordered by id.
    """
    labels = _check_labels(labels)
    res = as_vec3(resolution, "resolution", positive=True, dtype=float)
    off = as_vec3(offset, "offset")
    params = params or SkeletonParams()
    import fastremap

    # dust by the segment's voxel count (not kimimaro's per connected component): as the chunked form
    present, counts = fastremap.unique(labels, return_counts=True)
    keep = [int(i) for i, c in zip(present, counts) if i != 0 and c >= params.dust_threshold]
    if ids is not None:
        want = {int(i) for i in ids}
        keep = [i for i in keep if i in want]
    if not keep:
        return {}
    raw = _skeletonize_block(labels, res, off, params, 0, keep)
    out = {}
    for i, s in sorted(raw.items()):
        s = _postprocess(s, params)
        s.id = i
        if len(s.vertices):
            out[i] = s
    return out


def merge_skeletons(fragments: Sequence, segid: int, params: SkeletonParams | None = None):
    """One skeleton from a segment's chunk pieces: merged, shared vertices welded, post-processed."""
    from cloudvolume import Skeleton

    params = params or SkeletonParams()
    s = Skeleton.simple_merge(list(fragments)).consolidate()
    s = _postprocess(s, params)
    s.id = int(segid)
    return s


def skeleton_stats(skel) -> dict:
    """Path length (µm, sum of edge lengths), branch points (degree >= 3), end points (degree 1)."""
    v = np.asarray(skel.vertices, np.float64)
    e = np.asarray(skel.edges, np.int64).reshape(-1, 2)
    length = float(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1).sum()) / 1000.0 if len(e) else 0.0
    deg = np.bincount(e.ravel(), minlength=len(v)) if len(e) else np.zeros(len(v), np.int64)
    return {"path_length_um": length, "branch_points": int((deg >= 3).sum()), "endpoints": int((deg == 1).sum()),
            "vertices": int(len(v))}


def _synapse_counts(synapses) -> tuple[dict, dict]:
    import pandas as pd

    if isinstance(synapses, (str, os.PathLike)):
        path = os.fspath(synapses)
        if not os.path.exists(path):
            raise InputError(f"synapse table {path} does not exist")
        synapses = pd.read_parquet(path) if path.endswith((".parquet", ".pq")) else pd.read_csv(path)
    missing = [c for c in ("pre_id", "post_id") if c not in synapses.columns]
    if missing:
        raise InputError(f"the synapse table lacks column(s) {missing}; it needs pre_id and post_id "
                         f"(has {list(synapses.columns)})")
    pre = synapses["pre_id"].astype("uint64").value_counts().to_dict()
    post = synapses["post_id"].astype("uint64").value_counts().to_dict()
    return pre, post


def skeleton_table(skeletons: dict, *, synapses=None, voxels: dict | None = None):
    """Per-neuron table (pandas DataFrame, one row per skeleton; columns :data:`TABLE_COLUMNS`).

    Parameters
    ----------
    skeletons : id -> skeleton (as :func:`skeletonize` returns).
    synapses : optional synapse table (DataFrame, or a Parquet/CSV path) with columns ``pre_id``
        and ``post_id`` (one row per synapse): ``synapses_pre`` / ``synapses_post`` count the rows
        whose pre / post partner is the segment, ``synapse_count`` their sum. Without it the three
        columns are missing values (<NA>).
    voxels : optional id -> voxel count.
    """
    rows = [{"segment_id": int(i), **skeleton_stats(s)} for i, s in skeletons.items()]
    return _table_from_rows(rows, voxels or {}, None if synapses is None else _synapse_counts(synapses))


# chunked ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SkeletonReport:
    """What :func:`skeleton_layers` wrote; ``table`` is the per-neuron DataFrame."""

    url: str
    skeleton_dir: str
    segments: int
    fragments: int
    chunks: int
    seconds: float
    params: dict
    table_path: str | None = None
    dashboard_link: str = ""
    table: object = field(default=None, repr=False, compare=False)

    def summary(self) -> str:
        s = (f"{self.segments} skeleton(s) in {self.url}/{self.skeleton_dir} (Precomputed; {self.fragments} chunk "
             f"piece(s) merged; {self.chunks} chunk task(s) in {self.seconds:.2f} s)")
        if self.table is not None and len(self.table):
            s += f"; total path length {float(self.table['path_length_um'].sum()):.1f} µm"
        if self.table_path:
            s += f"\ntable: {self.table_path}"
        return s

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("table", None)
        return d


@dataclass(frozen=True)
class SkeletonChunkTask:
    """Chunk task: skeletonize the segments in ``chunk`` (+1 voxel overlap); stage pieces and voxel counts."""

    url: str
    params: dict

    def __call__(self, chunk: Bbox, read_bbox: Bbox) -> None:
        import fastremap

        from .io import Layer
        from .runtime import chunk_name

        layer = Layer.open(self.url)
        rb = Bbox(chunk.start, tuple(e + 1 for e in chunk.stop)).intersect(layer.bbox)
        block = layer.read(rb)
        own = block[tuple(slice(0, s) for s in chunk.shape)]  # voxels of this chunk only (counts)
        ids, counts = fastremap.unique(own, return_counts=True)
        counts = {str(int(i)): int(c) for i, c in zip(ids, counts) if i != 0}
        skels = _skeletonize_block(block, layer.resolution, rb.start, SkeletonParams.from_dict(self.params), 0)
        name = chunk_name(chunk)
        cf = _files(self.url)
        cf.puts([(f"{_STAGING}/{i}:{name}", s.to_precomputed()) for i, s in skels.items() if len(s.vertices)],
                compress=None, content_type="application/octet-stream")
        cf.put_json(f"{_COUNTS}/{name}.json", counts)


_VATTRS = [{"id": "radius", "data_type": "float32", "num_components": 1},
           {"id": "vertex_types", "data_type": "uint8", "num_components": 1}]
#: what the written skeletons hold besides vertices and edges: the radius (nm). Not kimimaro's uint8
#: vertex types: Neuroglancer refuses the whole skeleton source for a uint8 attribute
#: ("Data type not supported by WebGL: UINT8").
_STORED_ATTRS = _VATTRS[:1]


def _encode(skel) -> bytes:
    skel.extra_attributes = [a for a in skel.extra_attributes if a["id"] == "radius"] or _STORED_ATTRS
    return skel.to_precomputed()


def _merge_batch(url: str, skel_dir: str, params: dict, groups: list) -> list:
    from cloudvolume import Skeleton

    p = SkeletonParams.from_dict(params)
    cf = _files(url)
    data = {r["path"]: r["content"] for r in cf.get([q for _, ps in groups for q in ps])}
    files, rows = [], []
    for segid, ps in groups:
        frags = [Skeleton.from_precomputed(data[q], segid=segid, vertex_attributes=_VATTRS) for q in sorted(ps)]
        s = merge_skeletons(frags, segid, p)
        if not len(s.vertices):
            continue
        files.append((f"{skel_dir}/{segid}", _encode(s)))
        rows.append({"segment_id": int(segid), **skeleton_stats(s)})
    cf.puts(files, compress=None, content_type="application/octet-stream")
    return rows


def skeleton_layers(
    seg_url: str | os.PathLike,
    *,
    params: SkeletonParams | None = None,
    synapses=None,
    table_path: str | os.PathLike | None = None,
    task_size=None,
    skeleton_dir: str = SKELETON_DIR,
    overwrite: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    retries: int = 3,
    progress: bool = True,
) -> SkeletonReport:
    """Skeletonize every segment of a segmentation layer chunk by chunk; write Precomputed skeletons.

    Parameters
    ----------
    seg_url : segmentation layer (URL or local path). Its info gets ``"skeletons": skeleton_dir``.
    params : :class:`SkeletonParams`.
    synapses : optional synapse table (DataFrame or Parquet/CSV path; columns ``pre_id``,
        ``post_id``) counted per segment in the table.
    table_path : write the per-neuron table (:func:`skeleton_table` columns) to this Parquet file;
        an existing file is refused unless ``overwrite``.
    task_size : box (z, y, x) one task skeletonizes; whole storage chunks; default 4× the storage
        chunk in y and x (clipped to the volume). Bigger boxes give skeletons closer to the
        whole-volume ones (fewer seams), smaller ones bound memory.
    skeleton_dir : folder of the skeletons inside the layer.
    overwrite : replace existing skeletons (and table file).
    workers, scheduler, client : where to run (see :func:`emkit.runtime.map_chunks`).
    retries : extra attempts of a failing chunk.
    progress : progress bars.

    Returns
    -------
    SkeletonReport (its ``table`` holds the per-neuron DataFrame).
    """

    from .io import Layer
    from .runtime import map_chunks

    params = params or SkeletonParams()
    layer = Layer.open(seg_url)
    if layer.kind.name != "segmentation":
        raise InputError(f"{layer.url} is a layer of kind {layer.kind.name!r}; skeletons need a segmentation layer")
    if not skeleton_dir or "/" in skeleton_dir.strip("/") or skeleton_dir.startswith("."):
        raise InputError(f"skeleton_dir must be a plain folder name, got {skeleton_dir!r}")
    if table_path is not None:
        table_path = os.fspath(table_path)
        if os.path.exists(table_path) and not overwrite:
            raise LayerExistsError(f"{table_path} exists; pass overwrite=True (--overwrite) to replace it")
    syn_counts = _synapse_counts(synapses) if synapses is not None else None  # fail early on a bad table
    cf = _files(layer.url)
    info = dict(layer.info)
    old = list(cf.list(prefix=skeleton_dir + "/"))
    if (info.get("skeletons") or old) and not overwrite:
        raise LayerExistsError(f"{layer.url} already has skeletons ({info.get('skeletons') or skeleton_dir}/); pass "
                               "overwrite=True (--overwrite) to replace them")
    for prefix in (skeleton_dir + "/", _STAGING + "/", _COUNTS + "/"):
        stale = list(cf.list(prefix=prefix))
        if stale:
            cf.delete(stale)
    # no "sharding": null (Neuroglancer's parser refuses a null sharding and then shows no skeleton)
    cf.put_json(f"{skeleton_dir}/info", {"@type": "neuroglancer_skeletons", "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
                                         "vertex_attributes": _STORED_ATTRS})

    from .runtime.plan import storage_task_size

    bounds = layer.bbox
    ts = storage_task_size(layer.chunk_size, bounds.shape, task_size)

    from .runtime import map_batches, stage_client

    t0 = time.perf_counter()
    with stage_client(client, workers=workers, scheduler=scheduler, progress=progress) as client:
        rep = map_chunks(SkeletonChunkTask(layer.url, params.to_dict()), bounds, ts, origin=bounds.start,
                         client=client, workers=0 if client is None else None, retries=retries,
                         progress=progress, desc="skeleton")
        voxels: dict[int, int] = {}
        for r in cf.get([p for p in cf.list(prefix=_COUNTS + "/")]):
            for k, v in json.loads(r["content"] or b"{}").items():
                voxels[int(k)] = voxels.get(int(k), 0) + int(v)
        groups: dict[int, list] = {}
        nfrag = 0
        for p in cf.list(prefix=_STAGING + "/"):
            mt = _FRAG_RE.search(p)
            if mt and voxels.get(int(mt.group(1)), 0) >= params.dust_threshold:
                groups.setdefault(int(mt.group(1)), []).append(p)
                nfrag += 1
        items = sorted(groups.items())
        batches = [items[i:i + 64] for i in range(0, len(items), 64)]
        rows = [r for rs in map_batches(partial(_merge_batch, layer.url, skeleton_dir, params.to_dict()), batches,
                                        client, retries=retries) for r in rs]
        for prefix in (_STAGING + "/", _COUNTS + "/"):
            stale = list(cf.list(prefix=prefix))
            if stale:
                cf.delete(stale)
        info["skeletons"] = skeleton_dir
        cf.put_json("info", info)
    table = _table_from_rows(rows, voxels, syn_counts)
    if table_path is not None:
        d = os.path.dirname(os.path.abspath(table_path))
        os.makedirs(d, exist_ok=True)
        table.to_parquet(table_path, index=False)
    return SkeletonReport(url=layer.url, skeleton_dir=skeleton_dir, segments=len(table), fragments=nfrag,
                          chunks=rep.total, seconds=time.perf_counter() - t0, params=params.to_dict(),
                          table_path=table_path, dashboard_link=rep.dashboard_link, table=table)


def _table_from_rows(rows, voxels, syn_counts):
    import pandas as pd

    df = pd.DataFrame(sorted(rows, key=lambda r: r["segment_id"]),
                      columns=["segment_id", "path_length_um", "branch_points", "endpoints", "vertices"])
    df["segment_id"] = df["segment_id"].astype("uint64")
    df["path_length_um"] = df["path_length_um"].astype("float64")
    for c in ("branch_points", "endpoints", "vertices"):
        df[c] = df[c].astype("int64")
    df["voxels"] = pd.array([voxels.get(int(i)) for i in df["segment_id"]], dtype="Int64")
    if syn_counts is None:
        for c in ("synapse_count", "synapses_pre", "synapses_post"):
            df[c] = pd.array([None] * len(df), dtype="Int64")
    else:
        pre, post = syn_counts
        df["synapses_pre"] = pd.array([pre.get(int(i), 0) for i in df["segment_id"]], dtype="Int64")
        df["synapses_post"] = pd.array([post.get(int(i), 0) for i in df["segment_id"]], dtype="Int64")
        df["synapse_count"] = df["synapses_pre"] + df["synapses_post"]
    return df[TABLE_COLUMNS]
