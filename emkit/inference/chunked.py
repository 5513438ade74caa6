"""Chunked inference over Precomputed layers, the Chunkflow way (paper, Methods; Fig. 4a).

The image layer is cut into chunks (whole storage chunks of the output, so tasks never share an
output file); each chunk task reads the image (and the input mask) over the patches of the
volume's *global* patch grid that touch its chunk — its halo — runs them through the net in
batches, blends them and writes its own voxels of the output (after the output mask). Because
the grid is global (see :mod:`emkit.inference.blend`), the chunked output equals a single pass
over the whole volume: no seams, whatever the chunk size.

When the image's resolution differs from the net's training resolution, each task averages its
input by whole factors per axis onto a coarse grid that is global to the volume, runs the net's
global patch grid there, and interpolates the outputs back onto its own chunk of the image's
grid (:mod:`emkit.inference.resample`): outputs always share the image's grid, and chunked still
equals a single pass. A shipped family name (``boundary``) picks the shipped model whose training
resolution is nearest the image's (:mod:`emkit.inference.models`).

Tasks run on :func:`emkit.runtime.map_chunks`: serially (``workers=0``), on a local dask
cluster, or on a running scheduler. A worker loads a model given by name or checkpoint path once
and keeps it (module-level cache). Each finished chunk leaves a done-marker under
``<out>/.emkit/infer/``, so an interrupted run resumes when re-run with the same parameters.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError, LayerExistsError
from ..geometry import Bbox, as_vec3
from ..io.layer import Layer, layer_exists, normalize_url
from ..io.grid import check_same_grid
from .blend import PatchGrid
from .models import choose_model, fine_tune_hint, is_family_name
from .predict import (DEFAULT_OVERLAP, channel_names, check_resolution, model_input_multiple, model_patch_size,
                      normalize_image, output_kind, predict_box_resampled, resolve_device, select_heads,
                      _in_channels)
from .resample import MAX_DOWNSAMPLE, RESOLUTION_TOLERANCE

__all__ = ["infer_layers", "InferTask", "InferReport", "default_chunk_size", "load_model_cached", "RUN_NAME"]

RUN_NAME = "infer"  # markers live under <out>/.emkit/infer/
_MAX_CHUNK_VOXELS = 2**22  # default task: about 4 M voxels (input + outputs stay well under 100 MB)

# model cache of this process (a dask worker keeps its model across tasks): key -> model
_MODELS: dict = {}


def _model_ref(model) -> str:
    """A model reference that travels to workers: absolute checkpoint path, or a shipped name."""
    ref = os.fspath(model)
    path = os.path.abspath(os.path.expanduser(ref))
    return path if os.path.isfile(path) else ref   # a folder named like a shipped model is not a checkpoint


def load_model_cached(ref: str, device=None):
    """The model of checkpoint path / shipped name ``ref`` on ``device``, in eval mode, loaded
    once per process (a changed checkpoint file, by mtime and size, is loaded again)."""
    dev = resolve_device(device)
    stamp = None
    if os.path.isfile(ref):
        st = os.stat(ref)
        stamp = (st.st_mtime_ns, st.st_size)
    key = (ref, stamp, str(dev))
    model = _MODELS.get(key)
    if model is None:
        try:
            from ..nets import load_model
        except ImportError as exc:  # pragma: no cover - emkit.nets is part of emkit
            raise InputError(f"cannot load model {ref!r}: emkit.nets is not available ({exc})") from None
        try:
            model = load_model(ref, map_location="cpu")
        except TypeError:  # load_model without map_location
            model = load_model(ref)
        except FileNotFoundError as exc:
            raise InputError(f"no model {ref!r}: not a checkpoint file nor a shipped model name ({exc})") from None
        model = model.to(dev).eval()
        _MODELS[key] = model
    return model


def model_fingerprint(model) -> str:
    """sha256 (16 hex digits) of a model's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def default_chunk_size(storage_chunk, shape, patch, *, min_tasks: int = 1,
                       max_voxels: int = _MAX_CHUNK_VOXELS) -> tuple[int, int, int]:
    """A task chunk (z, y, x) of whole storage chunks, at least a patch wide where the volume
    allows (so few patches are computed twice), doubled along x, y, z while it stays under
    ``max_voxels`` and the volume still splits into ``min_tasks`` tasks."""
    sc = as_vec3(storage_chunk, "storage chunk", positive=True)
    shape = as_vec3(shape, "shape", positive=True)
    limit = [-(-n // c) * c for n, c in zip(shape, sc)]
    size = [min(lim, -(-min(p, n) // c) * c) for p, n, c, lim in zip(patch, shape, sc, limit)]

    def ntasks(box):
        return int(np.prod([-(-n // b) for n, b in zip(shape, box)]))

    floor = min(int(min_tasks), ntasks(size))
    grew = True
    while grew:
        grew = False
        for ax in (2, 1, 0):
            trial = list(size)
            trial[ax] *= 2
            trial[ax] = min(trial[ax], limit[ax])
            if trial[ax] > size[ax] and int(np.prod(trial)) <= max_voxels and ntasks(trial) >= floor:
                size, grew = trial, True
    return tuple(size)


@dataclass(frozen=True)
class InferTask:
    """Chunk task: the blended net output over ``chunk``, written to the layer at ``out_url``.

    ``model`` is a checkpoint path / shipped model name (loaded once per worker process) or a
    model object (pickled with the task). Geometry (patch, overlap, input multiple, averaging
    ``factors``) is fixed by the run so every task computes the same global patch grid, on the
    image's grid coarsened by ``factors`` (see :mod:`emkit.inference.resample`); the task writes
    its chunk on the image's grid.
    """

    model: object
    image_url: str
    out_url: str
    patch: tuple
    overlap: tuple
    multiple: tuple
    channels: tuple
    mask_in_url: str | None = None
    mask_out_url: str | None = None
    batch_size: int = 4
    device: str | None = None
    threads: int | None = None
    factors: tuple = (1, 1, 1)

    def _model(self):
        if isinstance(self.model, str):
            return load_model_cached(self.model, self.device)
        return self.model.to(resolve_device(self.device)).eval()

    def __call__(self, chunk: Bbox, read_bbox: Bbox) -> None:
        if self.threads:
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
        model = self._model()
        image = Layer.open(self.image_url)
        origin = image.voxel_offset
        factors = tuple(self.factors)
        grid = PatchGrid(tuple(-(-n // f) for n, f in zip(image.size, factors)), self.patch, self.overlap,
                         self.multiple)
        mask_in = Layer.open(self.mask_in_url) if self.mask_in_url else None

        def read(bbox: Bbox) -> np.ndarray:  # bbox relative to the volume start
            g = bbox.translate(origin)
            x = normalize_image(image.read(g))
            if mask_in is not None:
                x = np.where(mask_in.read(g) != 0, np.float32(0), x)
            return x[None] if x.ndim == 3 else x

        mask_out = Layer.open(self.mask_out_url).read(chunk) if self.mask_out_url else None
        out = predict_box_resampled(model, read, grid, chunk.translate(tuple(-o for o in origin)), factors,
                                    image.size, channels=self.channels, batch_size=self.batch_size,
                                    device=resolve_device(self.device), mask_out=mask_out)
        Layer.open(self.out_url).write(out, chunk.start)


@dataclass(frozen=True)
class InferReport:
    """What :func:`infer_layers` did. ``voxels`` counts z * y * x of the volume; ``seconds`` is
    the chunk map's time (cluster start excluded), ``wall_seconds`` everything."""

    out_url: str
    kind: str
    channels: tuple
    voxels: int
    chunk_size: tuple
    patch: tuple
    overlap: tuple
    chunks: int
    executed: int
    skipped: int
    resumed: bool
    seconds: float
    wall_seconds: float
    dashboard_link: str = ""
    model: str = ""
    resampling: str = ""
    factors: tuple = (1, 1, 1)

    @property
    def voxels_per_s(self) -> float:
        return self.voxels / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        if not self.executed:
            return (f"{self.out_url} is already complete: all {self.chunks} chunk(s) are marked done; "
                    "nothing computed (use --overwrite to compute again)")
        how = f"{self.executed} chunk(s) of {tuple(self.chunk_size)} computed"
        if self.skipped:
            how += f", {self.skipped} already done (resumed)"
        head = f"{self.model}; {self.resampling}\n" if self.model else ""
        return (f"{head}{self.kind} ({', '.join(self.channels)}) of {self.voxels:,} voxels written to {self.out_url} "
                f"(the image's grid) in {self.seconds:.2f} s ({self.voxels_per_s:,.0f} voxels/s); {how}")

    def to_dict(self) -> dict:
        return {**asdict(self), "voxels_per_s": self.voxels_per_s}


def _open_mask(url, image: Layer, what: str) -> Layer | None:
    if url is None:
        return None
    m = Layer.open(url)
    if m.kind.name != "mask":
        raise InputError(f"{what} {m.url} is a {m.kind.name} layer; expected a mask layer (uint8, 1 = masked)")
    check_same_grid(image, m, what=what)
    return m


def infer_layers(
    model_or_name,
    image_url: str | os.PathLike,
    out_url: str | os.PathLike,
    *,
    mask_in_url: str | os.PathLike | None = None,
    mask_out_url: str | os.PathLike | None = None,
    chunk_size=None,
    heads: Sequence[str] | str | None = None,
    patch_size=None,
    overlap=DEFAULT_OVERLAP,
    batch_size: int = 4,
    device=None,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    overwrite: bool = False,
    max_downsample: int = MAX_DOWNSAMPLE,
    resolution_tolerance: float = RESOLUTION_TOLERANCE,
    retries: int = 3,
    progress: bool = True,
) -> InferReport:
    """Run a net over an image layer chunk by chunk and write its outputs as a layer.

    Parameters
    ----------
    model_or_name : a shipped family name (``"boundary"``, ``"semantic"``, ``"cleft"``: the shipped model of
        that family whose training resolution is nearest the image's, see
        :mod:`emkit.inference.models`), a full shipped name (``"boundary_iso"``), a checkpoint
        path (as ``emkit train`` writes), or a model object (pickled to the workers with every
        task; prefer a path on clusters).
    image_url : image layer (uint8).
    out_url : output layer, on the image's grid (same size, voxel offset, resolution and storage
        chunks as the image, whatever grid the net ran on): ``affinities`` (3 channels, z, y, x)
        when only the ``affinity`` head is written — the default for boundary nets — else
        ``probability`` with one channel per output (names from the heads: ``affinity_z``, …,
        ``semantic_axon``, …); float32.
    mask_in_url : mask layer on the image's grid; voxels where it is nonzero (1 = defect) are fed
        to the net as 0 (applied on the image's grid, before any averaging).
    mask_out_url : mask layer on the image's grid; outputs are 0 where it is nonzero.
    chunk_size : task chunk (z, y, x, image voxels), a multiple of the image's storage chunk;
        default about 4 M voxels, at least a patch wide.
    heads : heads to output (names, ``"affinity,myelin"`` or ``"all"``); default: the affinity
        head of a boundary net (its long-range heads are auxiliary training targets), every head
        of other nets.
    patch_size, overlap, batch_size : as in :func:`emkit.inference.predict` (voxels of the grid
        the net runs on).
    device : ``cpu``/``cuda``/…; default CUDA when the worker has it, else CPU.
    workers : 0 = serial in this process; N = local dask cluster of N processes (torch threads
        split between them); None = one per core.
    scheduler, client : a running dask scheduler's address / a client to use instead.
    overwrite : replace an existing output (its markers too).
    max_downsample, resolution_tolerance : when the image's resolution differs from the net's,
        the image is averaged by whole factors per axis (at most ``max_downsample``, default 2)
        to the net's resolution, and refused when an axis then stays more than
        ``resolution_tolerance`` (default 1.5×) away (see :mod:`emkit.inference.resample`).
    retries : extra attempts of a failing chunk.
    progress : progress bar, dashboard link, and a line saying which model runs how.

    Resuming: an existing output is refused unless ``overwrite`` — except when it holds an
    interrupted run with the same parameters (model weights, image, masks, heads, patch, overlap,
    chunk, averaging factors): then only chunks without a done-marker are computed.

    Raises
    ------
    InputError : image not an image layer, mask not a mask layer or not on the image's grid,
        unknown head, bad sizes, resolution the net cannot be brought to (naming the shipped models
        and how to fine-tune).
    LayerExistsError : the output exists (and is not a resumable run) without ``overwrite``.
    TaskFailedError : a chunk failed after its retries (names the chunk).
    """
    import sys

    from ..runtime import Markers, check_aligned, machine_cores, map_chunks, markers_url

    t0 = time.perf_counter()
    image = Layer.open(image_url)
    if image.kind.name != "image":
        raise InputError(f"{image.url} is a {image.kind.name} layer; expected an image layer (uint8)")
    what = f"image {image.url}"
    note = ""
    if is_family_name(model_or_name):
        family = os.fspath(model_or_name)
        name, path, note = choose_model(family, image.resolution, tolerance=resolution_tolerance,
                                        max_downsample=max_downsample, what=what)
        model = load_model_cached(path, "cpu")
        task_model, model_id = path, {"model": name, "weights": model_fingerprint(model)}
        hint = fine_tune_hint(family)
    elif isinstance(model_or_name, (str, os.PathLike)):
        ref = _model_ref(model_or_name)
        model = load_model_cached(ref, "cpu")
        task_model, model_id = ref, {"model": ref, "weights": model_fingerprint(model)}
    else:
        model = task_model = model_or_name
        model_id = {"model": f"<{type(model).__name__} object>", "weights": model_fingerprint(model)}
    if not note:
        kinds = getattr(model, "head_slices", None) or {}
        hint = fine_tune_hint("semantic" if "semantic" in kinds else "cleft" if "cleft" in kinds else "boundary")
    if _in_channels(model) != image.num_channels:
        raise InputError(f"the net takes {_in_channels(model)} input channel(s); image {image.url} has "
                         f"{image.num_channels}")
    mask_in = _open_mask(mask_in_url, image, "input mask")
    mask_out = _open_mask(mask_out_url, image, "output mask")
    plan = check_resolution(model, image.resolution, tolerance=resolution_tolerance, max_downsample=max_downsample,
                            what=what, hint=hint)
    factors = tuple(plan.factors)
    head_names, channels = select_heads(model, heads)
    kind = output_kind(model, head_names)
    names = channel_names(model, head_names)
    patch = model_patch_size(model) if patch_size is None else as_vec3(patch_size, "patch size", positive=True)
    grid = PatchGrid(plan.net_shape(image.size), patch, overlap, model_input_multiple(model))

    local = client is None and scheduler is None
    n_workers = (machine_cores() if workers is None else int(workers)) if local else None
    if n_workers is not None and n_workers < 0:
        raise InputError(f"workers must be >= 0, got {workers}")
    patch_img = tuple(p * f for p, f in zip(grid.patch, factors))  # a patch, in image voxels
    if chunk_size is None:
        chunk_size = default_chunk_size(image.chunk_size, image.size, patch_img, min_tasks=max(1, n_workers or 1))
    chunk_size = as_vec3(chunk_size, "chunk size", positive=True)
    check_aligned(image.bbox, chunk_size, image.chunk_size, image.bbox, what="inference chunk")
    threads = max(1, machine_cores() // n_workers) if n_workers else None
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if local and device is not None:
        resolve_device(device)  # a clear error here rather than in every task

    out_url = normalize_url(out_url)
    if out_url.rstrip("/") in {image.url.rstrip("/"), *(m.url.rstrip("/") for m in (mask_in, mask_out) if m)}:
        raise InputError(f"output {out_url} is one of the inputs; give another URL")
    params = {**model_id, "image": image.url, "mask_in": mask_in.url if mask_in else None,
              "mask_out": mask_out.url if mask_out else None, "heads": head_names, "kind": kind,
              "patch_zyx": list(grid.patch), "overlap_zyx": list(grid.overlap), "chunk_size_zyx": list(chunk_size)}
    if factors != (1, 1, 1):
        params["resample_factors_zyx"] = list(factors)
    markers = Markers(markers_url(out_url, RUN_NAME))
    resumed = False
    if layer_exists(out_url) and not overwrite:
        if markers.params() is None:
            raise LayerExistsError(f"a layer already exists at {out_url}; pass overwrite=True (--overwrite) to replace it")
        try:
            markers.bind(params)
        except InputError as exc:
            raise LayerExistsError(f"{out_url} holds an interrupted inference with other parameters ({exc}); rerun "
                                   "it with the same parameters to resume, or pass overwrite=True") from None
        resumed = True
    else:
        ran = "" if plan.identity else f" (net run at {plan.net_resolution} nm, outputs interpolated to the image's grid)"
        Layer.create(out_url, kind, image.size, resolution=image.resolution, voxel_offset=image.voxel_offset,
                     chunk_size=image.chunk_size, num_channels=len(channels) if kind == "probability" else None,
                     channel_names=names, overwrite=overwrite,
                     description=f"emkit infer {model_id['model']} on {image.url}{ran}")
        markers.reset()  # stale markers of a run that died before creating the layer
        markers.bind(params)

    if progress:
        print(f"emkit infer: {note or 'model ' + str(model_id['model'])}; {plan.describe()}", file=sys.stderr,
              flush=True)
    # the tasks rebuild the grid from its actual patch; an overlap resolved against a nominal patch
    # larger than a short axis is clipped to patch - 1 there, which leaves the stride (max(1, patch -
    # overlap)) and so the grid unchanged
    task_overlap = tuple(min(o, p - 1) for o, p in zip(grid.overlap, grid.patch))
    task = InferTask(model=task_model, image_url=image.url, out_url=out_url, patch=grid.patch, overlap=task_overlap,
                     multiple=grid.multiple, channels=tuple(channels),
                     mask_in_url=mask_in.url if mask_in else None, mask_out_url=mask_out.url if mask_out else None,
                     batch_size=int(batch_size), device=None if device is None else str(device), threads=threads,
                     factors=factors)
    # what a chunk's task reads beyond its faces (image voxels): its patches on the coarse grid,
    # plus the coarse voxel beyond each face that the interpolation uses
    halo = tuple(p - 1 if f == 1 else (p + 1) * f for p, f in zip(grid.patch, factors))
    was_training = getattr(model, "training", False) if task_model is model else None
    try:
        rep = map_chunks(task, image.bbox, chunk_size, halo=halo, origin=image.bbox.start, clip=image.bbox,
                         markers=markers, client=client, scheduler=scheduler,
                         workers=n_workers if local else None, retries=retries, progress=progress, desc="infer")
    finally:
        if was_training:
            model.train(True)
    return InferReport(out_url=out_url, kind=kind, channels=tuple(names), voxels=image.bbox.size,
                       chunk_size=tuple(chunk_size), patch=tuple(grid.patch), overlap=tuple(grid.overlap),
                       chunks=rep.total, executed=rep.executed, skipped=rep.skipped, resumed=resumed,
                       seconds=rep.seconds, wall_seconds=time.perf_counter() - t0,
                       dashboard_link=rep.dashboard_link, model=note or f"model {model_id['model']}",
                       resampling=plan.describe(), factors=factors)
