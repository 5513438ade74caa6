"""Segmentation end to end: affinities → supervoxels, merge history, segmentation at a threshold.

:func:`segment` works on arrays (globally, or chunk by chunk in memory to check the chunked form);
:func:`segment_layers` works on Precomputed layers, chunk by chunk, serially or on dask, and
resumes an interrupted run. Both give the same result as the global
``watershed`` → ``region_graph`` → ``agglomerate`` → cut (see :mod:`emkit.segment.chunked`).
"""
from __future__ import annotations

import io
import time

import numpy as np

from emkit.errors import InputError, LayerExistsError
from emkit.geometry import as_vec3
from emkit.segment.agglomerate import MergeHistory, agglomerate
from emkit.segment.params import AgglomerationParams, WatershedParams
from emkit.segment.region_graph import region_graph
from emkit.segment.watershed import check_affinities, watershed

__all__ = ["segment", "segment_layers", "DEFAULT_THRESHOLD", "DEFAULT_CHUNK", "OUTPUTS"]

#: Default cut of the merge history (mean affinity). 0.5 is the natural midpoint of affinities
#: in [0, 1]; on noisy ground-truth affinities of phantoms the adapted Rand error was flat
#: between about 0.3 and 0.6 (the history can be re-cut at any threshold in milliseconds).
DEFAULT_THRESHOLD = 0.5
#: Default task chunk (z, y, x) of :func:`segment_layers`: about half a million voxels per task.
DEFAULT_CHUNK = (32, 128, 128)
#: What :func:`segment_layers` writes under the output folder.
OUTPUTS = ("supervoxels", "segmentation", "history.npz")


def _check_threshold(threshold) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number in [0, 1], got {threshold!r}") from None
    if not (0.0 <= t <= 1.0):
        raise InputError(f"threshold must be in [0, 1], got {threshold!r}")
    return t


def _params(wp, ap):
    wp = WatershedParams() if wp is None else wp
    ap = AgglomerationParams() if ap is None else ap
    if isinstance(wp, dict):
        wp = WatershedParams.from_dict(wp)
    if isinstance(ap, dict):
        ap = AgglomerationParams.from_dict(ap)
    if not isinstance(wp, WatershedParams):
        raise InputError(f"watershed_params must be a WatershedParams, got {type(wp).__name__}")
    if not isinstance(ap, AgglomerationParams):
        raise InputError(f"agglomeration_params must be an AgglomerationParams, got {type(ap).__name__}")
    return wp, ap


def segment(affinities, *, semantic=None, threshold: float = DEFAULT_THRESHOLD,
            watershed_params: WatershedParams | None = None,
            agglomeration_params: AgglomerationParams | None = None,
            chunk_size=None) -> tuple[np.ndarray, np.ndarray, MergeHistory]:
    """Segment an affinity array.

    Parameters
    ----------
    affinities : (3, z, y, x) float array in [0, 1], channels (z, y, x).
    semantic : (z, y, x) integer class labels 0..5, or the semantic net's (5, z, y, x) float
        probabilities (the most probable class is taken), optional (semantic constraint).
    threshold : mean affinity at which the history is cut (default :data:`DEFAULT_THRESHOLD`).
    watershed_params, agglomeration_params : parameters (defaults: the paper's).
    chunk_size : (z, y, x); when given, run the chunked (octree) form in memory, chunk by chunk —
        the result is identical (this is how the chunked form is tested).

    Returns
    -------
    (segmentation, supervoxels, history)
        uint64 (z, y, x) segment ids (an object is named by its smallest supervoxel id), uint64
        supervoxel ids 1..K (raster order of first voxel; 0 background) and the
        :class:`~emkit.segment.MergeHistory` (``history.segmentation(supervoxels, t)`` re-cuts).
    """
    t = _check_threshold(threshold)
    wp, ap = _params(watershed_params, agglomeration_params)
    aff = check_affinities(affinities)
    sem = None
    if semantic is not None:
        sem = np.asarray(semantic)
        if sem.ndim == 4 and sem.shape[1:] == aff.shape[1:] and np.issubdtype(sem.dtype, np.floating):
            from emkit.evaluate.semantic import semantic_classes

            sem = semantic_classes(sem)
        if sem.shape != aff.shape[1:] or not np.issubdtype(sem.dtype, np.integer):
            raise InputError(f"semantic must be (z, y, x) integer labels or (5, z, y, x) probabilities of shape "
                             f"{aff.shape[1:]}, got shape {sem.shape}, dtype {sem.dtype}")
    if chunk_size is None:
        sv = watershed(aff, wp)
        history = agglomerate(region_graph(sv, aff, semantic=sem), ap)
        return history.segmentation(sv, t), sv, history
    from emkit.segment.chunked import ArraySink, ArraySource, run_chunked

    sink = ArraySink(aff.shape[1:])
    history, _ = run_chunked(ArraySource(aff), aff.shape[1:], chunk_size,
                             semantic=None if sem is None else ArraySource(sem), threshold=t,
                             watershed_params=wp, agglomeration_params=ap, sink=sink, workers=0)
    return sink.segmentation, sink.supervoxels, history


