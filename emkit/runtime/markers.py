"""Done-markers: one small file per finished chunk, so an interrupted run resumes.

A run keeps its markers under a folder URL (``file://``, ``gs://``, ``s3://`` — anything
CloudFiles reads), by convention inside the output: ``<output>/.emkit/<run-name>/``::

    run.json              the parameters of the run (a re-run with other parameters is refused)
    done/z0-z1_y0-y1_x0-x1  one marker per finished chunk (written after its output is complete)

A marker is written only after the chunk's task has returned, i.e. after its output is fully
written; a chunk without marker is recomputed on the next run (tasks are idempotent). Markers
and ``run.json`` are written atomically (:func:`emkit.runtime.atomic.put_atomic`: temporary
name + rename on local folders, one whole-object put on object stores), so a killed run never
leaves a truncated ``run.json`` that would block the resume.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Iterable

from ..errors import InputError
from ..io.layer import join_url, normalize_url
from .atomic import put_json_atomic
from .plan import chunk_name

__all__ = ["Markers", "markers_url"]


def markers_url(output_url: str, run_name: str) -> str:
    """Conventional marker folder of run ``run_name`` writing into ``output_url``."""
    if not run_name or "/" in run_name:
        raise InputError(f"run name must be a non-empty name without '/', got {run_name!r}")
    return join_url(output_url, ".emkit", run_name)


class Markers:
    """The done-markers of one run.

    Parameters
    ----------
    url : folder (URL or local path) that holds ``run.json`` and ``done/``.

    The object is small and picklable (only the URL travels to workers).
    """

    def __init__(self, url: str | os.PathLike):
        self.url = normalize_url(url)

    def __repr__(self) -> str:
        return f"Markers({self.url!r})"

    def _cf(self):
        from cloudfiles import CloudFiles

        return CloudFiles(self.url)

    # per chunk ---------------------------------------------------------------------------------
    def mark_done(self, bbox, **facts) -> None:
        """Write the marker of ``bbox`` (a Bbox); ``facts`` (JSON-able) are stored in it."""
        body = {"bbox_zyx": [list(bbox.start), list(bbox.stop)], "time": time.time(),
                "host": socket.gethostname(), "pid": os.getpid(), **facts}
        put_json_atomic(self.url, f"done/{chunk_name(bbox)}", body)

    def is_done(self, bbox) -> bool:
        return self._cf().exists(f"done/{chunk_name(bbox)}")

    def done(self) -> set[str]:
        """Names (``z0-z1_y0-y1_x0-x1``) of the chunks marked done, listed once."""
        names = (p.rsplit("/", 1)[-1] for p in self._cf().list(prefix="done/"))
        return {n for n in names if not n.startswith(".")}  # not a killed write's temporary

    def count(self) -> int:
        return len(self.done())

    # the run -----------------------------------------------------------------------------------
    def params(self) -> dict | None:
        """The parameters recorded by :meth:`bind`, or None for a fresh run."""
        return self._cf().get_json("run.json")

    def bind(self, params: dict) -> bool:
        """Record ``params`` as this run's parameters; True when resuming a run with the same ones.

        Raises InputError when markers of a run with other parameters exist (call :meth:`reset`
        to start over).
        """
        params = json.loads(json.dumps(params))  # normalise tuples -> lists
        old = self.params()
        if old is None:
            if self.done():
                raise InputError(f"markers at {self.url} have no run.json; reset them before running")
            put_json_atomic(self.url, "run.json", params)
            return False
        if old != params:
            diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
            raise InputError(f"markers at {self.url} belong to a run with other parameters "
                             f"(differs in: {', '.join(diff)}); reset them (or overwrite the output) to start over")
        return True

    def reset(self) -> int:
        """Delete every marker and the recorded parameters; returns how many files were deleted."""
        cf = self._cf()
        paths = list(cf.list())
        if paths:
            cf.delete(paths)
        return len(paths)

    def clear(self, bboxes: Iterable) -> None:
        """Delete the markers of the given boxes (they will be recomputed)."""
        self._cf().delete([f"done/{chunk_name(b)}" for b in bboxes])
