import json

import pytest
import torch

import bayesprune as bp
from bayesprune.config import RunConfig

BAD_VALUES = [
    ("dataset", "imagenet", "one of digits"),
    ("model", "resnet", "one of fcn, cnn"),
    ("method", "bayes", "one of none"),
    ("sparsity", 1.0, "< 1"),
    ("sparsity", -0.1, ">= 0"),
    ("sparsity", "0.5", "a number"),
    ("beta", 0.0, "> 0"),
    ("beta", float("nan"), "a number"),
    ("prior_sigma", 0.0, "> 0"),
    ("prior_sigma", -1.0, "> 0"),
    ("prior_mu", float("inf"), "finite"),
    ("epochs", 0, ">= 1"),
    ("epochs", 2.5, "an integer"),
    ("batch_size", 0, ">= 1"),
    ("lr", 0.0, "> 0"),
    ("lr", True, "a number"),
    ("bf_samples", 0, ">= 1"),
    ("train_size", 0, ">= 1"),
    ("seed", -1, ">= 0"),
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_an_error_not_a_fallback():
    with pytest.raises(ValueError, match=r"RunConfig.device='cuda'.*none found"):
        RunConfig(device="cuda")


def test_frozen():
    cfg = RunConfig()
    with pytest.raises(Exception):
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


def test_public_api_names():
    for name in ["RunConfig", "train", "RunResult", "prune_magnitude", "prune_random", "sparsity",
                 "layer_sparsity", "log_prior", "log_likelihood"]:
        assert hasattr(bp, name)
