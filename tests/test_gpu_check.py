"""benchmarks/gpu_check.py in its CI mode (--device cpu --quick): every step runs and lands in one folder."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_quick_on_cpu_runs_every_step_and_resumes(tmp_path):
    out = tmp_path / "gc"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick", "--out", str(out),
           "--budget", "400"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert {k: v["status"] for k, v in summary["steps"].items()} == {
        "env": "ok", "device_tests": "ok", "epochs": "ok", "table1_digits_cnn": "ok"}
    assert "passed" in (out / "device_tests.log").read_text()
    bench = json.loads((out / "bench_lockstep_cpu.json").read_text())
    assert set(bench["models"]) == {"fcn", "cnn"}
    assert all(m["lockstep"]["4"]["rate"] > 0 and m["sequential"]["rate"] > 0 for m in bench["models"].values())
    runs = pd.read_csv(out / "table1_digits_cnn" / "results.csv")
    assert len(runs) == 10 and (runs["status"] == "ok").all()  # none x 2 seeds + 4 methods x 2 seeds
    assert (out / "table1_digits_cnn" / "table1.md").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.returncode == 0 and again.stdout.count("ok before, skipped") == 3, again.stdout


@pytest.mark.slow
def test_gpu_check_refuses_cuda_where_there_is_none(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "g")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 2 and "sees no CUDA device" in p.stderr
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["steps"]["env"]["status"] == "failed"
