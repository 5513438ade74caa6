"""The whole pipeline on the built-in phantom, as far as emkit builds it today.

Stages: phantom (image, ground truth, defects) → affinities (the shipped boundary net when it is
installed; otherwise noisy affinities derived from the ground truth, said so) → watershed and
constrained mean-affinity agglomeration, chunk by chunk → evaluation against the ground truth in
the image frame → Neuroglancer. Each stage writes layers into the dataset folder; a stage whose
output already exists is reused, never overwritten, unless ``overwrite``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .io import join_url, layer_exists

__all__ = ["DemoResult", "run_demo", "dataset_layers", "dataset_affinities"]


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: the dataset folder, its layers, scores and timings (s)."""

    out_dir: str
    layers: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    affinity_source: str = ""
    scores: dict | None = None


def dataset_layers(out_dir: str) -> dict[str, str]:
    """Names and URLs of the Precomputed layers in a dataset folder (see :func:`emkit.view.find_layers`)."""
    from .view.layers import find_layers

    return find_layers(out_dir)


def dataset_affinities(out_dir: str, aff_url: str | None = None, *, model: str | None = None, seed: int = 0,
                       progress: bool = True) -> str:
    """Write the affinities of a phantom dataset folder; return where they came from.

    With a boundary ``model`` (name or checkpoint), or the shipped ``boundary`` net when one is
    installed, the affinities are predicted from ``OUT_DIR/image``; otherwise they are noisy
    affinities derived from ``OUT_DIR/gt/image_frame/segmentation`` (:func:`emkit.affinity.noisy_affinities`).
    ``aff_url`` defaults to ``OUT_DIR/affinities``.
    """
    aff_url = aff_url or join_url(out_dir, "affinities")
    from .io import Layer
    from .nets import available_models

    image_url = join_url(out_dir, "image")
    if model is None and "boundary" in available_models():
        model = "boundary"
    if model is not None:
        from .inference import infer_layers

        infer_layers(model, image_url, aff_url, heads=["affinity"], workers=0, progress=progress)
        return f"boundary net ({model})"
    from .affinity import noisy_affinities

    gt = Layer.open(join_url(out_dir, "gt/image_frame/segmentation"))
    aff = noisy_affinities(gt.read(), seed)
    Layer.create(aff_url, "affinities", gt.size, resolution=gt.resolution, voxel_offset=gt.voxel_offset).write(aff)
    return "noisy affinities from the ground truth (no shipped boundary net installed)"


def run_demo(out_dir: str, *, size=(64, 256, 256), seed: int = 0, defects="default", model: str | None = None,
             threshold: float = 0.5, workers: int = 0, overwrite: bool = False, progress: bool = True) -> DemoResult:
    """Run phantom → affinities → segmentation → evaluation into ``out_dir``.

    Parameters
    ----------
    out_dir : dataset folder (local path, file://, gs:// or s3:// prefix).
    size : phantom size in voxels (z, y, x) at (40, 8, 8) nm.
    seed : random seed of the phantom (and of the noisy affinities when there is no net).
    defects : defect list for the phantom (``"default"``, ``"none"`` or names).
    model : boundary model name or checkpoint path; default the shipped ``boundary`` net if
        installed, else noisy ground-truth affinities.
    threshold : agglomeration threshold of the written segmentation (mean affinity).
    workers : dask workers for segmentation (0: in this process).
    overwrite : recompute every stage even if its outputs exist.
    """
    from cloudfiles import CloudFiles

    from .evaluate import evaluate
    from .io import Layer
    from .phantom import make_phantom, write_phantom
    from .segment import segment_layers

    res = DemoResult(out_dir=join_url(out_dir), layers={})
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
        res.affinity_source = dataset_affinities(out_dir, aff_url, model=model, seed=seed, progress=progress)
        res.timings["affinities"] = time.perf_counter() - t
    else:
        res.reused.append("affinities")
        res.affinity_source = "existing layer"

    seg_dir = join_url(out_dir, "seg")
    t = time.perf_counter()
    if overwrite or not CloudFiles(seg_dir).exists("history.npz"):
        sem = join_url(out_dir, "gt/image_frame/semantic")
        segment_layers(aff_url, seg_dir, threshold=threshold, workers=workers, overwrite=overwrite,
                       semantic_url=sem if layer_exists(sem) else None, progress=progress)
        res.timings["segmentation"] = time.perf_counter() - t
    else:
        res.reused.append("segmentation")

    t = time.perf_counter()
    seg = Layer.open(join_url(seg_dir, "segmentation")).read()
    gt = Layer.open(join_url(out_dir, "gt/image_frame/segmentation")).read()
    res.scores = evaluate(seg, gt, k=5)
    res.timings["evaluation"] = time.perf_counter() - t
    res.layers = dataset_layers(out_dir)
    return res
