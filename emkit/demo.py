"""The whole pipeline on the built-in phantom, as far as emkit builds it today.

Stages: phantom (image, ground truth, defects) → affinities (the shipped boundary net when it is
installed; otherwise noisy affinities derived from the ground truth, said so) → optionally the
shipped semantic net's class probabilities → watershed and constrained mean-affinity agglomeration,
chunk by chunk → evaluation against the ground truth in the image frame → synapses on that
segmentation (the shipped cleft and partner nets; the phantom's true clefts/partners, labelled
an oracle, where a net is not installed) scored against the phantom's synapses, with the wiring
diagram's summary → Neuroglancer. Each stage
writes layers into the dataset folder; a stage whose output already exists is reused, never
overwritten, unless ``overwrite``.

The ground truth is read only to score the result (and, when no boundary net is installed, to
derive noisy affinities, said so). The agglomeration's semantic constraint gets no semantic input
by default, the semantic net's probabilities with ``semantic="net"``, and the phantom's
ground-truth classes only when asked for explicitly (``semantic="oracle"``), labelled
:data:`ORACLE_LABEL` wherever the result is reported. What each stage used is recorded in
``OUT_DIR/demo.json``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .io import join_url, layer_exists

__all__ = ["DemoResult", "run_demo", "dataset_layers", "dataset_affinities", "dataset_semantic", "dataset_synapses",
           "SEMANTIC_CHOICES", "ORACLE_LABEL", "PROVENANCE_FILE", "SYNAPSE_DIR"]

#: what the agglomeration's semantic constraint may get: nothing, the semantic net's
#: probabilities, or (an oracle run, never the default) the phantom's ground-truth classes.
SEMANTIC_CHOICES = ("none", "net", "oracle")
#: how an oracle run is labelled in every report of its result.
ORACLE_LABEL = "oracle: ground-truth semantic labels"
#: the file in the dataset folder that records what each stage of the demo used.
PROVENANCE_FILE = "demo.json"
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


def _read_provenance(out_dir: str) -> dict:
    import json

    from cloudfiles import CloudFiles

    raw = CloudFiles(join_url(out_dir)).get(PROVENANCE_FILE)
    return json.loads(raw) if raw else {}


def _write_provenance(out_dir: str, record: dict) -> None:
    """Write ``OUT_DIR/demo.json`` whole or not at all (temporary name + rename)."""
    from .runtime.atomic import put_json_atomic

    put_json_atomic(join_url(out_dir), PROVENANCE_FILE, record)


def run_demo(out_dir: str, *, size=(64, 256, 256), seed: int = 0, defects="default", model: str | None = None,
             semantic: str = "none", semantic_model: str = "semantic", threshold: float = 0.5, workers: int = 0,
             synapses: bool = True, cleft_model: str | None = None, partner_model: str | None = None,
             overwrite: bool = False, progress: bool = True) -> DemoResult:
    """Run phantom → affinities → segmentation → evaluation → synapses into ``out_dir``.

    Parameters
    ----------
    out_dir : dataset folder (local path, file://, gs:// or s3:// prefix).
    size : phantom size in voxels (z, y, x) at (40, 8, 8) nm.
    seed : random seed of the phantom (and of the noisy affinities when there is no net).
    defects : defect list for the phantom (``"default"``, ``"none"`` or names).
    model : boundary model name or checkpoint path; default the shipped ``boundary`` net if
        installed, else noisy ground-truth affinities.
    semantic : semantic input of the agglomeration: ``"none"`` (default), ``"net"`` (the
        semantic net's probabilities, written to ``OUT_DIR/semantic``) or ``"oracle"`` (the
        phantom's ground-truth classes; the result is labelled :data:`ORACLE_LABEL`).
    semantic_model : semantic model name or checkpoint for ``semantic="net"``.
    threshold : agglomeration threshold of the written segmentation (mean affinity).
    workers : dask workers for segmentation (0: in this process).
    synapses : find synapses on the segmentation (:func:`dataset_synapses`, into
        ``OUT_DIR/synapses``) and score them against the phantom's.
    cleft_model, partner_model : synapse nets (default: the shipped ``cleft`` / ``partner`` when
        installed, else the phantom's ground truth, labelled an oracle).
    overwrite : recompute every stage even if its outputs exist.

    Raises
    ------
    InputError : an unknown ``semantic``; or ``OUT_DIR`` holds a segmentation made with another
        semantic input than the one asked for (pass ``overwrite``).
    """
    from cloudfiles import CloudFiles

    from .errors import InputError
    from .evaluate import evaluate
    from .io import Layer
    from .phantom import make_phantom, write_phantom
    from .segment import segment_layers

    if semantic not in SEMANTIC_CHOICES:
        raise InputError(f"semantic must be one of {', '.join(SEMANTIC_CHOICES)}; got {semantic!r}")
    res = DemoResult(out_dir=join_url(out_dir), layers={})
    prov = {} if overwrite else _read_provenance(out_dir)
    t = time.perf_counter()
    if overwrite or not layer_exists(join_url(out_dir, "image")):
        ph = make_phantom(size, seed=seed, defects=defects)
        write_phantom(ph, out_dir, overwrite=overwrite, progress=progress)
        res.timings["phantom"] = time.perf_counter() - t
    else:
        res.reused.append("phantom")

    aff_url = join_url(out_dir, "affinities")
    t = time.perf_counter()
    if overwrite or not layer_exists(aff_url):
        res.affinity_source = dataset_affinities(out_dir, aff_url, model=model, seed=seed, progress=progress,
                                                  overwrite=overwrite)
        res.timings["affinities"] = time.perf_counter() - t
    else:
        res.reused.append("affinities")
        res.affinity_source = prov.get("affinities", "existing layer (source not recorded)")

    seg_dir = join_url(out_dir, "seg")
    if overwrite or not CloudFiles(seg_dir).exists("history.npz"):
        t = time.perf_counter()
        sem_url, res.semantic_source = dataset_semantic(out_dir, semantic, model=semantic_model, progress=progress,
                                                        overwrite=overwrite)
        if semantic == "net":
            res.timings["semantic"] = time.perf_counter() - t
        t = time.perf_counter()
        segment_layers(aff_url, seg_dir, threshold=threshold, workers=workers, overwrite=overwrite,
                       semantic_url=sem_url, progress=progress)
        res.timings["segmentation"] = time.perf_counter() - t
        prov = {"affinities": res.affinity_source, "semantic": semantic, "semantic_source": res.semantic_source,
                "semantic_url": sem_url, "threshold": threshold}
        _write_provenance(out_dir, prov)
    else:
        res.reused.append("segmentation")
        if "semantic" not in prov:
            raise InputError(f"{seg_dir} holds a segmentation whose semantic input was not recorded "
                             f"({join_url(out_dir, PROVENANCE_FILE)} is missing); pass overwrite=True (--overwrite) "
                             "to recompute it")
        if prov["semantic"] != semantic:
            raise InputError(f"{seg_dir} was segmented with semantic input {prov['semantic']!r} "
                             f"({prov['semantic_source']}), not {semantic!r}; pass overwrite=True (--overwrite) "
                             "to recompute it, or another OUT_DIR")
        res.semantic_source = prov["semantic_source"]

    t = time.perf_counter()
    from .io import check_same_grid

    seg_layer = Layer.open(join_url(seg_dir, "segmentation"))
    gt_layer = Layer.open(join_url(out_dir, "gt/image_frame/segmentation"))
    check_same_grid(seg_layer, gt_layer, what="ground truth")
    res.scores = evaluate(seg_layer.read(), gt_layer.read(), k=5)
    res.timings["evaluation"] = time.perf_counter() - t
    if synapses:
        t = time.perf_counter()
        res.synapses = dataset_synapses(out_dir, seg_layer.url, cleft_model=cleft_model, partner_model=partner_model,
                                        overwrite=overwrite or "segmentation" in res.timings, progress=progress)
        if res.synapses["reused"]:
            res.reused.append("synapses")
        else:
            res.timings["synapses"] = time.perf_counter() - t
    res.layers = dataset_layers(out_dir)
    return res
