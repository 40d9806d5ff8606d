import math

import pandas as pd
import pytest
import torch

import bayesprune as bp
from bayesprune.bayes.posterior import PosteriorTerms
from bayesprune.engine import training


def test_history_rows_match_an_independent_evaluation_of_the_returned_model(small_cfg):
    rows = []
    res = bp.train(small_cfg, callbacks=[rows.append], progress=False)
    assert isinstance(res, bp.RunResult) and isinstance(res.history, pd.DataFrame)
    assert len(res.history) == small_cfg.epochs == len(rows)
    pd.testing.assert_frame_equal(pd.DataFrame(rows), res.history)  # callbacks got each row as it was made
    # the last row describes the returned model: test loss/accuracy and zeros recomputed with plain torch
    data = bp.load_dataset(small_cfg)
    with torch.no_grad():
        logits = res.model.eval()(data.x_test)
    last = res.history.iloc[-1]
    assert last["test_acc"] == pytest.approx(float((logits.argmax(1) == data.y_test).float().mean()))
    assert last["test_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, data.y_test)), rel=1e-5)
    weights = [m.weight for m in res.model.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert last["sparsity"] == pytest.approx(zeros) and res.final_sparsity == pytest.approx(zeros)
    assert zeros == pytest.approx(small_cfg.sparsity, abs=0.005)
    assert bool(last["forced"]) and bool(last["pruned"])


def test_epoch_callbacks_receive_epoch_model_optimizer_and_row(small_cfg):
    seen = []

    class Watch(bp.EpochCallback):
        def on_epoch_end(self, epoch, model, optimizer, row):
            seen.append((epoch, row["epoch"], bp.sparsity(model), isinstance(optimizer, torch.optim.Adam)))

    res = bp.train(small_cfg, callbacks=[Watch()], progress=False)
    assert [s[:2] for s in seen] == [(e, e) for e in range(1, small_cfg.epochs + 1)]
    assert seen[-1][2] == pytest.approx(res.final_sparsity) and all(s[3] for s in seen)


def test_same_config_and_seed_give_identical_history(small_cfg):
    cfg = small_cfg.replace(method="bayes-random", regrow=True, epochs=3)
    a = bp.train(cfg, progress=False).history.drop(columns=["seconds", "bf_seconds"])
    b = bp.train(cfg, progress=False).history.drop(columns=["seconds", "bf_seconds"])
    pd.testing.assert_frame_equal(a, b)
    c = bp.train(cfg.replace(seed=1), progress=False).history
    assert not a["train_loss"].equals(c["train_loss"])


def test_persistent_masks_stay_exactly_zero_through_every_step(small_cfg):
    cfg = small_cfg.replace(method="magnitude", regrow=False, epochs=1)
    torch.manual_seed(0)
    data = bp.load_dataset(cfg)
    model = bp.build_model(cfg, data.input_shape, data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    mask = bp.prune_magnitude(model, 0.8)
    seen = []
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        training.train_epoch(model, opt, data, 16, g, mask)
        for k, w in bp.prunable_parameters(model).items():
            seen.append(bool((w[~mask[k]] == 0).all()))
    assert all(seen)
    # without the mask Adam moves the pruned weights again (regrow)
    training.train_epoch(model, opt, data, 16, g, None)
    assert bp.sparsity(model) < 0.5


def test_regrow_true_vs_false_in_the_loop(small_cfg):
    base = small_cfg.replace(method="magnitude", epochs=3, sparsity=0.8)
    keep = bp.train(base.replace(regrow=False), progress=False).history
    grow = bp.train(base.replace(regrow=True), progress=False).history
    # epoch 1 prunes; the next epoch's pre-pruning posterior is measured on the weights after training
    assert (keep["sparsity"] >= 0.8 - 0.005).all()
    assert grow["sparsity"].iloc[0] == pytest.approx(0.8, abs=0.005)
    # with regrowth the zeros from epoch 1 moved during epoch 2 (prior before pruning changed a lot)
    assert grow["log_prior_before"].iloc[1] != pytest.approx(grow["log_prior_after"].iloc[0], rel=1e-9)
    assert keep["log_bf"].iloc[1] == 0.0  # re-pruning a masked network changes nothing: BF = 1


class _Scripted:
    """An evaluator (``train(..., evaluator=)``) whose every pruning epoch sees the scripted log BF."""

    finetune_steps = 0

    def __init__(self, log_bfs):
        seq = []
        for lbf in log_bfs:
            seq += [PosteriorTerms(0.0, 0.0), PosteriorTerms(lbf, 0.0)]
        self.it = iter(seq)

    def terms(self, model, mask=None, before=None):
        return next(self.it, PosteriorTerms(0.0, 0.0))


def test_paper_gate_in_the_loop_on_a_scripted_sequence(monkeypatch, small_cfg):
    cfg = small_cfg.replace(method="bayes-magnitude", epochs=6, beta=2.0, regrow=True)
    # epochs 1..3 prune (first; prev BF 5 > 2; prev BF 3 > 2), epoch 3's BF 0.5 closes the gate,
    # epochs 4-5 do not prune (BF = 1 < 2), epoch 6 is the forced final prune.
    scripted = _Scripted([math.log(5), math.log(3), math.log(0.5), math.log(7)])
    h = bp.train(cfg, progress=False, evaluator=scripted).history
    assert h["pruned"].tolist() == [True, True, True, False, False, True]
    assert h["gate_open"].tolist() == [True, True, True, False, False, True]
    assert h["forced"].tolist() == [False] * 5 + [True]
    assert h["log_bf"].iloc[3] == 0.0 and h["log_bf"].iloc[4] == 0.0
    assert h["log_bf"].iloc[0] == pytest.approx(math.log(5))


def test_immediate_gate_keeps_only_candidates_with_bf_above_beta(monkeypatch, small_cfg):
    cfg = small_cfg.replace(method="bayes-magnitude", epochs=4, gate="immediate", beta=1.0, regrow=True)
    res = bp.train(cfg, progress=False, evaluator=_Scripted([math.log(0.5), math.log(2.0), math.log(0.1), math.log(0.1)]))
    assert res.history["pruned"].tolist() == [False, True, False, True]
    assert res.history["log_bf"].iloc[0] == pytest.approx(math.log(0.5))  # the rejected candidate's BF
    assert res.history["sparsity"].iloc[0] < 0.05  # rejected: weights restored
    assert res.final_sparsity == pytest.approx(cfg.sparsity, abs=0.005)


def test_non_bayesian_methods_prune_every_pruning_epoch(small_cfg):
    h = bp.train(small_cfg.replace(method="random", epochs=4, prune_start_epoch=2), progress=False).history
    assert h["pruned"].tolist() == [False, True, True, True]
    assert math.isnan(h["log_bf"].iloc[0]) and not math.isnan(h["log_bf"].iloc[1])


def test_unpruned_baseline_stays_dense(small_cfg):
    res = bp.train(small_cfg.replace(method="none"), progress=False)
    assert res.final_sparsity < 0.01 and not res.history["pruned"].any()


@pytest.mark.parametrize("method", ["bayes-random", "bayes-magnitude"])
@pytest.mark.parametrize("model", ["fcn", "cnn"])
def test_final_model_is_at_the_stated_sparsity(small_cfg, method, model):
    cfg = small_cfg.replace(method=method, model=model, sparsity=0.75, regrow=True, cnn_hidden=16)
    res = bp.train(cfg, progress=False)
    assert res.final_sparsity == pytest.approx(0.75, abs=0.005)
    for name, s in res.layer_sparsity.items():
        assert s == pytest.approx(0.75, abs=0.01), name


def test_nan_loss_stops_with_history_kept(monkeypatch, small_cfg):
    real = training.train_epoch
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        loss, acc = real(*a, **k)
        return (float("nan"), acc) if calls["n"] == 2 else (loss, acc)

    monkeypatch.setattr(training, "train_epoch", flaky)
    rows = []
    with pytest.raises(bp.TrainingDiverged) as err:
        bp.train(small_cfg.replace(epochs=3), callbacks=[rows.append], progress=False)
    assert "epoch 2" in str(err.value) and "nan" in str(err.value)
    assert len(err.value.history) == 1 and len(rows) == 1


def test_real_nan_data_diverges(small_cfg):
    data = bp.load_dataset(small_cfg)
    x = data.x_train.clone()
    x[0] = float("nan")
    bad = bp.TensorDataset("bad", x, data.y_train, data.x_test, data.y_test, data.num_classes)
    with pytest.raises(bp.TrainingDiverged):
        bp.train(small_cfg, data=bad, progress=False)


def test_digits_default_reaches_the_acceptance_bar():
    """The README's default run: digits, fcn, bayes-magnitude, 90 %."""
    res = bp.train(bp.RunConfig(), progress=False)
    assert res.test_accuracy >= 0.90
    assert res.final_sparsity == pytest.approx(0.90, abs=0.005)


def test_save_writes_the_artifacts(tmp_path, small_cfg):
    res = bp.train(small_cfg, progress=False)
    out = bp.save_run(res, tmp_path / "run")
    for name in ("config.json", "history.csv", "summary.json", "model.pt", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    again = bp.RunConfig.from_dict(__import__("json").loads((out / "config.json").read_text()))
    assert again == small_cfg
    state = torch.load(out / "model.pt")
    plain = bp.build_model(small_cfg, (1, 8, 8), 4)
    plain.load_state_dict(state)
    assert bp.sparsity(plain) == pytest.approx(res.final_sparsity)
