"""The synapse stage end to end: image + segmentation → synapse table + wiring diagram.

Paper (Fig. 1b, Methods *Synapse detection* and *Partner assignment*): a cleft net predicts
synaptic clefts; connected components across chunks give clefts with size, bounding box and
centroid; a partner net assigns each cleft its presynaptic and postsynaptic segment; clefts
within 700 nm with the same partners are merged and autapses dropped.

Two forms with the same result (tested equal):

- :func:`find_synapses` — in-memory arrays (z, y, x);
- :func:`synapses_layers` — Precomputed layers, chunk by chunk (``emkit synapses``), writing into
  ``OUT_DIR``::

      cleft_prob/        probability layer (1 channel "cleft"), the cleft net's output
      clefts/            segmentation layer: cleft component ids; clefts.parquet: their table
      partners.parquet   one row per cleft: cleft_id, pre_id, post_id, pre/post/assignment score
      synapses.parquet   the synapse table (emkit.synapse.table.SYNAPSE_COLUMNS)
      edges.parquet      the wiring diagram's edge list (emkit.synapse.graph.EDGE_COLUMNS)
      synapses.json      provenance: command, models, layers, parameters, version, git revision
      annotations/       the synapses as a Precomputed point-annotation layer (pre/post segment
                         relationships; emkit.synapse.annotations), for any Neuroglancer

  Each step records itself as done in ``OUT_DIR/.emkit_synapses_run.json`` (with the run's
  parameters); a run started again with the same arguments skips finished steps (and the cleft
  inference resumes chunk by chunk). A finished output, or an unfinished one made with other
  arguments, is never overwritten unless ``overwrite``.

Models: ``cleft_model`` / ``partner_model`` are shipped names (``"cleft"``, ``"partner"``) or
checkpoint paths; ``"truth:DATASET_DIR"`` stands for a phantom dataset's ground truth instead of
a net (an *oracle*: the true clefts as the probability map, :func:`emkit.synapse.truth.truth_partners`
as the assignment) and is recorded as such in the provenance.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from emkit.errors import InputError, LayerExistsError
from emkit.synapse.table import SynapseParams

__all__ = ["find_synapses", "synapses_layers", "model_cleft_threshold", "RUN_FILE", "STEPS", "WHOLE_VOLUME_VOXELS"]

RUN_FILE = ".emkit_synapses_run.json"
STEPS = ("cleft_prob", "clefts", "partners", "synapses")
#: Up to this many voxels, ``workers=None`` runs in this process (no dask cluster start-up).
WHOLE_VOLUME_VOXELS = 32 * 2 ** 20


def _params(params) -> SynapseParams:
    params = params if params is not None else SynapseParams()
    if not isinstance(params, SynapseParams):
        raise InputError(f"params must be a SynapseParams, got {type(params).__name__}")
    return params


def model_cleft_threshold(ref, resolution=None) -> float | None:
    """The cleft threshold recorded with a cleft model (``cleft_threshold`` in the ``.json`` beside
    its checkpoint, chosen on its validation data), or None (none recorded, or an oracle)."""
    from emkit.synapse.truth import is_truth_ref

    if is_truth_ref(ref):
        return None
    meta = Path(_model_path(ref, resolution)).with_suffix(".json")
    if not meta.is_file():
        return None
    try:
        value = json.loads(meta.read_text()).get("cleft_threshold")
    except (OSError, ValueError):
        return None
    if isinstance(value, dict):
        value = value.get("value")
    return float(value) if isinstance(value, (int, float)) and 0.0 <= float(value) < 1.0 else None


def _with_model_threshold(params: SynapseParams, cleft_model, resolution) -> SynapseParams:
    """``params`` with the cleft threshold made explicit: the user's, else the model's, else 0.5."""
    from dataclasses import replace

    if params.cleft.threshold is not None:
        return params
    t = model_cleft_threshold(cleft_model, resolution)
    return replace(params, cleft=replace(params.cleft, threshold=0.5 if t is None else t))


def _model_record(ref, resolution=None) -> dict:
    """What a model reference stands for: name, file, weights fingerprint (or the oracle)."""
    from emkit.synapse.truth import is_truth_ref

    if is_truth_ref(ref):
        return {"model": ref, "oracle": "ground truth of the dataset folder, not a net"}
    rec = {"model": os.fspath(ref)}
    try:
        from emkit.inference.chunked import load_model_cached, model_fingerprint

        rec["path"] = _model_path(ref, resolution)
        rec["weights"] = model_fingerprint(load_model_cached(rec["path"], "cpu"))
    except Exception as exc:  # noqa: BLE001 - provenance is best effort; the step itself reports errors
        rec["weights"] = f"unknown ({exc})"
    return rec


def _model_path(ref, resolution=None) -> str:
    """Checkpoint path of a model reference; a family name (``cleft``) is resolved by the image's
    ``resolution`` as ``emkit infer`` does (:func:`emkit.inference.models.choose_model`)."""
    ref = os.fspath(ref)
    if os.path.isfile(ref):   # a checkpoint; a folder named like a shipped model is not one
        return os.path.abspath(ref)
    from emkit.inference.models import choose_model, is_family_name
    from emkit.nets import available_models, models_dir

    if resolution is not None and is_family_name(ref):
        return choose_model(ref, resolution)[1]

    if ref in available_models():
        return str(models_dir() / f"{ref}.pt")
    raise InputError(f"no model {ref!r}: not a checkpoint file nor a shipped model "
                     f"(shipped: {available_models() or 'none'}); 'truth:DATASET_DIR' uses a phantom's ground truth")


# ------------------------------------------------------------------ array form -----------------
def find_synapses(image, segmentation, *, resolution=(40, 8, 8), cleft_model: str = "cleft",
                  partner_model: str = "partner", params: SynapseParams | None = None, cleft_prob=None,
                  return_all: bool = False, progress: bool = False):
    """Synapses of an image with its segmentation, in memory.

    Parameters
    ----------
    image : (z, y, x) uint8 EM image.
    segmentation : (z, y, x) integer segment ids on the image's grid (0 = none).
    resolution : voxel size (z, y, x) in nm.
    cleft_model : cleft net (shipped name or checkpoint), or ``"truth:DIR"`` (the true clefts of a
        phantom dataset folder, which must match the image's shape).
    partner_model : partner net (shipped name or checkpoint), or ``"truth:DIR"`` (oracle).
    params : :class:`~emkit.synapse.SynapseParams` (default: the paper's).
    cleft_prob : (z, y, x) cleft probability to use instead of running ``cleft_model``.
    return_all : also return the intermediate results.
    progress : progress bar of the cleft inference.

    Returns
    -------
    The synapse table (DataFrame, :data:`emkit.synapse.table.SYNAPSE_COLUMNS`); with
    ``return_all`` a dict: ``table``, ``edges``, ``clefts`` (uint64 cleft component ids),
    ``cleft_table``, ``partners``, ``cleft_prob``.
    """
    from emkit.geometry import as_vec3
    from emkit.synapse.components import cleft_components
    from emkit.synapse.graph import edge_list
    from emkit.synapse.table import build_synapse_table
    from emkit.synapse.truth import is_truth_ref, load_truth, truth_folder, truth_partners

    params = _params(params)
    resolution = as_vec3(resolution, "resolution", positive=True, dtype=float)
    if cleft_prob is None:
        params = _with_model_threshold(params, cleft_model, resolution)
    image = np.asarray(image)
    segmentation = np.asarray(segmentation)
    if image.ndim != 3 or segmentation.shape != image.shape:
        raise InputError(f"image {image.shape} and segmentation {segmentation.shape} must be (z, y, x) arrays of "
                         "the same shape")
    if not np.issubdtype(segmentation.dtype, np.integer):
        raise InputError(f"segmentation must hold integer ids, got dtype {segmentation.dtype}")
    truths = {}

    def truth(ref):
        folder = truth_folder(ref)
        if folder not in truths:
            t = load_truth(folder)
            if t.clefts.shape != image.shape:
                raise InputError(f"{ref}: its clefts have shape {t.clefts.shape}, the image {image.shape}")
            truths[folder] = t
        return truths[folder]

    if cleft_prob is None:
        if is_truth_ref(cleft_model):
            cleft_prob = (truth(cleft_model).clefts > 0).astype(np.float32)
        else:
            from emkit.inference import predict
            from emkit.inference.chunked import load_model_cached

            model = load_model_cached(_model_path(cleft_model, resolution), "cpu")
            cleft_prob = predict(model, image, resolution=resolution, progress=progress)[0]
    cleft_prob = np.asarray(cleft_prob)
    if cleft_prob.ndim == 4 and cleft_prob.shape[0] == 1:
        cleft_prob = cleft_prob[0]
    if cleft_prob.shape != image.shape:
        raise InputError(f"cleft_prob has shape {cleft_prob.shape}, the image {image.shape}")
    labels, ctable = cleft_components(cleft_prob, resolution, params.cleft)
    if is_truth_ref(partner_model):
        t = truth(partner_model)
        gseg = _truth_segmentation(t, None, segmentation)
        partners = truth_partners(labels, t.clefts, t.table, segmentation=None if gseg is None else segmentation,
                                  gt_segmentation=gseg)
    else:
        from emkit.synapse.partners import assign_partners

        partners = assign_partners(image, labels, segmentation, resolution=resolution, model=partner_model,
                                   progress=progress)
    table = build_synapse_table(ctable, partners, params)
    if not return_all:
        return table
    return {"table": table, "edges": edge_list(table), "clefts": labels, "cleft_table": ctable,
            "partners": partners, "cleft_prob": cleft_prob}


# ------------------------------------------------------------------ chunked form ---------------
def _read_run(out_dir) -> dict | None:
    import json

    from cloudfiles import CloudFiles

    from emkit.io import join_url

    raw = CloudFiles(join_url(out_dir)).get(RUN_FILE)
    return json.loads(raw) if raw else None


def _write_run(out_dir, run: dict) -> None:
    from emkit.io import join_url
    from emkit.runtime.atomic import put_json_atomic

    put_json_atomic(join_url(out_dir), RUN_FILE, run, durable=True)


def _existing_outputs(out_dir) -> list[str]:
    from cloudfiles import CloudFiles

    from emkit.io import join_url, layer_exists

    found = [n for n in ("cleft_prob", "clefts") if layer_exists(join_url(out_dir, n))]
    cf = CloudFiles(join_url(out_dir))
    found += [f for f in ("clefts.parquet", "partners.parquet", "synapses.parquet", "edges.parquet",
                          "synapses.json") if cf.exists(f)]
    return found


def _read_parquet(url):
    import io

    import pandas as pd
    from cloudfiles import CloudFiles

    folder, name = url.rstrip("/").rsplit("/", 1)
    raw = CloudFiles(folder).get(name)
    if raw is None:
        raise InputError(f"missing {url}")
    return pd.read_parquet(io.BytesIO(raw))


def _write_parquet(folder, name, df) -> None:
    import io

    from emkit.runtime import put_atomic

    buf = io.BytesIO()
    df = df.copy()
    df.attrs = {}
    df.to_parquet(buf, index=False)
    put_atomic(folder, name, buf.getvalue(), durable=True)


def synapses_layers(image_url, seg_url, out_dir, *, cleft_model: str = "cleft", partner_model: str = "partner",
                    params: SynapseParams | None = None, chunk_size=None, workers: int | None = None,
                    scheduler: str | None = None, client=None, overwrite: bool = False, progress: bool = True,
                    command: str | None = None) -> dict:
    """Synapses of an image layer with its segmentation layer, chunk by chunk (module docstring).

    Parameters
    ----------
    image_url : image layer (uint8).
    seg_url : segmentation layer on the image's grid (same size, voxel offset, resolution).
    out_dir : output folder (local path, ``file://``, ``gs://``, ``s3://``).
    cleft_model, partner_model : shipped names or checkpoints; ``"truth:DIR"`` for a phantom's
        ground truth (oracle).
    params : :class:`~emkit.synapse.SynapseParams` (default: the paper's).
    chunk_size : task chunk (z, y, x voxels) of the connected components and the partner
        assignment (and of the cleft inference, where it must be a multiple of the image's
        storage chunk); default: the image's storage chunk × (1, 2, 2), clipped to the volume.
    workers : 0 = in this process; N = a local dask cluster of N workers shared by the steps;
        None = in this process up to :data:`WHOLE_VOLUME_VOXELS` voxels, else one worker per core.
    scheduler, client : a running dask scheduler's address / a client to use instead.
    overwrite : replace an existing output.
    progress : progress bars.
    command : command line recorded in the provenance (default: this process's ``sys.argv``).

    Returns
    -------
    dict: ``out_dir``, ``n_clefts``, ``n_synapses``, ``summary`` (:func:`emkit.synapse.graph_summary`),
    ``files``, ``skipped`` (steps already done), ``seconds`` per step.

    Raises
    ------
    InputError : bad layers (not an image, segmentation on another grid), bad models.
    LayerExistsError : ``OUT_DIR`` holds a finished output, or an unfinished one made with other
        arguments, and ``overwrite`` is not set.
    """
    from emkit.geometry import as_vec3
    from emkit.io import Layer, check_same_grid, join_url, layer_exists
    from emkit.io.layer import normalize_url
    from emkit.runtime import Cluster
    from emkit.synapse.annotations import ANNOTATIONS_DIR, write_synapse_annotations
    from emkit.synapse.components import cleft_components_layers
    from emkit.synapse.graph import edge_list, graph_summary
    from emkit.synapse.table import (PROVENANCE_FILE, build_synapse_table, provenance_record,
                                     write_synapse_table)
    from emkit.synapse.truth import is_truth_ref, load_truth, truth_folder, truth_partners

    params = _params(params)
    if not layer_exists(image_url):
        raise InputError(f"no Precomputed layer at {image_url!r} (the image)")
    if not layer_exists(seg_url):
        raise InputError(f"no Precomputed layer at {seg_url!r} (the segmentation)")
    image = Layer.open(image_url)
    seg = Layer.open(seg_url)
    if image.kind.name != "image":
        raise InputError(f"{image.url} is a {image.kind.name} layer; expected an image layer (uint8)")
    if seg.kind.name != "segmentation":
        raise InputError(f"{seg.url} is a {seg.kind.name} layer; expected a segmentation layer")
    check_same_grid(image, seg, what="segmentation")
    for ref, what in ((cleft_model, "cleft_model"), (partner_model, "partner_model")):
        if is_truth_ref(ref):
            truth_folder(ref)
        elif what == "cleft_model":
            _model_path(ref, image.resolution)
    params = _with_model_threshold(params, cleft_model, image.resolution)
    out_dir = normalize_url(out_dir)
    storage = tuple(image.chunk_size)
    if chunk_size is None:
        chunk = tuple(min(c * m, s) for c, m, s in zip(storage, (1, 2, 2), image.size))
        infer_chunk = None
    else:
        chunk = tuple(min(c, s) for c, s in zip(as_vec3(chunk_size, "chunk_size", positive=True), image.size))
        infer_chunk = chunk if all(c % s == 0 or c == z for c, s, z in zip(chunk, storage, image.size)) else None
    run_args = {"image": image.url, "segmentation": seg.url, "cleft_model": os.fspath(cleft_model),
                "partner_model": os.fspath(partner_model), "params": params.to_dict(), "chunk_size": list(chunk)}
    state = None if overwrite else _read_run(out_dir)
    existing = [] if overwrite else _existing_outputs(out_dir)
    if state is None:
        if existing:
            raise LayerExistsError(f"{out_dir} already holds {', '.join(existing)}; pass overwrite=True (--overwrite) "
                                   "to replace them, or choose another OUT_DIR")
        state = {"args": run_args, "done": []}
    else:
        if state.get("args") != run_args:
            diff = sorted(k for k in run_args if (state.get("args") or {}).get(k) != run_args[k])
            raise LayerExistsError(f"{out_dir} holds a synapse run made with other arguments (differing: "
                                   f"{', '.join(diff)}); pass overwrite=True (--overwrite) to replace it, or choose "
                                   "another OUT_DIR")
        if "synapses" in state.get("done", []):
            raise LayerExistsError(f"{out_dir} already holds a finished synapse output ({PROVENANCE_FILE}); pass "
                                   "overwrite=True (--overwrite) to recompute it")
    done = list(state.get("done", []))
    skipped = [s for s in STEPS if s in done]
    _write_run(out_dir, {"args": run_args, "done": done})

    def mark(step):
        done.append(step)
        _write_run(out_dir, {"args": run_args, "done": done})

    n_vox = int(np.prod(image.size))
    cluster = None
    if client is not None:
        run = {"client": client}
    elif scheduler:
        cluster = Cluster(scheduler=scheduler, quiet=not progress)
        run = {"client": cluster}
    elif workers is None and n_vox <= WHOLE_VOLUME_VOXELS or workers == 0:
        run = {"workers": 0}
    else:
        cluster = Cluster(n_workers=workers, quiet=not progress)
        run = {"client": cluster}
    runner = "in this process" if run.get("workers") == 0 else (
        f"dask scheduler {scheduler}" if scheduler else "dask client" if client is not None else
        f"local dask cluster, {cluster.n_workers} worker(s)")
    prob_url = join_url(out_dir, "cleft_prob")
    clefts_url = join_url(out_dir, "clefts")
    seconds = {}
    truths = {}

    def truth(ref):
        folder = truth_folder(ref)
        if folder not in truths:
            t = load_truth(folder)
            if t.clefts.shape != tuple(image.size):
                raise InputError(f"{ref}: its clefts have shape {t.clefts.shape}, the image {tuple(image.size)}")
            truths[folder] = t
        return truths[folder]

    try:
        # 1. cleft probability ---------------------------------------------------------------
        t0 = time.perf_counter()
        if "cleft_prob" not in done:
            if is_truth_ref(cleft_model):
                prob = (truth(cleft_model).clefts > 0).astype(np.float32)
                out = Layer.create(prob_url, "probability", image.size, resolution=image.resolution,
                                   voxel_offset=image.voxel_offset, num_channels=1, overwrite=True,
                                   description=f"emkit synapses: true clefts of {cleft_model} (oracle)")
                out.write(prob[None])
            else:
                from emkit.inference import infer_layers

                kw = {"chunk_size": infer_chunk} if infer_chunk else {}
                infer_layers(cleft_model, image.url, prob_url, overwrite=overwrite, progress=progress, **kw, **run)
            mark("cleft_prob")
            seconds["cleft_prob"] = round(time.perf_counter() - t0, 3)
        prob_layer = Layer.open(prob_url)
        check_same_grid(image, prob_layer, what="cleft probability")
        if prob_layer.num_channels != 1:
            raise InputError(f"{prob_url} has {prob_layer.num_channels} channels; the cleft net must output one")

        # 2. connected components -----------------------------------------------------------
        t0 = time.perf_counter()
        if "clefts" not in done:
            cleft_components_layers(prob_url, clefts_url, params=params.cleft, chunk_size=chunk, overwrite=True,
                                    progress=progress, **run)
            mark("clefts")
            seconds["clefts"] = round(time.perf_counter() - t0, 3)
        ctable = _read_parquet(join_url(out_dir, "clefts.parquet"))

        # 3. partner assignment ---------------------------------------------------------------
        t0 = time.perf_counter()
        if "partners" not in done:
            if is_truth_ref(partner_model):
                t = truth(partner_model)
                gseg = _truth_segmentation(t, seg.url, None)
                partners = truth_partners(Layer.open(clefts_url).read(), t.clefts, t.table,
                                          segmentation=None if gseg is None else seg.read(), gt_segmentation=gseg)
            else:
                partners = _assign_layers(image.url, clefts_url, seg.url, ctable, partner_model, chunk, run,
                                          progress, join_url(out_dir, ".emkit_partners_work"))
            _write_parquet(out_dir, "partners.parquet", partners)
            mark("partners")
            seconds["partners"] = round(time.perf_counter() - t0, 3)
        partners = _read_parquet(join_url(out_dir, "partners.parquet"))

        # 4. merge, filters, table, graph -------------------------------------------------------
        t0 = time.perf_counter()
        table = build_synapse_table(ctable, partners, params)
        edges = edge_list(table)
        summary = graph_summary(table)
        prov = provenance_record(
            command=command, params=params,
            models={"cleft": _model_record(cleft_model, image.resolution),
                    "partner": _model_record(partner_model)},
            layers={"image": image.url, "segmentation": seg.url, "cleft_prob": prob_url, "clefts": clefts_url},
            extra={"chunk_size": list(chunk), "runner": runner, "n_clefts": int(len(ctable)),
                   "n_synapses": int(len(table)), "summary": summary, "resolution_nm": list(image.resolution),
                   "voxel_offset": list(image.voxel_offset), "size": list(image.size)})
        files = write_synapse_table(table, out_dir, prov, edges=edges)
        files["annotations"] = write_synapse_annotations(table, join_url(out_dir, ANNOTATIONS_DIR), image.resolution,
                                                         overwrite=True)   # this run's own output (see above)
        mark("synapses")
        seconds["synapses"] = round(time.perf_counter() - t0, 3)
    finally:
        if cluster is not None:
            cluster.close()
    files.update({"cleft_prob": prob_url, "clefts": clefts_url, "clefts_table": join_url(out_dir, "clefts.parquet"),
                  "partners": join_url(out_dir, "partners.parquet")})
    return {"out_dir": out_dir, "n_clefts": int(len(ctable)), "n_synapses": int(len(table)), "summary": summary,
            "runner": runner, "files": files, "skipped": skipped, "seconds": seconds}


def _truth_segmentation(truth, seg_url, segmentation):
    """The true segmentation to map oracle partners into the segmentation used (``seg_url`` or the
    array ``segmentation``); None when that is the true segmentation itself."""
    from emkit.io import Layer
    from emkit.io.layer import normalize_url

    if truth.segmentation_url is None:
        return None
    if seg_url is not None and normalize_url(seg_url).rstrip("/") == normalize_url(truth.segmentation_url).rstrip("/"):
        return None
    g = Layer.open(truth.segmentation_url).read()
    if segmentation is not None and np.array_equal(np.asarray(segmentation), g):
        return None
    return g


def _assign_layers(image_url, clefts_url, seg_url, ctable, model, chunk, run, progress, work_dir):
    """The partner net over layers (emkit.synapse.partners.assign_partners_layers)."""
    import inspect

    try:
        from emkit.synapse.partners import assign_partners_layers
    except ImportError as exc:
        raise InputError(f"no partner assignment available ({exc}); give partner_model='truth:DATASET_DIR' to use a "
                         "phantom's ground truth") from None
    kw = {"table": ctable, "model": model, "chunk_size": chunk, "progress": progress, "work_dir": work_dir, **run}
    sig = inspect.signature(assign_partners_layers).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in sig.values()):
        kw = {k: v for k, v in kw.items() if k in sig}
    out = assign_partners_layers(image_url, clefts_url, seg_url, **kw)
    if isinstance(out, dict):
        out = out.get("table", out.get("partners"))
    return out
