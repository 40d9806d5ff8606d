"""Nothing lost on a full disk, a NaN, Ctrl-C, SIGTERM or SIGKILL; bad inputs caught before the first epoch.

Each test replays one failure that once lost data or failed late, and checks what is
on disk (byte for byte) and which processes are left afterwards.  The subprocess
tests run the real CLI; they are marked ``slow``.
"""

import errno
import fcntl
import json
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import bayesprune as bp
from bayesprune.engine import training
from bayesprune.runs import fileio, runio, sweeps

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--dataset", "synthetic", "--epochs", "2", "--fcn-hidden", "16", "8", "--bf-samples", "64",
         "--quiet"]
BASE = bp.RunConfig(dataset="synthetic", epochs=1, fcn_hidden=(16, 8), bf_samples=64)


# ------------------------------------------------------------------ helpers
def _env(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep), MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def _cli_cmd(*args):
    return [sys.executable, "-m", "bayesprune", *args]


def _snapshot(folder: Path) -> dict:
    """Every file below ``folder``: its bytes (or its link target) and mode."""
    snap = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            snap[rel] = ("link", os.readlink(p))
        elif p.is_file():
            snap[rel] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        else:
            snap[rel] = ("dir", stat.S_IMODE(p.stat().st_mode))
    return snap


def _hidden(parent: Path) -> list:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _strict_json(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def a_run(tmp_path_factory) -> Path:
    """One finished run, trained once per module: the tests copy it instead of training it again."""
    from bayesprune.ui import cli

    out = tmp_path_factory.mktemp("a_run") / "run"
    assert cli.main([*TRAIN, "--out", str(out)]) == 0
    return out


def _existing_run(a_run: Path, out: Path) -> dict:
    """A copy of ``a_run`` at ``out`` (bytes and modes), and its snapshot: what must survive."""
    shutil.copytree(a_run, out)
    return _snapshot(out)


# /proc: which processes are left (Linux; psutil is not a dependency)
def _proc_table() -> dict:
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(d)] = (int(fields[1]), fields[0], fields[19])  # ppid, state, start time
    return table


def _descendants(pid: int) -> dict:
    """{pid: start time} of every process below ``pid``."""
    table, found, todo = _proc_table(), {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, _, start) in table.items():
            if ppid == parent and child not in found:
                found[child] = start
                todo.append(child)
    return found


def _running(procs: dict) -> list:
    """The processes of ``procs`` still running (zombies and reused pids do not count)."""
    table = _proc_table()
    return [p for p, start in procs.items() if p in table and table[p][2] == start and table[p][1] not in "ZX"]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _wait_until(predicate, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


# ------------------------------------------------------------------ runs: refuse, overwrite, .prev
def test_an_existing_run_is_refused_without_overwrite_and_kept_as_prev_with_it(tmp_path, cli_run, a_run):
    out = tmp_path / "run"
    old = _existing_run(a_run, out)
    code, stdout, err = cli_run(*TRAIN, "--out", str(out))
    assert code == 2 and "already holds a run" in err and "--overwrite" in err and "run.prev" in err
    assert "epoch" not in stdout  # refused before the first epoch
    assert _snapshot(out) == old
    code, _, err = cli_run(*TRAIN, "--seed", "1", "--out", str(out), "--overwrite")
    assert code == 0, err
    assert f"previous run is kept as {out}.prev" in err
    assert _snapshot(tmp_path / "run.prev") == old  # byte for byte
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert _hidden(tmp_path) == []
    # a second overwrite replaces the run before last, never anything else
    code, _, _ = cli_run(*TRAIN, "--seed", "2", "--out", str(out), "--overwrite")
    assert code == 0
    assert json.loads((tmp_path / "run.prev" / "config.json").read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run.prev"]


def test_overwrite_refuses_to_delete_a_prev_that_is_not_a_run(tmp_path, cli_run, a_run):
    out = tmp_path / "run"
    old = _existing_run(a_run, out)
    (tmp_path / "run.prev").mkdir()
    (tmp_path / "run.prev" / "thesis.tex").write_text("precious")
    code, _, err = cli_run(*TRAIN, "--out", str(out), "--overwrite")
    assert code == 2 and "run.prev" in err and "not a bayesprune run" in err
    assert _snapshot(out) == old and (tmp_path / "run.prev" / "thesis.tex").read_text() == "precious"


def test_a_diverging_run_never_mixes_with_an_existing_run(tmp_path, cli_run, monkeypatch, a_run):
    out = tmp_path / "run"
    old = _existing_run(a_run, out)
    # without --overwrite: refused before training
    code, _, err = cli_run(*TRAIN, "--lr", "1e12", "--out", str(out))
    assert code == 2 and _snapshot(out) == old
    # --lr 1e12 diverges in the first epoch: nothing to save, the old run stays exactly where it was
    code, stdout, err = cli_run(*TRAIN, "--lr", "1e12", "--out", str(out), "--overwrite")
    assert code == 1 and "diverged" in json.loads(stdout.splitlines()[-1])["status"]
    assert "nothing saved" in err
    assert _snapshot(out) == old and not (tmp_path / "run.prev").exists() and _hidden(tmp_path) == []
    # a run that diverges in epoch 2 is saved whole (its 1 finished epoch), the old one kept whole as .prev
    real, calls = training.train_epoch, []

    def nan_in_epoch_2(*args, **kwargs):
        calls.append(1)
        loss, acc = real(*args, **kwargs)
        return (float("nan") if len(calls) == 2 else loss), acc

    monkeypatch.setattr(training, "train_epoch", nan_in_epoch_2)
    code, _, err = cli_run(*TRAIN, "--out", str(out), "--overwrite")
    assert code == 1, err
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["epochs"] == 1
    assert (out / "history.csv").read_text().count("\n") == 2  # header + 1 epoch, not the old history
    assert _snapshot(tmp_path / "run.prev") == old


@pytest.mark.parametrize("victim", ["history.csv", "summary.json", "model.pt", "swap"])
def test_a_full_disk_at_any_write_leaves_the_previous_run_byte_identical(tmp_path, cli_run, monkeypatch, victim, a_run):
    out = tmp_path / "run"
    old = _existing_run(a_run, out)
    before_last = _existing_run(a_run, tmp_path / "run.prev")  # a run before last: it must survive a failed swap
    (tmp_path / "run.prev" / "history.csv").write_text("epoch\n1\n")  # (bytes that differ from the run's)
    before_last = _snapshot(tmp_path / "run.prev")
    real_write, real_rename = runio.write_new, os.rename

    def write_new(path, data):
        if Path(path).name == victim:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data)

    def rename(src, dst):  # the last rename of the swap (temp folder -> run) fails
        if Path(dst) == out and ".tmp" in Path(src).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_rename(src, dst)

    monkeypatch.setattr(runio, "write_new", write_new)
    monkeypatch.setattr(runio.os, "rename", rename)
    code, _, err = cli_run(*TRAIN, "--seed", "3", "--out", str(out), "--overwrite")
    assert code == 1
    assert "could not save the run" in err and "No space left on device" in err and "Traceback" not in err
    if victim != "swap":
        assert victim in err  # names the file
    assert _snapshot(out) == old
    assert _snapshot(tmp_path / "run.prev") == before_last
    assert _hidden(tmp_path) == []  # no temporary folder, no lock file left


def test_a_full_disk_at_the_plot_keeps_the_saved_run(tmp_path, cli_run, monkeypatch, a_run):
    """The plot is drawn after the commit: when it cannot be written, the run is saved without it."""
    out = tmp_path / "run"
    old = _existing_run(a_run, out)

    def atomic_write_bytes(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(runio, "atomic_write_bytes", atomic_write_bytes)
    code, _, err = cli_run(*TRAIN, "--seed", "3", "--out", str(out), "--overwrite")
    assert code == 0, err
    assert "saved ok run (2 epochs)" in err and "without its plot (curves.png)" in err and "No space left" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(runio.REQUIRED_RUN_FILES + ("model_sparse.pt",))
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    assert _snapshot(tmp_path / "run.prev") == old and _hidden(tmp_path) == []


@pytest.mark.slow
def test_a_real_full_disk_with_a_file_size_limit(tmp_path, a_run):
    """RLIMIT_FSIZE makes the kernel refuse (EFBIG) any write past 4 KiB: model.pt cannot be written."""
    out = tmp_path / "run"
    old = _existing_run(a_run, out)
    limit = 4096
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "from bayesprune.ui.cli import main; sys.exit(main(sys.argv[1:]))")
    for target in (out, tmp_path / "fresh"):
        p = subprocess.run([sys.executable, "-c", code, *TRAIN, "--dataset", "digits", "--seed", "5",
                            "--out", str(target), "--overwrite"], capture_output=True, text=True, timeout=600,
                           env=_env())
        assert p.returncode == 1, p.stderr
        assert "File too large" in p.stderr and "model.pt" in p.stderr and "Traceback" not in p.stderr
        assert json.loads(p.stdout.splitlines()[-1])["status"] == "ok"  # trained; only saving failed
    assert _snapshot(out) == old
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "run.prev").exists()
    assert _hidden(tmp_path) == []