def _storage_chunk(chunk) -> tuple:
    """Storage chunk of the output layers: the task chunk halved while above 128 (and even)."""
    out = []
    for c in chunk:
        while c > 128 and c % 2 == 0:
            c //= 2
        out.append(c)
    return tuple(out)


def segment_layers(aff_url, out_dir, *, semantic_url=None, threshold: float = DEFAULT_THRESHOLD,
                   chunk_size=None, watershed_params: WatershedParams | None = None,
                   agglomeration_params: AgglomerationParams | None = None, workers: int | None = None,
                   scheduler: str | None = None, client=None, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Segment an affinity layer chunk by chunk; write supervoxels, history and segmentation.

    Parameters
    ----------
    aff_url : affinities layer (3 channels z, y, x, float32).
    out_dir : output folder (URL or path). Writes ``OUT_DIR/supervoxels`` and
        ``OUT_DIR/segmentation`` (segmentation layers, uint64, same geometry as the affinities)
        and ``OUT_DIR/history.npz`` (:meth:`MergeHistory.load` reads it). Intermediate results
        and done-markers go to ``OUT_DIR/.emkit/segment/``.
    semantic_url : semantic labels layer (integer classes 0..5, same size) or the semantic net's
        probability layer (5 channels, as ``emkit infer semantic`` writes it; the most probable
        class is taken chunk by chunk), optional.
    threshold : cut of the history written as ``segmentation`` (default 0.5).
    chunk_size : task chunk (z, y, x) in voxels (default :data:`DEFAULT_CHUNK`); memory per
        task is bounded by it. Any size works (it need not divide the volume).
    watershed_params, agglomeration_params : parameters (or their dicts).
    workers : 0 runs serially in this process; N starts a local dask cluster of N workers;
        None (default) one worker per core.
    scheduler : address of a running dask scheduler (instead of ``workers``).
    client : an existing ``distributed.Client`` or :class:`~emkit.runtime.Cluster`.
    overwrite : replace existing outputs. Without it, a finished run's outputs are refused
        (LayerExistsError) and an interrupted run with the same parameters resumes.
    progress : progress bars.

    Returns
    -------
    dict with the output URLs, counts, per-stage executed task counts (``executed``) and wall
    seconds (``stage_seconds``), and the total wall time (``seconds``).
    """
    from cloudfiles import CloudFiles

    from emkit.io import Layer
    from emkit.io.layer import join_url, layer_exists, normalize_url
    from emkit.runtime import Cluster
    from emkit.segment.chunked import FileStore, LayerSink, LayerSource, SemanticSource, run_chunked

    t0 = time.perf_counter()
    t = _check_threshold(threshold)
    wp, ap = _params(watershed_params, agglomeration_params)
    if sum(x is not None for x in (scheduler, client)) > 1 or (workers is not None and (scheduler or client)):
        raise InputError("give at most one of workers, scheduler and client")
    aff = Layer.open(aff_url)
    if aff.kind.name != "affinities" or aff.num_channels != 3 or aff.dtype != np.float32:
        raise InputError(f"{aff.url} must be an affinities layer (3 channels z, y, x, float32), got kind "
                         f"{aff.kind.name}, {aff.num_channels} channel(s), dtype {aff.dtype}")
    sem_source = None
    if semantic_url is not None:
        sem = Layer.open(semantic_url)
        if sem.size != aff.size:
            raise InputError(f"semantic layer {sem.url} has size {sem.size} (z, y, x) but the affinities have {aff.size}")
        probabilities = sem.num_channels == 5 and np.issubdtype(sem.dtype, np.floating)
        if not probabilities and (sem.num_channels != 1 or not np.issubdtype(sem.dtype, np.integer)):
            raise InputError(f"semantic layer {sem.url} must hold integer class labels 0..5 (one channel) or the "
                             f"semantic net's probabilities (5 float channels), got {sem.num_channels} channel(s), "
                             f"dtype {sem.dtype}")
        sem_source = SemanticSource(sem.url) if probabilities else LayerSource(sem.url)
    chunk = tuple(min(c, s) for c, s in zip(as_vec3(chunk_size or DEFAULT_CHUNK, "chunk size", positive=True), aff.size))

    out_dir = normalize_url(out_dir)
    sv_url, seg_url = join_url(out_dir, "supervoxels"), join_url(out_dir, "segmentation")
    work = join_url(out_dir, ".emkit", "segment")
    cf = CloudFiles(out_dir)
    existing = [n for n, ok in (("supervoxels", layer_exists(sv_url)), ("segmentation", layer_exists(seg_url)),
                                ("history.npz", cf.exists("history.npz"))) if ok]
    started = CloudFiles(work).exists("markers/leaves/run.json")
    if overwrite:
        wcf = CloudFiles(work)
        old = list(wcf.list())
        if old:
            wcf.delete(old)
        if cf.exists("history.npz"):
            cf.delete("history.npz")
    elif "history.npz" in existing or (existing and not started):
        raise LayerExistsError(f"outputs already exist in {out_dir}: {', '.join(existing)}; pass overwrite=True "
                               "(--overwrite) to replace them")
    storage = _storage_chunk(chunk)
    for url in (sv_url, seg_url):
        if overwrite or not layer_exists(url):
            Layer.create(url, "segmentation", aff.size, resolution=aff.resolution, voxel_offset=aff.voxel_offset,
                         chunk_size=storage, overwrite=overwrite, description="emkit segment")

    cluster = None
    run = {"workers": 0}
    if client is not None:
        run = {"client": client}
    elif scheduler is not None or workers != 0:
        cluster = Cluster(n_workers=workers, scheduler=scheduler, quiet=not progress)
        run = {"client": cluster}
    try:
        history, executed = run_chunked(
            LayerSource(aff.url), aff.size, chunk, semantic=sem_source, threshold=t, watershed_params=wp,
            agglomeration_params=ap, store=FileStore(join_url(work, "data")), sink=LayerSink(sv_url, seg_url),
            markers_url=join_url(work, "markers"), progress=progress,
            run_info={"affinities": aff.url, "semantic_url": None if sem_source is None else sem_source.url}, **run)
    finally:
        if cluster is not None:
            cluster.close()
    buf = io.BytesIO()
    history.save(buf)
    cf.put("history.npz", buf.getvalue(), compress=None, raw=True)
    return {"affinities": aff.url, "supervoxels": sv_url, "segmentation": seg_url,
            "history": join_url(out_dir, "history.npz"), "threshold": t, "chunk_size_zyx": list(chunk),
            "n_supervoxels": int(history.ids.size), "n_merges": int(len(history.affinities)),
            "n_vetoes": int(len(history.veto_reasons)), "executed": {k: v for k, v in executed.items() if k != "seconds"},
            "stage_seconds": executed["seconds"],
            "seconds": round(time.perf_counter() - t0, 3)}


def load_history(out_dir) -> MergeHistory:
    """Read ``OUT_DIR/history.npz`` written by :func:`segment_layers`."""
    from cloudfiles import CloudFiles

    from emkit.io.layer import normalize_url

    data = CloudFiles(normalize_url(out_dir)).get("history.npz", raw=True)
    if data is None:
        raise InputError(f"no merge history at {normalize_url(out_dir)}/history.npz")
    return MergeHistory.load(io.BytesIO(data))
