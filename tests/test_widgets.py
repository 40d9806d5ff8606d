import pytest

import bayesprune as bp

widgets = pytest.importorskip("ipywidgets")
from bayesprune.widgets import ConfigControls, Dashboard  # noqa: E402


def test_controls_come_from_the_config_rules():
    form = ConfigControls(bp.RunConfig())
    c = form.controls
    assert list(c["method"].options) == list(bp.CHOICES["method"])
    assert list(c["dataset"].options) == list(bp.CHOICES["dataset"])
    assert c["sparsity"].min == 0.0 and c["sparsity"].max < 1.0
    assert c["beta"].value > 0 and c["prior_sigma"].value > 0
    assert "cuda" not in c["device"].options or __import__("torch").cuda.is_available()
    c["sparsity"].value = 5.0  # sliders clamp: the student cannot leave the allowed range
    assert c["sparsity"].value < 1.0
    import traitlets

    with pytest.raises(traitlets.TraitError):
        c["method"].value = "bogus"
    form.set(method="random", sparsity=0.5)
    cfg = form.config()
    assert isinstance(cfg, bp.RunConfig) and cfg.method == "random" and cfg.sparsity == 0.5


def test_dashboard_trains_and_overlays_runs():
    dash = Dashboard(bp.RunConfig(dataset="synthetic", epochs=2, fcn_hidden=(16, 8)), redraw_every=0.0)
    dash.form.set(method="none", epochs=2)
    dash.button.click()
    dash.raise_if_failed()
    dash.form.set(method="bayes-magnitude", sparsity=0.8)
    dash.button.click()
    dash.raise_if_failed()
    assert len(dash.runs) == 2 and dash.progress.value == 2
    assert "final test accuracy" in dash.status.value
    assert abs(dash.last_result.final_sparsity - 0.8) <= 0.005
    assert dash.draws >= 2


def test_dashboard_shows_errors_instead_of_swallowing_them(tmp_path):
    dash = Dashboard(bp.RunConfig(dataset="mnist", data_dir=str(tmp_path), epochs=1))
    dash.button.click()
    assert isinstance(dash.last_error, bp.DatasetNotFoundError)
    assert "error" in dash.status.value and "not found" in dash.status.value
    assert dash.progress.bar_style == "danger" and not dash.button.disabled
    with pytest.raises(RuntimeError, match="last training run failed"):
        dash.raise_if_failed()


def test_error_inside_the_epoch_callback_is_shown(monkeypatch):
    dash = Dashboard(bp.RunConfig(dataset="synthetic", epochs=1, fcn_hidden=(8,)))

    def broken(*a, **k):
        raise ZeroDivisionError("plot failed")

    monkeypatch.setattr(dash, "_draw", broken)
    dash.train()
    assert isinstance(dash.last_error, ZeroDivisionError)
    assert "plot failed" in dash.status.value
