"""Chunked, seamless net inference (Chunkflow-style; paper, Methods and Fig. 4a).

- :func:`predict` — array form: overlapping patches, batched, blended with a smooth weight.
- :func:`infer_layers` — layer form: the same over chunks of a Precomputed image, on the dask
  runtime, with input/output masks and resume.
- :class:`PatchGrid`, :func:`blend_weight` — the global patch grid and the blending weight that
  make chunked output equal a single pass (see :mod:`emkit.inference.blend`).
- :func:`plan_resampling` — how an image finer than the net's training resolution is averaged to
  it, outputs coming back on the image's grid (see :mod:`emkit.inference.resample`).
- :func:`choose_model` — the shipped model of a family (``boundary``) nearest the image's
  resolution (see :mod:`emkit.inference.models`).

torch is imported only when a function runs, never at ``import emkit.inference``.
"""
from .blend import PatchGrid, blend_weight
from .chunked import InferReport, InferTask, default_chunk_size, infer_layers
from .models import choose_model
from .predict import (channel_names, check_resolution, default_heads, output_kind, predict, predict_box,
                      predict_box_resampled, select_heads)
from .resample import MAX_DOWNSAMPLE, RESOLUTION_TOLERANCE, Resampling, plan_resampling

__all__ = ["predict", "predict_box", "predict_box_resampled", "infer_layers", "InferTask", "InferReport", "PatchGrid",
           "blend_weight", "channel_names", "output_kind", "select_heads", "default_heads", "check_resolution",
           "default_chunk_size", "plan_resampling", "Resampling", "choose_model", "MAX_DOWNSAMPLE",
           "RESOLUTION_TOLERANCE"]
