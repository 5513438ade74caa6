"""Start a dask.distributed cluster on this machine, or attach to a running scheduler.

Local clusters use worker *processes* on 127.0.0.1, with the dashboard on a free loopback port
(dask's default 0.0.0.0:8787 would expose it on every interface).
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Iterator, Sequence

from ..errors import InputError

__all__ = ["Cluster", "ClientCluster", "start_cluster", "machine_cores", "stage_client", "map_batches"]

log = logging.getLogger(__name__)


def machine_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class ClientCluster:
    """What every emkit cluster object offers: a dask ``client``, its dashboard link, thread and
    worker counts, ``close`` (the client, then what :meth:`_close_cluster` owns) and use as a
    context manager. Subclasses set ``self.client``."""

    client = None

    @property
    def dashboard_link(self) -> str:
        """URL of the dask dashboard (empty string when it has none)."""
        try:
            return self.client.dashboard_link or ""
        except Exception:  # pragma: no cover - scheduler without dashboard
            return ""

    @property
    def nthreads(self) -> int:
        """Total worker threads (concurrent tasks) the cluster has now."""
        return max(1, sum(self.client.nthreads().values()))

    @property
    def n_workers(self) -> int:
        return len(self.client.nthreads())

    def _close_cluster(self) -> None:
        """Close what this object started besides the client (nothing by default)."""

    def close(self) -> None:
        """Close the client, then what this object started (:meth:`_close_cluster`)."""
        try:
            self.client.close()
        finally:
            self._close_cluster()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Cluster(ClientCluster):
    """A dask client on a local cluster (started here) or on an existing scheduler.

    Parameters
    ----------
    n_workers : worker processes of a local cluster; default: one per core.
    threads_per_worker : threads per worker process (1 suits CPU-bound numpy chunk tasks).
    memory_limit : per-worker memory limit (bytes or a string like ``"4GB"``); default: the
        machine's memory shared evenly by the workers.
    scheduler : address of a running scheduler (``tcp://host:8786``); attach to it instead of
        starting a local cluster. Closing then closes only the client, not the scheduler.
    quiet : do not print the dashboard link (it is always logged at INFO).

    Use as a context manager, or call :meth:`close`.

    Examples
    --------
    >>> with Cluster(n_workers=2) as cluster:          # doctest: +SKIP
    ...     map_chunks(task, bounds, (16, 128, 128), client=cluster)
    """

    def __init__(self, n_workers: int | None = None, threads_per_worker: int = 1, memory_limit=None,
                 scheduler: str | None = None, quiet: bool = False):
        from distributed import Client, LocalCluster

        self._local = None
        if scheduler is not None:
            if n_workers is not None:
                raise InputError("give either n_workers (start a local cluster) or scheduler (attach), not both")
            try:
                self.client = Client(scheduler, timeout="10s")
            except OSError as exc:
                raise InputError(f"cannot reach a dask scheduler at {scheduler!r}: {exc}") from None
        else:
            n = machine_cores() if n_workers is None else int(n_workers)
            if n < 1:
                raise InputError(f"n_workers must be >= 1, got {n_workers!r}")
            if int(threads_per_worker) < 1:
                raise InputError(f"threads_per_worker must be >= 1, got {threads_per_worker!r}")
            self._local = LocalCluster(
                n_workers=n, threads_per_worker=int(threads_per_worker), processes=True,
                host="127.0.0.1", dashboard_address="127.0.0.1:0",
                memory_limit="auto" if memory_limit is None else memory_limit,
                silence_logs=logging.WARNING)
            self.client = Client(self._local)
        log.info("dask dashboard: %s", self.dashboard_link)
        if not quiet:
            print(f"dask dashboard: {self.dashboard_link}", flush=True)

    def _close_cluster(self) -> None:
        """The local cluster, when this object started it."""
        if self._local is not None:
            self._local.close()
            self._local = None

    def __repr__(self) -> str:
        where = "local" if self._local is not None else "attached"
        return f"Cluster({where}, workers={self.n_workers}, dashboard={self.dashboard_link!r})"


@contextlib.contextmanager
def stage_client(client=None, *, workers: int | None = None, scheduler: str | None = None,
                 progress: bool = True) -> Iterator:
    """Where one chunked stage runs: the caller's ``client``, else a cluster it starts and closes.

    Yields ``client`` when one is given; ``None`` (run in this process) for ``workers=0`` with no
    ``scheduler``; otherwise a :class:`Cluster` (``scheduler`` to attach to, or a local cluster of
    ``workers`` processes, ``None`` = one per core) that serves every step of the stage and is
    closed when the block ends, also on error.
    """
    if client is not None or (scheduler is None and workers == 0):
        yield client
        return
    own = Cluster(n_workers=workers, scheduler=scheduler, quiet=not progress)
    try:
        yield own
    finally:
        own.close()


def map_batches(fn: Callable, batches: Sequence, client=None, *, retries: int = 3) -> list:
    """``[fn(b) for b in batches]``, in this process (``client`` None) or as one dask task per batch.

    ``fn`` must pickle (a module-level function or a ``functools.partial`` of one); results come
    back in the order of ``batches``.
    """
    if client is None:
        return [fn(b) for b in batches]
    if not batches:
        return []
    dclient = getattr(client, "client", client)
    return dclient.gather(dclient.map(fn, list(batches), pure=False, retries=retries))


def start_cluster(n_workers: int | None = None, threads_per_worker: int = 1, memory_limit=None,
                  scheduler: str | None = None, quiet: bool = False) -> Cluster:
    """Start a local cluster or attach to ``scheduler``; see :class:`Cluster`."""
    return Cluster(n_workers, threads_per_worker, memory_limit, scheduler, quiet)
