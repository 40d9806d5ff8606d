import dataclasses
import json

import pytest
import torch

import bayesprune as bp
from bayesprune.core.config import RunConfig

BAD_VALUES = [
    ("dataset", "imagenet", "one of digits"),
    ("model", "resnet", "one of fcn, cnn"),
    ("method", "bayes", "one of none"),
    ("sparsity", 1.0, "< 1"),
    ("sparsity", -0.1, ">= 0"),
    ("sparsity", "0.5", "a finite number"),
    ("sparsity", 90, "< 1"),
    ("beta", -1.0, ">= 0"),
    ("beta", float("nan"), "a finite number"),
    ("beta", float("inf"), "a finite number"),
    ("prior_sigma", 0.0, ">= 1e-08"),
    ("prior_sigma", 1e-200, ">= 1e-08"),
    ("prior_sigma", -1.0, ">= 1e-08"),
    ("prior_mu", float("inf"), "finite"),
    ("prior_mu", 1e300, "<= 1e+06"),
    ("epochs", 0, ">= 1"),
    ("epochs", 2.5, "an integer"),
    ("batch_size", 0, ">= 1"),
    ("lr", 0.0, "> 0"),
    ("lr", True, "a finite number"),
    ("bf_samples", 0, ">= 1"),
    ("train_size", 0, ">= 1"),
    ("seed", -1, ">= 0"),
    ("seed", 2**64, "<= 4294967295"),
    ("epochs", 10**9, "<= 100000"),
    ("prune_start_epoch", 0, ">= 1"),
    ("gate", "always", "paper, immediate"),
    ("scope", "net", "layer, global"),
    ("likelihood", "median", "sum, mean"),
    ("device", "tpu", "auto, cpu, cuda, mps"),
    ("regrow", "yes", "True or False"),
    ("download", 1, "True or False"),
    ("fcn_hidden", (), "non-empty tuple"),
    ("fcn_hidden", (10, 0), "positive integers"),
    ("cnn_hidden", 0, ">= 1"),
    ("data_dir", "", "folder path"),
    ("schedule", "cubic", "one-shot, gradual"),
    ("final_prune", "never", "target, gate, none"),
    ("bayes_factor", "bic", "posterior, laplace"),
    ("prior_fit", "grid", "fixed, marglik"),
    ("hessian_structure", "lowrank", "kron, diag, full"),
    ("laplace_finetune_steps", -1, ">= 0"),
    ("prune_output", "no", "True or False"),
    ("prune_biases", 0, "True or False"),
    ("prune_end_epoch", 0, ">= 1"),
]


@pytest.mark.parametrize("name,value,allowed", BAD_VALUES)
def test_every_bad_value_names_field_value_and_allowed(name, value, allowed):
    with pytest.raises(ValueError) as err:
        RunConfig(**{name: value})
    msg = str(err.value)
    assert f"RunConfig.{name}=" in msg
    assert repr(value) in msg
    assert allowed in msg


def test_prune_start_after_last_epoch_is_rejected():
    with pytest.raises(ValueError, match="prune_start_epoch"):
        RunConfig(epochs=3, prune_start_epoch=4)
    RunConfig(epochs=3, prune_start_epoch=4, method="none")  # nothing to prune: fine


def test_combinations_that_cannot_work_are_rejected_up_front():
    for method in ("bayes-magnitude", "random", "bayes-neuron"):  # global scope works for every criterion
        RunConfig(method=method, scope="global")
    with pytest.raises(ValueError, match=r"RunConfig.prune_end_epoch=9.*between prune_start_epoch=2 and epochs=5"):
        RunConfig(epochs=5, prune_start_epoch=2, prune_end_epoch=9)
    with pytest.raises(ValueError, match=r"RunConfig.prune_end_epoch=1"):
        RunConfig(epochs=5, prune_start_epoch=2, prune_end_epoch=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_checked_when_a_run_starts_not_when_a_config_is_built():
    cfg = RunConfig(device="cuda")  # a config saved on a GPU machine loads anywhere
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"RunConfig.device='cuda'.*none found"):
        cfg.resolved_device()
    with pytest.raises(ValueError, match=r"RunConfig.device='cuda'"):
        bp.train(cfg.replace(dataset="synthetic", epochs=1), progress=False)


