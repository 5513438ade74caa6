"""Chunked, seamless net inference (Chunkflow-style; paper, Methods and Fig. 4a).

- :func:`predict` — array form: overlapping patches, batched, blended with a smooth weight.
- :func:`infer_layers` — layer form: the same over chunks of a Precomputed image, on the dask
  runtime, with input/output masks and resume.
- :class:`PatchGrid`, :func:`blend_weight` — the global patch grid and the blending weight that
  make chunked output equal a single pass (see :mod:`emkit.inference.blend`).

torch is imported only when a function runs, never at ``import emkit.inference``.
"""
from .blend import PatchGrid, blend_weight
from .chunked import InferReport, InferTask, default_chunk_size, infer_layers
from .predict import channel_names, check_resolution, output_kind, predict, predict_box, select_heads

__all__ = ["predict", "predict_box", "infer_layers", "InferTask", "InferReport", "PatchGrid", "blend_weight",
           "channel_names", "output_kind", "select_heads", "check_resolution", "default_chunk_size"]
