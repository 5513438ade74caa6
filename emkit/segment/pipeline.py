"""Segmentation end to end: affinities → supervoxels, merge history, segmentation at a threshold.

Inputs (:data:`INPUT_FORMS`): an affinities layer, the affinity channels of a probability
layer, or a 1-channel boundary-probability map (converted by
:func:`emkit.affinity.boundary_to_affinities`, chunk by chunk with identical results).

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
from emkit.segment.params import BOUNDARY_MAP_WATERSHED, AgglomerationParams, WatershedParams
from emkit.segment.region_graph import region_graph
from emkit.segment.watershed import check_affinities, watershed

__all__ = ["segment", "segment_layers", "load_params", "open_segment_input", "DEFAULT_THRESHOLD", "DEFAULT_CHUNK",
           "OUTPUTS", "PARAMS_FILE", "AUTO_CLUSTER_VOXELS", "WHOLE_VOLUME_VOXELS", "INPUT_FORMS"]

#: Default cut of the merge history (mean affinity). 0.5 is the natural midpoint of affinities
#: in [0, 1]; on noisy ground-truth affinities of phantoms the adapted Rand error was flat
#: between about 0.3 and 0.6 (the history can be re-cut at any threshold in milliseconds).
DEFAULT_THRESHOLD = 0.5
#: Default task chunk (z, y, x) of :func:`segment_layers`: about half a million voxels per task.
DEFAULT_CHUNK = (32, 128, 128)
#: What :func:`segment_layers` writes under the output folder.
OUTPUTS = ("supervoxels", "segmentation", "history.npz", "params.json")
#: The parameters of a run, written next to its outputs (:func:`load_params` reads it).
PARAMS_FILE = "params.json"
#: With ``workers=None``, :func:`segment_layers` runs serially in this process on volumes of at
#: most this many voxels (32 Mi, e.g. 128×512×512); above, on a local dask cluster (one worker
#: per core). Starting a cluster costs seconds, more than a small volume's whole run.
AUTO_CLUSTER_VOXELS = 32 * 2 ** 20
#: In-process runs without an explicit ``chunk_size`` segment volumes of at most this many voxels
#: (4 Mi, e.g. 64×256×256; ~50 MB of affinities) as one piece with :func:`segment` (identical
#: result): no intermediate files or done-markers, which cost more than such a volume's work.
WHOLE_VOLUME_VOXELS = 4 * 2 ** 20


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


# ------------------------------------------------------------------ parameter files -------------
def _params_from_dict(d, where: str):
    """(WatershedParams, AgglomerationParams, threshold or None) from a parameter dict."""
    if not isinstance(d, dict):
        raise InputError(f"{where} must hold a JSON object with 'watershed', 'agglomeration' and/or 'threshold', "
                         f"got {type(d).__name__}")
    if not any(k in d for k in ("watershed", "agglomeration", "threshold")):
        raise InputError(f"{where} holds none of 'watershed', 'agglomeration', 'threshold' (keys: "
                         f"{sorted(d)}); expected what `emkit tune` or `emkit segment` (OUT_DIR/params.json) writes")
    out = []
    for key, cls in (("watershed", WatershedParams), ("agglomeration", AgglomerationParams)):
        sec = d.get(key) or {}
        if not isinstance(sec, dict):
            raise InputError(f"{where}: '{key}' must be an object of {cls.__name__} fields, got {sec!r}")
        try:
            out.append(cls.from_dict(sec))
        except InputError as exc:
            raise InputError(f"{where}: '{key}': {exc}") from None
        except TypeError as exc:  # a field of the wrong type
            raise InputError(f"{where}: '{key}': {exc}") from None
    t = d.get("threshold")
    if t is not None:
        try:
            t = _check_threshold(t)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    return out[0], out[1], t


def load_params(path) -> tuple[WatershedParams, AgglomerationParams, float | None]:
    """Read a segmentation parameter file.

    The file is JSON: ``{"watershed": {WatershedParams fields}, "agglomeration":
    {AgglomerationParams fields}, "threshold": t}``; a missing section takes the defaults, a
    missing threshold gives None, other keys are ignored. ``emkit tune`` writes such a file, and
    :func:`segment_layers` records the parameters of every run in ``OUT_DIR/params.json`` in
    the same form (so ``--params OUT_DIR/params.json`` reproduces a segmentation).

    Parameters
    ----------
    path : local path or URL (``file://``, ``gs://``, ``s3://``) of the file.

    Returns
    -------
    (WatershedParams, AgglomerationParams, threshold or None)

    Raises
    ------
    InputError : missing file, invalid JSON, unknown field or bad value (named with the file).
    """
    import json
    import os

    spath = os.fspath(path)
    if "://" in spath and not spath.startswith("file://"):
        from cloudfiles import CloudFiles

        folder, name = spath.rsplit("/", 1)
        data = CloudFiles(folder).get(name, raw=True)
    else:
        local = spath[len("file://"):] if spath.startswith("file://") else spath
        try:
            with open(os.path.expanduser(local), "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            data = None
    if data is None:
        raise InputError(f"no parameter file at {spath}")
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"parameter file {spath} is not valid JSON: {exc}") from None
    return _params_from_dict(d, f"parameter file {spath}")


# ------------------------------------------------------------------ inputs ----------------------
#: The three inputs :func:`segment_layers` takes (what its errors list).
INPUT_FORMS = (
    "an affinities layer (3 float32 channels z, y, x)",
    "a probability layer with channels affinity_z, affinity_y, affinity_x (what `emkit infer` writes for the "
    "affinity head with other heads; those three channels are read)",
    "a 1-channel probability layer of boundary probability in [0, 1], 1 = boundary (ilastik and most pixel "
    "classifiers; `emkit import MAP URL --kind probability` takes float [0, 1] or uint8 0..255 maps), turned into "
    "affinities 1 - max(b[v], b[v - e_d]) by emkit.affinity.boundary_to_affinities",
)
_NOT_BOUNDARY = ("myelin", "vessel")  # 1-channel heads of emkit's nets that are no boundary map


def open_segment_input(url):
    """Open the input of :func:`segment_layers`: ``(layer, source, form)``.

    ``form`` is ``"affinities"``, ``"affinity channels"`` or ``"boundary probability"`` (see
    :data:`INPUT_FORMS`); ``source.read(bbox)`` gives (3, z, y, x) float32 affinities of a box
    in volume coordinates. Anything else raises InputError naming the layer's kind, channels and
    dtype and listing the accepted forms.
    """
    from emkit.io import Layer
    from emkit.segment.chunked import BoundarySource, LayerSource

    layer = Layer.open(url)
    names = list(layer.channel_names)
    if layer.dtype == np.float32:
        if layer.kind.name == "affinities" and layer.num_channels == 3:
            return layer, LayerSource(layer.url), "affinities"
        if layer.kind.name == "probability":
            want = [f"affinity_{a}" for a in "zyx"]
            if all(w in names for w in want):
                return layer, LayerSource(layer.url, channels=[names.index(w) for w in want]), "affinity channels"
            if layer.num_channels == 1 and names[0] not in _NOT_BOUNDARY:
                return layer, BoundarySource(LayerSource(layer.url, channels=0)), "boundary probability"
    forms = "; ".join(f"({c}) {f}" for c, f in zip("abc", INPUT_FORMS))
    raise InputError(f"{layer.url} cannot be segmented: it is a {layer.kind.name} layer with {layer.num_channels} "
                     f"channel(s) ({', '.join(names)}), dtype {layer.dtype}. emkit segment takes {forms}")


def _runner(workers, scheduler, client, voxels: int):
    """How to run: ``(run, pending, description)``: ``run`` is ``{"workers": 0}`` (in this
    process) or ``{"client": c}``, or None with ``pending = (n_workers, scheduler)`` for a
    cluster still to start (the rule of :data:`AUTO_CLUSTER_VOXELS` for ``workers=None``)."""
    from emkit.runtime import machine_cores

    if client is not None:
        return {"client": client}, None, "given client"
    if scheduler is None and workers is None:
        if voxels <= AUTO_CLUSTER_VOXELS or machine_cores() < 2:
            return {"workers": 0}, None, "in-process (serial)"
    if scheduler is None and workers == 0:
        return {"workers": 0}, None, "in-process (serial)"
    if workers is not None and int(workers) < 0:
        raise InputError(f"workers must be >= 0, got {workers!r}")
    return None, (workers, scheduler), None


def _whole_volume(source, sem_source, size, t, wp, ap, sink):
    """Segment the whole volume at once with :func:`segment`; write it to ``sink``."""
    from emkit.geometry import Bbox

    bounds = Bbox((0, 0, 0), tuple(size))
    t0 = time.perf_counter()
    aff = source.read(bounds)
    sem = None if sem_source is None else np.asarray(sem_source.read(bounds))
    if sem is not None and sem.size and (sem.min() < 0 or sem.max() > 5):
        raise InputError(f"semantic labels must be in 0..5, got values in [{sem.min()}, {sem.max()}]")
    t1 = time.perf_counter()
    seg, sv, history = segment(aff, semantic=sem, threshold=t, watershed_params=wp, agglomeration_params=ap)
    t2 = time.perf_counter()
    sink.write(bounds, sv, seg)
    t3 = time.perf_counter()
    return history, {"whole_volume": 1, "seconds": {"read": round(t1 - t0, 3), "segment": round(t2 - t1, 3),
                                                     "write": round(t3 - t2, 3)}}


def segment_layers(aff_url, out_dir, *, semantic_url=None, threshold: float | None = None,
                   chunk_size=None, watershed_params: WatershedParams | None = None,
                   agglomeration_params: AgglomerationParams | None = None, params=None,
                   workers: int | None = None, scheduler: str | None = None, client=None,
                   overwrite: bool = False, progress: bool = True) -> dict:
    """Segment an affinity (or boundary-probability) layer chunk by chunk; write supervoxels,
    history and segmentation.

    Parameters
    ----------
    aff_url : the input layer, one of :data:`INPUT_FORMS`: (a) an affinities layer (3 channels
        z, y, x, float32); (b) a probability layer holding channels ``affinity_z, affinity_y,
        affinity_x`` (``emkit infer`` with the affinity head and other heads), of which those three
        are read; (c) a 1-channel probability layer of boundary probability (1 = boundary), turned
        into affinities chunk by chunk exactly as
        :func:`emkit.affinity.boundary_to_affinities` turns the whole volume.
    out_dir : output folder (URL or path). Writes ``OUT_DIR/supervoxels`` and
        ``OUT_DIR/segmentation`` (segmentation layers, uint64, same geometry as the input),
        ``OUT_DIR/history.npz`` (:meth:`MergeHistory.load` reads it) and ``OUT_DIR/params.json``
        (the parameters used, in the form :func:`load_params` reads). Both files are written
        atomically (temporary name + rename; :mod:`emkit.runtime.atomic`), ``history.npz``
        last: it marks a finished run. Intermediate results and done-markers go to
        ``OUT_DIR/.emkit/segment/``.
    semantic_url : semantic labels layer (integer classes 0..5, one channel) or the semantic
        net's probability layer (5 channels, as ``emkit infer semantic`` writes it; the most
        probable class is taken chunk by chunk), optional. Must share the input's size, voxel
        offset and resolution (:func:`emkit.io.check_same_grid`).
    threshold : cut of the history written as ``segmentation``; default: the parameter file's
        threshold when ``params`` gives one, else :data:`DEFAULT_THRESHOLD`. An explicit value
        overrides the file's.
    chunk_size : task chunk (z, y, x) in voxels (default :data:`DEFAULT_CHUNK`); memory per
        task is bounded by it. Any size works (it need not divide the volume). Without it, an
        in-process run of a volume of at most :data:`WHOLE_VOLUME_VOXELS` voxels segments the
        whole volume at once with :func:`segment` (the same result; nothing to resume: a killed
        run starts over); giving it always runs chunk by chunk, resumably.
    watershed_params, agglomeration_params : parameters (or their dicts); default the paper's — except
        for a boundary-probability input, whose watershed default is
        :data:`~emkit.segment.params.BOUNDARY_MAP_WATERSHED` (measured on real classifier output).
    params : a parameter file (path or URL; see :func:`load_params`) or its dict
        ``{"watershed": {...}, "agglomeration": {...}, "threshold": t}``, e.g. written by
        ``emkit tune``; excludes ``watershed_params`` / ``agglomeration_params``.
    workers : 0 runs serially in this process; N starts a local dask cluster of N worker
        processes. None (default): serially in this process when the volume has at most
        :data:`AUTO_CLUSTER_VOXELS` voxels (32 Mi, e.g. 128×512×512; a cluster costs seconds to
        start and a serial run handles such a volume in about a minute) or the machine has one
        core; above that a local cluster with one worker per core.
    scheduler : address of a running dask scheduler (instead of ``workers``).
    client : an existing ``distributed.Client`` or :class:`~emkit.runtime.Cluster`.
    overwrite : replace existing outputs. Without it, a finished run's outputs are refused
        (LayerExistsError) and an interrupted run with the same parameters resumes.
    progress : progress bars.

    Returns
    -------
    dict with the output URLs, the input form, how the run ran (``runner``), counts,
    per-stage executed task counts (``executed``) and wall seconds (``stage_seconds``), and
    the total wall time (``seconds``).
    """
    from cloudfiles import CloudFiles

    from emkit import __version__
    from emkit.io import Layer, check_same_grid
    from emkit.io.layer import join_url, layer_exists, normalize_url
    from emkit.runtime import Cluster, put_json_atomic, put_atomic, remove_stale_temporaries
    from emkit.segment.chunked import FileStore, LayerSink, LayerSource, SemanticSource, run_chunked

    t0 = time.perf_counter()
    params_file = None
    if params is not None:
        if watershed_params is not None or agglomeration_params is not None:
            raise InputError("give either params (a parameter file or dict) or watershed_params/agglomeration_params, "
                             "not both")
        if isinstance(params, dict):
            wp, ap, t_file = _params_from_dict(params, "params")
        else:
            import os

            params_file = os.fspath(params)
            wp, ap, t_file = load_params(params_file)
    else:
        wp, ap = _params(watershed_params, agglomeration_params)
        t_file = None
    t = _check_threshold(threshold if threshold is not None else (t_file if t_file is not None else DEFAULT_THRESHOLD))
    if sum(x is not None for x in (scheduler, client)) > 1 or (workers is not None and (scheduler or client)):
        raise InputError("give at most one of workers, scheduler and client")
    aff, source, form = open_segment_input(aff_url)
    if form == "boundary probability" and params is None and watershed_params is None:
        # a pixel classifier's map: its own watershed settings (emkit.segment.params.BOUNDARY_MAP_WATERSHED)
        wp = BOUNDARY_MAP_WATERSHED
    sem_source = None
    if semantic_url is not None:
        sem = Layer.open(semantic_url)
        check_same_grid(aff, sem, what="semantic layer")
        probabilities = sem.num_channels == 5 and np.issubdtype(sem.dtype, np.floating)
        if not probabilities and (sem.num_channels != 1 or not np.issubdtype(sem.dtype, np.integer)):
            raise InputError(f"semantic layer {sem.url} must hold integer class labels 0..5 (one channel) or the "
                             f"semantic net's probabilities (5 float channels), got {sem.num_channels} channel(s), "
                             f"dtype {sem.dtype}")
        sem_source = SemanticSource(sem.url) if probabilities else LayerSource(sem.url)
    chunk = tuple(min(c, s) for c, s in zip(as_vec3(chunk_size or DEFAULT_CHUNK, "chunk size", positive=True), aff.size))
    run, pending, runner = _runner(workers, scheduler, client, int(np.prod(aff.size)))
    whole = run == {"workers": 0} and chunk_size is None and int(np.prod(aff.size)) <= WHOLE_VOLUME_VOXELS
    if whole:
        runner = "in-process (whole volume)"

    out_dir = normalize_url(out_dir)
    sv_url, seg_url = join_url(out_dir, "supervoxels"), join_url(out_dir, "segmentation")
    work = join_url(out_dir, ".emkit", "segment")
    cf, wcf = CloudFiles(out_dir), CloudFiles(work)
    existing = [n for n, ok in (("supervoxels", layer_exists(sv_url)), ("segmentation", layer_exists(seg_url)),
                                ("history.npz", cf.exists("history.npz"))) if ok]
    started = wcf.exists("run.json") or wcf.exists("markers/leaves/run.json")
    if overwrite:
        old = list(wcf.list())
        if old:
            wcf.delete(old)
        for name in ("history.npz", PARAMS_FILE):
            if cf.exists(name):
                cf.delete(name)
    elif "history.npz" in existing or (existing and not started):
        raise LayerExistsError(f"outputs already exist in {out_dir}: {', '.join(existing)}; pass overwrite=True "
                               "(--overwrite) to replace them")
    for name in ("history.npz", PARAMS_FILE):  # what a killed write may have left
        remove_stale_temporaries(out_dir, name)
    record = {"input": {"url": aff.url, "form": form, "kind": aff.kind.name, "channels": list(aff.channel_names)},
              "semantic_url": None if sem_source is None else sem_source.url,
              "chunk_size_zyx": list(aff.size) if whole else list(chunk),
              "watershed": wp.to_dict(), "agglomeration": ap.to_dict(), "threshold": t, "params_file": params_file,
              "written_by": f"emkit {__version__} segment"}
    put_json_atomic(work, "run.json", record)  # the run has started: its outputs below are its own
    storage = _storage_chunk(chunk)
    for url in (sv_url, seg_url):
        if overwrite or not layer_exists(url):
            Layer.create(url, "segmentation", aff.size, resolution=aff.resolution, voxel_offset=aff.voxel_offset,
                         chunk_size=storage, overwrite=overwrite, description="emkit segment")

    cluster = None
    try:
        if whole:
            history, executed = _whole_volume(source, sem_source, aff.size, t, wp, ap, LayerSink(sv_url, seg_url))
        else:
            if run is None:
                n, addr = pending
                cluster = Cluster(n_workers=n, scheduler=addr, quiet=not progress)
                run = {"client": cluster}
                runner = f"dask scheduler {addr}" if addr else f"local dask cluster, {cluster.n_workers} worker(s)"
            history, executed = run_chunked(
                source, aff.size, chunk, semantic=sem_source, threshold=t, watershed_params=wp,
                agglomeration_params=ap, store=FileStore(join_url(work, "data")), sink=LayerSink(sv_url, seg_url),
                markers_url=join_url(work, "markers"), progress=progress,
                run_info={"affinities": aff.url, "input_form": form,
                          "semantic_url": None if sem_source is None else sem_source.url}, **run)
    finally:
        if cluster is not None:
            cluster.close()
    put_json_atomic(out_dir, PARAMS_FILE, record, durable=True)
    buf = io.BytesIO()
    history.save(buf)
    put_atomic(out_dir, "history.npz", buf.getvalue(), durable=True)  # last: a finished run
    return {"affinities": aff.url, "input_form": form, "supervoxels": sv_url, "segmentation": seg_url,
            "history": join_url(out_dir, "history.npz"), "params": join_url(out_dir, PARAMS_FILE), "threshold": t,
            "chunk_size_zyx": record["chunk_size_zyx"], "runner": runner,
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
