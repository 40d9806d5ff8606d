"""Shared fixtures: everything offline, nothing from ../shared."""

import os

# One torch thread, for this process and every process a test starts (set before torch is imported): the test
# models are tiny, and two threads ran the inner loop 1.4x slower on 2 cores (77 s against 56 s). Set
# OMP_NUM_THREADS yourself to test with more.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def small_cfg():
    import bayesprune as bp

    return bp.RunConfig(dataset="synthetic", epochs=2, fcn_hidden=(32, 16), bf_samples=128)
