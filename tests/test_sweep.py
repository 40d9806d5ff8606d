import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest

import bayesprune as bp
from bayesprune.runs import results
from bayesprune.runs.sweeps import make_executor, stop_executor

BASE = bp.RunConfig(dataset="synthetic", epochs=1, fcn_hidden=(16, 8), bf_samples=64)


def test_grid_shapes_and_unpruned_once_per_seed():
    cfgs = bp.grid(BASE, methods=["none", "magnitude", "bayes-random"], sparsities=[0.5, 0.9], seeds=[0, 1])
    assert len(cfgs) == 2 * (1 + 2 + 2)
    assert len({c.key() for c in cfgs}) == len(cfgs)
    assert all(c.sparsity == 0.0 for c in cfgs if c.method == "none")


def test_sweep_runs_skips_and_stores_everything(tmp_path):
    cfgs = bp.grid(BASE, methods=["none", "random"], sparsities=[0.5], seeds=[0, 1])
    df = bp.sweep(cfgs, tmp_path, progress=False, log=lambda m: None)
    assert df.attrs["stats"] == {**df.attrs["stats"], "completed": 4, "skipped": 0, "failed": 0}
    files = sorted((tmp_path / "runs").glob("*.json"))
    assert {f.stem for f in files} == {c.key() for c in cfgs}
    rec = json.loads(files[0].read_text())
    assert {"config", "history", "test_accuracy", "final_sparsity", "seconds", "status"} <= set(rec)
    assert len(rec["history"]) == 1
    assert pd.read_csv(tmp_path / "results.csv").shape[0] == 4
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    messages = []
    df2 = bp.sweep(cfgs + cfgs[:1], tmp_path, progress=False, log=messages.append)
    assert df2.attrs["stats"]["skipped"] == 4 and df2.attrs["stats"]["completed"] == 0
    assert "4 already finished (skipped)" in messages[0]
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes  # not recomputed


def test_sweep_returns_the_requested_runs_not_the_whole_folder(tmp_path):
    # Notebook 04's case: the main grid, then an exercise's extra runs (other settings) in the same folder,
    # then the main grid again. Each call gets back exactly its own configs; results.csv lists them all.
    main = bp.grid(BASE, methods=["none", "random"], sparsities=[0.5], seeds=[0])
    extra = bp.grid(BASE.replace(regrow=True), methods=["random"], sparsities=[0.5, 0.9], seeds=[0])
    first = bp.sweep(main, tmp_path, progress=False, log=lambda m: None)
    assert set(first["key"]) == {c.key() for c in main}
    second = bp.sweep(extra, tmp_path, progress=False, log=lambda m: None)
    assert set(second["key"]) == {c.key() for c in extra} and second["regrow"].all()
    again = bp.sweep(main, tmp_path, progress=False, log=lambda m: None)
    assert sorted(again["key"]) == sorted(c.key() for c in main) and not again["regrow"].any()
    assert again.attrs["stats"]["skipped"] == len(main) and again.attrs["stats"]["completed"] == 0
    assert (again["test_accuracy"].tolist() == first.set_index("key").loc[again["key"], "test_accuracy"].tolist())
    stored = pd.read_csv(tmp_path / "results.csv")
    assert set(stored["key"]) == {c.key() for c in main + extra}
    part = bp.sweep(main[:1], tmp_path, progress=False, log=lambda m: None)  # a subset of what is stored
    assert list(part["key"]) == [main[0].key()]
    assert bp.table1(again[again.method != "none"]).shape[0] == 1  # one setting: summarize does not refuse


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path):
    good = BASE
    bad = BASE.replace(dataset="mnist", data_dir=str(tmp_path / "missing"))
    df = bp.sweep([bad, good], tmp_path / "s", progress=False, log=lambda m: None)
    assert df.attrs["stats"]["failed"] == 1 and df.attrs["stats"]["completed"] == 1
    row = df[df.status == "failed"].iloc[0]
    assert "mnist files not found" in row["error"]
    again = bp.sweep([bad, good], tmp_path / "s", progress=False, log=lambda m: None)
    assert again.attrs["stats"]["skipped"] == 2
    retry = bp.sweep([bad, good], tmp_path / "s", progress=False, retry_failed=True, log=lambda m: None)
    assert retry.attrs["stats"]["failed"] == 1 and retry.attrs["stats"]["skipped"] == 1


