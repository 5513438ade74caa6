"""The whole pipeline as one resumable run: ``emkit run CONFIG`` / ``emkit status CONFIG``.

A YAML configuration (:mod:`emkit.pipeline.config`, validated with pydantic) names the input
(an image layer, or a phantom made in the run folder), the run folder, the stages with their
parameters and where the chunk tasks run. :func:`run_pipeline` runs the stages in order — align →
masks → boundary → semantic → segment → synapses → pyramids → meshes → skeletons → evaluate —
each through the library's own chunked layer function (:mod:`emkit.pipeline.stages`), recording
beside the outputs what made them (:mod:`emkit.pipeline.provenance`). A rerun skips finished
stages, resumes an interrupted one, and refuses to build on outputs made with another
configuration, naming the changed fields. :func:`pipeline_status` reports each stage's state.

Example
-------
>>> from emkit.pipeline import load_config, run_pipeline      # doctest: +SKIP
>>> cfg = load_config("phantom", output="data/run")            # the shipped phantom configuration
>>> report = run_pipeline(cfg)
"""
from __future__ import annotations

__all__ = ["load_config", "config_from_dict", "PipelineConfig", "run_pipeline", "plan_pipeline", "pipeline_status",
           "format_status", "shipped_configs", "STAGE_ORDER", "ConfigError", "ConfigChangedError", "RunReport"]


def __getattr__(name):  # light at import: pydantic and the stage code load on first use
    if name in ("load_config", "config_from_dict", "PipelineConfig", "shipped_configs", "STAGE_ORDER", "ConfigError"):
        from . import config

        return getattr(config, name)
    if name in ("run_pipeline", "plan_pipeline", "ConfigChangedError", "RunReport"):
        from . import run

        return getattr(run, name)
    if name in ("pipeline_status", "format_status"):
        from . import status

        return getattr(status, name)
    raise AttributeError(f"module 'emkit.pipeline' has no attribute {name!r}")
