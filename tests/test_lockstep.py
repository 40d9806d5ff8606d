"""Lockstep groups (bayesprune.engine.lockstep): each member is its sequential run.

The oracle is the sequential run itself: ``bp.train(cfg)`` for every member, in the same process and thread
count.  Decisions (gate open, pruned, forced, candidate and reached sparsity) must be identical; numbers equal
to float rounding.  Measured here (OMP_NUM_THREADS=1, torch 2.14 CPU): the batched products (``baddbmm``,
vmap's grouped convolution) sum in another order than ``addmm``/``conv2d``, which moves the numbers by
about 1e-7 relative after a few epochs on these tiny runs (the largest relative difference over every
numeric column of the plain and paper-gated cases below was 5e-8 to 1.3e-7, of the Laplace-gated ones 1e-5 to
1.2e-4, where the fine-tuning steps and the curvature amplify it); TOL allows 1e-4 relative (the Laplace
terms log_occam and laplace_penalty, differences of log-determinants of ~1e4 nats, 2e-3 absolute; one
log_occam_after differed by 3.4e-4).
"""

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest
import torch

import bayesprune as bp
from bayesprune.engine import lockstep

DECISIONS = ["epoch", "candidate_sparsity", "sparsity_before", "sparsity", "pruned", "gate_open", "forced"]
TIMES = ["seconds", "bf_seconds"]
TOL = dict(rtol=1e-4, atol=1e-5)
# the Laplace terms are differences of log-determinants of ~1e4 nats each: their rounding is absolute, not relative
OCCAM, OCCAM_ATOL = ("log_occam", "laplace_penalty"), 2e-3
HAS_LAPLACE = importlib.util.find_spec("laplace") is not None

# benchmarks/gpu_check.py runs this module with BAYESPRUNE_TEST_DEVICE=cuda: every group and its oracle there
DEVICE = os.environ.get("BAYESPRUNE_TEST_DEVICE", "cpu")
FCN = dict(device=DEVICE, dataset="digits", model="fcn", fcn_hidden=(24, 12), bf_samples=256, epochs=3, sparsity=0.8)
CNN = dict(device=DEVICE, dataset="digits", model="cnn", cnn_hidden=16, bf_samples=128, epochs=2, sparsity=0.7, train_size=500)
LAPLACE = dict(bayes_factor="laplace", prior_fit="fixed", gate="immediate", laplace_finetune_steps=5,
               final_prune="gate", train_size=400, bf_samples=128)

CASES = {
    "fcn-one-shot-plain": (FCN, dict(method="magnitude")),
    "fcn-gradual-paper": (FCN, dict(method="bayes-magnitude", schedule="gradual", epochs=4)),
    "fcn-one-shot-paper-random": (FCN, dict(method="bayes-random")),
    "fcn-gradual-laplace": (FCN, dict(method="bayes-magnitude", schedule="gradual", epochs=4, **LAPLACE)),
    "cnn-one-shot-paper": (CNN, dict(method="bayes-magnitude")),
    "cnn-gradual-plain": (CNN, dict(method="random", schedule="gradual", epochs=3)),
    "cnn-one-shot-laplace": (CNN, dict(method="bayes-magnitude", **{**LAPLACE, "bf_samples": 64})),
}


def members(base: dict, extra: dict) -> list[bp.RunConfig]:
    cfg = bp.RunConfig(**{**base, **extra})
    # three seeds, and three sparsities so that the members' masks differ in size too
    return [cfg.replace(seed=s, sparsity=r) for s, r in [(0, cfg.sparsity), (1, 0.5), (2, 0.95)]]


