"""Whole-file writes that are never seen half-written.

A run killed in the middle of writing a file must not leave a truncated file under the final
name (a resumed run would trust it). :func:`put_atomic` writes the complete bytes:

- on ``file://`` URLs (local paths) to a temporary file in the same folder
  (``.NAME.<random>.tmp``), fsynced when ``durable``, then renamed onto ``NAME`` with
  :func:`os.replace` (atomic on POSIX within one filesystem). A kill leaves at most a stray
  ``.tmp`` file, never a partial ``NAME``; :func:`remove_stale_temporaries` clears them.
- on object stores (``gs://``, ``s3://``, …) with one CloudFiles ``put`` of the complete bytes:
  an object upload is atomic per object (the object appears whole or not at all).

Testing hook: when the environment variable ``EMKIT_TEST_ATOMIC_PAUSE`` holds a local file's
absolute path, writing that file pauses for ``EMKIT_TEST_ATOMIC_PAUSE_S`` seconds (default 60)
after the temporary file is complete and before the rename, so a test can kill a run exactly there.
"""
from __future__ import annotations

import json
import os
import time
import uuid

__all__ = ["put_atomic", "put_json_atomic", "remove_stale_temporaries"]


def _local_folder(url: str) -> str | None:
    from ..io.layer import local_path

    return local_path(url)


def _test_pause(path: str) -> None:
    want = os.environ.get("EMKIT_TEST_ATOMIC_PAUSE")
    if want and os.path.abspath(want) == os.path.abspath(path):
        time.sleep(float(os.environ.get("EMKIT_TEST_ATOMIC_PAUSE_S", "60")))


def put_atomic(folder_url: str, name: str, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` as ``folder_url/name`` so that no reader ever sees a partial file.

    Parameters
    ----------
    folder_url : folder (local path, ``file://``, ``gs://``, ``s3://``); created when missing.
    name : file name inside the folder (may contain ``/`` for sub-folders).
    data : the complete content (bytes; stored uncompressed).
    durable : local files: ``fsync`` the data before the rename, so that even an operating-system
        crash (not only a killed process) cannot leave an empty file under the final name. Costs a
        few milliseconds per file; used for a run's final outputs, not for its many markers and
        intermediate files (those are recomputed when in doubt).
    """
    from ..io.layer import normalize_url

    folder_url = normalize_url(folder_url)
    folder = _local_folder(folder_url)
    if folder is None:  # object store: one put of complete bytes is atomic per object
        from cloudfiles import CloudFiles

        CloudFiles(folder_url).put(name, data, compress=None, raw=True)
        return
    path = os.path.join(folder, name)
    parent, base = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{base}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        _test_pause(path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def put_json_atomic(folder_url: str, name: str, obj, *, durable: bool = False) -> None:
    """:func:`put_atomic` of ``obj`` as indented JSON (UTF-8)."""
    put_atomic(folder_url, name, (json.dumps(obj, indent=2) + "\n").encode("utf-8"), durable=durable)


def remove_stale_temporaries(folder_url: str, name: str) -> int:
    """Delete temporaries ``.NAME.*.tmp`` that a killed :func:`put_atomic` left (local folders
    only; object stores have none). Returns how many were removed. Call it only when no other
    process is writing ``NAME``."""
    from ..io.layer import normalize_url

    folder = _local_folder(normalize_url(folder_url))
    if folder is None:
        return 0
    parent, base = os.path.split(os.path.join(folder, name))
    n = 0
    if os.path.isdir(parent):
        for f in os.listdir(parent):
            if f.startswith(f".{base}.") and f.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(parent, f))
                    n += 1
                except OSError:
                    pass
    return n
