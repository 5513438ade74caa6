"""Shared by the benchmark scripts: run an ``emkit`` command in a subprocess, timed; describe the machine."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

EMKIT = [sys.executable, "-m", "emkit.cli.main"]


def sh(*args) -> tuple[str, float]:
    """stdout of ``emkit ARGS…`` (raises on failure) and its wall-clock seconds."""
    t = time.perf_counter()
    out = subprocess.run([*EMKIT, *map(str, args)], check=True, capture_output=True, text=True).stdout
    return out, time.perf_counter() - t


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
