"""The typed configuration of a pipeline run (``emkit run CONFIG``), validated with pydantic.

A configuration file (YAML) names the input, the output folder, the stages to run with their
parameters, and where to run them::

    input:
      phantom: {shape: [64, 256, 256], seed: 0, defects: default}   # or: layer: gs://bucket/image
    output: demo-data
    cluster: {workers: 0}                 # or {scheduler: tcp://host:8786}
    stages:
      boundary: {model: boundary}
      segment: {threshold: 0.5}
      synapses: {}
      meshes: {}

A stage runs when its key is present (``{}`` takes every default); stages always run in the
order of :data:`STAGE_ORDER`, whatever the order in the file. Every field's default is the value
the matching ``emkit`` command defaults to, which is the paper's value where the paper gives one
(section named in each field's description). Unknown keys are errors, so a typo never silently
falls back to a default.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import InputError
from .cluster import ClusterConfig  # the `cluster:` section: local, scheduler, slurm, pbs, kubernetes

__all__ = ["PipelineConfig", "InputConfig", "PhantomSource", "ClusterConfig", "StagesConfig", "load_config",
           "config_from_dict", "flatten", "diff_fields", "shipped_configs", "STAGE_ORDER", "ConfigError"]

#: every stage a configuration may name, in the order they run (paper: Fig. 1 / Methods).
STAGE_ORDER = ("phantom", "align", "masks", "boundary", "semantic", "segment", "synapses", "pyramids", "meshes",
               "skeletons", "evaluate")

Vec3 = tuple[int, int, int]


class ConfigError(InputError):
    """A configuration file that does not validate; the message names each bad field and value."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("chunk", "task", check_fields=False)   # the stages' task boxes, where a stage has one
    @classmethod
    def _check_box(cls, v, info):
        return _positive_vec3(v, info.field_name)


def _positive_vec3(v, what: str):
    if v is None:
        return v
    if any(int(x) < 1 for x in v):
        raise ValueError(f"{what} must be positive whole numbers (z, y, x), got {list(v)}")
    return v


# -- input ------------------------------------------------------------------------------------

class UnalignedSource(_Model):
    """How the phantom's sections are moved before alignment (``emkit phantom --unaligned``;
    :class:`emkit.phantom.UnalignedParams`): the first section stays put, the others get a rigid
    offset, a slow drift along z and a smooth distortion; the true fields are kept in
    ``gt/fields.npz`` to score the align stage against."""

    shift_px: float = Field(12.0, ge=0, description="std of the per-section translation, px (default 12)")
    rotation_deg: float = Field(1.0, ge=0, description="std of the per-section rotation, degrees (default 1)")
    distortion_px: float = Field(1.5, ge=0, description="RMS of the smooth in-plane distortion, px (default 1.5)")
    drift_px: float = Field(0.5, ge=0, description="std of the per-section step of the slow drift along z, px "
                                                   "(default 0.5)")


class PhantomSource(_Model):
    """A built-in phantom written into the run folder (``emkit phantom``): image, ground truth, defects."""

    shape: Vec3 = Field((64, 256, 256), description="size in voxels (z, y, x) at 40 × 8 × 8 nm, the paper's "
                                                    "image resolution (Methods: Image acquisition); "
                                                    "default 64, 256, 256 (as `emkit demo`)")
    seed: int = Field(0, ge=0, description="random seed of the phantom (default 0)")
    defects: Union[Literal["default", "none"], list[str]] = Field(
        "default", description="defects rendered into the image: 'default' (the phantom's usual set), 'none', "
                               "or a list of kinds (default 'default'; see `emkit phantom --help`)")

    unaligned: Optional[UnalignedSource] = Field(
        None, description="move the sections as cutting and imaging do before alignment ({} = the defaults); "
                          "run the align stage to undo it (default: none, the sections are aligned)")

    @field_validator("shape")
    @classmethod
    def _check_shape(cls, v):
        return _positive_vec3(v, "shape")


class InputConfig(_Model):
    """Where the image comes from: an existing image layer, or a phantom made in the run folder."""

    layer: Optional[str] = Field(None, description="URL or local path of an existing image layer (uint8, z, y, x)")
    phantom: Optional[PhantomSource] = Field(None, description="make a phantom dataset in the run folder instead")

    @model_validator(mode="after")
    def _one(self):
        if (self.layer is None) == (self.phantom is None):
            raise ValueError("give exactly one of input.layer (an image layer URL) and input.phantom")
        return self


