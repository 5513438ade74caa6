"""Alignment of serial sections (issue 9): displacement fields (:mod:`.fields`), rough,
per-section rigid alignment (:mod:`.rough`) and block matching of a pair of sections into a
dense field (:mod:`.blockmatch`, the first step of the fine alignment), fine alignment
(:mod:`.fine`: a displacement field per section against its previous neighbours, refined by
gradient descent, composed along z; :func:`fine_align`, :func:`fine_align_layers`).

Importing this package imports neither torch nor scikit-image; they load when used.
Fields follow one convention (:mod:`emkit.align.fields`): ``(dy, dx)`` pixels on the output
grid, ``warp(image, field)[y, x] == image[y - dy, x - dx]`` — the convention of
:mod:`emkit.defects` and of a phantom's ``displacement``.
"""
from __future__ import annotations

__all__ = ["fields", "rough", "blockmatch", "fine", "rough_align", "rough_align_layers", "RoughParams", "RoughResult",
           "fine_align", "fine_align_layers", "FineParams", "FineResult"]


def __getattr__(name):
    import importlib

    if name in ("fields", "rough", "blockmatch", "fine"):
        return importlib.import_module(f".{name}", __name__)
    if name in ("rough_align", "rough_align_layers", "RoughParams", "RoughResult"):
        return getattr(importlib.import_module(".rough", __name__), name)
    if name in ("fine_align", "fine_align_layers", "FineParams", "FineResult"):
        return getattr(importlib.import_module(".fine", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
