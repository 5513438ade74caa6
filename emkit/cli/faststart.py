"""Cut the fixed start-up and shut-down cost of a one-shot ``emkit`` command process.

A command that reads layers imports numpy, numba, scipy, CloudFiles and CloudVolume; measured on
``emkit segment`` of a 1 M-voxel volume (benchmarks/segment_cli_overhead.py) the whole command
took 3.2 s of CPU without these measures and 1.2 s with them:

- CloudVolume imports jsonschema, whose optional ``rfc3987_syntax`` (installed with Jupyter)
  builds a grammar at import (~0.9 s) for an IRI format check emkit never uses: it is skipped
  (jsonschema then lacks that one format check, in this process only);
- the heavy libraries are imported with the garbage collector paused, then everything alive is
  frozen (``gc.freeze``): CloudVolume's import calls ``gc.collect()``, and the interpreter's
  final collection at exit would otherwise walk every numba and CloudVolume object.

Only the command's own process is touched (``emkit …`` or ``python -m emkit.cli.main …``), never
a notebook or a test that calls :func:`emkit.cli.main.main`.
"""
from __future__ import annotations

import importlib
import os
import sys

__all__ = ["command_process", "fast_start"]


def command_process() -> bool:
    """True when this process is the ``emkit`` command itself (not a notebook or test calling main())."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return os.path.basename(sys.argv[0] or "") == "emkit" or getattr(spec, "name", "") == "emkit.cli.main"


def fast_start(*modules: str) -> bool:
    """Import ``modules`` (default: CloudFiles and CloudVolume) the fast way described above, when this
    is the command's own process; returns whether it did."""
    import gc

    if not command_process():
        return False
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)
    gc.disable()
    try:
        for name in modules or ("cloudfiles", "cloudvolume"):
            importlib.import_module(name)
    finally:
        gc.freeze()
        gc.enable()
    return True