# -- stages -----------------------------------------------------------------------------------

class AlignStage(_Model):
    """Alignment (paper: Methods, Rough alignment; Alignment at 1024 nm & 64 nm): ``emkit align``
    (``--rough-only`` for ``method: rough``); writes ``align/image``, ``align/field`` and the
    per-section quality table."""

    method: Literal["fine", "rough"] = Field(
        "fine", description="'fine' (default: rough, then per-pixel fields by block matching and gradient descent, "
                            "as the paper) or 'rough' (rotation + translation only)")
    defects: Literal["none", "truth", "detect"] = Field(
        "none", description="fold/crack masks in which the fine field may tear: 'none' (default), 'detect' (the "
                            "shipped defect net on the unaligned image) or 'truth' (a phantom's own masks: an "
                            "oracle)")
    field_model: Optional[str] = Field(
        None, description="fine method: also start each pair's gradient descent from this field net's field ('field': "
                          "the shipped net, or a checkpoint) and keep the better match (default none: block matching)")
    coarse_nm: float = Field(32.0, gt=0, description="pixel size (nm) of the rough matching grid (default 32)")
    neighbours: int = Field(3, ge=1, description="earlier sections each section is matched to in the rough stage "
                                                 "(default 3; the fine stage uses up to 5, the paper's)")
    max_rotation_deg: float = Field(6.0, ge=0, description="largest rotation searched, degrees (default 6)")
    z_block: Optional[int] = Field(None, ge=1, description="sections per task (default: the image's z chunk)")


class MasksStage(_Model):
    """Segmentation masks (paper: Methods, Segmentation masks): ``emkit masks``; writes ``masks/mask_in``,
    ``masks/mask_out``, which the boundary stage then uses."""

    defects: Literal["none", "detect", "truth"] = Field(
        "none", description="defect masks added to the input mask: 'none' (misalignment only; default), "
                            "'detect' (the shipped defect net, `emkit detect`, paper: Methods, Resin detection / "
                            "Large crack correction), 'truth' (a phantom's true defect masks: an oracle)")
    chunk: Optional[Vec3] = Field(None, description="task chunk (z, y, x); default the whole volume in one task")


class BoundaryStage(_Model):
    """Boundary detection (paper: Methods, Boundary Detection): ``emkit infer``; writes ``affinities``."""

    model: str = Field("boundary", description="shipped boundary net name or checkpoint path (default 'boundary')")
    chunk: Optional[Vec3] = Field(None, description="task chunk (z, y, x), whole storage chunks; default about "
                                                    "4 M voxels")
    batch_size: int = Field(4, ge=1, description="patches per forward pass (default 4)")
    use_masks: bool = Field(True, description="feed the masks stage's mask_in/mask_out to the net when that stage "
                                              "runs (paper: Segmentation masks; default true)")


class SemanticStage(_Model):
    """Semantic labelling (paper: Methods, Semantic labeling): ``emkit infer semantic``; writes ``semantic``."""

    model: str = Field("semantic", description="shipped semantic net name or checkpoint (default 'semantic')")
    chunk: Optional[Vec3] = Field(None, description="task chunk (z, y, x); default about 4 M voxels")


class SegmentStage(_Model):
    """Watershed + mean-affinity agglomeration (paper: Methods, Watershed / Agglomeration): ``emkit segment``;
    writes ``seg/supervoxels``, ``seg/segmentation``, ``seg/history.npz``."""

    threshold: float = Field(0.5, ge=0.0, le=1.0, description="mean affinity at which the merge history is cut "
                                                              "(default 0.5, as `emkit segment`)")
    semantic: Literal["none", "net", "oracle"] = Field(
        "none", description="semantic input of the agglomeration's constraint (paper: Agglomeration): 'none' "
                            "(default), 'net' (the semantic stage's probabilities; that stage must be configured), "
                            "'oracle' (a phantom's ground-truth classes; its scores are not the pipeline's)")
    chunk: Optional[Vec3] = Field(None, description="task chunk (z, y, x); default: small volumes in one piece "
                                                    "in process, else 32, 128, 128")