def assert_same_run(got: bp.RunResult, want: bp.RunResult) -> float:
    """Same decisions exactly, numbers within TOL; returns the largest relative difference seen."""
    assert got.status == want.status
    g, w = got.history, want.history
    pd.testing.assert_frame_equal(g[DECISIONS], w[DECISIONS])
    num = [c for c in w.columns if c not in DECISIONS + TIMES]
    a, b = g[num].to_numpy(float), w[num].to_numpy(float)
    assert (np.isnan(a) == np.isnan(b)).all()
    plain = [i for i, c in enumerate(num) if not c.startswith(OCCAM)]
    np.testing.assert_allclose(a[:, plain], b[:, plain], equal_nan=True, **TOL)
    occam = [i for i, c in enumerate(num) if c.startswith(OCCAM)]
    np.testing.assert_allclose(a[:, occam], b[:, occam], equal_nan=True, rtol=TOL["rtol"], atol=OCCAM_ATOL)
    for (n, p), (_, q) in zip(got.model.named_parameters(), want.model.named_parameters()):
        assert torch.equal(p == 0, q == 0), n  # the same weights pruned, exactly
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    ok = ~np.isnan(b)
    ok[:, occam] = False
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-6), initial=0.0))


@pytest.mark.parametrize("case", list(CASES))
def test_a_group_of_three_gives_each_member_its_sequential_run(case):
    base, extra = CASES[case]
    if "laplace" in case and not HAS_LAPLACE:
        pytest.skip("the Laplace gate needs laplace-torch")
    cfgs = members(base, extra)
    done = []
    got = bp.train_many(cfgs, on_done=lambda i, r: done.append(i))
    want = [bp.train(c, progress=False) for c in cfgs]
    worst = max(assert_same_run(g, w) for g, w in zip(got, want))
    print(f"{case}: largest relative difference {worst:.2e}")  # the figures in this module's docstring
    assert sorted(done) == [0, 1, 2]
    if extra.get("method", "").startswith("bayes"):  # the gate really decided something in these cases
        assert any(r.history["log_bf"].abs().max() > 0 for r in want)


def test_each_member_keeps_its_own_adam_step_count():
    """Laplace fine-tuning takes extra Adam steps for some members only: bias correction must follow each."""
    if not HAS_LAPLACE:
        pytest.skip("the Laplace gate needs laplace-torch")
    cfgs = members(FCN, dict(method="bayes-magnitude", schedule="gradual", epochs=3, **LAPLACE))
    cfgs = [c.replace(laplace_finetune_steps=n) for c, n in zip(cfgs, (5, 2, 9))]

    def steps_seen(store):
        class Steps(bp.EpochCallback):
            def on_epoch_end(self, epoch, model, optimizer, row):
                store.append([float(s["step"]) for s in optimizer.state.values()])
        return Steps()

    seq = []
    for c in cfgs:
        seen: list = []
        bp.train(c, callbacks=[steps_seen(seen)], progress=False)
        seq.append(seen)
    grouped: list = []
    bp.train_many(cfgs, callbacks=[steps_seen(grouped)])
    # the group's callback sees the members epoch by epoch: member 0, 1, 2 of epoch 1, then of epoch 2 ...
    by_member = [grouped[i::3] for i in range(3)]
    assert by_member == seq
    assert len({tuple(s[-1]) for s in seq}) > 1  # the members' counts really differ


def test_the_stacked_adam_step_is_torchs_own_bit_for_bit():
    cfgs = [bp.RunConfig(**FCN, seed=s, method="none") for s in range(3)]
    data = bp.load_dataset(cfgs[0])
    grouped = [bp.build_run(c, data) for c in cfgs]
    runs = [bp.build_run(c, data) for c in cfgs]  # the oracle: each member's own torch Adam
    ms = [lockstep._Member(i, r, bp.engine.training.Snapshot(r.model), 0.0) for i, r in enumerate(grouped)]
    stack = lockstep._Stack(ms)
    torch.manual_seed(5)
    grads = {n: torch.randn_like(p) for n, p in stack.params.items()}
    for _ in range(3):  # three steps: bias correction 1 - beta^t at t = 1, 2, 3
        for n, p in stack.params.items():
            p.grad = grads[n].clone()
        stack.adam_step()
        for k, r in enumerate(runs):
            for n, p in r.model.named_parameters():
                p.grad = grads[n][k].clone()
            r.optimizer.step()
    for k, r in enumerate(runs):
        for n, p in r.model.named_parameters():
            assert torch.equal(stack.params[n][k].detach(), p.detach()), n


@pytest.mark.parametrize("base", [FCN, CNN], ids=["fcn", "cnn"])
def test_batched_ops_and_vmap_agree(base):
    cfgs = members(base, dict(method="bayes-magnitude"))
    a = bp.train_many(cfgs, how="batched")
    b = bp.train_many(cfgs, how="vmap")
    for x, y in zip(a, b):
        assert_same_run(x, y)