def _record(cfg, status="ok"):
    return {"version": results.RUN_FILE_VERSION, "key": cfg.key(), "config": cfg.to_dict(), "status": status,
            "error": "", "history": [], "test_accuracy": 0.5, "final_sparsity": 0.0, "seconds": 0.0}


def test_atomic_write_never_exposes_half_a_file(tmp_path, monkeypatch):
    from bayesprune.runs import fileio

    cfg = BASE
    target = results.run_path(tmp_path, cfg.key())
    target.parent.mkdir(parents=True)
    fileio.atomic_write_json(target, _record(cfg))

    def boom(fd):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(fileio.os, "fsync", boom)  # the new bytes are in the temp file, not yet renamed
    with pytest.raises(RuntimeError):
        fileio.atomic_write_json(target, _record(cfg, status="failed"))
    monkeypatch.undo()
    assert json.loads(target.read_text())["status"] == "ok"  # old content intact
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # temp file cleaned up
    # a leftover temp file or a damaged file is never read as a result
    (target.parent / ".zzz.json.123.tmp").write_text('{"key": "zzz"')
    (target.parent / "half.json").write_text('{"key": "half", "stat')
    assert set(results.load_runs(tmp_path)) == {cfg.key()}


@pytest.mark.slow
def test_process_pool_executor_path(tmp_path):
    cfgs = bp.grid(BASE, methods=["magnitude"], sparsities=[0.5, 0.9], seeds=[0])
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as ex:
        df = bp.sweep(cfgs, tmp_path, executor=ex, progress=False, threads_per_run=1, log=lambda m: None)
    assert df.attrs["stats"]["completed"] == 2
    inproc = bp.train(cfgs[0], progress=False)
    row = df[df.key == cfgs[0].key()].iloc[0]
    assert row["test_accuracy"] == pytest.approx(inproc.test_accuracy)  # same result in a worker


@pytest.mark.slow
def test_worker_pool_path_gives_the_in_process_results(tmp_path):
    cfgs = bp.grid(BASE, methods=["none", "magnitude"], sparsities=[0.5], seeds=[0, 1])
    executor = make_executor(2)
    try:
        df = bp.sweep(cfgs, tmp_path, executor=executor, progress=False, threads_per_run=1, log=lambda m: None)
    finally:
        stop_executor(executor, now=False)
    assert df.attrs["stats"]["completed"] == 4 and (df["status"] == "ok").all()
    for cfg in cfgs[:2]:
        row = df[df.key == cfg.key()].iloc[0]
        assert row["test_accuracy"] == pytest.approx(bp.train(cfg, progress=False).test_accuracy)


def _sweep_args(out):
    return ["sweep", "--dataset", "synthetic", "--epochs", "2", "--fcn-hidden", "64", "32", "--methods", "random",
            "magnitude", "--sparsities", "0.25", "50%", "0.75", "--seeds", "0", "1", "--out", str(out), "--no-report"]


