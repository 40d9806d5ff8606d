"""Shared fixtures: everything offline, nothing from ../shared."""

import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def small_cfg():
    import bayesprune as bp

    return bp.RunConfig(dataset="synthetic", epochs=2, fcn_hidden=(32, 16), bf_samples=128)
