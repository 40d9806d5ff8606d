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