@pytest.mark.slow
def test_sigkill_midway_then_resume_runs_everything_exactly_once(tmp_path, cli_run):
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "bayesprune", *_sweep_args(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    runs = out / "runs"
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [p for p in runs.glob("*.json")] if runs.is_dir() else []
        if len(done) >= 3 or proc.poll() is not None:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep finished before it could be killed; make the runs longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert 3 <= len(before) < 12
    for p in runs.glob("*.json"):
        json.loads(p.read_text())  # every file present is complete
    code, stdout, err = cli_run(*_sweep_args(out))  # the resume, in this process (a new one would only be slower)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["skipped"] == len(before)
    assert summary["completed"] == 12 - len(before) and summary["failed"] == 0
    after = sorted(q.name for q in runs.glob("*.json"))
    assert len(after) == 12 and len(set(after)) == 12
    for name, mtime in before.items():
        assert (runs / name).stat().st_mtime_ns == mtime  # finished runs were not recomputed
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 12 and df["key"].is_unique


def _hand_results():
    rows = []
    for seed, acc in enumerate([0.97, 0.99]):
        rows.append(dict(status="ok", dataset="mnist", model="fcn", method="none", sparsity=0.0, seed=seed,
                         test_accuracy=acc))
        for method, base in (("random", 0.90), ("bayes-random", 0.91), ("magnitude", 0.95), ("bayes-magnitude", 0.96)):
            for sp in (0.5, 0.9):
                rows.append(dict(status="ok", dataset="mnist", model="fcn", method=method, sparsity=sp,
                                 seed=seed, test_accuracy=base - sp / 10 + seed * 0.02))
    rows.append(dict(status="failed", dataset="mnist", model="fcn", method="random", sparsity=0.5, seed=9,
                     test_accuracy=np.nan))
    return pd.DataFrame(rows)


def test_summarize_on_a_hand_made_table():
    t = bp.table1(_hand_results())
    assert len(t) == 2
    r50 = t[t[("sparsity", "")] == 0.5].iloc[0]
    assert r50[("unpruned", "mean")] == pytest.approx(0.98)
    assert r50[("unpruned", "std")] == pytest.approx(np.std([0.97, 0.99], ddof=1))
    assert r50[("random", "mean")] == pytest.approx(0.86)  # (0.85 + 0.87) / 2; the failed run is ignored
    assert r50[("random", "n")] == 2
    assert r50[("bayes_magnitude", "mean")] == pytest.approx(0.92)
    assert r50[("magnitude", "paper")] == pytest.approx(0.9791)  # MNIST FCN 50 % in the paper
    assert r50[("unpruned", "paper")] == pytest.approx(0.9782)
    r90 = t[t[("sparsity", "")] == 0.9].iloc[0]
    assert r90[("bayes_random", "paper")] == pytest.approx(0.9657)
    md = bp.format_table1(t)
    # two seeds: no spread, the count instead; 0.18 pp from the paper is not marked, 11.7 pp is
    assert "| 0.9800 (2 seeds) (paper 0.9782) |" in md and "| mnist | fcn | 90% |" in md
    assert "| 0.8600 (2 seeds) (paper 0.9684) **†** |" in md
    assert "differs from the paper by more than 1 pp" in md


def test_the_paper_mark_counts_points_and_spread():
    assert not bp.analysis.report.differs_from_paper(0.975, 0.002, 5, 0.978)   # 0.3 pp, 1.5 std
    assert bp.analysis.report.differs_from_paper(0.970, 0.002, 5, 0.978)       # 0.8 pp but 4 std
    assert bp.analysis.report.differs_from_paper(0.960, 0.050, 5, 0.978)       # 1.8 pp, 0.36 std
    assert not bp.analysis.report.differs_from_paper(0.975, 0.0, 2, 0.978)     # two seeds: no spread to count
    assert not bp.analysis.report.differs_from_paper(0.5, 0.1, 5, float("nan"))  # no paper value
    assert bp.analysis.report.paper_mark(0.960, 0.050, 5, 0.978) == "†"        # more than 1 pp
    assert bp.analysis.report.paper_mark(0.970, 0.002, 5, 0.978) == "*"        # less, but beyond 2 std
    assert bp.analysis.report.paper_mark(0.975, 0.002, 5, 0.978) == ""


def test_summarize_without_paper_match_leaves_paper_empty():
    df = _hand_results().assign(dataset="digits")
    t = bp.table1(df)
    assert t[("magnitude", "paper")].isna().all()
    with pytest.raises(ValueError, match="no successful runs"):
        bp.table1(df.assign(status="failed"))


def test_report_files(tmp_path):
    cfgs = bp.grid(BASE, methods=["none", "magnitude"], sparsities=[0.5], seeds=[0])
    bp.sweep(cfgs, tmp_path, progress=False, log=lambda m: None)
    written = bp.write_report(tmp_path)
    for name in ("table1.md", "table1.csv", "accuracy_vs_sparsity.png", "test_curves_magnitude.png"):
        assert written[name].stat().st_size > 0


def test_summarize_refuses_to_average_different_settings():
    df = _hand_results().assign(regrow=False, epochs=3)
    bp.table1(df)  # one setting: fine
    df.loc[df.index[:3], "regrow"] = True
    with pytest.raises(ValueError, match="mix regrow"):
        bp.table1(df)


def test_std_bands_stay_within_what_an_accuracy_can_be():
    """A collapsed seed makes mean ± std pass 1 or 0; the figures cut the band there, never the mean."""
    from bayesprune.analysis.report import std_band

    mean, std = pd.Series([0.95, 0.05, 0.5]), pd.Series([0.2, 0.1, 0.1])
    low, high = std_band(mean, std, upper=1.0)
    assert low.tolist() == pytest.approx([0.75, 0.0, 0.4]) and high.tolist() == pytest.approx([1.0, 0.15, 0.6])
    _, loss_high = std_band(pd.Series([2.0]), pd.Series([0.5]))  # a loss has no upper bound
    assert loss_high.tolist() == [2.5]