class SynapsesStage(_Model):
    """Synapse detection and partner assignment (paper: Methods, Synapse detection and synaptic partner
    assignment): ``emkit synapses``; writes ``synapses/`` (cleft layers, synapse table, edge list)."""

    cleft_model: str = Field("cleft", description="cleft net name or checkpoint; 'truth' = a phantom's true "
                                                  "clefts, an oracle (default 'cleft')")
    partner_model: str = Field("partner", description="partner net name or checkpoint; 'truth' = a phantom's "
                                                      "true partners, an oracle (default 'partner')")
    chunk: Optional[Vec3] = Field(None, description="task chunk (z, y, x); default the image's storage chunk "
                                                    "× (1, 2, 2)")


PYRAMID_LAYERS = ("image", "affinities", "semantic", "segmentation")


class PyramidsStage(_Model):
    """Downsampled scales for viewing (paper: Data access and visualization; Igneous): ``emkit pyramid``,
    added in place to each listed layer."""

    layers: list[Literal["image", "affinities", "semantic", "segmentation"]] = Field(
        ["image", "segmentation"], description="layers that get mips (default image and segmentation; an input "
                                                   "layer outside the run folder is never changed)")
    mips: Optional[int] = Field(None, ge=1, description="levels to add; default: until y and x are at most "
                                                        "128 voxels")


class MeshesStage(_Model):
    """Meshes per segment (paper: Data access and visualization; zmesh as Igneous uses it): ``emkit mesh``;
    written into ``seg/segmentation/mesh``."""

    reduction_factor: int = Field(100, ge=0, description="simplify to about 1/R of the triangles; 0 = none "
                                                         "(default 100, Igneous')")
    max_error: float = Field(40.0, gt=0, description="largest distance (nm) a simplified vertex moves (default 40)")
    dust_threshold: int = Field(0, ge=0, description="skip pieces smaller than this many voxels (default 0)")
    task: Optional[Vec3] = Field(None, description="box (z, y, x) one task meshes; default 4× the storage chunk "
                                                   "in y, x")


class SkeletonsStage(_Model):
    """TEASAR skeletons per segment (paper: Data access and visualization; kimimaro): ``emkit skeleton``;
    written into ``seg/segmentation/skeletons`` plus ``skeletons/neurons.parquet``."""

    scale: float = Field(4.0, gt=0, description="TEASAR invalidation scale (kimimaro's default 4)")
    const: float = Field(500.0, ge=0, description="TEASAR invalidation constant, nm (kimimaro's default 500)")
    dust_threshold: int = Field(1000, ge=0, description="segments with fewer voxels get no skeleton (default 1000)")
    tick_threshold: float = Field(3500.0, ge=0, description="branches shorter than this (nm) are removed "
                                                            "(default 3500)")
    task: Optional[Vec3] = Field(None, description="box (z, y, x) one task skeletonizes; default 4× the storage "
                                                   "chunk in y, x")


class EvaluateStage(_Model):
    """Scores against ground truth (paper: Cell segmentation, Synapse detection): ``emkit evaluate``; writes
    ``evaluation/scores.json``."""

    ground_truth: Optional[str] = Field(None, description="ground-truth segmentation layer on the image's grid; "
                                                          "default a phantom's gt/image_frame/segmentation, or its "
                                                          "clean-frame gt/segmentation when the align stage runs")
    k: int = Field(5, ge=0, description="worst splits / merges listed (default 5)")


class StagesConfig(_Model):
    """The stages to run; a stage runs when its key is present (``{}`` or empty: its defaults; ``false``:
    left out, e.g. ``--set stages.evaluate=false``). Order: :data:`STAGE_ORDER`."""

    align: Optional[AlignStage] = Field(None, description="alignment: rough, then fine fields (paper: Methods, Rough alignment; Alignment at 1024 nm & 64 nm); off unless present")
    masks: Optional[MasksStage] = Field(None, description="segmentation masks (paper: Methods, Segmentation masks); off unless present")
    boundary: Optional[BoundaryStage] = Field(None, description="boundary net → affinities (paper: Methods, Boundary Detection)")
    semantic: Optional[SemanticStage] = Field(None, description="semantic net → class probabilities (paper: Methods, Semantic labeling)")
    segment: Optional[SegmentStage] = Field(None, description="watershed + mean-affinity agglomeration (paper: Methods, Watershed, Agglomeration)")
    synapses: Optional[SynapsesStage] = Field(None, description="clefts, partners, synapse table (paper: Methods, Synapse detection and synaptic partner assignment)")
    pyramids: Optional[PyramidsStage] = Field(None, description="mips for viewing (paper: Data access and visualization)")
    meshes: Optional[MeshesStage] = Field(None, description="meshes per segment (paper: Data access and visualization)")
    skeletons: Optional[SkeletonsStage] = Field(None, description="skeletons and a per-neuron table (paper: Data access and visualization)")
    evaluate: Optional[EvaluateStage] = Field(None, description="scores against ground truth")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data):
        # ``segment:`` with nothing after it (YAML null) means "run it with the defaults"; ``false`` leaves the
        # stage out (``--set stages.evaluate=false``)
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items() if v is not False}
        return data


