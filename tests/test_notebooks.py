"""Execute every notebook with papermill (small parameters) and check what it computed."""

import json
import math
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.notebook

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))


def _check_01(r, p):
    assert 0.5 < r["dense_test_acc"] <= 1.0
    one = {(x["strategy"], x["target"]): x for x in r["one_shot"]}
    assert one[("magnitude", 0.9)]["test_acc"] >= one[("random", 0.9)]["test_acc"]
    assert abs(one[("magnitude", 0.9)]["measured_sparsity"] - 0.9) < 0.005
    for row in r["retrain"]:
        assert abs(row["sparsity_after_retrain"] - row["sparsity"]) < 0.005  # masks held through retraining
    assert r["torch_prune_same"] is True


def _check_02(r, p):
    for s in r["crossovers"].values():
        assert s > 0
    for row in r["scan"]:
        assert math.isclose(row["log_bf"], row["delta_log_likelihood"] + row["delta_log_prior"], rel_tol=1e-9, abs_tol=1e-6)
        assert row["delta_log_prior"] > 0 and row["delta_log_likelihood"] < 0  # pruning gains prior, costs fit
    mean_rows = [x for x in r["sum_vs_mean"] if x["likelihood"] == "mean"]
    assert mean_rows and all(x["log_bf"] > 0 for x in mean_rows)  # with the mean, the prior decides
    sizes = {x["samples"] for x in r["samples"]}
    assert 64 in sizes and len(sizes) == 2
    assert math.isfinite(r["slider"]["log_bf"])


def _check_03(r, p):
    labels = [x["index"] for x in r["summary"]]
    assert len(labels) == len(p["compare_methods"])
    for hist in r["histories"].values():
        assert len(hist) == p["epochs"]
    bayes = next(x for x in r["summary"] if x["index"].startswith("bayes-magnitude"))
    assert abs(bayes["final sparsity"] - p["sparsity"]) <= 0.005
    unpruned = next(x for x in r["summary"] if x["index"].startswith("none"))
    assert unpruned["final sparsity"] < 0.01
    assert "done" in r["status"] and "error" not in r["status"]


def _check_04(r, p):
    n = len(p["seeds"]) * (1 + 4 * len(p["sparsities"]))
    assert r["stats"]["total"] == n and r["stats"]["completed"] == n and r["stats"]["failed"] == 0
    assert len(r["table"]) == len(p["sparsities"])
    assert len(list(Path(p["out_dir"], "runs").glob("*.json"))) == n
    for row in r["results"]:
        assert row["status"] == "ok" and abs(row["final_sparsity"] - row["sparsity"]) <= 0.005


def _check_05(r, p):
    import pandas as pd

    fcn = pd.DataFrame(r["fcn"])
    assert set(fcn["width"]) == set(p["widths"]) and set(fcn["rate"]) == set(p["rates"])
    assert fcn.groupby(["width", "rate", "rescale"]).size().min() == p["n_masks"]
    assert (fcn["distance"] > 0).all()
    assert set(pd.DataFrame(r["cnn"])["width"]) == set(p["cnn_widths"])
    bound = pd.DataFrame(r["bound"])
    assert list(bound["layer"]) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert ((bound["max_fraction"] >= 0) & (bound["max_fraction"] < 1)).all()
    assert set(pd.DataFrame(r["independence"])["weights"]) == {"fresh (independent)", "trained (correlated)"}
    assert len(r["widget"]) == 30


def _check_06(r, p):
    import pandas as pd

    t = pd.DataFrame(r["tickets"])
    assert set(t["start"]) == {"rewind", "reinit", "finetune"}
    assert len(t) == len(p["seeds"]) * len(p["sparsities"]) * 3
    assert ((t["measured_sparsity"] - t["sparsity"]).abs() < 0.01).all()  # masks held through retraining
    g = pd.DataFrame(r["gate"])
    assert set(g["mask"]) == {"bayes-gated mask", "one-shot magnitude mask"}
    assert ((g["jaccard_kept"] > 0) & (g["jaccard_kept"] <= 1)).all()


SMALL = {
    "01_pruning_basics.ipynb": ({"epochs": 3, "retrain_epochs": 1, "sparsities": [0.0, 0.5, 0.9]}, _check_01),
    "02_bayes_factor.ipynb": ({"epochs": 3, "sparsities": [0.5, 0.9], "sigmas": [0.03, 0.3],
                               "sample_sizes": [64, None], "repeats": 2}, _check_02),
    "03_bayesian_pruning_dashboard.ipynb": ({"epochs": 2, "auto_train": True, "sparsity": 0.9,
                                             "compare_methods": ["none", "bayes-magnitude"]}, _check_03),
    "04_sparsity_sweep.ipynb": ({"epochs": 1, "seeds": [0], "sparsities": [0.5, 0.9]}, _check_04),
    "05_probabilistic_pruning_theory.ipynb": ({"n_inputs": 64, "widths": [16, 64], "cnn_widths": [4], "rates": [0.5],
                                               "n_masks": 4, "trained_epochs": 1}, _check_05),
    "06_lottery_tickets.ipynb": ({"epochs": 2, "sparsities": [0.5, 0.9], "seeds": [0]}, _check_06),
}


def test_every_notebook_has_small_parameters_here():
    assert NOTEBOOKS, "no notebooks found"
    assert set(NOTEBOOKS) == set(SMALL), "add small papermill parameters for every notebook"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean(name):
    nb = nbformat.read(NB_DIR / name, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{name} has committed outputs"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    assert "what you will learn" in text and "summary" in text and "exercises" in text


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_under_papermill(name, tmp_path):
    import papermill as pm

    params, check = SMALL[name]
    params = dict(params, dataset="digits", results_path=str(tmp_path / "results.json"))
    if name.startswith("04"):
        params["out_dir"] = str(tmp_path / "sweep")
    try:
        pm.execute_notebook(str(NB_DIR / name), str(tmp_path / name), parameters=params, kernel_name="python3",
                            cwd=str(tmp_path), progress_bar=False)
    except pm.PapermillExecutionError as exc:  # the failing cell's own error, not papermill's wrapper
        pytest.fail(f"{name}: cell {exc.exec_count} raised {exc.ename}: {exc.evalue}\n{''.join(exc.traceback[-3:])}")
    check(json.loads((tmp_path / "results.json").read_text()), params)