def test_frozen():
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]


def test_dict_round_trip_through_json():
    cfg = RunConfig(dataset="synthetic", fcn_hidden=(7, 5), bf_samples=None, sparsity=0.5, regrow=True)
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.key() == cfg.key()


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        RunConfig.from_dict({"epochz": 3})


def test_key_ignores_data_location_but_not_results_fields():
    a = RunConfig(data_dir="/a")
    assert a.key() == RunConfig(data_dir="/b", download=True).key()
    assert a.key() != RunConfig(data_dir="/a", seed=1).key()


#: Pinned run keys: a change here re-runs every stored sweep, so it must be deliberate (bump KEY_VERSION).
PINNED_KEYS = {
    "default": (RunConfig(), "7a302ab72108aa51"),
    "mnist": (RunConfig(dataset="mnist", method="magnitude", sparsity=0.5, epochs=25, seed=3), "658c7ccc6f97a472"),
}


@pytest.mark.parametrize("name", sorted(PINNED_KEYS))
def test_run_keys_are_pinned(name):
    cfg, key = PINNED_KEYS[name]
    assert cfg.key() == key


def test_a_field_added_with_its_default_leaves_every_key_unchanged():
    """Rebuild RunConfig with one extra field (at its default): the pinned keys must not move."""
    import bayesprune.core.config as config_mod

    extra = dataclasses.make_dataclass(
        "RunConfigPlus", [("brand_new_knob", float, dataclasses.field(
            default=0.5, metadata=config_mod._meta("a field added in a later version")))],
        bases=(RunConfig,), frozen=True)
    for cfg, key in PINNED_KEYS.values():
        plus = extra(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig)})
        assert plus.key() == key
        assert plus.replace(brand_new_knob=0.7).key() != key  # a non-default value does change it


def test_keys_hash_only_non_default_result_fields():
    assert RunConfig().identity() == {}
    assert RunConfig(epochs=3, data_dir="/x").identity() == {"epochs": 3}
    assert RunConfig(fcn_hidden=(8, 4)).identity() == {"fcn_hidden": [8, 4]}


def test_path_and_list_inputs_are_normalised():
    from pathlib import Path

    cfg = RunConfig(data_dir=Path("/tmp/data"), fcn_hidden=[8, 4])
    assert cfg.data_dir == "/tmp/data" and cfg.fcn_hidden == (8, 4)
    json.dumps(cfg.to_dict())  # saveable


def test_empty_data_environment_variable_means_unset(monkeypatch):
    monkeypatch.setenv("BAYESPRUNE_DATA", "")
    assert RunConfig().data_dir == "./data"
    assert bp.load_dataset(RunConfig(dataset="digits")).n_train > 0


def test_replace_validates():
    with pytest.raises(ValueError, match="sparsity"):
        RunConfig().replace(sparsity=2.0)


def test_data_dir_default_from_environment(monkeypatch):
    monkeypatch.setenv("BAYESPRUNE_DATA", "/somewhere")
    assert RunConfig().data_dir == "/somewhere"
    monkeypatch.delenv("BAYESPRUNE_DATA")
    assert RunConfig().data_dir == "./data"


def test_prune_kind_and_bayesian():
    assert RunConfig(method="bayes-random").prune_kind == "random"
    assert RunConfig(method="bayes-random").is_bayesian
    assert RunConfig(method="magnitude").prune_kind == "magnitude"
    assert not RunConfig(method="magnitude").is_bayesian
    assert RunConfig(method="none").prune_kind is None


def test_methods_are_derived_from_the_strategies():
    assert set(bp.methods()) == {"none"} | set(bp.CRITERIA) | {f"bayes-{s}" for s in bp.CRITERIA}
    assert set(bp.PAPER_METHODS) <= set(bp.methods())


def test_derived_tables_cover_every_field():
    from bayesprune.core.config import config_fields

    for f in config_fields():
        assert f.metadata["help"] and f.metadata["role"] in ("axis", "setting", "io")
        assert f.metadata["applies"] in ("all", "pruned", "bayes")
    assert set(bp.CHOICES) == {f.name for f in config_fields() if "choices" in f.metadata}


