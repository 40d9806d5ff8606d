"""A real distributed engine: the same sweep on a Dask LocalCluster (2 worker processes, loopback only).

Checks that results equal the sequential sweep's, and that killing a worker process
mid-sweep loses nothing, and the run folder ends with each run once.  Dask would
by default run a killed worker's task again elsewhere (``allowed-failures``, 3);
the cluster here allows none, so the kill reaches the sweep as ``KilledWorker``:
the sweep records the run as lost (``worker_lost``) and the next sweep runs it.

Skips where ``distributed`` is not installed (``pip install .[dask]``); `.ci/run`
installs it and sets BAYESPRUNE_REQUIRE_DASK=1, so that CI fails rather than skips.
"""

import json
import os
import signal
import threading
import time

import pytest

import bayesprune as bp

if os.environ.get("BAYESPRUNE_REQUIRE_DASK") == "1":
    import distributed
else:
    distributed = pytest.importorskip("distributed")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow

BASE = bp.RunConfig(dataset="digits", epochs=2, fcn_hidden=(16, 8), bf_samples=256)


@pytest.fixture(scope="module")
def client():
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, host="127.0.0.1")
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # run_one(threads=1) set it for this process too


def _quiet(msg):
    pass


def _files(out):
    return sorted(p.name for p in (out / "runs").iterdir() if p.is_file())


def test_a_dask_sweep_gives_the_sequential_results(tmp_path, client, one_thread):
    cfgs = bp.grid(BASE, methods=["none", "magnitude", "bayes-magnitude"], sparsities=[0.5, 0.9], seeds=[0])
    seq = bp.sweep(cfgs, tmp_path / "seq", progress=False, threads_per_run=1, log=_quiet)
    dsk = bp.sweep(cfgs, tmp_path / "dask", executor=client.get_executor(), progress=False, threads_per_run=1,
                   log=_quiet)
    assert dsk.attrs["stats"]["completed"] == len(cfgs) == 5 and (dsk["status"] == "ok").all()
    assert dict(zip(dsk.key, dsk.test_accuracy)) == dict(zip(seq.key, seq.test_accuracy))
    assert _files(tmp_path / "dask") == sorted(f"{c.key()}.json" for c in cfgs)


def test_killing_a_dask_worker_mid_sweep_loses_nothing(tmp_path, client, one_thread):
    cfgs = bp.grid(BASE.replace(epochs=25), methods=["magnitude", "bayes-magnitude"], sparsities=[0.5, 0.9],
                   seeds=[0, 1])
    out = tmp_path / "sweep"
    box = {}

    def run():
        box["df"] = bp.sweep(cfgs, out, executor=client.get_executor(), progress=False, threads_per_run=1,
                             log=_quiet)

    thread = threading.Thread(target=run)
    thread.start()
    pids = client.run(os.getpid)  # {worker address: pid}
    deadline = time.monotonic() + 600
    busy = []
    while not busy and time.monotonic() < deadline and thread.is_alive():
        busy = [addr for addr, keys in client.processing().items() if keys and addr in pids]
        time.sleep(0.05)
    assert busy, "no worker ever held a run"
    os.kill(pids[busy[0]], signal.SIGKILL)  # the nanny starts a new worker
    thread.join(900)
    assert not thread.is_alive()
    df = box["df"]
    first = df.attrs["stats"]
    assert first["completed"] + first["failed"] == len(cfgs) and first["failed"] >= 1
    lost = df[df.status == "failed"]
    assert lost["error"].str.contains("KilledWorker").all()
    for key in lost["key"]:
        assert json.loads((out / "runs" / f"{key}.json").read_text())["worker_lost"] is True
    # run it again: whatever the kill cost is run now; nothing finished is run twice
    again = bp.sweep(cfgs, out, executor=client.get_executor(), progress=False, threads_per_run=1, log=_quiet)
    stats = again.attrs["stats"]
    assert stats["skipped"] == first["completed"] and stats["completed"] == first["failed"]
    assert (again["status"] == "ok").all() and len(again) == len(cfgs) and again["key"].is_unique
    assert _files(out) == sorted(f"{c.key()}.json" for c in cfgs)  # each run once, no temporary files
