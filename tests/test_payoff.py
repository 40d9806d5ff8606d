"""The payoff measurements shared by the benchmark and notebook 08 (timings reported, never asserted)."""

import gzip
import io

import pandas as pd
import pytest
import torch

import bayesprune as bp
from bayesprune.analysis import payoff
from bayesprune.core import export


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return bp.FCN((1, 8, 8), 10, (32, 16)).eval()


def _table(medians: dict[int, list[tuple[float, float, float]]]) -> pd.DataFrame:
    """A latency table from {batch: [(sparsity, dense median, csr median), ...]}."""
    rows = []
    for batch, cells in medians.items():
        for r, d, c in cells:
            rows += [{"variant": "dense", "target": r, "batch": batch, "median": d, "min": d / 2},
                     {"variant": "csr", "target": r, "batch": batch, "median": c, "min": c}]
    return pd.DataFrame(rows)


def test_crossover_is_where_the_sparse_kernel_wins_from_then_on():
    t = _table({1: [(0.5, 1, 3), (0.9, 1, 2), (0.99, 1, 1.5)],            # never
                256: [(0.5, 1, 3), (0.9, 1, 0.9), (0.99, 1, 0.4)],        # from 90 %
                64: [(0.5, 1, 0.5), (0.9, 1, 2), (0.99, 1, 0.5)]})        # wins, loses, wins: from 99 %
    assert payoff.crossover(t) == {1: None, 64: 0.99, 256: 0.9}
    assert payoff.crossover(t, statistic="min") == {1: None, 64: None, 256: 0.99}


def test_sizes_are_the_files_bytes(net):
    t = payoff.sizes(net, [0.0, 0.9])
    mag = t[t.pruning == "magnitude"].set_index("target")
    pruned, _ = payoff.pruned_pair(net, 0.9)
    buf = io.BytesIO()
    torch.save(dict(pruned.state_dict()), buf)
    assert mag.loc[0.9, "dense_bytes"] == len(buf.getvalue())
    assert mag.loc[0.9, "dense_gzip_bytes"] == len(gzip.compress(buf.getvalue()))
    assert mag.loc[0.9, "sparse_bytes"] == len(export.compress(pruned).to_bytes())
    assert mag.loc[0.9, "weights_kept"] == sum(int((w != 0).sum()) for w in bp.prunable_parameters(pruned).values())
    assert mag.loc[0.9, "sparse_flops"] == 2 * mag.loc[0.9, "weights_kept"]
    neuron = t[t.pruning == "neuron"].set_index("target")
    assert neuron.loc[0.9, "hidden"] == [3, 2]  # 32 - round(28.8), 16 - round(14.4)
    assert neuron.loc[0.9, "weights_kept"] == 64 * 3 + 3 * 2 + 2 * 10
    assert neuron.loc[0.0, "shrunk_bytes"] == neuron.loc[0.0, "dense_bytes"]


def test_interleaved_latency_times_every_cell_in_every_rep(net):
    models = payoff.timing_models(net, [0.0, 0.9])
    inputs = {1: torch.randn(1, 1, 8, 8), 4: torch.randn(4, 1, 8, 8)}
    seen = []
    lat = payoff.interleaved_latency(models, inputs, reps=2, min_seconds=0.0, on_rep=lambda rep: seen.append(rep) or
                                     {"loadavg_1min": 0.5})
    assert seen == [0, 1] and len(lat) == 2 * 3 * 2 * 2 and (lat["seconds"] > 0).all()
    assert (lat["loadavg_1min"] == 0.5).all()
    table = payoff.latency_table(lat)
    assert (table["reps"] == 2).all() and (table["min"] <= table["median"]).all()
    assert set(table["variant"]) == set(payoff.VARIANTS)


def test_timing_models_compute_what_the_masked_model_computes(net):
    x = torch.randn(5, 1, 8, 8)
    models = payoff.timing_models(net, [0.5])
    mag, neu = payoff.pruned_pair(net, 0.5)
    with torch.inference_mode():
        assert torch.equal(models[("dense", 0.5)](x), mag(x))
        torch.testing.assert_close(models[("csr", 0.5)](x), mag(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(models[("shrunk", 0.5)](x), neu(x), rtol=1e-5, atol=1e-6)
