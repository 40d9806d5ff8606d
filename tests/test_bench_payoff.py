"""Tiny runs of the payoff benchmark and the sensitivity study on digits; timings are reported, never asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--dataset", "digits", *args],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.mark.slow
def test_payoff_benchmark_smoke(tmp_path):
    _run("bench_payoff.py", "--epochs", "1", "--reps", "2", "--min-seconds", "0", "--threads", "1", "--out", str(tmp_path))
    report = json.loads((tmp_path / "bench_payoff_1thread.json").read_text())
    assert len(report["latency"]) == 3 * len(report["sparsities"]) * len(report["batches"])
    assert all(x["reps"] == 2 and x["median"] > 0 for x in report["latency"])
    assert len(report["loadavg_per_rep"]) == 2 and report["matmul_gflops_min"] > 0
    assert set(report["crossover_csr_vs_dense"]) == {"1", "256"}
    mag = [s for s in report["sizes"] if s["pruning"] == "magnitude"]
    assert mag[-1]["sparse_bytes"] < mag[-1]["dense_gzip_bytes"] < mag[-1]["dense_bytes"]
    md = (tmp_path / "bench_payoff_1thread.md").read_text()
    assert "Crossover, batch 256" in md and f"{mag[-1]['times_smaller']:.1f}×" in md
    rebuilt = tmp_path / "again.json"  # --markdown-only rewrites the table from the JSON alone, the same
    rebuilt.write_text(json.dumps(report))
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_payoff.py"), "--markdown-only", str(rebuilt)],
                   check=True, cwd=ROOT, timeout=300)
    assert rebuilt.with_suffix(".md").read_text() == md


@pytest.mark.slow
def test_sensitivity_study_smoke(tmp_path):
    _run("sensitivity_study.py", "--epochs", "1", "--gate-epochs", "2", "--gate-sigmas", "0.1", "--scan-samples", "300",
         "--sparsities", "0.5", "0.9", "--out", str(tmp_path))
    report = json.loads((tmp_path / "sensitivity_digits_fcn.json").read_text())
    assert len(report["scan"]) == 2 * len(report["layers"]) and len(report["gated"]) == 1
    assert [s["max_drop"] for s in report["suggestions"]] == sorted(s["max_drop"] for s in report["suggestions"])
    kept = [s["kept"] for s in report["suggestions"]]
    assert kept == sorted(kept, reverse=True)  # a looser threshold never keeps more weights
    assert "Bayes-factor gate" in (tmp_path / "sensitivity_digits_fcn.md").read_text()
