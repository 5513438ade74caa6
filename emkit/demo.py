"""The whole pipeline on the built-in phantom: ``emkit run`` of the shipped phantom configuration.

:func:`run_demo` runs emkit/pipeline/configs/phantom.yaml (:mod:`emkit.pipeline`) into a dataset
folder — phantom (image, ground truth, defects) → affinities (the shipped boundary net) → optionally
the shipped semantic net's class probabilities → watershed and constrained mean-affinity
agglomeration → synapses on that segmentation (the shipped cleft and partner nets; the phantom's
true clefts/partners, labelled an oracle, where a net is not installed) → pyramids, meshes,
skeletons → evaluation against the phantom's ground truth and synapses — and gathers the scores,
synapse counts and wiring-diagram summary the demo prints. Stages done earlier are skipped, never
overwritten; each stage's record (configuration, versions, models, timings) lies in
``OUT_DIR/provenance/``.

The ground truth is read only to score the result. The agglomeration's semantic constraint gets
no semantic input by default, the semantic net's probabilities with ``semantic="net"``, and the
phantom's ground-truth classes only when asked for explicitly (``semantic="oracle"``), labelled
:data:`ORACLE_LABEL` wherever the result is reported.

The ``dataset_*`` helpers run single steps on a phantom dataset folder (used by the notebooks).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .io import join_url, layer_exists

__all__ = ["DemoResult", "run_demo", "demo_config", "dataset_layers", "dataset_affinities", "dataset_semantic",
           "dataset_synapses", "SEMANTIC_CHOICES", "ORACLE_LABEL", "SYNAPSE_DIR", "DEMO_CONFIG"]

#: what the agglomeration's semantic constraint may get: nothing, the semantic net's
#: probabilities, or (an oracle run, never the default) the phantom's ground-truth classes.
SEMANTIC_CHOICES = ("none", "net", "oracle")
#: how an oracle run is labelled in every report of its result.
ORACLE_LABEL = "oracle: ground-truth semantic labels"
#: the demo's synapse output folder inside the dataset folder.
SYNAPSE_DIR = "synapses"


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: the dataset folder, its layers, scores and timings (s)."""

    out_dir: str
    layers: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    affinity_source: str = ""
    semantic_source: str = ""
    scores: dict | None = None
    synapses: dict | None = None
    #: what the pyramid / mesh / skeleton stages made, in words ({"meshes": "22 segments", ...})
    products: dict = field(default_factory=dict)
    #: with ``unaligned``: the alignment residual against the phantom's true fields
    #: (:func:`emkit.evaluate.alignment_residual_dirs`: median_px, p95_px, max_px, ...)
    alignment: dict | None = None

    @property
    def oracle(self) -> bool:
        """True when the segmentation used ground-truth semantic labels (an oracle run)."""
        return self.semantic_source.startswith("oracle")


def dataset_layers(out_dir: str) -> dict[str, str]:
    """Names and URLs of the Precomputed layers in a dataset folder (see :func:`emkit.view.find_layers`)."""
    from .view.layers import find_layers

    return find_layers(out_dir)


def dataset_affinities(out_dir: str, aff_url: str | None = None, *, model: str | None = None, seed: int = 0,
                       progress: bool = True, overwrite: bool = False) -> str:
    """Write the affinities of a phantom dataset folder; return where they came from.

    With a boundary ``model`` (name or checkpoint), or the shipped ``boundary`` net when one is
    installed, the affinities are predicted from ``OUT_DIR/image``; otherwise they are noisy
    affinities derived from ``OUT_DIR/gt/image_frame/segmentation`` (:func:`emkit.affinity.noisy_affinities`).
    ``aff_url`` defaults to ``OUT_DIR/affinities``; an existing layer there is refused unless
    ``overwrite``.
    """
    aff_url = aff_url or join_url(out_dir, "affinities")
    from .io import Layer
    from .nets import available_models

    image_url = join_url(out_dir, "image")
    if model is None and "boundary" in available_models():
        model = "boundary"
    if model is not None:
        from .inference import infer_layers

        infer_layers(model, image_url, aff_url, heads=["affinity"], workers=0, overwrite=overwrite, progress=progress)
        return f"boundary net ({model})"
    from .affinity import noisy_affinities

    gt = Layer.open(join_url(out_dir, "gt/image_frame/segmentation"))
    aff = noisy_affinities(gt.read(), seed)
    Layer.create(aff_url, "affinities", gt.size, resolution=gt.resolution, voxel_offset=gt.voxel_offset,
                 overwrite=overwrite).write(aff)
    return "noisy affinities from the ground truth (no shipped boundary net installed)"


