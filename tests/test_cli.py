"""The CLI, in-process (``cli.main``), plus one real ``python -m bayesprune`` for the entry point itself."""

import json
import subprocess
import sys

import pytest


def test_default_run_with_no_flags_prints_json_last(tmp_path, cli_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli_run()
    lines = out.strip().splitlines()
    assert code == 0, err
    summary = json.loads(lines[-1])
    assert summary["dataset"] == "digits" and summary["method"] == "bayes-magnitude"
    assert summary["test_accuracy"] >= 0.90
    assert abs(summary["final_sparsity"] - 0.90) <= 0.005
    assert {"test_accuracy", "final_sparsity", "seconds"} <= set(summary)
    assert sum(line.startswith("epoch ") for line in lines) == 25


@pytest.mark.slow
def test_train_with_flags_and_out_through_the_real_entry_point(tmp_path):
    """The one subprocess test here: ``python -m bayesprune`` itself (``__main__``, exit status, stdout)."""
    p = subprocess.run([sys.executable, "-m", "bayesprune", "train", "--dataset", "synthetic", "--epochs", "2",
                        "--method", "bayes-random", "--sparsity", "0.5", "--fcn-hidden", "16", "8",
                        "--bf-samples", "none", "--regrow", "--out", str(tmp_path / "o"), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["method"] == "bayes-random" and abs(summary["final_sparsity"] - 0.5) < 0.01
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert cfg["fcn_hidden"] == [16, 8] and cfg["bf_samples"] is None and cfg["regrow"] is True
    for name in ("history.csv", "summary.json", "curves.png"):
        assert (tmp_path / "o" / name).exists()


@pytest.mark.parametrize("args,needle", [
    (["train", "--sparsity", "1.5"], "RunConfig.sparsity=1.5"),
    (["train", "--beta", "-1"], "RunConfig.beta=-1.0"),
    (["train", "--method", "bogus"], "invalid choice: 'bogus'"),
    (["train", "--epochs", "two"], "invalid int value"),
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent/x"], "mnist files not found"),
])
def test_bad_flags_exit_2_with_the_reason_and_no_traceback(tmp_path, cli_run, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli_run(*args)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written before the input was checked


def test_the_bayesian_preset_trains_and_the_evidence_chooses_where_it_stops(tmp_path, cli_run):
    """``train --preset bayesian``: the recipe lands in config.json, and the gate both keeps and refuses steps.

    Six epochs with the ramp ending at epoch 6 propose 57 %, 87 %, 97 %, 99 % on digits: the first is kept by a
    wide margin, the steeper ones are refused (log BF in the hundreds of nats below 0).
    """
    import pandas as pd

    out = tmp_path / "run"
    code, stdout, err = cli_run("train", "--preset", "bayesian", "--epochs", "6", "--prune-end-epoch", "6",
                                "--out", str(out))
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["method"], cfg["train_prior"], cfg["final_prune"]) == ("bayes-obs", "map", "gate")
    assert (cfg["bayes_factor"], cfg["gate"], cfg["schedule"], cfg["epochs"]) == ("laplace", "immediate", "gradual", 6)
    hist = pd.read_csv(out / "history.csv")
    proposed = hist[hist["candidate_sparsity"].notna()]
    accepted, refused = proposed[proposed["pruned"]], proposed[~proposed["pruned"]]
    assert len(accepted) >= 1 and len(refused) >= 1
    assert not hist["forced"].any()  # final_prune=gate: no step is forced, the last epoch included
    assert (accepted["log_bf"] > 0).all() and (refused["log_bf"] <= 0).all()  # beta = 1: the threshold is 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    # the run ends where the gate last said yes, below the preset's 99 % ceiling
    assert summary["final_sparsity"] == pytest.approx(accepted["candidate_sparsity"].iloc[-1], abs=1e-3)
    assert 0 < summary["final_sparsity"] < cfg["sparsity"]
    assert summary["pruning_steps_accepted"] == len(accepted)
    assert "accepted" in stdout and "refused" in stdout


def test_an_unknown_preset_exits_2_naming_the_allowed_ones(cli_run):
    code, _, err = cli_run("train", "--preset", "bayes")
    assert code == 2 and "invalid choice: 'bayes'" in err and "'bayesian'" in err and "'paper'" in err


def test_a_sweep_under_the_bayesian_preset(tmp_path, cli_run):
    """``sweep --preset bayesian``: by default the preset's own method at its ceiling; named methods and targets
    replace those two and keep the rest of the recipe."""
    import pandas as pd

    code, stdout, err = cli_run("sweep", "--preset", "bayesian", "--epochs", "3", "--seeds", "0", "1",
                                "--out", str(tmp_path / "s"), "--no-report")
    assert code == 0, err
    df = pd.read_csv(tmp_path / "s" / "results.csv")
    assert len(df) == 2 and (df["status"] == "ok").all() and sorted(df["seed"]) == [0, 1]
    assert set(df["method"]) == {"bayes-obs"} and set(df["sparsity"]) == {0.99}
    assert set(df["bayes_factor"]) == {"laplace"} and set(df["final_prune"]) == {"gate"}
    code, stdout, err = cli_run("sweep", "--preset", "bayesian", "--epochs", "3", "--methods", "magnitude",
                                "--sparsities", "50%", "--out", str(tmp_path / "m"), "--no-report")
    assert code == 0, err
    row = pd.read_csv(tmp_path / "m" / "results.csv").iloc[0]
    assert (row["method"], row["sparsity"], row["train_prior"], row["schedule"]) == ("magnitude", 0.5, "map", "gradual")


def test_a_sweep_without_a_preset_keeps_the_papers_grid(tmp_path, cli_run):
    import pandas as pd

    tiny = ("--dataset", "synthetic", "--epochs", "1", "--fcn-hidden", "8", "--no-report")
    code, _, err = cli_run("sweep", *tiny, "--methods", "magnitude", "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert sorted(pd.read_csv(tmp_path / "r" / "results.csv")["sparsity"]) == [0.25, 0.5, 0.75, 0.9, 0.99]
    code, _, err = cli_run("sweep", *tiny, "--sparsities", "0.5", "--out", str(tmp_path / "m"))
    assert code == 0, err
    df = pd.read_csv(tmp_path / "m" / "results.csv")
    assert set(df["method"]) == {"none", "random", "bayes-random", "magnitude", "bayes-magnitude"}
    assert set(df["schedule"]) == {"one-shot"} and set(df["bayes_factor"]) == {"posterior"}