class PipelineConfig(_Model):
    """A whole pipeline run: input, output folder, stages and cluster (see the module docstring)."""

    input: InputConfig = Field(..., description="the image: an existing layer, or a phantom made in the run folder")
    output: str = Field(..., description="run folder (local path, file://, gs:// or s3:// prefix); a relative "
                                         "path is taken from the current directory")
    stages: StagesConfig = Field(default_factory=StagesConfig, description="the stages to run, with their "
                                                                            "parameters (none by default)")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="where the chunk tasks run: kind "
                                   "local (default, 0 workers: in this process), scheduler, slurm, pbs or kubernetes "
                                   "(emkit.pipeline.cluster)")

    @model_validator(mode="after")
    def _consistent(self):
        s = self.stages
        if s.segment is not None and s.segment.semantic == "net" and s.semantic is None:
            raise ValueError("stages.segment.semantic is 'net' but there is no stages.semantic section: add "
                             "`semantic: {}` or set stages.segment.semantic to 'none'")
        oracle = []
        if s.segment is not None and s.segment.semantic == "oracle":
            oracle.append("stages.segment.semantic: oracle")
        if s.masks is not None and s.masks.defects == "truth":
            oracle.append("stages.masks.defects: truth")
        if s.align is not None and s.align.defects == "truth":
            oracle.append("stages.align.defects: truth")
        if s.synapses is not None:
            oracle += [f"stages.synapses.{k}: truth" for k in ("cleft_model", "partner_model")
                       if getattr(s.synapses, k) == "truth"]
        if oracle and self.input.phantom is None:
            raise ValueError(f"{', '.join(oracle)} needs a phantom input (its ground truth); input.layer has none")
        if s.evaluate is not None and s.evaluate.ground_truth is None and self.input.phantom is None:
            raise ValueError("stages.evaluate needs a ground-truth segmentation when the input is an image layer "
                             f"({self.input.layer}): give it (--set stages.evaluate.ground_truth=URL) or leave the "
                             "stage out (--set stages.evaluate=false)")
        return self

    def stage_names(self) -> list[str]:
        """Configured stages in running order (``phantom`` first when the input is a phantom)."""
        names = ["phantom"] if self.input.phantom is not None else []
        return names + [n for n in STAGE_ORDER[1:] if getattr(self.stages, n) is not None]

    def section(self, stage: str) -> dict:
        """The resolved parameters of ``stage`` (defaults filled in) as plain JSON-able data."""
        if stage == "phantom":
            return self.input.phantom.model_dump(mode="json")
        sec = getattr(self.stages, stage)
        return None if sec is None else sec.model_dump(mode="json")


# -- loading ----------------------------------------------------------------------------------

