"""The stages of ``emkit run``: each calls the library's chunked layer function of that stage.

Every stage function takes a :class:`Context` (run folder, configuration, dask client) and its
parameter section, runs the matching ``*_layers`` function of the library (nothing is
re-implemented here) and returns ``{"outputs": {name: url}, "summary": {...}, "models": {...}}``.

Where each stage writes, inside the run folder ``RUN``:

========== ==========================================================================
phantom    ``RUN/image``, ``RUN/gt/...``, ``RUN/masks/<defect>`` (:func:`emkit.phantom.write_phantom`)
align      ``RUN/align/image``, ``RUN/align/field``, ``RUN/align/quality.tsv``
           (:func:`emkit.align.fine.fine_align_layers`, or :func:`emkit.align.rough_align_layers`)
masks      ``RUN/seg_masks/mask_in``, ``mask_out`` (:func:`emkit.detect.segmentation_masks_layers`)
boundary   ``RUN/affinities`` (:func:`emkit.inference.infer_layers`)
semantic   ``RUN/semantic`` (:func:`emkit.inference.infer_layers`)
segment    ``RUN/seg/`` (:func:`emkit.segment.segment_layers`)
synapses   ``RUN/synapses/`` (:func:`emkit.synapse.synapses_layers`)
pyramids   mips added in place (:func:`emkit.pyramid.pyramid_layers`)
meshes     ``RUN/seg/segmentation/mesh`` (:func:`emkit.mesh.mesh_layers`)
skeletons  ``RUN/seg/segmentation/skeletons``, ``RUN/skeletons/neurons.parquet``
           (:func:`emkit.skeleton.skeleton_layers`)
evaluate   ``RUN/evaluation/scores.json`` (:func:`emkit.evaluate.evaluate`,
           :func:`emkit.evaluate.synapse_scores_dirs`)
========== ==========================================================================
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..errors import InputError, LayerExistsError
from ..io.layer import join_url, layer_exists
from .config import PipelineConfig

__all__ = ["Context", "STAGES", "Stage", "dependencies", "stage_key", "required_missing"]


@dataclass
class Context:
    """What a stage needs besides its parameters."""

    cfg: PipelineConfig
    run: str                       # normalised URL of the run folder
    client: object = None          # a :class:`emkit.runtime.Cluster` shared by the stages, or None
    progress: bool = True
    command: str = ""
    notes: list = field(default_factory=list)

    def url(self, *parts) -> str:
        return join_url(self.run, *parts)

    @property
    def phantom(self) -> bool:
        return self.cfg.input.phantom is not None

    @property
    def source_image(self) -> str:
        """The input image: the phantom's ``RUN/image`` or the configured layer."""
        return self.url("image") if self.phantom else self.cfg.input.layer

    @property
    def image(self) -> str:
        """The image the later stages read: the aligned one when the align stage is configured."""
        return self.url("align", "image") if self.cfg.stages.align is not None else self.source_image

    @property
    def segmentation(self) -> str:
        return self.url("seg", "segmentation")

    def where(self) -> dict:
        """Keyword arguments of the ``*_layers`` functions saying where chunk tasks run."""
        return {"workers": 0} if self.client is None else {"workers": None, "client": self.client}


def _model_record(ref, resolution=None) -> dict:
    from ..synapse.pipeline import _model_record as record

    return record(ref, resolution)


def _resolution(url):
    from ..io import Layer

    return Layer.open(url).resolution


# -- stage functions ---------------------------------------------------------------------------