def dataset_semantic(out_dir: str, semantic: str = "none", *, model: str = "semantic", progress: bool = True,
                     overwrite: bool = False) -> tuple[str | None, str]:
    """The semantic input of the agglomeration for a phantom dataset folder: ``(url, source)``.

    Parameters
    ----------
    out_dir : dataset folder holding ``image`` (and, for the oracle, ``gt/image_frame/semantic``).
    semantic : ``"none"`` (no semantic input: ``(None, "none")``), ``"net"`` (the semantic net
        ``model`` is run on ``OUT_DIR/image`` into ``OUT_DIR/semantic`` — 5 class probabilities —
        unless that layer exists) or ``"oracle"`` (the phantom's ground-truth classes, labelled
        :data:`ORACLE_LABEL`; scores of such a run are not those of the pipeline).
    model : semantic model name or checkpoint for ``"net"`` (default the shipped ``semantic``).
    progress, overwrite : as in :func:`emkit.inference.infer_layers`.
    """
    from .errors import InputError

    if semantic not in SEMANTIC_CHOICES:
        raise InputError(f"semantic must be one of {', '.join(SEMANTIC_CHOICES)}; got {semantic!r}")
    if semantic == "none":
        return None, "none"
    if semantic == "oracle":
        url = join_url(out_dir, "gt/image_frame/semantic")
        if not layer_exists(url):
            raise InputError(f"semantic='oracle' needs the ground-truth semantic layer {url}; it does not exist")
        return url, f"{ORACLE_LABEL} ({url})"
    from .inference import infer_layers

    url = join_url(out_dir, "semantic")
    if overwrite or not layer_exists(url):
        infer_layers(model, join_url(out_dir, "image"), url, workers=0, overwrite=overwrite, progress=progress)
    return url, f"semantic net ({model}) probabilities ({url})"