def _loc(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith("function-") and part not in ("literal['default','none']", "list[str]"):
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _format(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _loc(loc)
        msg = err["msg"].removeprefix("Value error, ")
        if (err["type"] == "missing" and loc and isinstance(loc[-1], int)) or err["type"] == "too_long":
            # a (z, y, x) triple with too few / too many values
            where = _loc(loc[:-1]) if err["type"] == "missing" else where
            got = err.get("input")
            lines.append(f"  {where}: must be 3 whole numbers (z, y, x)"
                         + (f" (got {list(got)!r})" if isinstance(got, (list, tuple)) else ""))
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown field (a typo? see `emkit run --help` for the fields)"
        got = err.get("input")
        shown = "" if err["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {where}: {msg}{shown}")
    return f"invalid pipeline configuration {source}:\n" + "\n".join(dict.fromkeys(lines))


def config_from_dict(data: dict, source: str = "(dict)") -> PipelineConfig:
    """Validate ``data`` (a parsed configuration file) into a :class:`PipelineConfig`.

    Raises
    ------
    ConfigError : naming each bad field (dotted path), what is wrong and the value given.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"invalid pipeline configuration {source}: expected a mapping at the top level, "
                          f"got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None


#: The effective configuration (overrides applied) that ``emkit run`` writes into its run folder;
#: ``emkit run RUN`` / ``emkit status RUN`` read it back when given the folder.
RUN_CONFIG = "pipeline.yaml"


def save_run_config(cfg: "PipelineConfig", run_url: str) -> None:
    """Write ``cfg`` (as validated, overrides applied) to ``RUN/pipeline.yaml``, atomically."""
    import yaml

    from ..runtime.atomic import put_atomic
    from .redact import redact

    data = redact(cfg.model_dump(mode="json", exclude_none=True))   # a URL's password / token -> ***
    text = ("# written by emkit run: the configuration of this run folder, overrides applied.\n"
            "# `emkit run FOLDER` resumes it, `emkit status FOLDER` shows it (relative paths: from where it ran).\n"
            + yaml.safe_dump(data, sort_keys=False))
    put_atomic(run_url, RUN_CONFIG, text.encode())


def shipped_configs() -> dict[str, Path]:
    """Configurations shipped with emkit: name -> path (``emkit run phantom`` runs ``phantom.yaml``)."""
    folder = Path(__file__).parent / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_config_path(ref: str | os.PathLike) -> Path:
    """A configuration file path, or the name of a shipped configuration (:func:`shipped_configs`)."""
    p = Path(os.fspath(ref)).expanduser()
    if p.is_file():
        return p
    if p.is_dir() and (p / RUN_CONFIG).is_file():     # a run folder: the configuration it ran with
        return p / RUN_CONFIG
    shipped = shipped_configs()
    if str(ref) in shipped:
        return shipped[str(ref)]
    raise InputError(f"no configuration file {os.fspath(ref)!r} (and no shipped configuration of that name; "
                     f"shipped: {', '.join(shipped) or 'none'})")


def load_config(ref: str | os.PathLike, *, output: str | None = None, overrides: dict | None = None
                ) -> PipelineConfig:
    """Read and validate a YAML configuration file (or a shipped configuration's name).

    Parameters
    ----------
    ref : path of the file, or a shipped name such as ``"phantom"``.
    output : replaces the file's ``output`` (the run folder).
    overrides : nested dict merged into the file's data before validation (e.g.
        ``{"cluster": {"workers": 2}}``). ``input.layer`` and ``input.phantom`` are alternatives:
        overriding one drops the other from the file (``--set input.layer=data/ph/image`` runs a
        phantom configuration on an existing image).
    """
    import yaml

    path = resolve_config_path(ref)
    if output is None and path.name == RUN_CONFIG and Path(os.fspath(ref)).expanduser().is_dir():
        output = os.fspath(path.parent)               # the run folder given as CONFIG is the run folder
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid pipeline configuration {path}: not valid YAML: {exc}") from None
    data = {} if data is None else data
    if isinstance(data, dict):
        given = (overrides or {}).get("input")
        if isinstance(given, dict) and isinstance(data.get("input"), dict):
            for one, other in (("layer", "phantom"), ("phantom", "layer")):   # alternatives: one replaces the other
                if one in given and other not in given:
                    data["input"] = {k: v for k, v in data["input"].items() if k != other}
        data = _merge(data, overrides or {})
        if output is not None:
            data["output"] = os.fspath(output)
    return config_from_dict(data, str(path))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def flatten(data, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept as values)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def diff_fields(old: dict, new: dict) -> list[str]:
    """Fields that differ between two nested dicts, as ``"path: old -> new"`` lines."""
    a, b = flatten(old), flatten(new)
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "(absent)"), b.get(k, "(absent)")
        if va != vb:
            out.append(f"{k}: {_show(va)} -> {_show(vb)}")
    return out


def _show(v) -> str:
    return "null" if v is None else (str(v) if not isinstance(v, str) else v)


def parse_set(items) -> dict:
    """``["stages.segment.threshold=0.4", "input.phantom.shape=16,128,128"]`` -> a nested dict of overrides.

    Values are read as YAML (``0.4`` a number, ``true`` a boolean, ``[1, 2]`` a list, ``null``);
    comma-separated numbers (``16,128,128``) become a list.
    """
    import yaml

    out: dict = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise InputError(f"--set must be FIELD=VALUE with a dotted field (e.g. stages.segment.threshold=0.4), "
                             f"got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        if isinstance(value, str) and "," in value:
            parts = [p.strip() for p in value.split(",")]
            try:
                value = [int(p) if p.lstrip("-").isdigit() else float(p) for p in parts]
            except ValueError:
                pass
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"--set {item!r}: {part} is given both as a value and as a section")
        node[last] = value
    return out
