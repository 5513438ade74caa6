"""What a test needs in order to run: skipped (loudly) on a developer's machine that lacks it,
an error under CI (the ``CI`` environment variable set, as ``.ci/run`` does), where a skip would
hide that the test never ran.

``conftest.py`` enforces the same rule for every skip, wherever it comes from: under CI a skipped
test (or test module) is reported as failed unless it is marked ``allow_skip_in_ci``.
"""
from __future__ import annotations

import importlib
import os

import pytest

__all__ = ["in_ci", "require", "require_that"]


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set to anything but ``""``, ``0``, ``false``, ``no``."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_that(ok: bool, what: str):
    """Skip the calling test (fail it under CI) unless ``ok``; ``what`` says what is missing and how to get it."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"CI requires {what}; it is missing (tests may skip only outside CI)", pytrace=False)
    reason = f"!!! {what} is missing: this test did NOT run !!!"
    try:  # report the test's location, not this helper's (as pytest.importorskip does)
        raise pytest.skip.Exception(reason, _use_item_location=True)
    except TypeError:  # a pytest without that keyword
        pytest.skip(reason)


def require(module: str, what: str | None = None):
    """Import and return ``module``; if it cannot be imported, skip (fail under CI) saying why."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        require_that(False, f"{what or module} (import {module}: {exc})")