def _maybe_tiny_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return False
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_real_full_disk_on_a_tiny_tmpfs(tmp_path, cli_run, request):
    """Where we may mount (root), a 256 KiB tmpfs gives a real ENOSPC; elsewhere this test skips."""
    disk = tmp_path / "disk"
    if not _maybe_tiny_tmpfs(disk, "256k"):
        pytest.skip("needs root and mount to make a tiny tmpfs")
    a_run = request.getfixturevalue("a_run")  # trained only where the test can run
    try:
        out = disk / "run"
        old = _existing_run(a_run, out)
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # fill the disk ...
        try:
            while os.write(fd, b"\0" * 1024):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        os.truncate(disk / "filler", max(0, (disk / "filler").stat().st_size - 12 * 1024))  # ... but 3 pages
        code, _, err = cli_run(*TRAIN, "--seed", "9", "--out", str(out), "--overwrite")
        assert code in (1, 2) and "No space left on device" in err and "Traceback" not in err
        assert _snapshot(out) == old and not (disk / "run.prev").exists()
        assert _hidden(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# ------------------------------------------------------------------ Ctrl-C and SIGTERM during train --out
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_the_finished_epochs_marked_interrupted(tmp_path, cli_run, monkeypatch, sig, code):
    out = tmp_path / "run"
    real_epoch, calls = training.train_epoch, []

    def epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(sig)  # arrives during epoch 3
        return real_epoch(*args, **kwargs)

    real_write, writes = runio.write_new, []

    def write_new(path, data):  # a second signal while saving is ignored: the save completes
        writes.append(path)
        if len(writes) == 2:
            signal.raise_signal(sig)
        return real_write(path, data)

    monkeypatch.setattr(training, "train_epoch", epoch)
    monkeypatch.setattr(runio, "write_new", write_new)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # SIG_IGN under nohup
    got, stdout, err = cli_run(*TRAIN, "--epochs", "5", "--out", str(out))
    assert got == code, err
    assert "interrupted" in err and "saved interrupted run (2 epochs)" in err
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs"] == 2
    assert json.loads(stdout.splitlines()[-1])["status"] == "interrupted"
    assert (out / "model.pt").stat().st_size > 0 and _hidden(tmp_path) == []
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored


def _epoch_line(proc) -> int:
    """The epoch of the next line the process prints (0 if it is not an epoch line)."""
    m = re.match(r"epoch\s+(\d+)/", proc.stdout.readline())
    return int(m.group(1)) if m else 0


@pytest.mark.slow
@linux_only
def test_ctrl_c_and_sigkill_of_a_real_train_process(tmp_path):
    """SIGINT to a real ``train --out``: exit 130, finished epochs saved.  SIGKILL: the old run untouched,
    the dead writer's temporary folder removed by the next run."""
    out = tmp_path / "run"
    cmd = _cli_cmd("train", "--dataset", "digits", "--epochs", "1000", "--fcn-hidden", "16", "8", "--out", str(out))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    _wait_until(lambda: _epoch_line(proc) >= 2, 600, "epoch 2")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 2 <= summary["epochs"] < 1000
    assert (out / "history.csv").read_text().count("\n") == summary["epochs"] + 1
    old = _snapshot(out)
    proc = subprocess.Popen([*cmd, "--overwrite"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    _wait_until(lambda: _epoch_line(proc) >= 1, 600, "epoch 1")
    proc.kill()
    proc.communicate()
    assert _snapshot(out) == old
    leftovers = _hidden(tmp_path)  # the killed writer's private folder and its (released) lock file
    assert len(leftovers) == 2 and leftovers[0].endswith(".tmp") and leftovers[1].endswith(".bayesprune.lock")
    runio.RunFolder.open(out, BASE, overwrite=True).discard()  # the next run to --out cleans up after it
    assert _hidden(tmp_path) == []


# ------------------------------------------------------------------ where runs may be written
def test_symlinks_planted_in_the_output_are_never_followed(tmp_path, cli_run, a_run):
    out = tmp_path / "run"
    _existing_run(a_run, out)
    victim_file, victim_dir = tmp_path / "victim.txt", tmp_path / "victim_dir"
    victim_file.write_text("do not touch")
    victim_dir.mkdir()
    (victim_dir / "keep.txt").write_text("keep")
    for name in ("model.pt", "history.csv", "curves.png"):  # summary.json (the stamp) stays real: still a run
        (out / name).unlink()
        (out / name).symlink_to(victim_file)
    (out / "sub").symlink_to(victim_dir)
    for seed in ("1", "2"):  # the second overwrite deletes the first's .prev, planted links and all
        code, _, err = cli_run(*TRAIN, "--seed", seed, "--out", str(out), "--overwrite")
        assert code == 0, err
        assert not (out / "model.pt").is_symlink()
    assert victim_file.read_text() == "do not touch"
    assert sorted(p.name for p in victim_dir.iterdir()) == ["keep.txt"]
    # a .prev that is a link, or a run whose summary.json is one, is not the package's: refused, untouched
    shutil.rmtree(tmp_path / "run.prev")
    (tmp_path / "run.prev").symlink_to(victim_dir)
    code, _, err = cli_run(*TRAIN, "--out", str(out), "--overwrite")
    assert code == 2 and "run.prev" in err and "not a bayesprune run" in err
    (tmp_path / "run.prev").unlink()
    real = (out / "summary.json").read_bytes()
    (out / "summary.json").unlink()
    (tmp_path / "elsewhere.json").write_bytes(real)
    (out / "summary.json").symlink_to(tmp_path / "elsewhere.json")
    before = _snapshot(out)
    code, _, err = cli_run(*TRAIN, "--out", str(out), "--overwrite")
    assert code == 2 and "not a bayesprune run" in err
    assert _snapshot(out) == before and victim_file.read_text() == "do not touch"
    assert sorted(p.name for p in victim_dir.iterdir()) == ["keep.txt"]
    # --out itself a symlink: refused before training
    (tmp_path / "link").symlink_to(victim_dir, target_is_directory=True)
    code, _, err = cli_run(*TRAIN, "--out", str(tmp_path / "link"))
    assert code == 2 and "symbolic link" in err


@pytest.mark.parametrize("case", ["file", "read-only", "no-permission", "mkdtemp-denied", "dot"])
def test_a_bad_output_location_fails_before_the_first_epoch(tmp_path, cli_run, monkeypatch, case):
    target = tmp_path / "out"
    if case == "file":
        target.write_text("a file")
        needle = "exists and is not a folder"
    elif case == "dot":
        target = Path(".")
        needle = "names no folder"
    elif case in ("read-only", "no-permission"):
        parent = tmp_path / "locked"
        parent.mkdir()
        parent.chmod(0o555 if case == "read-only" else 0o000)
        target = parent / "run"
        needle = "no permission to write"
        if os.geteuid() == 0:  # root ignores permission bits: make the kernel's answer the usual one
            real_access = os.access
            monkeypatch.setattr(runio.os, "access", lambda p, m: False if Path(p) == parent else real_access(p, m))
    else:
        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(runio.tempfile, "mkdtemp", denied)
        needle = "Permission denied"
    try:
        code, stdout, err = cli_run(*TRAIN, "--out", str(target))
    finally:
        if case in ("read-only", "no-permission"):
            parent.chmod(0o755)
    assert code == 2 and needle in err and "Traceback" not in err
    assert "epoch" not in stdout and stdout == ""


def test_file_modes_follow_the_umask_and_json_is_standard(tmp_path, monkeypatch):
    old_mask = os.umask(0o027)
    try:
        cfg = BASE.replace(method="bayes-magnitude", epochs=2, data_dir=tmp_path / "pathlike")  # a Path is fine
        res = bp.train(cfg, progress=False)
        out = bp.save_run(res, tmp_path / "run")
        bp.sweep([BASE.replace(method="none", sparsity=0.0)], tmp_path / "sweep", progress=False, log=lambda m: None)
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    files = [*out.iterdir(), *(tmp_path / "sweep" / "runs").glob("*.json"), tmp_path / "sweep" / "results.csv"]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f
    cfg_json = _strict_json((out / "config.json").read_text())
    assert cfg_json["data_dir"] == str(tmp_path / "pathlike")
    _strict_json((out / "summary.json").read_text())
    rec = _strict_json(next((tmp_path / "sweep" / "runs").glob("*.json")).read_text())
    assert rec["history"][0]["log_bf"] is None  # the unpruned epoch's NaN is written as null
    assert fileio.dumps({"x": float("nan"), "y": float("inf")}) == '{"x": null, "y": null}'


# ------------------------------------------------------------------ bad values: exit 2, named, before training
@pytest.mark.parametrize("args,needle", [
    (["train", "--prior-sigma", "1e-200"], "RunConfig.prior_sigma=1e-200"),
    (["train", "--prior-mu", "1e300"], "RunConfig.prior_mu=1e+300"),
    (["train", "--seed", str(2**64)], "RunConfig.seed=18446744073709551616"),
    (["train", "--likelihood", "mean", "--bayes-factor", "laplace"], "RunConfig.likelihood='mean'"),
    (["train", "--lr", "nan"], "RunConfig.lr=nan"),
    (["sweep", "--sparsities", "1.0", "--out", "x"], "'1.0' is invalid"),
    (["sweep", "--sparsities", "100%", "--out", "x"], "'100%' is invalid"),
    (["sweep", "--seeds", str(2**64), "--out", "x"], "RunConfig.seed="),
    (["sweep", "--workers", "0", "--out", "x"], "--workers=0"),
])
def test_bad_values_exit_2_naming_the_field_before_anything_runs(tmp_path, cli_run, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli_run(*args)
    assert code == 2 and needle in err and "Traceback" not in err
    assert stdout == "" and list(tmp_path.iterdir()) == []  # nothing trained, nothing written


def test_an_empty_data_variable_means_unset(tmp_path, cli_run, monkeypatch):
    monkeypatch.setenv("BAYESPRUNE_DATA", "")
    assert bp.RunConfig().data_dir == "./data"
    code, stdout, err = cli_run("train", "--dataset", "digits", "--epochs", "1", "--fcn-hidden", "8",
                              "--quiet")
    assert code == 0, err
    assert json.loads(stdout.splitlines()[-1])["dataset"] == "digits"


# ------------------------------------------------------------------ sweeps: files on disk
def test_garbage_run_files_are_named_quarantined_and_run_again(tmp_path):
    cfgs = bp.grid(BASE, methods=["none", "magnitude"], sparsities=[0.5], seeds=[0])
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "garbage.json").write_text("{this is not json")
    (runs / f"{cfgs[0].key()}.json").write_bytes(b"\xff\xfe binary")  # a run of this grid, damaged
    (runs / "deep.json").write_text("[" * 100_000 + "]" * 100_000)  # absurdly nested
    wrong = {"version": 2, "key": cfgs[1].key(), "config": cfgs[1].to_dict(), "status": "ok", "error": "",
             "history": "not a list", "test_accuracy": "high"}
    (runs / f"{cfgs[1].key()}.json").write_text(json.dumps(wrong))
    (runs / "quarantine").mkdir()
    (runs / "quarantine" / "garbage.json").write_text("an earlier one")
    messages = []
    df = bp.sweep(cfgs, tmp_path, progress=False, log=messages.append)
    text = "\n".join(messages)
    for name in ("garbage.json", f"{cfgs[0].key()}.json", "deep.json", f"{cfgs[1].key()}.json"):
        assert str(runs / name) in text  # each bad file named
        assert any(p.name.startswith(name) for p in (runs / "quarantine").iterdir())
    assert "history is not a list" in text and "RecursionError" in text
    assert (runs / "quarantine" / "garbage.json").read_text() == "an earlier one"  # never overwritten
    assert df.attrs["stats"]["completed"] == 2 and (df["status"] == "ok").all()
    assert sorted(p.name for p in runs.glob("*.json")) == sorted(f"{c.key()}.json" for c in cfgs)


def test_a_crafted_run_file_cannot_write_outside_the_sweep_folder(tmp_path):
    sweep_dir = tmp_path / "a" / "b" / "sweep"
    bp.sweep([BASE.replace(method="magnitude", sparsity=0.5)], sweep_dir, progress=False, log=lambda m: None)
    crafted = json.loads(next((sweep_dir / "runs").glob("*.json")).read_text())
    crafted["config"]["method"] = "x/../../../T"
    crafted["key"] = "0123456789abcdef"
    (sweep_dir / "runs" / "0123456789abcdef.json").write_text(json.dumps(crafted))
    before = {p for p in tmp_path.rglob("*")}
    messages = []
    bp.sweep([BASE.replace(method="magnitude", sparsity=0.5)], sweep_dir, progress=False, log=messages.append)
    bp.write_report(sweep_dir)
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(sweep_dir in p.parents for p in created), created
    assert not list(tmp_path.rglob("*T.png")) and not list(tmp_path.rglob("test_curves_x*"))
    assert any("0123456789abcdef.json" in m and "method" in m for m in messages)
    assert (sweep_dir / "runs" / "quarantine" / "0123456789abcdef.json").exists()


def test_a_sweep_where_every_run_failed_exits_1(tmp_path, cli_run):
    code, stdout, err = cli_run("sweep", "--dataset", "synthetic", "--epochs", "1", "--fcn-hidden", "16", "8",
                              "--lr", "1e300", "--methods", "none", "magnitude", "--sparsities", "0.5",
                              "--out", str(tmp_path / "s"), "--no-report")
    assert code == 1, err
    stats = json.loads(stdout.splitlines()[-1])
    assert stats["failed"] == 2 and stats["failed_total"] == 2 and "2 stored run(s) failed" in err
    code, stdout, _ = cli_run("sweep", "--dataset", "synthetic", "--epochs", "1", "--fcn-hidden", "16", "8",
                            "--lr", "1e300", "--methods", "none", "magnitude", "--sparsities", "0.5",
                            "--out", str(tmp_path / "s"), "--no-report")
    assert code == 1 and json.loads(stdout.splitlines()[-1])["skipped"] == 2  # still failed, still non-zero


def test_a_bad_sweep_folder_or_data_file_fails_before_any_run(tmp_path, cli_run):
    (tmp_path / "file").write_text("x")
    code, _, err = cli_run("sweep", "--dataset", "synthetic", "--out", str(tmp_path / "file"))
    assert code == 2 and "is not a folder" in err
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / f"{stem}.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")
    code, _, err = cli_run("sweep", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"),
                         "--out", str(tmp_path / "s"), "--workers", "2")
    assert code == 2 and "train-images-idx3-ubyte.gz" in err and "Traceback" not in err
    assert list((tmp_path / "s" / "runs").iterdir()) == []


# ------------------------------------------------------------------ one sweep per folder
def test_a_second_sweep_on_a_folder_is_refused_naming_the_holder(tmp_path, cli_run):
    out = tmp_path / "s"
    out.mkdir()
    fd = os.open(out / sweeps.LOCK_NAME, os.O_RDWR | os.O_CREAT)  # another process's lock, as flock sees it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242 on elsewhere\n")
        with pytest.raises(sweeps.SweepBusyError, match="pid 4242 on elsewhere"):
            bp.sweep([BASE], out, progress=False, log=lambda m: None)
        code, _, err = cli_run("sweep", "--dataset", "synthetic", "--out", str(out))
        assert code == 2 and "pid 4242" in err
        assert list((out / "runs").iterdir()) == []
    finally:
        os.close(fd)  # released: the sweep may go
    df = bp.sweep([BASE], out, progress=False, log=lambda m: None)
    assert df.attrs["stats"]["completed"] == 1
    assert (out / sweeps.LOCK_NAME).read_text().startswith(f"pid {os.getpid()} ")


@pytest.mark.slow
def test_the_lock_is_held_against_another_real_process(tmp_path):
    out = tmp_path / "s"
    with sweeps.sweep_lock(out):
        p = subprocess.run(_cli_cmd("sweep", "--dataset", "synthetic", "--epochs", "1", "--out", str(out)),
                           capture_output=True, text=True, timeout=600, env=_env())
    assert p.returncode == 2 and f"pid {os.getpid()}" in p.stderr and "Traceback" not in p.stderr
    assert list((out / "runs").iterdir()) == []


# ------------------------------------------------------------------ the worker pool
def _sleep(seconds):
    time.sleep(seconds)
    return os.getpid()


@pytest.mark.slow
@linux_only
def test_a_dead_worker_fails_only_its_task_and_terminate_ends_everything():
    from bayesprune.runs.pool import PoolStopped, WorkerDied, WorkerPool

    pool = WorkerPool(2)
    try:
        long = [pool.submit(_sleep, 600) for _ in range(2)]
        short = [pool.submit(_sleep, 0.01) for _ in range(3)]
        victim = _wait_until(lambda: len(pool.busy_pids) == 2 and pool.busy_pids[0], 600, "two busy workers")
        assert _comm(victim) == "bayesprune-wrk"
        os.kill(victim, signal.SIGKILL)
        died = _wait_until(lambda: [f for f in long if f.done()], 600, "the killed worker's task to fail")
        assert len(died) == 1
        exc = died[0].exception()
        assert isinstance(exc, WorkerDied) and "SIGKILL" in str(exc) and str(victim) in str(exc)
        assert all(f.result(timeout=600) != victim for f in short)  # the others ran, on a new worker
        assert victim not in pool.worker_pids and len(pool.worker_pids) == 2
        queued = [pool.submit(_sleep, 600) for _ in range(3)]
        table = _proc_table()
        workers = {pid: table[pid][2] for pid in pool.worker_pids}
    finally:
        pool.terminate()
    assert _running(workers) == []
    unfinished = queued + [f for f in long if f is not died[0]]
    assert all(f.cancelled() or isinstance(f.exception(), PoolStopped) for f in unfinished)
    assert sum(f.cancelled() for f in queued) >= 2  # one may have started on the idle worker
    with pytest.raises(RuntimeError):
        pool.submit(_sleep, 0)


@pytest.mark.slow
def test_a_worker_exits_when_its_lifeline_closes_without_any_signal():
    """The portable fallback of PR_SET_PDEATHSIG: the parent's end of a pipe closes, the worker exits (code 1)."""
    import multiprocessing

    from bayesprune.runs.pool import _worker_main

    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    lifeline_r, lifeline_w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_worker_main, args=(child_conn, lifeline_r, os.getpid()), daemon=True)
    p.start()
    child_conn.close()
    lifeline_r.close()
    try:
        assert conn.recv()[0] == "ready"
        conn.send_bytes(pickle.dumps((_sleep, (0.01,), {})))
        assert conn.recv() == ("ok", p.pid)  # it works ...
        lifeline_w.close()  # ... until the parent's end goes (as it does when the parent dies)
        p.join(120)
        assert p.exitcode == 1  # its own exit, not the kernel's SIGKILL (this thread is alive)
    finally:
        if p.is_alive():
            p.kill()


# ------------------------------------------------------------------ a 2-worker sweep under signals
SWEEP = ["sweep", "--dataset", "digits", "--epochs", "3", "--fcn-hidden", "64", "32", "--bf-samples", "256",
         "--methods", "random", "bayes-magnitude", "--sparsities", "0.2", "0.5", "0.8",
         "--seeds", "0", "1", "--no-report"]
SWEEP_RUNS = 12


def _run_files(out: Path) -> list:
    return sorted((out / "runs").glob("*.json")) if (out / "runs").is_dir() else []


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_stopping_a_two_worker_sweep_stops_everything_and_loses_nothing(tmp_path, sig, cli_run):
    out = tmp_path / "sweep"
    proc = subprocess.Popen(_cli_cmd(*SWEEP, "--workers", "2", "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), start_new_session=True)
    try:
        _wait_until(lambda: len(_run_files(out)) >= 1 or proc.poll() is not None, 600, "the first run")
        assert proc.poll() is None, "the sweep ended before it could be stopped: " + proc.stderr.read()[-2000:]
        tree = _descendants(proc.pid)
        workers = [p for p in tree if _comm(p) == "bayesprune-wrk"]
        assert len(workers) == 2, {p: _comm(p) for p in tree}
        n_before = len(_run_files(out))
        if sig == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
        else:
            os.kill(proc.pid, getattr(signal, sig))
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -9}[sig], stderr[-2000:]
    if sig != "SIGKILL":
        assert f"interrupted ({sig})" in stderr and "Traceback" not in stderr
    # no worker (nor the resource tracker) is left running
    _wait_until(lambda: _running(tree) == [], 60, f"the workers {list(tree)} to end")
    # nothing lost, nothing half-written; queued runs were cancelled, not run
    files = _run_files(out)
    assert n_before <= len(files) <= n_before + 2 < SWEEP_RUNS
    for f in files:
        assert _strict_json(f.read_text())["status"] == "ok"
    if sig == "SIGKILL":  # run it again (here, in one process): the rest runs, each once, the finished ones untouched
        mtimes = {f.name: f.stat().st_mtime_ns for f in files}
        code, stdout, err = cli_run(*SWEEP, "--out", str(out))
        assert code == 0, err[-2000:]
        stats = json.loads(stdout.splitlines()[-1])
        assert stats["skipped"] == len(files) and stats["completed"] == SWEEP_RUNS - len(files)
        assert len(_run_files(out)) == SWEEP_RUNS
        assert all((out / "runs" / n).stat().st_mtime_ns == t for n, t in mtimes.items())
        assert [p.name for p in (out / "runs").iterdir() if p.name.startswith(".")] == []


class _Recording(sweeps.SequentialExecutor):
    def __init__(self):
        self.keys = []

    def submit(self, fn, config, *args):
        self.keys.append(bp.RunConfig.from_dict(config).key())
        return super().submit(fn, config, *args)


@pytest.mark.slow
@linux_only
def test_a_killed_worker_fails_only_its_run_and_the_next_sweep_runs_it_again(tmp_path):
    from bayesprune.runs.pool import WorkerPool

    cfg = BASE.replace(dataset="digits", method="magnitude", sparsity=0.5)
    configs = [cfg.replace(epochs=60, seed=1), cfg.replace(epochs=60, seed=2),  # two long runs first
               *(cfg.replace(epochs=1, seed=s) for s in (3, 4, 5))]
    pool = WorkerPool(2)
    box = {}
    thread = threading.Thread(target=lambda: box.update(df=bp.sweep(
        configs, tmp_path, executor=pool, progress=False, threads_per_run=1, log=lambda m: None)))
    try:
        thread.start()
        victim = _wait_until(lambda: len(pool.busy_pids) == 2 and pool.busy_pids[0], 600, "two busy workers")
        os.kill(victim, signal.SIGKILL)
        thread.join(900)
    finally:
        pool.terminate()
    df = box["df"]
    stats = df.attrs["stats"]
    assert stats["failed"] == 1 and stats["completed"] == 4, df[["key", "status", "error"]]
    lost = df[df.status == "failed"].iloc[0]
    assert "WorkerDied" in lost["error"] and "SIGKILL" in lost["error"] and str(victim) in lost["error"]
    assert lost["epochs"] == 60
    rec = _strict_json((tmp_path / "runs" / f"{lost['key']}.json").read_text())
    assert rec["worker_lost"] is True and rec["status"] == "failed"
    # the next sweep runs the lost run again, and only it (no --retry-failed needed)
    executor = _Recording()
    again = bp.sweep(configs, tmp_path, executor=executor, progress=False, log=lambda m: None)
    assert executor.keys == [lost["key"]]
    assert again.attrs["stats"]["skipped"] == 4 and again.attrs["stats"]["failed_total"] == 0
    assert (again["status"] == "ok").all() and len(list((tmp_path / "runs").glob("*.json"))) == 5


# ================================================================== round 3 (issue 26)
# ------------------------------------------------------------------ 1. a signal at every point of a run's life
def _signal_at(monkeypatch, point: str, sig):
    """Make ``sig`` arrive at ``point`` of ``train --epochs 3 --out``, in this process (the CLI's handler)."""
    from bayesprune.core import data as data_mod

    fire = lambda: signal.raise_signal(sig)  # noqa: E731
    if point in ("config.json", "history.csv", "model.pt", "summary.json"):
        real = runio.write_new

        def write_new(path, data):
            if Path(path).name == point:
                fire()
            return real(path, data)

        monkeypatch.setattr(runio, "write_new", write_new)
    elif point == "load data":
        real_load = data_mod.load_dataset

        def load(*args, **kwargs):
            fire()
            return real_load(*args, **kwargs)

        monkeypatch.setattr(data_mod, "load_dataset", load)
    elif point in ("epoch 2", "after epoch 3"):
        real_epoch, calls = training.train_epoch, []

        def epoch(*args, **kwargs):
            calls.append(1)
            if point == "epoch 2" and len(calls) == 2:
                fire()
            return real_epoch(*args, **kwargs)

        monkeypatch.setattr(training, "train_epoch", epoch)
        if point == "after epoch 3":  # between the last epoch's row and the return of train()
            real_layers = training.layer_sparsity
            monkeypatch.setattr(training, "layer_sparsity", lambda *a, **k: (fire(), real_layers(*a, **k))[1])
    elif point == "between the renames":
        monkeypatch.setattr(runio, "SWAP_HOOK", lambda stage: fire())
    elif point == "plot":
        real_plot = runio.RunFolder._plot
        monkeypatch.setattr(runio.RunFolder, "_plot", lambda self, result: (fire(), real_plot(self, result)))


_POINTS = [("config.json", None), ("load data", None), ("epoch 2", "interrupted"), ("after epoch 3", "ok"),
           ("history.csv", "ok"), ("model.pt", "ok"), ("summary.json", "ok"), ("between the renames", "ok"),
           ("plot", "ok")]


@pytest.mark.parametrize("point,saved,sig,code", [
    *((point, saved, signal.SIGTERM, 143) for point, saved in _POINTS),  # every point with SIGTERM ...
    *((point, saved, signal.SIGINT, 130) for point, saved in _POINTS if point in ("config.json", "epoch 2",
                                                                                 "history.csv")),  # ... some with ^C
])
def test_a_stop_signal_at_any_point_of_a_run_exits_with_its_status_and_loses_nothing(
        tmp_path, cli_run, monkeypatch, a_run, sig, code, point, saved):
    out = tmp_path / "run"
    old = _existing_run(a_run, out)
    _signal_at(monkeypatch, point, sig)
    got, stdout, err = cli_run(*TRAIN, "--epochs", "3", "--seed", "4", "--out", str(out), "--overwrite")
    assert got == code, err
    assert "Traceback" not in err and "interrupted" in err
    if saved is None:  # stopped before training: the old run exactly as it was, nothing left beside it
        assert _snapshot(out) == old and not (tmp_path / "run.prev").exists()
    else:  # the finished run landed, the old one kept whole
        summary = _strict_json((out / "summary.json").read_text())
        assert summary["status"] == saved and summary["epochs"] == (1 if point == "epoch 2" else 3)
        assert summary["format"]["package"] == "bayesprune" and summary["format"]["version"]
        assert json.loads((out / "config.json").read_text())["seed"] == 4
        assert (out / "model.pt").stat().st_size > 0
        assert _snapshot(tmp_path / "run.prev") == old
        plotted = (out / "curves.png").exists()
        assert plotted == (point == "epoch 2")  # a signal that waited for the save skips the plot
        if point != "epoch 2":
            assert "during the save: the run is saved" in err
    assert _hidden(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is not None


@pytest.mark.slow
@linux_only
def test_sigterm_right_after_the_last_epoch_of_a_real_process_saves_the_run(tmp_path):
    """Issue 26, case 1: SIGTERM just after the ``epoch 3/3`` line (the save window) used to lose the run."""
    out = tmp_path / "r1"
    proc = subprocess.Popen(_cli_cmd("train", "--epochs", "3", "--out", str(out)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    _wait_until(lambda: _epoch_line(proc) == 3, 600, "the epoch 3/3 line")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["status"] in ("ok", "interrupted")
    assert (out / "history.csv").read_text().count("\n") == 4 and (out / "model.pt").stat().st_size > 0
    assert _hidden(tmp_path) == []


# ------------------------------------------------------------------ 2. a run folder is what the package stamped
def test_a_folder_with_a_config_json_is_not_a_run_and_is_never_replaced(tmp_path, cli_run):
    """Issue 26, case 2: a project folder with a config.json was moved to .prev, then deleted."""
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "config.json").write_text('{"name":"app"}')
    (proj / "src" / "main.js").write_text("code")
    before = _snapshot(proj)
    for extra in ([], ["--overwrite"], ["--overwrite"]):
        code, stdout, err = cli_run(*TRAIN, "--out", str(proj), *extra)
        assert code == 2 and "not a bayesprune run" in err and "Traceback" not in err and stdout == ""
    assert _snapshot(proj) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_run_folders_are_recognised_by_their_stamp_or_as_complete_old_runs(tmp_path, a_run):
    assert runio.is_run_folder(a_run)
    stamp = json.loads((a_run / "summary.json").read_text())["format"]
    assert stamp == {"package": "bayesprune", "version": runio.package_version(), "run_folder": 1}
    assert runio.package_version() == bp.__version__
    old = tmp_path / "old"  # a run written before the stamp: exactly the run files, a valid config
    shutil.copytree(a_run, old)
    summary = json.loads((old / "summary.json").read_text())
    del summary["format"]
    (old / "summary.json").write_text(json.dumps(summary))
    assert runio.is_run_folder(old)
    (old / "curves.png").unlink()  # drawn only with plot=True
    assert runio.is_run_folder(old)
    (old / "notes.txt").write_text("mine")  # anything else in it: not (only) a run of ours
    assert not runio.is_run_folder(old)
    (old / "notes.txt").unlink()
    cfg = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps(dict(cfg, epochs=3.0)))  # hand-edited: not a valid config
    assert not runio.is_run_folder(old)
    (old / "config.json").write_text(json.dumps(cfg))
    (old / "model.pt").unlink()
    assert not runio.is_run_folder(old)
    fake = tmp_path / "fake"  # a stamp that is not ours
    fake.mkdir()
    (fake / "summary.json").write_text(json.dumps({"format": {"package": "other"}}))
    (fake / "config.json").write_text("{}")
    assert not runio.is_run_folder(fake) and not runio.is_run_folder(tmp_path / "missing")


# ------------------------------------------------------------------ 3. one writer per --out
def test_a_second_writer_to_the_same_out_is_refused_naming_the_holder(tmp_path, cli_run, a_run):
    out = tmp_path / "run"
    old = _existing_run(a_run, out)
    lock = tmp_path / ".run.bayesprune.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # another process's lock, as flock sees it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242 on elsewhere\n")
        code, stdout, err = cli_run(*TRAIN, "--out", str(out), "--overwrite")
        assert code == 2 and "pid 4242 on elsewhere" in err and "is writing --out" in err and stdout == ""
        assert _snapshot(out) == old and not (tmp_path / "run.prev").exists()
    finally:
        os.close(fd)
    code, _, err = cli_run(*TRAIN, "--out", str(out), "--overwrite")  # released: a stale file is taken over
    assert code == 0, err
    assert _snapshot(tmp_path / "run.prev") == old and _hidden(tmp_path) == []
    code, _, err = cli_run(*TRAIN, "--out", str(out), "--overwrite")  # a second overwrite says what it deletes
    assert code == 0 and "the run before last, which was there, is deleted" in err
    (tmp_path / ".run.bayesprune.lock").write_text("my own notes")  # a file of that name that is not ours
    code, _, err = cli_run(*TRAIN, "--out", str(out), "--overwrite")
    assert code == 2 and "not written by bayesprune" in err
    assert (tmp_path / ".run.bayesprune.lock").read_text() == "my own notes"


@pytest.mark.slow
@linux_only
def test_two_concurrent_overwrites_never_lose_the_original_run(tmp_path, a_run):
    """Issue 26, case 3: two ``train --out R --overwrite`` at once each said the original was kept; one lost it."""
    out = tmp_path / "R"
    old = _existing_run(a_run, out)
    cmd = _cli_cmd("train", "--dataset", "digits", "--epochs", "1000", "--fcn-hidden", "16", "8", "--out", str(out),
                   "--overwrite")
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_until(lambda: _epoch_line(first) >= 1, 600, "epoch 1 of the first writer")
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
        assert second.returncode == 2 and f"pid {first.pid} " in second.stderr, second.stderr
        assert "Traceback" not in second.stderr and "epoch" not in second.stdout
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr
    assert _snapshot(out.with_name("R.prev")) == old  # the original, kept whole
    assert _strict_json((out / "summary.json").read_text())["status"] == "interrupted"
    assert _hidden(tmp_path) == []


# ------------------------------------------------------------------ 4. no symlink followed inside a sweep folder
def _sweep_args(out, *extra):
    return ("sweep", "--dataset", "synthetic", "--epochs", "1", "--fcn-hidden", "16", "8", "--bf-samples", "64",
            "--methods", "none", "--seeds", "0", "--out", str(out), "--no-report", *extra)


@pytest.mark.parametrize("where", ["runs", "quarantine", "results.csv", ".sweep.lock", "out"])
def test_a_symlink_inside_a_sweep_folder_is_refused_and_its_target_untouched(tmp_path, cli_run, where):
    """Issue 26, cases 4 and 5: a symlinked runs/ had its target's .tmp files deleted and its JSON quarantined."""
    sw, user = tmp_path / "sw", tmp_path / "userdir"
    user.mkdir()
    (user / "settings.json").write_text('{"a":1}')
    (user / ".notes.tmp").write_text("draft")
    (user / "results.csv").write_text("mine")
    (user / ".sweep.lock").write_text("mine")
    sw.mkdir()
    if where == "out":
        sw.rmdir()
        sw.symlink_to(user)
    elif where == "quarantine":
        (sw / "runs").mkdir()
        (sw / "runs" / "quarantine").symlink_to(user)
    else:
        (sw / where).symlink_to(user / where if where != "runs" else user)
    before = _snapshot(user)
    code, stdout, err = cli_run(*_sweep_args(sw))
    assert code == 2 and "symbolic link" in err and "Traceback" not in err, err
    assert _snapshot(user) == before
    assert stdout == ""


def _dead_pid() -> int:
    return next(p for p in range(99_999, 300, -1) if not fileio.pid_alive(p))


def test_the_sweep_deletes_only_its_own_dead_writers_temp_files(tmp_path, cli_run):
    sw = tmp_path / "sw"
    runs = sw / "runs"
    runs.mkdir(parents=True)
    (runs / ".notes.tmp").write_text("a user's file")
    (runs / ".x.json.abc123.tmp").write_text("an old-style temp name: not provably ours")
    dead = _dead_pid()
    host = fileio.HOST
    (runs / f".k.json.bayesprune-{host}-{dead}.abc.tmp").write_text("{")  # ours, writer gone
    (runs / f".k.json.bayesprune-{host}-{os.getpid()}.abc.tmp").write_text("{")  # ours, writer alive
    (runs / f".k.json.bayesprune-otherhost-{dead}.abc.tmp").write_text("{")  # another machine's
    code, _, err = cli_run(*_sweep_args(sw))
    assert code == 0, err
    assert "removed 1 temporary file" in err
    left = sorted(p.name for p in runs.iterdir() if p.name.startswith("."))
    assert left == sorted([".notes.tmp", ".x.json.abc123.tmp", f".k.json.bayesprune-{host}-{os.getpid()}.abc.tmp",
                           f".k.json.bayesprune-otherhost-{dead}.abc.tmp"])


def test_a_symlinked_run_file_is_reported_never_moved_or_followed(tmp_path):
    sw = tmp_path / "sw"
    (sw / "runs").mkdir(parents=True)
    target = tmp_path / "mine.json"
    target.write_text('{"mine": 1}')
    (sw / "runs" / "0123456789abcdef.json").symlink_to(target)
    messages = []
    bp.sweep([BASE.replace(method="none", sparsity=0.0)], sw, progress=False, log=messages.append)
    assert (sw / "runs" / "0123456789abcdef.json").is_symlink() and target.read_text() == '{"mine": 1}'
    assert any("0123456789abcdef.json" in m and "left where it is" in m for m in messages)
    assert not (sw / "runs" / "quarantine").exists()


# ------------------------------------------------------------------ 5. OSErrors in a sweep: named, no traceback
def _enospc(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize("victim,code,needle", [
    ("lock", 2, "lock file"), ("run file", 1, "the run file of run"), ("results.csv", 1, "the results table"),
])
def test_a_full_disk_in_a_sweep_is_a_clear_message_with_the_right_status(tmp_path, cli_run, monkeypatch, victim, code,
                                                                          needle):
    from bayesprune.runs import locks, results

    sw = tmp_path / "sw"
    code0, _, err = cli_run(*_sweep_args(sw))  # one run stored before the disk fills
    assert code0 == 0, err
    stored = _snapshot(sw / "runs")
    if victim == "lock":
        monkeypatch.setattr(locks.os, "pwrite", lambda fd, data, offset: _enospc(sw / ".sweep.lock"))
    elif victim == "run file":
        monkeypatch.setattr(sweeps, "atomic_write_json", lambda path, payload: _enospc(path))
    else:
        monkeypatch.setattr(results, "atomic_write_text", lambda path, text: _enospc(path))
    got, stdout, err = cli_run(*_sweep_args(sw, "--seeds", "1"))
    assert got == code, err
    assert needle in err and "No space left on device" in err and "Traceback" not in err
    assert str(sw) in err  # names the path
    assert ("no run had started" in err) == (code == 2)
    after = _snapshot(sw / "runs")
    assert {k: after.get(k) for k in stored} == stored  # the stored run intact
    assert _hidden(sw / "runs") == []  # no temporary file left


@pytest.mark.slow
@linux_only
def test_a_real_full_disk_in_a_two_worker_sweep(tmp_path):
    """RLIMIT_FSIZE: the workers' run files cannot be written (EFBIG): exit 1, the file named, no traceback."""
    sw = tmp_path / "sw"
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024)); "
            "from bayesprune.ui.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, *_sweep_args(sw, "--workers", "2")], capture_output=True,
                       text=True, timeout=600, env=_env())
    assert p.returncode == 1, p.stderr
    assert "File too large" in p.stderr and "the run file of run" in p.stderr and "Traceback" not in p.stderr
    assert list((sw / "runs").glob("*.json")) == [] and [q.name for q in (sw / "runs").iterdir()] == []