def run_phantom(ctx: Context, p: dict, overwrite: bool) -> dict:
    from ..phantom import make_phantom, write_phantom

    ph = make_phantom(tuple(p["shape"]), seed=p["seed"], defects=p["defects"])
    outputs = {"image": ctx.url("image"), "ground_truth": ctx.url("gt")}
    summary = {"shape": list(p["shape"]), "n_segments": ph.summary()["n_segments"],
               "n_synapses": ph.summary()["n_synapses"]}
    moved = ph
    if p.get("unaligned") is not None:
        from ..phantom import UnalignedParams, make_unaligned

        u = p["unaligned"]
        uparams = UnalignedParams(**u, max_shift_px=max(30.0, 2.5 * u["shift_px"]),
                                  max_rotation_deg=max(3.0, 2.5 * u["rotation_deg"]))
        moved = make_unaligned(ph, params=uparams, seed=p["seed"])
        summary["unaligned_max_px"] = round(float(max(abs(f).max() for f in moved.fields)), 1)
    if not overwrite and _same_phantom(ctx, ph, moved):
        # a phantom made with the same parameters is already there (e.g. `emkit phantom` or an earlier demo)
        ctx.notes.append(f"phantom: {ctx.run} already holds a phantom with the same parameters; reused")
        return {"outputs": outputs, "summary": {**summary, "reused": True}}
    write_phantom(moved, ctx.run, overwrite=overwrite, progress=ctx.progress)
    return {"outputs": outputs, "summary": summary}


def _same_phantom(ctx: Context, ph, moved) -> bool:
    """True when the run folder holds a complete phantom whose record matches ``ph`` (its
    ``gt/phantom.json``, written last, with the same summary and generator parameters; for an
    unaligned one, the same moves)."""
    from cloudfiles import CloudFiles

    raw = CloudFiles(ctx.url("gt")).get("phantom.json")
    if raw is None or not layer_exists(ctx.url("image")):
        return False
    meta = json.loads(raw)
    want = json.loads(json.dumps({**ph.summary(), "params": ph.params.to_dict()}))
    if moved is not ph:
        want["unaligned"] = json.loads(json.dumps({"seed": moved.seed, "params": moved.params.to_dict()}))
        have = meta.get("unaligned") or {}
        meta = {**meta, "unaligned": {k: have.get(k) for k in ("seed", "params")}}
    elif "unaligned" in meta:
        return False
    return all(meta.get(k) == v for k, v in want.items())


def run_align(ctx: Context, p: dict, overwrite: bool) -> dict:
    from ..align.rough import RoughParams, rough_align_layers

    params = RoughParams(coarse_nm=p["coarse_nm"], neighbours=p["neighbours"], max_rotation_deg=p["max_rotation_deg"])
    masks, models = [], {}
    if p["defects"] == "truth":
        masks = [ctx.url("masks", k) for k in ("fold", "crack") if layer_exists(ctx.url("masks", k))]
    elif p["defects"] == "detect":
        from ..detect.defect_masks import detect_defects_layers

        found = detect_defects_layers(ctx.source_image, ctx.url("align", "defects"), overwrite=overwrite,
                                      progress=ctx.progress, **ctx.where())
        masks = [found[k] for k in ("fold", "crack") if k in found]
        models["defects"] = {"model": "defects"}
    if p["method"] == "rough":
        rep = rough_align_layers(ctx.source_image, ctx.url("align"), params=params, z_block=p["z_block"],
                                 overwrite=overwrite, progress=ctx.progress, **ctx.where())
    else:
        from ..align.fine import FineParams, fine_align_layers

        if p["field_model"] is not None:
            models["field"] = _model_record(p["field_model"])
        rep = fine_align_layers(ctx.source_image, ctx.url("align"), rough_params=params, mask_urls=masks,
                                params=FineParams(field_model=p["field_model"]),
                                z_block=p["z_block"], overwrite=overwrite, progress=ctx.progress, **ctx.where())
    summary = {k: v for k, v in rep.items() if isinstance(v, (int, float, str))} if isinstance(rep, dict) else {}
    summary["defect_masks"] = len(masks)
    return {"outputs": {"image": ctx.image, "field": ctx.url("align", "field")}, "summary": summary,
            "models": models}


