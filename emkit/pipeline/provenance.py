"""Stage records of a pipeline run: what made each output, and how far the run got.

Each stage of ``emkit run`` keeps one JSON record, ``RUN/provenance/<stage>.json``, written whole
or not at all (:func:`emkit.runtime.put_json_atomic`):

- ``status``: ``running`` (written when the stage starts: a record left ``running`` means the run
  was killed there), ``done`` or ``failed`` (with ``error``, the message);
- ``config``: the parameters that determine the stage's outputs — the input section and the
  sections of this stage and of every stage it reads from (so a change upstream shows too);
- ``emkit_version``, ``git_revision``, ``versions`` of the main dependencies (numpy, torch,
  cloudvolume, dask, ...), ``models`` used (name, file, weights fingerprint), ``command`` (the
  command line), ``started`` / ``ended`` (UTC, ISO 8601), ``seconds``, ``outputs`` (URLs) and a
  small ``summary`` of the results.
"""
from __future__ import annotations

import datetime
import json
import sys

__all__ = ["PROVENANCE_DIR", "environment", "read_record", "write_record", "read_records", "utc_now",
           "command_line"]

#: folder of the stage records inside the run folder.
PROVENANCE_DIR = "provenance"
#: dependencies whose versions are recorded.
DEPENDENCIES = ("numpy", "scipy", "torch", "cloud-volume", "cloud-files", "dask", "distributed", "zmesh",
                "kimimaro", "pandas", "pydantic")


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    """This process's command line, with the entry point shown as ``emkit``."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("emkit", "main.py", "__main__.py")):
        argv[0] = "emkit"
    return " ".join(argv)


def environment() -> dict:
    """emkit version, git revision of its source tree (None outside a checkout), dependency versions."""
    from importlib import metadata

    from emkit import __version__
    from emkit.synapse.table import git_revision

    versions = {}
    for name in DEPENDENCIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"emkit_version": __version__, "git_revision": git_revision(), "python": sys.version.split()[0],
            "versions": versions}


def _folder(run_url: str) -> str:
    from emkit.io import join_url

    return join_url(run_url, PROVENANCE_DIR)


def read_record(run_url: str, stage: str) -> dict | None:
    """The record of ``stage`` in the run folder, or None when the stage never started there."""
    from cloudfiles import CloudFiles

    raw = CloudFiles(_folder(run_url)).get(f"{stage}.json")
    return None if raw is None else json.loads(raw)


def read_records(run_url: str, stages) -> dict:
    """``{stage: record or None}`` for ``stages``."""
    return {s: read_record(run_url, s) for s in stages}


def write_record(run_url: str, stage: str, record: dict) -> None:
    """Write the record of ``stage`` whole or not at all."""
    from emkit.pipeline.redact import redact
    from emkit.runtime.atomic import put_json_atomic

    put_json_atomic(_folder(run_url), f"{stage}.json", redact(record))   # no secret of a URL / the environment
