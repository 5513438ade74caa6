"""Chunked, distributed segmentation whose result is identical to the global one.

Stages (each a set of small tasks; per-task memory bounded by the chunk, or by box faces):

1. ``leaves`` — per chunk (affinities with a 2-voxel halo): watershed *fragments*, their sizes,
   first voxels, bounding boxes and semantic counts, the fragment edges inside the chunk, the
   chunk's face arrays (labels, glue flags, face affinities) and the voxels of plateaus that
   cross its faces (:mod:`emkit.segment.chunk_watershed`).
2. ``plateaus`` — one small task: divides the crossing plateaus in the global search order.
3. ``level0`` … ``levelN`` — the octree: a leaf box per chunk, then 2×2×2 boxes; each adds the
   edges and glue across its children's shared faces and runs
   :func:`emkit.segment.octree.process_box` (glue, size passes, dust, agglomeration, freezing).
   Levels above the leaves read only the children's boundary graphs and face arrays, never voxels.
4. ``history`` — the supervoxels made by every box are numbered in raster order of their first
   voxel (exactly as the global watershed numbers them) and the boxes' merges form the
   :class:`~emkit.segment.MergeHistory`.
5. ``relabel`` — per chunk: fragments → supervoxel ids → segment ids at the threshold. Each box
   stores its unit map split by child box and sorted (``map/<level>/<child>``), so a chunk reads
   one small part per level, found in O(1) (:meth:`ChunkPlan.box_of`): the stage is linear in the
   number of chunks.

The result equals ``watershed`` → ``region_graph`` → ``agglomerate`` run on the whole volume:
the supervoxels voxel for voxel (same ids), and the history's cut at every threshold. Why:
fragments glue into exactly the global basins (see :mod:`emkit.segment.chunk_watershed`); the
size passes and the agglomeration take, in every box, only decisions whose inputs are complete
(frozen otherwise, :mod:`emkit.segment.octree`); affinity sums are exact fixed-point integers and
ties are broken by ranks that do not depend on the order of processing.

Intermediate results live in a *store* (in memory, or npz files under
``OUT_DIR/.emkit/segment/``) with done-markers, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np

from emkit.errors import InputError
from emkit.geometry import Bbox, as_vec3
from emkit.runtime import Markers, chunk_name, map_chunks, put_atomic
from emkit.segment import octree as ot
from emkit.segment.agglomerate import MergeHistory
from emkit.segment.chunk_watershed import FRAG_SHIFT, HALO, chunk_fragments, reduce_edges, resolve_plateaus
from emkit.segment.params import AgglomerationParams, WatershedParams
from emkit.segment.region_graph import N_CLASSES

__all__ = ["ChunkPlan", "MemoryStore", "FileStore", "ArraySource", "LayerSource", "BoundarySource", "SemanticSource",
           "ArraySink", "LayerSink", "run_chunked"]


# ------------------------------------------------------------------ stores ---------------------
class MemoryStore:
    """Intermediate results in a dict (serial runs in one process only: tasks run in other
    processes would fill their own copies; :func:`run_chunked` refuses that)."""

    in_memory = True

    def __init__(self):
        self.data: dict[str, dict] = {}

    def put(self, key: str, arrays: dict) -> None:
        self.data[key] = {k: np.asarray(v) for k, v in arrays.items()}

    def get(self, key: str) -> dict:
        return self.data[key]

    def exists(self, key: str) -> bool:
        return key in self.data

    def delete_prefix(self, prefix: str) -> None:
        for k in [k for k in self.data if k.startswith(prefix)]:
            del self.data[k]


class FileStore:
    """Intermediate results as ``.npz`` files under a folder URL (anything CloudFiles reads),
    each written atomically (:func:`emkit.runtime.put_atomic`)."""

    in_memory = False

    def __init__(self, url: str):
        from emkit.io.layer import normalize_url

        self.url = normalize_url(url)

    def _cf(self):
        from cloudfiles import CloudFiles

        return CloudFiles(self.url)

    def put(self, key: str, arrays: dict) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # uncompressed: zlib cost more than the work itself
        # atomic: a run killed mid-write must not leave a truncated npz that a resume trusts
        # (``plateaus`` is skipped when it exists)
        put_atomic(self.url, f"{key}.npz", buf.getvalue())

    def get(self, key: str) -> dict:
        data = self._cf().get(f"{key}.npz", raw=True)
        if data is None:
            raise FileNotFoundError(f"{self.url}/{key}.npz is missing")
        with np.load(io.BytesIO(data)) as z:
            return {k: z[k] for k in z.files}

    def exists(self, key: str) -> bool:
        return self._cf().exists(f"{key}.npz")

    def delete_prefix(self, prefix: str) -> None:
        cf = self._cf()
        cf.delete(list(cf.list(prefix=prefix)))


# ------------------------------------------------------------------ the plan --------------------
@dataclass(frozen=True)
class ChunkPlan:
    """Chunk grid and octree of a volume (voxels, z, y, x, volume coordinates from 0)."""

    shape: tuple
    chunk: tuple

    @property
    def grid(self) -> tuple:
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunk))

    @property
    def top(self) -> int:
        return max(int(np.ceil(np.log2(g))) if g > 1 else 0 for g in self.grid)

    @property
    def bounds(self) -> Bbox:
        return Bbox((0, 0, 0), self.shape)

    def box_size(self, level: int) -> tuple:
        return tuple(c << level for c in self.chunk)

    def leaf_coords(self, start) -> tuple:
        return tuple(a // c for a, c in zip(start, self.chunk))

    def leaf_index(self, start) -> int:
        iz, iy, ix = self.leaf_coords(start)
        return (iz * self.grid[1] + iy) * self.grid[2] + ix

    def leaf_bbox(self, coords) -> Bbox:
        start = tuple(i * c for i, c in zip(coords, self.chunk))
        return Bbox(start, tuple(min(a + c, s) for a, c, s in zip(start, self.chunk, self.shape)))

    def coords_of_index(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        gz, gy, gx = self.grid
        return np.stack([idx // (gy * gx), (idx // gx) % gy, idx % gx], axis=-1)

    def box_of(self, start, level: int) -> Bbox:
        """The level-``level`` octree box that holds the voxel ``start`` (clipped to the volume)."""
        bs = self.box_size(level)
        lo = tuple((int(a) // b) * b for a, b in zip(start, bs))
        return Bbox(lo, tuple(min(a + b, s) for a, b, s in zip(lo, bs, self.shape)))

    def children(self, box: Bbox, level: int) -> list[Bbox]:
        cs = self.box_size(level - 1)
        out = []
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    start = tuple(a + d * c for a, d, c in zip(box.start, (dz, dy, dx), cs))
                    if all(s < b for s, b in zip(start, box.stop)):
                        out.append(Bbox(start, tuple(min(s + c, b) for s, c, b in zip(start, cs, box.stop))))
        return out


def _frag_leaf(ids: np.ndarray) -> np.ndarray:
    return (np.asarray(ids, np.uint64) >> np.uint64(FRAG_SHIFT)).astype(np.int64)


# ------------------------------------------------------------------ sources and sinks ----------
class ArraySource:
    """Reads boxes of an in-memory array ((c,) z, y, x)."""

    def __init__(self, array):
        self.array = array

    def read(self, bbox: Bbox) -> np.ndarray:
        return np.asarray(self.array[(Ellipsis,) + bbox.slices()])


class LayerSource:
    """Reads boxes of a layer (volume coordinates from 0; the layer's voxel offset is added).

    ``channels`` (a list of channel indices) selects channels of a multi-channel layer, e.g. the
    ``affinity_z, affinity_y, affinity_x`` channels of the probability layer ``emkit infer``
    writes for several heads; an int selects one channel as a (z, y, x) array.
    """

    def __init__(self, url: str, channels=None):
        self.url = url
        self.channels = channels
        self._layer = None

    def __getstate__(self):
        return {**self.__dict__, "_layer": None}

    def read(self, bbox: Bbox) -> np.ndarray:
        if self._layer is None:
            from emkit.io import Layer

            self._layer = Layer.open(self.url)
        arr = self._layer.read(bbox.translate(self._layer.voxel_offset))
        if self.channels is not None:
            arr = np.ascontiguousarray(arr[self.channels])
        return arr


class BoundarySource:
    """Affinities from a boundary-probability source (1 = boundary), box by box.

    ``inner.read(bbox)`` gives the (z, y, x) boundary map; each box is read one voxel larger on
    its low sides (inside the volume) and converted with
    :func:`emkit.affinity.boundary_to_affinities` and those ``low_side`` planes, so every box
    holds exactly the affinities of the whole volume's conversion (edges leaving the volume are 0).
    """

    def __init__(self, inner):
        self.inner = inner

    def read(self, bbox: Bbox) -> np.ndarray:
        from emkit.affinity import boundary_to_affinities

        lo = tuple(max(a - 1, 0) for a in bbox.start)
        ext = np.asarray(self.inner.read(Bbox(lo, bbox.stop)))
        s = tuple(a - b for a, b in zip(bbox.start, lo))  # 1 where a low-side plane was read
        b = ext[s[0]:, s[1]:, s[2]:]
        low = (ext[0, s[1]:, s[2]:] if s[0] else None,
               ext[s[0]:, 0, s[2]:] if s[1] else None,
               ext[s[0]:, s[1]:, 0] if s[2] else None)
        try:
            return boundary_to_affinities(b, low_side=low)
        except InputError as exc:
            where = getattr(self.inner, "url", "the boundary map")
            raise InputError(f"{where}: {exc} (a map stored as 0..255 floats: divide it by 255, or import it as "
                             "uint8 with `emkit import --kind probability`)") from None


class SemanticSource(LayerSource):
    """Reads the semantic net's 5-channel probability layer as classes 1..5 (the most probable)."""

    def read(self, bbox: Bbox) -> np.ndarray:
        from emkit.evaluate.semantic import semantic_classes

        return semantic_classes(super().read(bbox))


class ArraySink:
    """Supervoxels and segmentation in two arrays (serial runs in this process only)."""

    in_memory = True

    def __init__(self, shape):
        self.supervoxels = np.zeros(shape, np.uint64)
        self.segmentation = np.zeros(shape, np.uint64)

    def write(self, bbox: Bbox, sv: np.ndarray, seg: np.ndarray) -> None:
        self.supervoxels[bbox.slices()] = sv
        self.segmentation[bbox.slices()] = seg


class LayerSink:
    """Supervoxels and segmentation written to two segmentation layers."""

    in_memory = False

    def __init__(self, sv_url: str, seg_url: str):
        self.sv_url, self.seg_url = sv_url, seg_url

    def write(self, bbox: Bbox, sv: np.ndarray, seg: np.ndarray) -> None:
        from emkit.io import Layer

        for url, arr in ((self.sv_url, sv), (self.seg_url, seg)):
            layer = Layer.open(url)
            layer.write(arr, bbox.translate(layer.voxel_offset).start)


# ------------------------------------------------------------------ tasks ----------------------
@dataclass
class LeafTask:
    plan: ChunkPlan
    store: object
    source: object
    semantic: object
    wparams: dict

    def __call__(self, chunk: Bbox, read_bbox: Bbox) -> None:
        region = chunk.grow(HALO).intersect(self.plan.bounds)
        aff = self.source.read(region)
        sem = None
        if self.semantic is not None:
            sem = self.semantic.read(chunk)
            sem = np.asarray(sem)
            if sem.size and (sem.min() < 0 or sem.max() >= N_CLASSES):
                raise InputError(f"semantic labels must be in 0..5, got values in [{sem.min()}, {sem.max()}] in {chunk}")
        res = chunk_fragments(aff, region.start, chunk.start, chunk.shape, self.plan.shape,
                              WatershedParams.from_dict(self.wparams), self.plan.leaf_index(chunk.start), sem)
        name = chunk_name(chunk)
        self.store.put(f"frag/{name}", {"labels": res.pop("labels")})
        self.store.put(f"face/{name}", {k: res.pop(k) for k in list(res) if k.startswith("face_")})
        self.store.put(f"px/{name}", {k: res.pop(k) for k in list(res) if k.startswith("px_")})
        self.store.put(f"leaf/{name}", res)


@dataclass
class BoxTask:
    plan: ChunkPlan
    store: object
    level: int
    wparams: dict
    aparams: dict
    use_sem: bool

    def __call__(self, box: Bbox, read_bbox: Bbox) -> None:
        plan, L = self.plan, self.level
        glue = self.store.get("plateaus")
        ga, gb = glue["a"], glue["b"]
        ca, cb = plan.coords_of_index(_frag_leaf(ga)), plan.coords_of_index(_frag_leaf(gb))
        mine = np.all((ca >> L) == np.array(plan.leaf_coords(box.start)) >> L, axis=1) & \
            np.all((cb >> L) == np.array(plan.leaf_coords(box.start)) >> L, axis=1)
        if L == 0:
            state = self._leaf_state(box)
            sel = mine
            glue_a, glue_b = ga[sel], gb[sel]
        else:
            state = ot.concat_states([self.store.get(f"state/{L - 1}/{chunk_name(c)}") for c in plan.children(box, L)])
            sel = mine & np.any((ca >> (L - 1)) != (cb >> (L - 1)), axis=1)
            fa, fb, edges = self._cross(box)
            glue_a = np.concatenate([fa, ga[sel]])
            glue_b = np.concatenate([fb, gb[sel]])
            # fragments -> units of the children
            o = np.argsort(state["f_id"], kind="stable")
            fid, funit = state["f_id"][o], state["f_unit"][o]

            def unit(f):
                j = np.minimum(np.searchsorted(fid, f), max(fid.size - 1, 0))
                if f.size and (fid.size == 0 or np.any(fid[j] != f)):
                    raise RuntimeError(f"octree: face fragment missing from the children of box {box}")
                return funit[j] if f.size else np.zeros(0, np.uint64)

            glue_a, glue_b = unit(glue_a), unit(glue_b)
            a, b, ka, kk, q, cnt = edges
            state["e_a"] = np.concatenate([state["e_a"], unit(a)])
            state["e_b"] = np.concatenate([state["e_b"], unit(b)])
            for k, v in (("e_ka", ka), ("e_kk", kk), ("e_q", q), ("e_cnt", cnt)):
                state[k] = np.concatenate([state[k], v])
        out, result = ot.process_box(box.start, box.stop, plan.shape, state, glue_a, glue_b,
                                     WatershedParams.from_dict(self.wparams),
                                     AgglomerationParams.from_dict(self.aparams), self.use_sem)
        if L == plan.top and out["u_id"].size:  # pragma: no cover - guarded by the algorithm
            raise RuntimeError(f"octree: {out['u_id'].size} units still frozen at the top box")
        name = chunk_name(box)
        self.store.put(f"state/{L}/{name}", out)
        # the unit map, split by the child box the incoming unit came from (the level-(L-1) box
        # holding its id's leaf; the leaf itself at level 0) and sorted by unit id: a relabel task
        # reads only its own child's part, not the whole level's map
        mi, mk, mo = result.pop("map_in"), result.pop("map_kind"), result.pop("map_out")
        o = np.argsort(mi, kind="stable")
        mi, mk, mo = mi[o], mk[o], mo[o]
        child = plan.coords_of_index(_frag_leaf(mi)) >> max(L - 1, 0)
        for c in (plan.children(box, L) if L else [box]):
            cc = np.array(plan.leaf_coords(c.start)) >> max(L - 1, 0)
            sel = np.all(child == cc, axis=1)
            self.store.put(f"map/{L}/{chunk_name(c)}", {"map_in": mi[sel], "map_kind": mk[sel], "map_out": mo[sel]})
        self.store.put(f"result/{L}/{name}", result)

    def _leaf_state(self, box: Bbox) -> dict:
        leaf = self.store.get(f"leaf/{chunk_name(box)}")
        ids = leaf["ids"]
        n = ids.size
        sem = leaf["sem"] if "sem" in leaf else np.zeros((n, N_CLASSES), np.float64)
        return {"u_id": ids, "u_stage": np.full(n, 2, np.int8), "u_size": leaf["sizes"], "u_minidx": leaf["minidx"],
                "u_rank": np.zeros(n, np.int64), "u_nsv": np.ones(n, np.int64), "u_bbox": leaf["bbox"], "u_sem": sem,
                "e_a": leaf["ea"], "e_b": leaf["eb"], "e_ka": leaf["ka"], "e_kk": leaf["kk"], "e_q": leaf["q"],
                "e_cnt": leaf["cnt"], "f_id": ids, "f_unit": ids, "f_bbox": leaf["bbox"]}

    def _cross(self, box: Bbox):
        """Glue pairs and edges (fragment ids) across the planes between the box's children."""
        plan, L = self.plan, self.level
        half = plan.box_size(L - 1)
        Z, Y, X = plan.shape
        N = Z * Y * X
        lo_c = plan.leaf_coords(box.start)
        hi_c = tuple(-(-b // c) for b, c in zip(box.stop, plan.chunk))
        ga, gb, ea, eb, ew, ek = [], [], [], [], [], []
        for ax, name in enumerate("zyx"):
            mid = box.start[ax] + half[ax]
            if mid >= box.stop[ax]:
                continue
            i_hi = mid // plan.chunk[ax]
            others = [range(lo_c[k], hi_c[k]) for k in range(3) if k != ax]
            for o1 in others[0]:
                for o2 in others[1]:
                    cb_ = [o1, o2]
                    cb_.insert(ax, i_hi)
                    ca_ = list(cb_)
                    ca_[ax] = i_hi - 1
                    A = self.store.get(f"face/{chunk_name(plan.leaf_bbox(ca_))}")
                    bbB = plan.leaf_bbox(cb_)
                    B = self.store.get(f"face/{chunk_name(bbB)}")
                    la = A[f"face_lab_{name}hi"].ravel()
                    lb = B[f"face_lab_{name}lo"].ravel()
                    glue = A[f"face_glue_{name}hi"].ravel() | B[f"face_glue_{name}lo"].ravel()
                    ga.append(la[glue])
                    gb.append(lb[glue])
                    both = (la != 0) & (lb != 0)
                    shp = list(bbB.shape)
                    shp[ax] = 1
                    zz, yy, xx = np.indices(shp).reshape(3, -1)
                    v = ((zz + bbB.start[0]) * Y + (yy + bbB.start[1])) * X + (xx + bbB.start[2])
                    ea.append(np.minimum(la, lb)[both])
                    eb.append(np.maximum(la, lb)[both])
                    ew.append(B[f"face_aff_{name}lo"].ravel()[both])
                    ek.append(ax * N + v[both])
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
        edges = reduce_edges(cat(ea, np.uint64), cat(eb, np.uint64), cat(ew, np.float32), cat(ek, np.int64),
                             float(WatershedParams.from_dict(self.wparams).low))
        return cat(ga, np.uint64), cat(gb, np.uint64), edges


@dataclass
class RelabelTask:
    plan: ChunkPlan
    store: object
    sink: object

    def __call__(self, chunk: Bbox, read_bbox: Bbox) -> None:
        plan = self.plan
        local = self.store.get(f"frag/{chunk_name(chunk)}")["labels"]
        n = int(local.max()) if local.size else 0
        base = np.uint64(plan.leaf_index(chunk.start) << FRAG_SHIFT)
        todo = base + np.arange(1, n + 1, dtype=np.uint64)   # fragment ids 1..n
        sv_rank = np.full(n, -1, np.int64)                    # -2: dropped
        cur = todo.copy()
        pending = np.arange(n)
        for L in range(plan.top + 1):
            if pending.size == 0:
                break
            # this chunk's units at level L came from its level-(L-1) box (O(1) to find; its map part is sorted)
            r = self.store.get(f"map/{L}/{chunk_name(plan.box_of(chunk.start, max(L - 1, 0)))}")
            mi = r["map_in"]
            j = np.minimum(np.searchsorted(mi, cur[pending]), max(mi.size - 1, 0))
            if mi.size == 0 or np.any(mi[j] != cur[pending]):
                raise RuntimeError(f"relabel: units of chunk {chunk} missing from the level-{L} map")
            kind, dest = r["map_kind"][j], r["map_out"][j]
            sv_rank[pending[kind == ot.KIND_SV]] = dest[kind == ot.KIND_SV].astype(np.int64)
            sv_rank[pending[kind == ot.KIND_DROP]] = -2
            cur[pending] = dest
            pending = pending[kind == ot.KIND_UNIT]
        if pending.size:  # pragma: no cover
            raise RuntimeError(f"relabel: fragments of chunk {chunk} never became supervoxels")
        svs = self.store.get("history")
        ranks, lut = svs["sv_rank"], svs["lut"]
        sv_id = np.zeros(n + 1, np.uint64)
        ok = sv_rank >= 0
        sv_id[1:][ok] = (np.searchsorted(ranks, sv_rank[ok]) + 1).astype(np.uint64)
        sv = sv_id[local]
        self.sink.write(chunk, sv, lut[sv])


def plan_boxes(plan: ChunkPlan, level: int) -> list[Bbox]:
    from emkit.geometry import chunk_grid

    return list(chunk_grid(plan.bounds, plan.box_size(level), (0, 0, 0)))


# ------------------------------------------------------------------ stages ---------------------
def _plateaus(plan: ChunkPlan, store) -> None:
    parts = [store.get(f"px/{chunk_name(c)}") for c in plan_boxes(plan, 0)]
    cat = (lambda k: np.concatenate([p[k] for p in parts]))
    a, b = resolve_plateaus(cat("px_v"), cat("px_pm"), cat("px_exit"), cat("px_frag"), plan.shape)
    store.put("plateaus", {"a": a, "b": b})


def _history(plan: ChunkPlan, store, aparams: AgglomerationParams, threshold: float) -> MergeHistory:
    res = [store.get(f"result/{L}/{chunk_name(b)}") for L in range(plan.top + 1) for b in plan_boxes(plan, L)]
    cat = (lambda k, dt: np.concatenate([r[k] for r in res]).astype(dt) if res else np.zeros(0, dt))
    ranks = np.sort(cat("sv_rank", np.int64))
    K = ranks.size
    pos = (lambda r: np.searchsorted(ranks, r).astype(np.int64))
    mw = cat("m_w", np.float64)
    o = np.argsort(-mw, kind="stable")
    vw = cat("v_w", np.float64)
    ov = np.argsort(-vw, kind="stable")
    h = MergeHistory(ids=np.arange(1, K + 1, dtype=np.uint64),
                     merges=np.stack([pos(cat("m_a", np.int64)[o]), pos(cat("m_b", np.int64)[o])], axis=1).reshape(-1, 2),
                     affinities=mw[o],
                     vetoes=np.stack([pos(cat("v_a", np.int64)[ov]), pos(cat("v_b", np.int64)[ov])], axis=1).reshape(-1, 2),
                     veto_affinities=vw[ov], veto_reasons=cat("v_r", np.uint8)[ov], params=aparams.to_dict())
    _, labels = h.labels_at(threshold)
    lut = np.zeros(K + 1, np.uint64)
    lut[1:] = labels
    store.put("history", {"sv_rank": ranks, "lut": lut})
    return h


def run_chunked(source, shape, chunk_size, *, semantic=None, threshold: float = 0.5,
                watershed_params: WatershedParams | None = None,
                agglomeration_params: AgglomerationParams | None = None, store=None, sink=None,
                markers_url: str | None = None, client=None, workers: int | None = 0,
                progress: bool = False, run_info: dict | None = None) -> tuple[MergeHistory, dict]:
    """Run every stage; returns the merge history and ``{stage: executed task count}`` (plus
    ``"seconds"``: ``{stage: wall seconds}``).

    ``source`` / ``semantic`` have ``read(bbox)`` (volume coordinates); ``sink`` has
    ``write(bbox, supervoxels, segmentation)``; ``store`` keeps intermediate results;
    ``markers_url`` (a folder) enables resuming (``run_info``, e.g. the input URLs, is recorded
    with the parameters: a resumed run must match); ``client`` / ``workers`` as in
    :func:`emkit.runtime.map_chunks`. Tasks that run in other processes (a ``client``, or
    ``workers`` other than 0) need a store and a sink they can reach (:class:`FileStore`,
    :class:`LayerSink`): an in-memory :class:`MemoryStore` (the default) or :class:`ArraySink`
    is refused with :class:`~emkit.errors.InputError`.
    """
    wp = watershed_params or WatershedParams()
    ap = agglomeration_params or AgglomerationParams()
    store = store if store is not None else MemoryStore()
    if client is not None or workers != 0:
        held = [f"{what} {type(obj).__name__}" for what, obj in (("store", store), ("sink", sink))
                if getattr(obj, "in_memory", False)]
        if held:
            how = f"client {client!r}" if client is not None else f"workers={workers!r}"
            raise InputError(
                f"run_chunked with {how} runs tasks in other processes, but the {' and the '.join(held)} "
                "lives in this process's memory (the workers would fill their own copies and you would get "
                "zeros): use store=FileStore(url) and a LayerSink (as segment_layers does), or workers=0")
    shape = as_vec3(shape, "volume shape", positive=True)
    chunk = tuple(min(c, s) for c, s in zip(as_vec3(chunk_size, "chunk size", positive=True), shape))
    plan = ChunkPlan(shape, chunk)
    run_params = {"shape": list(shape), "chunk": list(chunk), "watershed": wp.to_dict(),
                  "agglomeration": ap.to_dict(), "semantic": semantic is not None, **(run_info or {})}
    run = dict(client=client) if client is not None else dict(workers=workers)
    executed: dict = {}
    seconds: dict = {}

    def stage(name, task, size, params=run_params):
        markers = Markers(f"{markers_url}/{name}") if markers_url else None
        rep = map_chunks(task, plan.bounds, size, origin=(0, 0, 0), markers=markers, params=params,
                         progress=progress, desc=f"segment {name}", **run)
        executed[name] = rep.executed
        seconds[name] = round(rep.seconds, 3)

    stage("leaves", LeafTask(plan, store, source, semantic, wp.to_dict()), chunk)
    t0 = time.perf_counter()
    if not store.exists("plateaus"):
        _plateaus(plan, store)
        executed["plateaus"] = 1
    else:
        executed["plateaus"] = 0
    seconds["plateaus"] = round(time.perf_counter() - t0, 3)
    for L in range(plan.top + 1):
        stage(f"level{L}", BoxTask(plan, store, L, wp.to_dict(), ap.to_dict(), semantic is not None), plan.box_size(L))
    t0 = time.perf_counter()
    history = _history(plan, store, ap, threshold)
    seconds["history"] = round(time.perf_counter() - t0, 3)
    if sink is not None:
        stage("relabel", RelabelTask(plan, store, sink), chunk, params={**run_params, "threshold": float(threshold)})
    return history, {**executed, "seconds": seconds}