def run_masks(ctx: Context, p: dict, overwrite: bool) -> dict:
    from ..detect.masks import segmentation_masks_layers

    defect_urls, models = None, {}
    if p["defects"] == "truth":
        defect_urls = {k: ctx.url("masks", k) for k in ("fold", "crack", "resin") if layer_exists(ctx.url("masks", k))}
    elif p["defects"] == "detect":
        from ..detect.defect_masks import detect_defects_layers

        defect_urls = detect_defects_layers(ctx.image, ctx.url("defects"), overwrite=overwrite,
                                            progress=ctx.progress, **ctx.where())
        models["defects"] = {"model": "defects"}
    urls = segmentation_masks_layers(ctx.image, ctx.url("seg_masks"), chunk_size=p["chunk"],
                                     defect_mask_urls=defect_urls, overwrite=overwrite, progress=ctx.progress,
                                     **ctx.where())
    return {"outputs": {"mask_in": urls[0], "mask_out": urls[1]}, "models": models,
            "summary": {"defect_masks": sorted(defect_urls or {})}}


def _infer(ctx: Context, model: str, out: str, overwrite: bool, **kw) -> dict:
    from ..inference import infer_layers

    rep = infer_layers(model, ctx.image, out, overwrite=overwrite, progress=ctx.progress, **ctx.where(), **kw)
    return {"kind": rep.kind, "channels": list(rep.channels), "chunk_size_zyx": list(rep.chunk_size)}


def run_boundary(ctx: Context, p: dict, overwrite: bool) -> dict:
    masks = ctx.cfg.stages.masks is not None and p["use_masks"]
    kw = {"mask_in_url": ctx.url("seg_masks", "mask_in"), "mask_out_url": ctx.url("seg_masks", "mask_out")} if masks else {}
    summary = _infer(ctx, p["model"], ctx.url("affinities"), overwrite, heads=["affinity"], chunk_size=p["chunk"],
                     batch_size=p["batch_size"], **kw)
    return {"outputs": {"affinities": ctx.url("affinities")}, "summary": {**summary, "masks": masks},
            "models": {"boundary": _model_record(p["model"], _resolution(ctx.image))}}


def run_semantic(ctx: Context, p: dict, overwrite: bool) -> dict:
    summary = _infer(ctx, p["model"], ctx.url("semantic"), overwrite, chunk_size=p["chunk"])
    return {"outputs": {"semantic": ctx.url("semantic")}, "summary": summary,
            "models": {"semantic": _model_record(p["model"], _resolution(ctx.image))}}


#: how a run whose segmentation used the phantom's ground-truth classes is labelled.
ORACLE_SEMANTIC = "oracle: ground-truth semantic labels"


def run_segment(ctx: Context, p: dict, overwrite: bool) -> dict:
    from cloudfiles import CloudFiles

    from ..segment import segment_layers
    from ..segment.pipeline import load_params

    sem = {"none": None, "net": ctx.url("semantic"), "oracle": ctx.url("gt", "image_frame", "semantic")}[p["semantic"]]
    out = ctx.url("seg")
    if p["semantic"] == "oracle" and not layer_exists(sem):
        raise InputError(f"stages.segment.semantic 'oracle' needs the ground-truth semantic layer {sem}; it does "
                         "not exist")
    net = ctx.cfg.stages.semantic.model if ctx.cfg.stages.semantic is not None else None
    source = {"none": "none", "net": f"semantic net ({net}) probabilities ({sem})",
              "oracle": f"{ORACLE_SEMANTIC} ({sem})"}
    if not overwrite and CloudFiles(out).exists("history.npz"):
        # a run killed after the segmentation finished but before its record said so
        _, _, t = load_params(join_url(out, "params.json"))
        summary = {"threshold": t, "resumed": "finished output found"}
    else:
        rep = segment_layers(ctx.url("affinities"), out, semantic_url=sem, threshold=p["threshold"],
                             chunk_size=p["chunk"], overwrite=overwrite, progress=ctx.progress, **ctx.where())
        summary = {k: rep[k] for k in ("threshold", "n_supervoxels", "n_merges", "runner", "executed")}
    return {"outputs": {"segmentation": ctx.segmentation, "supervoxels": ctx.url("seg", "supervoxels")},
            "summary": {**summary, "semantic_source": source[p["semantic"]]}}


def _model_ref(ctx: Context, ref: str) -> str:
    return f"truth:{ctx.run}" if ref == "truth" else ref


