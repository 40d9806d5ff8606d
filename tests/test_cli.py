import json
import subprocess
import sys

import pytest


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bayesprune", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_default_run_with_no_flags_prints_json_last(tmp_path):
    p = _run(cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["dataset"] == "digits" and summary["method"] == "bayes-magnitude"
    assert summary["test_accuracy"] >= 0.90
    assert abs(summary["final_sparsity"] - 0.90) <= 0.005
    assert {"test_accuracy", "final_sparsity", "seconds"} <= set(summary)
    assert sum(line.startswith("epoch ") for line in lines) == 25


def test_train_with_flags_and_out(tmp_path):
    p = _run("train", "--dataset", "synthetic", "--epochs", "2", "--method", "bayes-random",
             "--sparsity", "0.5", "--fcn-hidden", "16", "8", "--bf-samples", "none", "--regrow",
             "--out", str(tmp_path / "o"), "--quiet")
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
def test_bad_flags_exit_nonzero_without_traceback(args, needle):
    p = _run(*args)
    assert p.returncode != 0
    assert needle in p.stderr
    assert "Traceback" not in p.stderr