# ------------------------------------------------------------------ 6. cases 7-13
def test_an_empty_out_is_refused(tmp_path, cli_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli_run(*TRAIN, "--out", "")
    assert code == 2 and "names no folder" in err and stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field,value", [("epochs", 2.0), ("seed", 1.0), ("batch_size", 256.0), ("epochs", True),
                                         ("train_size", 100.0), ("bf_samples", 64.0)])
def test_integer_fields_take_only_integers(field, value):
    with pytest.raises(ValueError, match=rf"RunConfig\.{field}={value!r} is invalid: allowed an integer"):
        bp.RunConfig(**{field: value})
    with pytest.raises(ValueError, match=rf"RunConfig\.{field}="):  # a hand-edited config.json, the same way
        bp.RunConfig.from_dict(json.loads(json.dumps({field: value})))


def test_equal_configs_have_equal_keys():
    assert bp.RunConfig(sparsity=-0.0).key() == bp.RunConfig(sparsity=0.0).key()
    assert bp.RunConfig(prior_mu=-0.0).to_dict()["prior_mu"] == 0.0
    assert bp.RunConfig(lr=1).key() == bp.RunConfig(lr=1.0).key() and isinstance(bp.RunConfig(lr=1).lr, float)
    assert len(bp.grid(BASE, methods=["magnitude"], sparsities=[0.0, -0.0], seeds=[0])) == 1