def run_synapses(ctx: Context, p: dict, overwrite: bool) -> dict:
    from cloudfiles import CloudFiles

    from ..synapse.pipeline import synapses_layers
    from ..synapse.table import PROVENANCE_FILE

    out = ctx.url("synapses")
    cleft, partner = _model_ref(ctx, p["cleft_model"]), _model_ref(ctx, p["partner_model"])
    raw = None if overwrite else CloudFiles(out).get(PROVENANCE_FILE)
    if raw is not None:  # finished before the run was killed
        prov = json.loads(raw)
        summary = {"n_synapses": int(prov.get("n_synapses", (prov.get("summary") or {}).get("synapses", 0))),
                   "graph": prov.get("summary") or {}}
    else:
        rep = synapses_layers(ctx.image, ctx.segmentation, out, cleft_model=cleft, partner_model=partner,
                              chunk_size=p["chunk"], overwrite=overwrite, progress=ctx.progress,
                              command=ctx.command, **ctx.where())
        summary = {"n_clefts": rep["n_clefts"], "n_synapses": rep["n_synapses"], "graph": rep["summary"]}
    res = _resolution(ctx.image)
    return {"outputs": {"synapses": join_url(out, "synapses.parquet"), "clefts": join_url(out, "clefts")},
            "summary": summary,
            "models": {"cleft": _model_record(cleft, res), "partner": _model_record(partner, res)}}


def _pyramid_url(ctx: Context, name: str) -> str:
    return {"image": ctx.image, "affinities": ctx.url("affinities"), "semantic": ctx.url("semantic"),
            "segmentation": ctx.segmentation}[name]


#: the stage that writes each layer a pyramid can be added to.
PYRAMID_SOURCES = {"image": None, "affinities": "boundary", "semantic": "semantic", "segmentation": "segment"}


def run_pyramids(ctx: Context, p: dict, overwrite: bool) -> dict:
    from ..pyramid import pyramid_layers

    outputs, summary = {}, {}
    for name in p["layers"]:
        src = PYRAMID_SOURCES[name]
        if src is not None and getattr(ctx.cfg.stages, src) is None:
            ctx.notes.append(f"pyramids: no {name} layer (stage {src} is not configured); skipped")
            continue
        url = _pyramid_url(ctx, name)
        if not url.startswith(ctx.run.rstrip("/") + "/"):
            # the input layer lies outside the run folder: the run never writes into it
            ctx.notes.append(f"pyramids: {url} is the input layer, outside the run folder; not changed "
                             f"(`emkit pyramid {url}` adds its mips)")
            continue
        rep = pyramid_layers(url, mips=p["mips"], overwrite=overwrite, progress=ctx.progress,
                             **ctx.where())
        outputs[name] = rep.url
        summary[name] = {"mips": len(rep.factors), "sizes_zyx": rep.sizes}
    return {"outputs": outputs, "summary": summary}


def run_meshes(ctx: Context, p: dict, overwrite: bool) -> dict:
    from ..mesh import MESH_DIR, MeshParams, mesh_layers

    params = MeshParams(reduction_factor=p["reduction_factor"], max_error=p["max_error"],
                        dust_threshold=p["dust_threshold"])
    rep = mesh_layers(ctx.segmentation, params=params, task_size=p["task"], overwrite=overwrite,
                      progress=ctx.progress, **ctx.where())
    return {"outputs": {"meshes": join_url(ctx.segmentation, MESH_DIR)},
            "summary": {"segments": rep.segments, "fragments": rep.fragments, "chunks": rep.chunks}}


