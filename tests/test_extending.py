"""A criterion defined here, in a test file, plugs into every entry point without touching the package."""

import json

import pytest
import torch

import bayesprune as bp


@pytest.fixture
def largest():
    """The whole extension: a scores function and one registry line (the largest weights go first)."""

    @bp.CRITERIA.register("largest")
    def largest_first(model, ctx):
        return {name: -w.detach().abs() for name, w in ctx.targets.items()}

    yield largest_first
    bp.CRITERIA.unregister("largest")


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _brute_force_largest(net, r, scope):
    """The oracle: sort |w| (per tensor, or all together) and prune the round(n r) largest."""
    params = {k: v.detach() for k, v in bp.prunable_parameters(net).items()}
    groups = [[k] for k in params] if scope == "layer" else [list(params)]
    out = {}
    for names in groups:
        flat = torch.cat([params[k].flatten() for k in names])
        k_prune = round(flat.numel() * r)
        cut = set(torch.argsort(flat.abs(), descending=True)[:k_prune].tolist())
        keep = torch.tensor([i not in cut for i in range(flat.numel())])
        start = 0
        for k in names:
            out[k] = keep[start:start + params[k].numel()].view_as(params[k])
            start += params[k].numel()
    return out


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_a_registered_criterion_makes_the_mask_the_oracle_makes(largest, scope):
    net = _net()
    mask = bp.compute_mask(net, "largest", 0.4, scope=scope)
    oracle = _brute_force_largest(net, 0.4, scope)
    assert all(torch.equal(mask[k], oracle[k]) for k in oracle)


def test_it_is_a_method_with_a_bayes_twin_and_global_scope(largest, small_cfg):
    assert {"largest", "bayes-largest"} <= set(bp.methods()) and "largest" in bp.CHOICES["method"]
    plain = bp.train(small_cfg.replace(method="largest", sparsity=0.5), progress=False)
    assert plain.final_sparsity == pytest.approx(0.5, abs=0.01)
    gated = bp.train(small_cfg.replace(method="bayes-largest", sparsity=0.5, scope="global"), progress=False)
    assert gated.final_sparsity == pytest.approx(0.5, abs=0.01)
    assert gated.history["log_bf"].notna().all()  # the gate measured every step
    magnitude = bp.train(small_cfg.replace(method="magnitude", sparsity=0.5), progress=False)
    assert plain.history["test_loss"].iloc[-1] != magnitude.history["test_loss"].iloc[-1]
    with pytest.raises(ValueError, match="RunConfig.method='smallest'.*bayes-largest"):
        bp.RunConfig(method="smallest")


def test_it_is_a_cli_choice(largest, cli_run, tmp_path):
    code, out, err = cli_run("train", "--dataset", "synthetic", "--epochs", "2", "--fcn-hidden", "16", "8",
                             "--method", "bayes-largest", "--scope", "global", "--sparsity", "0.5",
                             "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["method"] == "bayes-largest" and summary["final_sparsity"] == pytest.approx(0.5, abs=0.01)


def test_it_is_a_dashboard_option(largest):
    pytest.importorskip("ipywidgets")
    from bayesprune.ui.widgets import Dashboard

    dash = Dashboard(bp.RunConfig(dataset="synthetic", epochs=2, fcn_hidden=(16, 8)), redraw_every=0.0)
    assert {"largest", "bayes-largest"} <= set(dash.form.controls["method"].options)
    dash.form.set(method="bayes-largest", sparsity=0.5)
    result = dash.train()
    dash.raise_if_failed()
    assert result.config.method == "bayes-largest" and result.final_sparsity == pytest.approx(0.5, abs=0.01)


def test_registering_a_taken_or_reserved_name_is_refused(largest):
    with pytest.raises(ValueError, match="already registered"):
        bp.CRITERIA.register("largest", largest)
    with pytest.raises(ValueError, match="bayes-"):
        bp.CRITERIA.register("bayes-x", largest)


def test_a_model_a_data_set_and_a_gate_register_the_same_way(cli_run):
    import math

    from bayesprune.core.data import DATASETS, TensorDataset
    from bayesprune.core.models import MODELS
    from bayesprune.core.registry import GATES

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 5, generator=g), torch.randint(0, 3, (96,), generator=g)

    class Never:  # the candidate is never kept, so only the forced last step prunes
        def allows(self, first_pruning_epoch, previous_log_bf, beta):
            return True

        def keeps(self, log_bf, beta):
            return False

    MODELS.register("linear", lambda cfg, shape, classes: torch.nn.Linear(math.prod(shape), classes))
    DATASETS.register("blobs", lambda cfg: TensorDataset("blobs", x[:64], y[:64], x[64:], y[64:], 3))
    GATES.register("never", Never())
    try:
        cfg = bp.RunConfig(dataset="blobs", model="linear", gate="never", method="bayes-magnitude", epochs=3,
                           sparsity=0.6)
        res = bp.train(cfg, progress=False)
        assert isinstance(res.model, torch.nn.Linear) and res.model.weight.shape == (3, 5)
        assert res.history["pruned"].tolist() == [False, False, True]  # refused, refused, forced
        assert res.final_sparsity == pytest.approx(0.6, abs=0.04)
        from bayesprune.ui.cli import build_parser

        train = build_parser()._subparsers._group_actions[0].choices["train"]
        choices = {a.dest: a.choices for a in train._actions}
        assert "linear" in choices["model"] and "blobs" in choices["dataset"] and "never" in choices["gate"]
    finally:
        MODELS.unregister("linear")
        DATASETS.unregister("blobs")
        GATES.unregister("never")
    with pytest.raises(ValueError, match="RunConfig.model='linear'.*fcn, cnn"):
        bp.RunConfig(model="linear")


def test_the_developers_guide_taylor_criterion_uses_the_data_in_ctx(small_cfg):
    from bayesprune.core.registry import CRITERIA

    @CRITERIA.register("taylor")
    def taylor_scores(model, ctx):  # as in DEVELOPERS.md
        x, y = ctx.data.x_train[:256], ctx.data.y_train[:256]
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return {name: (w * w.grad).detach().abs() for name, w in ctx.targets.items()}

    try:
        data = bp.load_dataset(small_cfg)
        net = bp.build_model(small_cfg, data.input_shape, data.num_classes)
        mask = bp.compute_mask(net, "taylor", 0.5, data=data)
        # the oracle: the same saliency by torch.autograd.grad, the lowest half of each layer pruned
        params = bp.prunable_parameters(net)
        loss = torch.nn.functional.cross_entropy(net(data.x_train[:256]), data.y_train[:256])
        grads = torch.autograd.grad(loss, list(params.values()))
        for (name, w), g in zip(params.items(), grads):
            s = (w * g).detach().abs().flatten()
            cut = torch.argsort(s)[: round(s.numel() * 0.5)]
            assert not mask[name].flatten()[cut].any() and mask[name].sum() == s.numel() - cut.numel()
        res = bp.train(small_cfg.replace(method="bayes-taylor", sparsity=0.5), progress=False)
        assert res.final_sparsity == pytest.approx(0.5, abs=0.01)
    finally:
        CRITERIA.unregister("taylor")