def test_a_member_that_diverges_leaves_the_group_and_the_others_go_on():
    cfgs = members(FCN, dict(method="magnitude"))
    cfgs[1] = cfgs[1].replace(lr=1e30)
    got = bp.train_many(cfgs)
    assert got[1].status == "diverged"
    assert got[1].status == bp.train_many([cfgs[1]])[0].status
    for i in (0, 2):
        assert_same_run(got[i], bp.train(cfgs[i], progress=False))


def test_members_may_differ_in_epochs_and_end_in_order():
    cfgs = members(FCN, dict(method="bayes-magnitude"))
    cfgs = [cfgs[0].replace(epochs=1), cfgs[1].replace(epochs=3), cfgs[2].replace(epochs=2)]
    order = []
    got = bp.train_many(cfgs, on_done=lambda i, r: order.append((i, len(r.history))))
    assert order == [(0, 1), (2, 2), (1, 3)]
    for g, c in zip(got, cfgs):
        assert_same_run(g, bp.train(c, progress=False))


def test_a_stop_from_a_callback_ends_that_member_only():
    cfgs = members(FCN, dict(method="magnitude"))
    target = []

    def stop_member_two(row):
        target.append(row["epoch"])
        if len(target) == 5:  # epoch 2 of member 1 (callbacks run member 0, 1, 2 per epoch)
            raise bp.StopTraining

    got = bp.train_many(cfgs, callbacks=[stop_member_two])
    assert [r.status for r in got] == ["ok", "stopped", "ok"]
    assert [len(r.history) for r in got] == [3, 2, 3]


@pytest.mark.parametrize("field, value", [("batch_size", 32), ("fcn_hidden", (8,)), ("dataset", "synthetic"),
                                          ("train_size", 500)])
def test_incompatible_members_are_refused_naming_the_field(field, value):
    cfgs = members(FCN, dict(method="magnitude"))
    cfgs[2] = cfgs[2].replace(**{field: value})
    with pytest.raises(ValueError, match=rf"RunConfig\.{field} differs"):
        bp.train_many(cfgs)


def test_a_map_trained_member_is_refused_naming_the_field():
    cfgs = members(FCN, dict(method="magnitude"))
    cfgs[0] = cfgs[0].replace(train_prior="map")
    with pytest.raises(ValueError, match=r"RunConfig\.train_prior='map'.*allowed: 'none'"):
        bp.train_many(cfgs)


def test_different_seeds_with_train_size_each_train_on_their_own_subsample():
    cfgs = [bp.RunConfig(**{**FCN, "train_size": 600}, seed=s, method="magnitude") for s in range(3)]
    for g, c in zip(bp.train_many(cfgs), cfgs):
        assert_same_run(g, bp.train(c, progress=False))


# ------------------------------------------------------------------ sweeps in lockstep
SWEEP_BASE = bp.RunConfig(device=DEVICE, dataset="digits", epochs=2, fcn_hidden=(16, 8), bf_samples=128)


def _stored(folder) -> dict:
    from bayesprune.runs.results import load_runs

    return load_runs(folder)


