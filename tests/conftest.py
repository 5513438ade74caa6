"""Shared pytest set-up: tests never touch the network or fixed paths; under CI nothing skips."""
import os

import pytest

from helpers_require import in_ci

# keep numba/dask threads modest on the 2-core CI machine
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

_CI_SKIP = ("skipped under CI ({where}): {why}. Everything a test needs is installed by `make test` "
            "(torch via the 'nets' extra, chromium and Xvfb via .ci/system-deps.sh); a test that may skip in CI "
            "must say so with @pytest.mark.allow_skip_in_ci(reason=...)")


def _skip_reason(rep) -> str:
    lr = rep.longrepr
    return str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI a skipped test fails (unless marked ``allow_skip_in_ci``); outside CI it stays skipped."""
    outcome = yield
    rep = outcome.get_result()
    if (in_ci() and rep.skipped and not hasattr(rep, "wasxfail")
            and item.get_closest_marker("allow_skip_in_ci") is None):
        rep.outcome = "failed"
        rep.longrepr = _CI_SKIP.format(where=item.nodeid, why=_skip_reason(rep))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Under CI a test module that skips as a whole (``pytest.importorskip`` at module level) is an error."""
    outcome = yield
    rep = outcome.get_result()
    if in_ci() and rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = _CI_SKIP.format(where=collector.nodeid, why=_skip_reason(rep))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(12345)