def run_skeletons(ctx: Context, p: dict, overwrite: bool) -> dict:
    from ..io.layer import local_path
    from ..runtime import put_atomic
    from ..skeleton import SKELETON_DIR, SkeletonParams, skeleton_layers

    params = SkeletonParams(scale=p["scale"], const=p["const"], dust_threshold=p["dust_threshold"],
                            tick_threshold=p["tick_threshold"])
    syn = join_url(ctx.url("synapses"), "synapses.parquet") if ctx.cfg.stages.synapses is not None else None
    if syn is not None:
        syn = local_path(syn) or _read_table(syn)
    folder = ctx.url("skeletons")
    local = local_path(folder)
    table = None if local is None else os.path.join(local, "neurons.parquet")
    if local is not None:
        os.makedirs(local, exist_ok=True)
    rep = skeleton_layers(ctx.segmentation, params=params, synapses=syn, table_path=table, task_size=p["task"],
                          overwrite=overwrite, progress=ctx.progress, **ctx.where())
    if local is None:  # object store: the table goes up as one object
        import io

        buf = io.BytesIO()
        rep.table.to_parquet(buf)
        put_atomic(folder, "neurons.parquet", buf.getvalue())
    summary = {"segments": rep.segments, "chunks": rep.chunks}
    if rep.table is not None and len(rep.table):
        summary["path_length_um"] = round(float(rep.table["path_length_um"].sum()), 3)
    return {"outputs": {"skeletons": join_url(ctx.segmentation, SKELETON_DIR), "table": join_url(folder, "neurons.parquet")},
            "summary": summary}


def _read_table(url):
    import io

    import pandas as pd
    from cloudfiles import CloudFiles

    folder, name = url.rsplit("/", 1)
    return pd.read_parquet(io.BytesIO(CloudFiles(folder).get(name)))


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def run_evaluate(ctx: Context, p: dict, overwrite: bool) -> dict:
    from cloudfiles import CloudFiles

    from ..evaluate import evaluate
    from ..io import Layer, check_same_grid
    from ..runtime.atomic import put_json_atomic

    folder = ctx.url("evaluation")
    if not overwrite and CloudFiles(folder).exists("scores.json"):
        raise LayerExistsError(f"{join_url(folder, 'scores.json')} already exists; pass --overwrite to replace it")
    # a phantom's truth: in the image's frame, or in the clean frame when the align stage ran (the frame
    # an aligner gives back: the sections' moves and the misalignment defects undone)
    aligned = ctx.cfg.stages.align is not None
    frame = ("gt", "segmentation") if aligned else ("gt", "image_frame", "segmentation")
    gt_url = p["ground_truth"] or (ctx.url(*frame) if ctx.phantom else None)
    if gt_url is None:
        raise InputError("stages.evaluate needs ground_truth (a segmentation layer on the image's grid) when the "
                         "input is not a phantom")
    seg, gt = Layer.open(ctx.segmentation), Layer.open(gt_url)
    check_same_grid(seg, gt, what="ground truth")
    scores = {"segmentation": _jsonable(evaluate(seg.read(), gt.read(), k=p["k"])), "ground_truth": gt.url}
    seg_cfg = ctx.cfg.stages.segment
    if seg_cfg is not None and seg_cfg.semantic == "oracle":
        scores["oracle"] = ORACLE_SEMANTIC
    if ctx.cfg.stages.synapses is not None and ctx.phantom:
        from ..evaluate import synapse_scores_dirs

        scores["synapses"] = _jsonable(synapse_scores_dirs(ctx.url("synapses"), ctx.run,
                                                           frame="clean" if aligned else "image"))
    if aligned and ctx.phantom:
        from ..evaluate import alignment_residual_dirs

        scores["alignment"] = _jsonable(alignment_residual_dirs(ctx.url("align", "field"), ctx.run))
    put_json_atomic(folder, "scores.json", scores)
    s = scores["segmentation"]
    summary = {k: s[k] for k in ("arand", "voi_split", "voi_merge")}
    if "alignment" in scores:
        summary.update({f"alignment_{k}": round(scores["alignment"][k], 3) for k in ("median_px", "p95_px")})
    if "synapses" in scores:
        summary.update({f"synapse_{k}": scores["synapses"].get(k) for k in ("precision", "recall")})
    return {"outputs": {"scores": join_url(folder, "scores.json")}, "summary": summary}


