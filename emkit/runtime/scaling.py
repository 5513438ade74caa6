"""Throughput of a chunked stage against the number of dask workers.

:func:`scaling_table` runs one stage (any callable that takes a dask client) once per worker count
on a fresh local cluster — or on clusters the caller builds (``make_cluster``, e.g. a
``dask-jobqueue`` SLURM cluster scaled to N jobs) — and tabulates wall time, voxels per second,
speed-up over the first row and parallel efficiency. It is what ``notebooks/08_scale_out.ipynb``
plots and what a lab runs before sizing a cluster: a stage whose speed-up flattens early is bound
by something other than the workers (I/O, the scheduler, a serial step of the stage).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from ..errors import InputError

__all__ = ["scaling_table"]


def scaling_table(run: Callable[[Any], Any], worker_counts: Sequence[int] = (1, 2), *, voxels: int,
                  make_cluster: Callable[[int], Any] | None = None, repeats: int = 1,
                  progress: bool = True):
    """Wall time of ``run(client)`` for each number of workers, as a table.

    Parameters
    ----------
    run : the stage to time; called as ``run(cluster)`` with an :class:`~emkit.runtime.Cluster`
        (or whatever ``make_cluster`` returns). It must redo its work on every call (e.g. write
        to a fresh output folder or pass ``overwrite=True``). Cluster start-up is not timed.
    worker_counts : worker processes per row (each ≥ 1), in the order run.
    voxels : voxels the stage processes per call (for the voxels/s column).
    make_cluster : ``n -> cluster``; default a local :class:`~emkit.runtime.Cluster` of ``n``
        single-threaded worker processes on loopback. The cluster is closed after its row.
    repeats : timed calls per row (the fastest counts; later calls find warm workers).
    progress : print each row and the dashboard link as it goes.

    Returns
    -------
    pandas.DataFrame with columns ``workers``, ``seconds``, ``voxels_per_s``, ``speedup`` (over
    the first row) and ``efficiency`` (speed-up × first row's workers / workers), and the
    dashboard link of each row's cluster in ``dashboard``.
    """
    import pandas as pd

    counts = [int(n) for n in worker_counts]
    if not counts or min(counts) < 1:
        raise InputError(f"worker_counts must be one or more numbers >= 1, got {list(worker_counts)!r}")
    if int(voxels) < 1:
        raise InputError(f"voxels must be >= 1, got {voxels!r}")
    if int(repeats) < 1:
        raise InputError(f"repeats must be >= 1, got {repeats!r}")
    if make_cluster is None:
        from .cluster import Cluster

        def make_cluster(n):
            return Cluster(n_workers=n, threads_per_worker=1, quiet=not progress)

    rows = []
    for n in counts:
        cluster = make_cluster(n)
        try:
            best = float("inf")
            for _ in range(int(repeats)):
                t = time.perf_counter()
                run(cluster)
                best = min(best, time.perf_counter() - t)
            link = getattr(cluster, "dashboard_link", "")
        finally:
            cluster.close()
        rows.append({"workers": n, "seconds": best, "voxels_per_s": round(int(voxels) / best),
                     "dashboard": link})
        if progress:
            print(f"{n} worker(s): {best:.2f} s, {int(voxels) / best / 1e6:.2f} MVx/s", flush=True)
    df = pd.DataFrame(rows)
    df["speedup"] = (df["seconds"].iloc[0] / df["seconds"]).round(2)
    df["efficiency"] = (df["speedup"] * counts[0] / df["workers"]).round(2)
    return df[["workers", "seconds", "voxels_per_s", "speedup", "efficiency", "dashboard"]]