def test_public_api_names():
    for name in ["RunConfig", "train", "RunResult", "prune_magnitude", "prune_random", "sparsity",
                 "layer_sparsity", "log_prior", "log_likelihood"]:
        assert hasattr(bp, name)


#: The ``bayesian`` preset as the README documents it (its "Presets" paragraph), field by field.
BAYESIAN_RECIPE = dict(method="bayes-obs", train_prior="map", prior_fit="marglik", schedule="gradual", scope="global",
                       bayes_factor="laplace", gate="immediate", final_prune="gate", sparsity=0.99, prior_sigma=0.3,
                       prune_start_epoch=3)


def test_the_bayesian_preset_is_the_documented_recipe_and_nothing_else():
    cfg = RunConfig.preset("bayesian")
    assert cfg == RunConfig(**BAYESIAN_RECIPE)
    assert cfg.identity() == BAYESIAN_RECIPE  # every field it sets differs from the default, no other field does
    assert cfg.is_bayesian and cfg.prune_kind == "obs"
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # it validates on the way back in


def test_runconfig_defaults_stay_the_papers_setting():
    assert RunConfig.preset("paper") == RunConfig()
    cfg = RunConfig()
    assert (cfg.method, cfg.sparsity, cfg.schedule, cfg.gate, cfg.final_prune) == (
        "bayes-magnitude", 0.9, "one-shot", "paper", "target")
    assert (cfg.bayes_factor, cfg.train_prior, cfg.prior_fit, cfg.prior_sigma, cfg.scope) == (
        "posterior", "none", "fixed", 0.03, "layer")
    assert cfg.key() == PINNED_KEYS["default"][1]


def test_an_unknown_preset_names_the_field_the_value_and_the_allowed_names():
    from bayesprune.core.config import PRESETS

    with pytest.raises(ValueError) as err:
        RunConfig.preset("bayes", epochs=3)
    msg = str(err.value)
    assert "RunConfig.preset='bayes'" in msg
    assert all(name in msg for name in PRESETS) and {"paper", "bayesian"} <= set(PRESETS)


def test_changes_override_the_preset_and_are_validated_with_it():
    cfg = RunConfig.preset("bayesian", dataset="synthetic", sparsity=0.9, scope="layer", epochs=6)
    assert (cfg.dataset, cfg.sparsity, cfg.scope, cfg.epochs) == ("synthetic", 0.9, "layer", 6)
    assert cfg.method == "bayes-obs" and cfg.bayes_factor == "laplace"  # the rest of the recipe stays
    assert cfg == RunConfig(**{**BAYESIAN_RECIPE, "dataset": "synthetic", "sparsity": 0.9, "scope": "layer",
                               "epochs": 6})
    # the preset starts pruning at epoch 3; a shorter run starts on its last epoch, unless told otherwise
    assert [RunConfig.preset("bayesian", epochs=e).prune_start_epoch for e in (1, 2, 3, 6)] == [1, 2, 3, 3]
    assert RunConfig.preset("bayesian", epochs=6, prune_start_epoch=5).prune_start_epoch == 5
    with pytest.raises(ValueError, match=r"RunConfig.prune_start_epoch=3 is invalid"):
        RunConfig.preset("bayesian", epochs=2, prune_start_epoch=3)
    with pytest.raises(ValueError, match=r"RunConfig.epochs=0 is invalid"):
        RunConfig.preset("bayesian", epochs=0)
    with pytest.raises(ValueError, match=r"RunConfig.sparsity=1.5"):
        RunConfig.preset("bayesian", sparsity=1.5)


def test_title_names_a_target_only_for_runs_that_prune():
    from bayesprune import RunConfig

    assert RunConfig(dataset="digits", method="bayes-magnitude", sparsity=0.9).title == "digits / fcn / bayes-magnitude @ 90%"
    assert RunConfig(dataset="digits", method="none", sparsity=0.9).title == "digits / fcn / none"  # MAP training: no "@ 90%"