def test_minus_zero_runs_once(tmp_path, cli_run):
    """Issue 26, case 12 (argparse reads a bare ``-0%`` as an unknown flag, exit 2; ``-0.0`` reaches the parser)."""
    code, stdout, err = cli_run("sweep", "--dataset", "synthetic", "--epochs", "1", "--fcn-hidden", "16", "8",
                                "--methods", "magnitude", "--sparsities", "0", "-0.0", "0%", "--out", str(tmp_path / "s"),
                                "--no-report")
    assert code == 0, err
    assert json.loads(stdout.splitlines()[-1])["total"] == 1 and len(list((tmp_path / "s" / "runs").glob("*.json"))) == 1


def test_train_takes_a_percentage_as_sweep_does(cli_run):
    code, stdout, err = cli_run(*TRAIN, "--sparsity", "99%")
    assert code == 0, err
    assert json.loads(stdout.splitlines()[-1])["target_sparsity"] == 0.99
    code, _, err = cli_run(*TRAIN, "--sparsity", "ninety")
    assert code == 2 and "allowed a fraction 0 <= r < 1 (0.9) or a percentage below 100 % (90%)" in err


def test_sweep_has_the_threads_flag_the_readme_names(tmp_path, cli_run, monkeypatch):
    seen = []
    real = sweeps.run_one
    monkeypatch.setattr(sweeps, "run_one", lambda config, out, threads=None, *a: (seen.append(threads),
                                                                                 real(config, out, threads, *a))[1])
    code, _, err = cli_run(*_sweep_args(tmp_path / "s", "--threads", "1"))
    assert code == 0, err
    assert seen == [1]
    code, _, err = cli_run(*_sweep_args(tmp_path / "s", "--threads", "0"))
    assert code == 2 and "--threads" in err and "allowed an integer >= 1" in err


