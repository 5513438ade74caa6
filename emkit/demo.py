"""The whole pipeline on the built-in phantom, as far as emkit builds it today.

Stages so far: phantom (with ground truth and defects) → Precomputed layers → viewer link.
Later stages (boundary net, segmentation, synapses, meshes) join here as they land.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .io import join_url, layer_exists

__all__ = ["DemoResult", "run_demo", "dataset_layers"]


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: the dataset folder, its layers and timings (s)."""

    out_dir: str
    layers: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    reused: bool = False


def dataset_layers(out_dir: str) -> dict[str, str]:
    """Names and URLs of the Precomputed layers in a dataset folder (see :func:`emkit.view.find_layers`)."""
    from .view.layers import find_layers

    return find_layers(out_dir)


def run_demo(out_dir: str, *, size=(64, 256, 256), seed: int = 0, defects="default",
             overwrite: bool = False, progress: bool = True) -> DemoResult:
    """Generate the phantom into ``out_dir`` (or reuse one already there) and list its layers.

    Parameters
    ----------
    out_dir : dataset folder (local path, file://, gs:// or s3:// prefix).
    size : phantom size in voxels (z, y, x) at (40, 8, 8) nm.
    seed : random seed of the phantom.
    defects : defect list for the phantom (``"default"``, ``"none"`` or names).
    overwrite : regenerate even if ``out_dir`` already holds a phantom.
    """
    from .phantom import make_phantom, write_phantom

    timings: dict[str, float] = {}
    reused = layer_exists(join_url(out_dir, "image")) and not overwrite
    if not reused:
        t = time.perf_counter()
        ph = make_phantom(size, seed=seed, defects=defects)
        timings["phantom"] = time.perf_counter() - t
        t = time.perf_counter()
        write_phantom(ph, out_dir, overwrite=overwrite, progress=progress)
        timings["write"] = time.perf_counter() - t
    return DemoResult(out_dir=join_url(out_dir), layers=dataset_layers(out_dir), timings=timings, reused=reused)
