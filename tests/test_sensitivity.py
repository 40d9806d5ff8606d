"""The per-layer sensitivity scan: one layer pruned, the others untouched; the suggestion follows the scan."""

import pandas as pd
import pytest
import torch

import bayesprune as bp
from bayesprune.analysis import sensitivity as sens


@pytest.fixture(scope="module")
def trained():
    cfg = bp.RunConfig(dataset="digits", method="none", epochs=3, device="cpu")
    data = bp.load_dataset(cfg, "cpu")
    return bp.train(cfg, progress=False, data=data).model, data


def test_single_layer_prune_leaves_every_other_tensor_untouched(trained):
    model, _ = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for layer in bp.prunable_parameters(model):
        net = sens.prune_one_layer(model, layer, 0.8)
        after = net.state_dict()
        for k, v in before.items():
            if k == layer:
                assert (after[k] == 0).float().mean().item() == pytest.approx(0.8, abs=1 / v.numel())
                kept = after[k] != 0
                assert torch.equal(after[k][kept], v[kept])  # survivors unchanged
            else:
                assert torch.equal(after[k], v), (layer, k)
    for k, v in model.state_dict().items():  # the scanned model itself is never changed
        assert torch.equal(v, before[k])


def test_scan_rows_are_the_single_layer_accuracies(trained):
    model, data = trained
    scan = sens.sensitivity_scan(model, data, [0.0, 0.5, 0.95], split="test")
    layers = list(bp.prunable_parameters(model))
    assert list(scan["layer"].unique()) == layers and len(scan) == 3 * len(layers)
    dense = bp.evaluate(model, data.x_test, data.y_test)[1]
    assert (scan["dense_accuracy"] == dense).all()
    assert (scan.query("sparsity == 0.0")["accuracy"] == dense).all()
    row = scan.query("layer == 'fc2.weight' and sparsity == 0.95").iloc[0]  # an independent recomputation
    assert row["accuracy"] == bp.evaluate(sens.prune_one_layer(model, "fc2.weight", 0.95), data.x_test, data.y_test)[1]
    assert row["drop"] == pytest.approx(dense - row["accuracy"])
    assert ((scan["layer_sparsity"] - scan["sparsity"]).abs() < 0.01).all()


def test_scan_uses_the_training_split_unless_told(trained):
    model, data = trained
    scan = sens.sensitivity_scan(model, data, [0.0], layers=["fc1.weight"], max_samples=200)
    assert scan["dense_accuracy"].iloc[0] == bp.evaluate(model, data.x_train[:200], data.y_train[:200])[1]


def test_suggestion_is_the_highest_sparsity_within_the_threshold():
    scan = pd.DataFrame({"layer": ["a"] * 3 + ["b"] * 3, "weights": [100] * 3 + [10] * 3,
                         "sparsity": [0.5, 0.9, 0.99] * 2, "drop": [0.0, 0.004, 0.2, 0.02, 0.05, 0.3]})
    assert sens.suggest_sparsities(scan, 0.01) == {"a": 0.9, "b": 0.0}
    assert sens.suggest_sparsities(scan, 1.0) == {"a": 0.99, "b": 0.99}
    assert sens.kept_weights(scan, {"a": 0.9, "b": 0.0}) == 10 + 10
    with pytest.raises(ValueError, match="max_drop=-0.1 is invalid"):
        sens.suggest_sparsities(scan, -0.1)


def test_prune_layers_gives_each_layer_its_own_sparsity(trained):
    model, _ = trained
    net = sens.prune_layers(model, {"fc1.weight": 0.9, "fc3.weight": 0.5})
    got = bp.layer_sparsity(net)
    assert got["fc1.weight"] == pytest.approx(0.9, abs=1e-3) and got["fc3.weight"] == pytest.approx(0.5, abs=1e-2)
    assert got["fc2.weight"] == 0.0


def test_bad_input_names_what_is_allowed(trained):
    model, data = trained
    with pytest.raises(ValueError, match="criterion='snip' is invalid: allowed one of magnitude, random, neuron"):
        sens.sensitivity_scan(model, data, [0.5], criterion="snip")
    with pytest.raises(ValueError, match="split='val' is invalid: allowed train, test"):
        sens.sensitivity_scan(model, data, [0.5], split="val")
    with pytest.raises(KeyError, match="fc9.weight"):
        sens.prune_one_layer(model, "fc9.weight", 0.5)
    with pytest.raises(ValueError, match="sparsity of fc1.weight=1.0 is invalid"):
        sens.prune_one_layer(model, "fc1.weight", 1.0)


def test_plot_sensitivity_draws_chance_where_asked(trained):
    """The chance line sits at 1/classes, labelled, and only when asked for (notebook 08 asks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, data = trained
    scan = sens.sensitivity_scan(model, data, [0.5, 0.99], split="test")
    for chance in (None, 1 / data.num_classes):
        fig = sens.plot_sensitivity(scan, 0.01, chance=chance)
        lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
        labelled = [k for k in lines if k.startswith("chance")]
        if chance is None:
            assert not labelled
        else:
            assert labelled == ["chance = 0.10"] and list(lines[labelled[0]].get_ydata()) == [0.1, 0.1]
        plt.close(fig)