def test_the_dashboard_never_changes_the_config_it_is_given():
    pytest.importorskip("ipywidgets")
    import torch

    from bayesprune.ui.widgets import Dashboard

    for kw in [dict(epochs=500), dict(beta=0.0), dict(beta=5000.0), dict(seed=12345), dict(sparsity=0.995),
               dict(prior_sigma=1e-6), dict(prior_sigma=1e7), dict(epochs=100_000)]:
        cfg = BASE.replace(method="bayes-magnitude", **kw)
        assert Dashboard(cfg).form.config() == cfg, kw
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"RunConfig\.device='cuda' is invalid on this machine: allowed auto, cpu"):
            Dashboard(BASE.replace(device="cuda"))


def test_a_missing_idx_file_is_named_alone(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / stem).write_bytes(b"")
    with pytest.raises(bp.DatasetNotFoundError) as info:
        bp.load_dataset(bp.RunConfig(dataset="mnist", data_dir=str(tmp_path)))
    msg = str(info.value)
    assert "mnist file not found" in msg and "train-labels-idx1-ubyte" in msg
    assert not any(s in msg for s in ("train-images", "t10k-images", "t10k-labels"))


# ------------------------------------------------------------------ 7. the swap killed, a late divergence, a huge width
@pytest.mark.slow
@linux_only
def test_a_sigkill_between_the_renames_of_the_swap_is_undone_by_the_next_writer(tmp_path, cli_run, a_run):
    out = tmp_path / "run"
    old = _existing_run(a_run, out)
    before_last = _existing_run(a_run, tmp_path / "run.prev")
    (tmp_path / "run.prev" / "history.csv").write_text("epoch\n1\n")
    before_last = _snapshot(tmp_path / "run.prev")
    code = ("import os, signal, sys; from bayesprune.runs import runio; "
            "runio.SWAP_HOOK = lambda stage: os.kill(os.getpid(), signal.SIGKILL); "
            "from bayesprune.ui.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, *TRAIN, "--seed", "7", "--out", str(out), "--overwrite"],
                       capture_output=True, text=True, timeout=600, env=_env())
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert not out.exists() and _snapshot(tmp_path / "run.prev") == old  # killed between out -> prev and new -> out
    assert any(n.endswith("-swap.tmp") for n in _hidden(tmp_path)) and any(n.endswith("-prev.tmp")
                                                                           for n in _hidden(tmp_path))
    code, _, err = cli_run(*TRAIN, "--seed", "8", "--out", str(out))  # the next writer undoes the swap first
    assert code == 2 and "already holds a run" in err and "put the previous run back" in err
    assert _snapshot(out) == old and _snapshot(tmp_path / "run.prev") == before_last
    assert _hidden(tmp_path) == []