def _same_records(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        ra, rb = a[key], b[key]
        assert ra["status"] == rb["status"] == "ok"
        ha, hb = pd.DataFrame(ra["history"]), pd.DataFrame(rb["history"])
        pd.testing.assert_frame_equal(ha[DECISIONS], hb[DECISIONS])
        assert ra["test_accuracy"] == pytest.approx(rb["test_accuracy"], abs=1e-9)
        assert ra["final_sparsity"] == rb["final_sparsity"]


def test_groups_take_compatible_configs_k_at_a_time():
    from bayesprune.runs.sweeps import lockstep_groups

    cfgs = bp.grid(SWEEP_BASE, methods=["none", "magnitude"], sparsities=[0.5, 0.9], seeds=[0, 1, 2])
    other = [SWEEP_BASE.replace(batch_size=32), SWEEP_BASE.replace(epochs=3), SWEEP_BASE.replace(train_prior="map")]
    groups = lockstep_groups(cfgs + other, 4)
    assert sorted(len(g) for g in groups) == [1, 1, 1, 1, 4, 4]  # 9 compatible ones: 4 + 4 + 1
    assert all(len({lockstep.group_key(c, "epochs") for c in g}) == 1 for g in groups)
    assert sorted(c.key() for g in groups for c in g) == sorted(c.key() for c in cfgs + other)
    with pytest.raises(ValueError, match="lockstep=0 is invalid"):
        lockstep_groups(cfgs, 0)


def test_a_lockstep_sweep_stores_what_the_sequential_sweep_stores(tmp_path):
    cfgs = bp.grid(SWEEP_BASE, methods=["none", "magnitude", "bayes-random"], sparsities=[0.5], seeds=[0, 1])
    cfgs.append(SWEEP_BASE.replace(method="magnitude", batch_size=32))  # a group of its own
    seq = bp.sweep(cfgs, tmp_path / "seq", progress=False, log=lambda m: None)
    messages = []
    got = bp.sweep(cfgs, tmp_path / "lock", progress=False, log=messages.append, lockstep=4)
    assert got.attrs["stats"]["completed"] == seq.attrs["stats"]["completed"] == len(cfgs)
    assert any("lockstep 4: 7 runs in 3 group(s)" in m for m in messages)
    _same_records(_stored(tmp_path / "lock"), _stored(tmp_path / "seq"))
    assert sorted(got["key"]) == sorted(seq["key"])
    again = bp.sweep(cfgs, tmp_path / "lock", progress=False, log=lambda m: None, lockstep=4)
    assert again.attrs["stats"]["skipped"] == len(cfgs) and again.attrs["stats"]["completed"] == 0


def test_an_interrupted_lockstep_sweep_keeps_its_finished_members_and_resumes(tmp_path, monkeypatch):
    """Ctrl-C while a group trains: the members that had ended are stored; the next sweep runs only the rest."""
    cfgs = bp.grid(SWEEP_BASE, methods=["magnitude"], sparsities=[0.5], seeds=[0, 1, 2])
    cfgs[0] = cfgs[0].replace(epochs=1)  # member 0 ends after epoch 1; then the group is interrupted
    cfgs = [cfgs[0], cfgs[1], cfgs[2]]
    real = lockstep._end_member_epoch
    calls = []

    def interrupt_in_epoch_two(m, *args):
        calls.append(m.index)
        if m.epoch == 2:
            raise KeyboardInterrupt
        return real(m, *args)

    monkeypatch.setattr(lockstep, "_end_member_epoch", interrupt_in_epoch_two)
    # epochs differ, so each is its own group under the sweep's grouping; train the group directly as a sweep would
    from bayesprune.runs.sweeps import run_group

    (tmp_path / "s" / "runs").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        run_group([c.to_dict() for c in cfgs], str(tmp_path / "s"))
    assert set(_stored(tmp_path / "s")) == {cfgs[0].key()}  # the finished member, stored whole
    monkeypatch.setattr(lockstep, "_end_member_epoch", real)
    df = bp.sweep(cfgs, tmp_path / "s", progress=False, log=lambda m: None, lockstep=3)
    assert df.attrs["stats"]["skipped"] == 1 and df.attrs["stats"]["completed"] == 2
    bp.sweep(cfgs, tmp_path / "seq", progress=False, log=lambda m: None)
    _same_records(_stored(tmp_path / "s"), _stored(tmp_path / "seq"))


def test_the_cli_sweep_takes_lockstep(tmp_path, cli_run):
    out = tmp_path / "cli"
    code, stdout, stderr = cli_run("sweep", "--dataset", "digits", "--epochs", "1", "--fcn-hidden", "16", "8",
                                   "--methods", "none", "magnitude", "--sparsities", "0.5", "--seeds", "0", "1",
                                   "--out", str(out), "--lockstep", "4", "--no-report")
    assert code == 0, stderr
    assert "lockstep 4: 4 runs in 1 group(s)" in stderr
    assert len(_stored(out)) == 4
    code, _, stderr = cli_run("sweep", "--out", str(out), "--lockstep", "0")
    assert code == 2 and "--lockstep" in stderr and "allowed an integer >= 1" in stderr