def dataset_synapses(out_dir: str, seg_url: str | None = None, *, cleft_model: str | None = None,
                     partner_model: str | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Synapses of a phantom dataset folder's segmentation, scored against its true synapses.

    Runs :func:`emkit.synapse.synapses_layers` on ``OUT_DIR/image`` with ``seg_url`` (default
    ``OUT_DIR/seg/segmentation``) into ``OUT_DIR/synapses`` (reused when it holds a finished run,
    unless ``overwrite``). Models: ``cleft_model`` / ``partner_model``, default the shipped
    ``cleft`` / ``partner`` nets when installed, else the phantom's ground truth
    (``truth:OUT_DIR``, an oracle, said so in ``sources``).

    Returns
    -------
    dict: ``dir``, ``n_synapses``, ``summary`` (wiring diagram: neurons, edges, synapses, …),
    ``scores`` (:func:`emkit.evaluate.synapse_scores_dirs`: precision, recall, partner accuracy,
    edges found / missed / spurious, …), ``sources`` ({"cleft": …, "partner": …}), ``oracle``
    (True when a ground-truth stand-in was used), ``reused``.
    """
    import json

    from cloudfiles import CloudFiles

    from .evaluate.synapses import synapse_scores_dirs
    from .nets import available_models
    from .synapse.pipeline import synapses_layers
    from .synapse.table import PROVENANCE_FILE as SYN_PROV

    syn_dir = join_url(out_dir, SYNAPSE_DIR)
    seg_url = seg_url or join_url(out_dir, "seg/segmentation")
    have = available_models()
    truth = f"truth:{out_dir}"
    cleft_model = cleft_model or ("cleft" if "cleft" in have else truth)
    partner_model = partner_model or ("partner" if "partner" in have else truth)
    raw = None if overwrite else CloudFiles(syn_dir).get(SYN_PROV)
    reused = raw is not None
    if reused:
        prov = json.loads(raw)
        cleft_model = prov["models"]["cleft"]["model"]
        partner_model = prov["models"]["partner"]["model"]
        summary = prov.get("summary") or {}
        n = int(prov.get("n_synapses", summary.get("synapses", 0)))
    else:
        rep = synapses_layers(join_url(out_dir, "image"), seg_url, syn_dir, cleft_model=cleft_model,
                              partner_model=partner_model, workers=0, overwrite=overwrite, progress=progress,
                              command="emkit demo")
        summary, n = rep["summary"], rep["n_synapses"]

    def source(ref, what):
        return (f"{ORACLE_NOTE[what]} ({ref})" if str(ref).startswith("truth:") else f"{what} net ({ref})")

    sources = {"cleft": source(cleft_model, "cleft"), "partner": source(partner_model, "partner")}
    scores = synapse_scores_dirs(syn_dir, out_dir)
    return {"dir": syn_dir, "n_synapses": n, "summary": summary, "scores": scores, "sources": sources,
            "oracle": any(str(m).startswith("truth:") for m in (cleft_model, partner_model)), "reused": reused}


#: how a ground-truth stand-in for a synapse net is labelled.
ORACLE_NOTE = {"cleft": "oracle: the phantom's true clefts, no cleft net installed",
               "partner": "oracle: the phantom's true partners, no partner net installed"}


def demo_config(out_dir: str, *, size=None, seed: int | None = None, defects=None, model: str | None = None,
                semantic: str = "none", semantic_model: str = "semantic", threshold: float | None = None,
                workers: int | None = None, synapses: bool = True, cleft_model: str | None = None,
                partner_model: str | None = None, unaligned: bool = False):
    """The shipped phantom configuration (:data:`DEMO_CONFIG`) with the demo's options applied.

    Arguments left at None keep the configuration file's values; see :func:`run_demo`.
    Returns a validated :class:`emkit.pipeline.PipelineConfig` whose output is ``out_dir``.
    """
    import os

    import yaml

    from .errors import InputError
    from .nets import available_models
    from .pipeline.config import config_from_dict, shipped_configs

    if semantic not in SEMANTIC_CHOICES:
        raise InputError(f"semantic must be one of {', '.join(SEMANTIC_CHOICES)}; got {semantic!r}")
    path = shipped_configs()[DEMO_CONFIG]
    data = yaml.safe_load(path.read_text())
    ph = data["input"]["phantom"]
    if size is not None:
        ph["shape"] = [int(v) for v in size]
    if seed is not None:
        ph["seed"] = int(seed)
    if defects is not None:
        ph["defects"] = defects if isinstance(defects, str) else list(defects)
    st = data["stages"]
    if unaligned:
        # the sections moved as before alignment (the phantom's defaults), then `emkit align` undoes it
        ph["unaligned"] = {}
        st["align"] = {}
    have = available_models()
    if model is not None:
        st["boundary"]["model"] = os.fspath(model)
    st["segment"]["semantic"] = semantic
    if threshold is not None:
        st["segment"]["threshold"] = float(threshold)
    if semantic == "net":
        st["semantic"] = {"model": os.fspath(semantic_model)}
    if not synapses:
        st.pop("synapses", None)
    else:
        st["synapses"]["cleft_model"] = os.fspath(cleft_model) if cleft_model else (
            "cleft" if "cleft" in have else "truth")
        st["synapses"]["partner_model"] = os.fspath(partner_model) if partner_model else (
            "partner" if "partner" in have else "truth")
    if workers is not None:
        data["cluster"] = {"workers": int(workers)}
    data["output"] = os.fspath(out_dir)
    return config_from_dict(data, f"{path} (emkit demo)")


#: the shipped pipeline configuration the demo runs (emkit/pipeline/configs/phantom.yaml).
DEMO_CONFIG = "phantom"


def run_demo(out_dir: str, *, size=None, seed: int | None = None, defects=None, model: str | None = None,
             semantic: str = "none", semantic_model: str = "semantic", threshold: float | None = None,
             workers: int | None = None, synapses: bool = True, cleft_model: str | None = None,
             partner_model: str | None = None, unaligned: bool = False, overwrite: bool = False,
             progress: bool = True, echo=None) -> DemoResult:
    """``emkit run`` of the shipped phantom configuration into ``out_dir``, summarised for the demo.

    The stages (emkit/pipeline/configs/phantom.yaml): phantom → boundary net → segmentation →
    synapses → pyramids → meshes → skeletons → evaluation against the phantom's ground truth. A
    rerun skips the stages already done (listed in ``reused``); one whose parameters changed is
    refused, naming the changed fields, unless ``overwrite``. Each stage's record lies in
    ``OUT_DIR/provenance/`` (:mod:`emkit.pipeline.provenance`).

    Parameters
    ----------
    out_dir : dataset folder (local path, file://, gs:// or s3:// prefix).
    size : phantom size in voxels (z, y, x) at (40, 8, 8) nm (default the configuration's, 64, 256, 256).
    seed : random seed of the phantom (default 0).
    defects : defect list for the phantom (``"default"``, ``"none"`` or names; default ``"default"``).
    model : boundary model name or checkpoint path (default the shipped ``boundary`` net).
    semantic : semantic input of the agglomeration: ``"none"`` (default), ``"net"`` (the
        semantic net's probabilities, written to ``OUT_DIR/semantic``) or ``"oracle"`` (the
        phantom's ground-truth classes; the result is labelled :data:`ORACLE_LABEL`).
    semantic_model : semantic model name or checkpoint for ``semantic="net"``.
    threshold : agglomeration threshold of the written segmentation (mean affinity; default 0.5).
    workers : dask workers shared by the stages (default the configuration's: 0, in this process).
    synapses : find synapses on the segmentation (into ``OUT_DIR/synapses``) and score them.
    cleft_model, partner_model : synapse nets (default: the shipped ``cleft`` / ``partner`` when
        installed, else the phantom's ground truth, labelled an oracle).
    unaligned : move the phantom's sections as before alignment (rigid offsets, drift, smooth
        distortion; true fields kept) and add the align stage; the result then holds the
        alignment residual (``alignment``) and is scored in the aligned frame.
    overwrite : recompute the stages whose parameters changed (and those reading from them).
    progress : progress bars; ``echo`` : where the stage lines go (None: nowhere).

    Raises
    ------
    InputError : an unknown ``semantic``; :class:`emkit.pipeline.ConfigChangedError` when
        ``OUT_DIR`` holds stages made with other parameters (without ``overwrite``).
    """
    import json

    from cloudfiles import CloudFiles

    from .pipeline.run import run_pipeline

    cfg = demo_config(out_dir, size=size, seed=seed, defects=defects, model=model, semantic=semantic,
                      semantic_model=semantic_model, threshold=threshold, workers=workers, synapses=synapses,
                      cleft_model=cleft_model, partner_model=partner_model, unaligned=unaligned)
    rep = run_pipeline(cfg, overwrite=overwrite, progress=progress, echo=echo)
    rec = rep.records
    res = DemoResult(out_dir=rep.run, layers={}, timings=dict(rep.seconds))
    res.reused = [n for n, a in rep.actions.items() if a == "skip"
                  or (n == "phantom" and (rec[n].get("summary") or {}).get("reused"))]
    res.affinity_source = f"boundary net ({cfg.stages.boundary.model})"
    res.semantic_source = (rec["segment"].get("summary") or {}).get("semantic_source", "")
    scores = json.loads(CloudFiles(join_url(rep.run, "evaluation")).get("scores.json"))
    res.scores = scores["segmentation"]
    res.alignment = scores.get("alignment")
    if cfg.stages.synapses is not None:
        srec = rec["synapses"]
        sm = srec.get("summary") or {}
        models = {k: srec["models"][k]["model"] for k in ("cleft", "partner")}

        def source(ref, what):
            return f"{ORACLE_NOTE[what]} ({ref})" if str(ref).startswith("truth:") else f"{what} net ({ref})"

        res.synapses = {"dir": join_url(rep.run, SYNAPSE_DIR), "n_synapses": sm.get("n_synapses", 0),
                        "summary": sm.get("graph") or {}, "scores": scores.get("synapses"),
                        "sources": {k: source(v, k) for k, v in models.items()},
                        "oracle": any(str(m).startswith("truth:") for m in models.values()),
                        "reused": rep.actions.get("synapses") == "skip"}
    for name, what in (("meshes", "segments"), ("skeletons", "segments")):
        sm = (rec.get(name) or {}).get("summary") or {}
        if "segments" in sm:
            res.products[name] = f"{sm['segments']} {what}" + (
                f" ({sm['path_length_um']:.1f} µm of path)" if "path_length_um" in sm else "")
    res.layers = dataset_layers(rep.run)
    return res