def test_a_divergence_in_epoch_2_of_a_sweep_run_stores_the_finished_epoch(tmp_path, monkeypatch):
    real, calls = training.train_epoch, []

    def nan_in_epoch_2(*args, **kwargs):
        calls.append(1)
        loss, acc = real(*args, **kwargs)
        return (float("nan") if len(calls) == 2 else loss), acc

    monkeypatch.setattr(training, "train_epoch", nan_in_epoch_2)
    cfg = BASE.replace(method="magnitude", sparsity=0.5, epochs=3)
    df = bp.sweep([cfg], tmp_path, progress=False, log=lambda m: None)
    rec = _strict_json((tmp_path / "runs" / f"{cfg.key()}.json").read_text())
    assert rec["status"] == "failed" and "epoch 2" in rec["error"] and len(rec["history"]) == 1
    assert rec["history"][0]["epoch"] == 1 and df.iloc[0]["epochs_run"] == 1


def test_a_huge_width_fails_before_the_first_epoch_with_a_clear_message(tmp_path, cli_run, monkeypatch):
    from bayesprune.core import memory

    # the estimate counts parameters exactly (closed form of the default FCN on 8x8 digits: 64-300-100-10)
    assert memory.parameter_count(bp.RunConfig(), (1, 8, 8), 10) == 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    out = tmp_path / "run"
    code, stdout, err = cli_run("train", "--dataset", "synthetic", "--fcn-hidden", "100000", "100000",
                                "--out", str(out))  # 10^10 weights: 320 GB at least
    if (memory.available_bytes("cpu") or 0) < 320e9:
        assert code == 2 and "RunConfig.fcn_hidden=(100000, 100000) is too large" in err and "Traceback" not in err
        assert "epoch" not in stdout and not out.exists() and _hidden(tmp_path) == []
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10**9)  # a 1 GB machine, the same way
    code, _, err = cli_run("train", "--dataset", "synthetic", "--fcn-hidden", "20000", "20000", "--out", str(out))
    assert code == 2 and "RunConfig.fcn_hidden=(20000, 20000) is too large" in err and "1 GB free" in err
    cfg = BASE.replace(method="none", sparsity=0.0, fcn_hidden=(20000, 20000))
    df = bp.sweep([cfg], tmp_path / "s", progress=False, log=lambda m: None)  # a sweep records it and goes on
    assert "InsufficientMemoryError" in df.iloc[0]["error"] and df.iloc[0]["epochs_run"] == 0
