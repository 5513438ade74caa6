"""Shared pytest set-up: tests never touch the network or fixed paths."""
import os

import pytest

# keep numba/dask threads modest on the 2-core CI machine
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(12345)
