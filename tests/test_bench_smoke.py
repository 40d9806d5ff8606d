"""A tiny run of the benchmark (fake MNIST files); timings are reported, never asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["ceiling_gflops"]["matmul_2048"] > 0
    for model in ("fcn", "cnn"):
        r = report["models"][model]
        old = {"B0_bayesprune_none_old_conv"} if model == "cnn" else set()
        assert set(r["seconds"]) == {"A_tutorial_dataloader", "B_bayesprune_none", "C_bayesprune_bayes_magnitude90",
                                     "D_torch_prune_hook", "D_bayesprune_masks"} | old
        assert all(v["median"] > 0 for v in r["seconds"].values())
        assert r["macs_per_sample"] > 0 and r["B_gflops"] > 0
    assert report["models"]["cnn"]["B0_gflops"] > 0 and report["models"]["cnn"]["ratios"]["B0_over_B"] > 0
    assert report["ceiling_gflops"]["conv2d_large_fwd"] > 0 and report["ceiling_gflops"]["conv2d_large_fwd_bwd"] > 0
    assert len(report["loadavg_start"]) == 3 and len(report["loadavg_end"]) == 3
    assert "A/B" in p.stdout and "C/B" in p.stdout and "B0/B" in p.stdout