# -- the registry ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """A pipeline stage: its function, the stages it reads from, and how it resumes.

    ``resumes_itself``: its layer function resumes an interrupted run chunk by chunk from its own
    done-markers (called again with ``overwrite=False``); other stages redo an interrupted run
    from the start, replacing what it had written (``overwrite=True``): those outputs are the
    run's own, made with the same configuration.
    """

    name: str
    func: object
    reads: tuple
    resumes_itself: bool = False
    doc: str = ""


STAGES = {s.name: s for s in (
    Stage("phantom", run_phantom, (), doc="phantom image, ground truth and defects"),
    Stage("align", run_align, ("phantom",), True, "alignment (rough, then fine fields)"),
    Stage("masks", run_masks, ("phantom", "align"), True, "segmentation masks (misalignment, defects)"),
    Stage("boundary", run_boundary, ("phantom", "align", "masks"), True, "boundary net → affinities"),
    Stage("semantic", run_semantic, ("phantom", "align"), True, "semantic net → class probabilities"),
    Stage("segment", run_segment, ("boundary", "semantic", "phantom"), True, "watershed + agglomeration"),
    Stage("synapses", run_synapses, ("phantom", "align", "segment"), True, "clefts, partners, synapse table"),
    Stage("pyramids", run_pyramids, ("phantom", "align", "boundary", "semantic", "segment"), False, "mips for viewing"),
    Stage("meshes", run_meshes, ("segment",), False, "meshes per segment"),
    Stage("skeletons", run_skeletons, ("segment", "synapses"), False, "skeletons + per-neuron table"),
    Stage("evaluate", run_evaluate, ("phantom", "segment", "synapses"), False, "scores vs ground truth"),
)}


def _reads(cfg: PipelineConfig, name: str) -> list[str]:
    """The configured stages whose outputs stage ``name`` reads (directly)."""
    s = cfg.stages
    reads = list(STAGES[name].reads)
    if name == "boundary" and (s.boundary is None or not s.boundary.use_masks):
        reads.remove("masks")
    if name == "segment" and s.segment is not None:
        if s.segment.semantic != "net":
            reads.remove("semantic")
        if s.segment.semantic != "oracle":
            reads.remove("phantom")
    if name == "pyramids" and s.pyramids is not None:
        want = {PYRAMID_SOURCES[n] for n in s.pyramids.layers}
        reads = [r for r in reads if r in want or (r in ("phantom", "align") and "image" in s.pyramids.layers)]
    if name == "evaluate" and not (cfg.input.phantom is not None and s.evaluate is not None
                                   and s.evaluate.ground_truth is None):
        reads.remove("phantom")
    configured = set(cfg.stage_names())
    return [r for r in reads if r in configured]


def dependencies(cfg: PipelineConfig, name: str) -> list[str]:
    """Every configured stage whose outputs ``name`` depends on, directly or not, in running order."""
    seen, todo = set(), [name]
    while todo:
        for r in _reads(cfg, todo.pop()):
            if r not in seen:
                seen.add(r)
                todo.append(r)
    return [n for n in cfg.stage_names() if n in seen]


def stage_key(cfg: PipelineConfig, name: str) -> dict:
    """What determines stage ``name``'s outputs: the input and the sections of it and its dependencies."""
    key = {"input": cfg.input.model_dump(mode="json", exclude_none=True), "stages": {}}
    for n in dependencies(cfg, name) + [name]:
        if n != "phantom":
            key["stages"][n] = cfg.section(n)
    from .redact import redact

    return redact(key)   # as recorded: a URL's secrets masked (they do not determine the outputs)


#: stages that cannot run without another one: name -> (stage, what it provides)
REQUIRED = {"segment": ("boundary", "its affinities"), "synapses": ("segment", "its segmentation"),
            "meshes": ("segment", "its segmentation"), "skeletons": ("segment", "its segmentation"),
            "evaluate": ("segment", "its segmentation")}


def required_missing(cfg: PipelineConfig) -> list[str]:
    """Messages for configured stages whose required input stage is not configured."""
    names = set(cfg.stage_names())
    out = []
    for n in cfg.stage_names():
        if n in REQUIRED and REQUIRED[n][0] not in names:
            dep, what = REQUIRED[n]
            out.append(f"stages.{n} needs stages.{dep} ({what}); add `{dep}: {{}}` to stages")
    if "pyramids" in names and "segmentation" in cfg.stages.pyramids.layers and "segment" not in names:
        out.append("stages.pyramids.layers names segmentation but stages.segment is not configured")
    return out
