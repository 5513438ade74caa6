"""Run a chunk task over a region: serially in this process, or on a dask cluster.

A *task* is any picklable callable ``task(chunk: Bbox, read_bbox: Bbox) -> None`` that reads
what it needs (at most ``read_bbox``) and writes its own output for ``chunk`` — and nothing
else. Tasks must be idempotent (a chunk may run twice: after a worker died, or after an
interrupted run), and should write whole storage chunks of their output
(see :func:`emkit.runtime.check_aligned`).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Protocol

from ..errors import InputError, TaskFailedError
from ..geometry import Bbox
from .markers import Markers
from .plan import ChunkSpec, count_chunks, plan_chunks

__all__ = ["ChunkTask", "MapReport", "map_chunks", "run_chunk"]


class ChunkTask(Protocol):
    """What :func:`map_chunks` runs: write the output of ``chunk``, reading at most ``read_bbox``."""

    def __call__(self, chunk: Bbox, read_bbox: Bbox) -> None: ...


@dataclass(frozen=True)
class MapReport:
    """What a :func:`map_chunks` run did.

    Attributes
    ----------
    total : chunks in the plan.
    skipped : chunks already marked done before the run (not recomputed).
    executed : chunks computed by this run.
    seconds : wall time of the run (planning, cluster start excluded).
    voxels : voxels of the region (z * y * x, channels not counted).
    dashboard_link : dask dashboard of the run ("" when serial).
    """

    total: int
    skipped: int
    executed: int
    seconds: float
    voxels: int
    dashboard_link: str = ""


def run_chunk(task: ChunkTask, spec: ChunkSpec, markers: Markers | None) -> int:
    """Run ``task`` on one chunk, then write the chunk's done-marker; returns the chunk index.

    The marker is written only after ``task`` returned, i.e. after the output is complete.
    This is the function the workers execute; a notebook can call it to try one chunk.
    """
    t0 = time.perf_counter()
    task(spec.chunk, spec.read_bbox)
    if markers is not None:
        markers.mark_done(spec.chunk, seconds=round(time.perf_counter() - t0, 4))
    return spec.index


def _failed(spec: ChunkSpec, exc: BaseException, retries: int, done: int, total: int) -> TaskFailedError:
    how = f"failed after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else "failed"
    err = TaskFailedError(
        f"chunk {spec.chunk} (z,y,x voxels; read {spec.read_bbox}) {how}: {type(exc).__name__}: {exc} "
        f"[{done} of {total} chunks done; they are kept when markers are used]")
    err.bbox = spec.chunk
    err.read_bbox = spec.read_bbox
    err.original = exc
    return err


def map_chunks(
    task: ChunkTask,
    bounds: Bbox,
    chunk_size,
    *,
    halo=0,
    origin=None,
    clip: Bbox | None = None,
    markers: Markers | str | None = None,
    params: dict | None = None,
    reset: bool = False,
    client=None,
    workers: int | None = None,
    scheduler: str | None = None,
    retries: int = 3,
    max_in_flight: int | None = None,
    progress: bool = True,
    desc: str = "chunks",
) -> MapReport:
    """Run ``task`` on every chunk of a grid over ``bounds``; skip chunks already marked done.

    Parameters
    ----------
    task : picklable callable ``task(chunk, read_bbox) -> None`` (see :class:`ChunkTask`).
    bounds : region to cover (Bbox, voxels, z, y, x).
    chunk_size : output chunk of one task (z, y, x) in voxels; memory per task is bounded by it
        (plus the halo).
    halo : context voxels (scalar or z, y, x) on every side of the read box.
    origin : corner the grid is aligned to (default ``bounds.start``).
    clip : box the read box is clipped to (default ``bounds``; e.g. the input layer's bounds).
    markers : :class:`Markers` (or its folder URL) for done-markers; None runs without resume.
    params : parameters of the run, recorded with the markers; a later run over the same markers
        with other parameters is refused (InputError).
    reset : delete the markers first (recompute everything).
    client : a ``distributed.Client`` or :class:`~emkit.runtime.Cluster` to run on.
    workers : without ``client``/``scheduler``: ``0`` runs serially in this process (no dask at
        all: notebooks, debugging, tests); ``N`` starts a local cluster of N worker processes for
        this run; None (default) starts one sized to the machine.
    scheduler : address of a running dask scheduler to attach to for this run.
    retries : extra attempts of a failing chunk before the run fails (serial runs do not retry an
        :class:`~emkit.errors.InputError`: bad input fails the same way again).
    max_in_flight : chunks submitted but not finished at once (default 2 x worker threads);
        bounds the memory of the client and of the scheduler.
    progress : show a progress bar (tqdm; terminal or notebook) and the dashboard link.
    desc : label of the progress bar and of the dask task keys.

    Returns
    -------
    MapReport

    Raises
    ------
    TaskFailedError
        A chunk still failed after ``retries`` (message and ``.bbox`` name the chunk; its marker
        is not written; chunks finished before stay marked).
    """
    from tqdm.auto import tqdm

    if not isinstance(bounds, Bbox):
        raise InputError(f"bounds must be a Bbox, got {bounds!r}")
    retries = int(retries)
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}")
    if sum(x is not None for x in (client, scheduler)) > 1 or (workers is not None and (client or scheduler)):
        raise InputError("give at most one of client, scheduler and workers")
    if isinstance(markers, str) or hasattr(markers, "__fspath__"):
        markers = Markers(markers)
    total = count_chunks(bounds, chunk_size, origin)
    plan = plan_chunks(bounds, chunk_size, halo=halo, origin=origin, clip=clip)  # validates

    done: set[str] = set()
    if markers is not None:
        if reset:
            markers.reset()
        if params is not None:
            markers.bind(params)
        done = markers.done()
    todo = (s for s in plan if s.name not in done)
    skipped = sum(1 for s in plan_chunks(bounds, chunk_size, origin=origin) if s.name in done) if done else 0

    cluster = own = None
    if skipped == total:  # nothing to do: no cluster
        pass
    elif client is not None:
        cluster = client
    elif scheduler is not None or workers != 0:
        from .cluster import Cluster

        cluster = own = Cluster(n_workers=workers, scheduler=scheduler, quiet=not progress)
    link = ""
    try:
        bar = tqdm(total=total, initial=skipped, desc=desc, unit="chunk", disable=not progress, dynamic_ncols=True)
        t0 = time.perf_counter()
        with bar:
            if cluster is None:
                executed = _run_serial(task, todo, markers, retries, bar, total)
            else:
                dclient = getattr(cluster, "client", cluster)
                link = dclient.dashboard_link or ""
                if own is None and progress and link:
                    print(f"dask dashboard: {link}", flush=True)
                executed = _run_distributed(dclient, task, todo, markers, retries, bar, total, max_in_flight, desc)
        seconds = time.perf_counter() - t0
    finally:
        if own is not None:
            own.close()
    return MapReport(total=total, skipped=skipped, executed=executed, seconds=seconds, voxels=bounds.size,
                     dashboard_link=link)


def _run_serial(task, todo, markers, retries, bar, total) -> int:
    n = 0
    for spec in todo:
        for attempt in range(retries + 1):
            try:
                run_chunk(task, spec, markers)
                break
            except Exception as exc:
                if attempt == retries or isinstance(exc, InputError):  # bad input fails the same way again
                    raise _failed(spec, exc, attempt, bar.n, total) from exc
        n += 1
        bar.update(1)
    return n


def _run_distributed(client, task, todo, markers, retries, bar, total, max_in_flight, desc) -> int:
    from distributed import as_completed

    if max_in_flight is None:
        max_in_flight = 2 * max(1, sum(client.nthreads().values()))
    max_in_flight = max(1, int(max_in_flight))
    prefix = f"{desc}-{uuid.uuid4().hex[:8]}"
    specs = {}

    def submit(spec):
        fut = client.submit(run_chunk, task, spec, markers, retries=retries, pure=False,
                            key=f"{prefix}-{spec.name}")
        specs[fut.key] = (fut, spec)
        return fut

    ac = as_completed(loop=client.loop)
    for _ in range(max_in_flight):
        spec = next(todo, None)
        if spec is None:
            break
        ac.add(submit(spec))
    n = 0
    try:
        for fut in ac:
            _, spec = specs.pop(fut.key)
            if fut.status != "finished":
                try:
                    exc = fut.exception()
                except Exception as e:  # cancelled futures raise here
                    exc = e
                raise _failed(spec, exc, retries, bar.n, total) from exc
            fut.release()
            n += 1
            bar.update(1)
            nxt = next(todo, None)
            if nxt is not None:
                ac.add(submit(nxt))
    except BaseException:
        if specs:  # stop what is queued; running tasks finish (their markers are still valid)
            client.cancel([f for f, _ in specs.values()], force=True)
        raise
    return n
