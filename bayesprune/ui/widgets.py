"""ipywidgets controls built from :class:`RunConfig`, the training dashboard, and notebook 05's explorer.

Only core widgets (ipywidgets 7.7+ and 8.x, so Colab's 7.7 works).  Choices and
bounds come from the config's own validation tables (:data:`CHOICES`,
:data:`BOUNDS`), so a student cannot pick a value that ``RunConfig`` would reject.

Nothing here freezes the notebook:

* The dashboard trains in a background thread.  The kernel stays free to handle
  button clicks, so **Stop** ends a run after its current epoch (the callback
  raises :class:`~bayesprune.engine.training.StopTraining`) and keeps what was trained.
  Train while a run is going queues another run.  ``button.click()`` from code takes
  the same path; ``wait()`` (or ``raise_if_failed()``) blocks until the queue is done.
* Figures are rendered off-screen to PNG and shown in an ``Image`` widget (safe to
  update from a thread): every epoch for short runs, otherwise only while plotting
  stays within a share of the elapsed time (``draw_budget``); the last epoch of the
  queue always draws.
* The explorer's sliders recompute on release (``continuous_update=False``), show
  "computing…" while they do, and stop drawing masks after ``max_seconds``.
"""

from __future__ import annotations

import io
import math
import threading
import time
import traceback
from typing import Any, Optional, Sequence

from ..core.config import BOUNDS, CHOICES, RunConfig, config_fields, field_type, fields_where

#: The dashboard's controls: the fields whose metadata says ``widget=True``.
DEFAULT_FIELDS = tuple(fields_where(widget=True))


def available_devices() -> list[str]:
    """Device choices that RunConfig would accept on this machine."""
    import torch

    from ..core.config import _mps_available

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    if _mps_available():
        out.append("mps")
    return out


def _field_meta(name: str) -> dict[str, Any]:
    return next(f.metadata for f in config_fields() if f.name == name)


def control_for(name: str, value: Any):
    """One widget for one RunConfig field, derived from its type, choices, bounds and ``ui`` range."""
    import ipywidgets as w

    meta = _field_meta(name)
    style = {"description_width": "110px"}
    layout = w.Layout(width="340px")
    common = dict(description=name.replace("_", " "), style=style, layout=layout)
    kind = field_type(name)
    if name == "device":
        devices = available_devices()
        if value not in devices:  # a config saved on another machine: say so, not a TraitError
            raise ValueError(f"RunConfig.device={value!r} is invalid on this machine: allowed "
                             f"{', '.join(devices)} (no {value} device found); use device='auto' or 'cpu'")
        return w.Dropdown(options=devices, value=value, **common)
    if name in CHOICES:
        return w.Dropdown(options=list(CHOICES[name]), value=value, **common)
    if kind is bool:
        return w.Checkbox(value=value, indent=False, **common)
    lo, hi, lo_inc, hi_inc = BOUNDS[name]
    ui_lo, ui_hi = meta.get("ui", (lo, hi))
    # A slider clamps a value outside its range: the range is widened to hold the value given, never the
    # value changed.
    if kind is float and lo is not None and hi is not None and lo >= 0 and hi <= 1:  # a fraction: sparsity
        top = hi if hi_inc else hi - 0.01  # the slider stops one step short of an open bound
        return w.FloatSlider(value=value, min=lo, max=max(top, value), step=0.01, readout_format=".2f", **common)
    if kind is float and (lo is None or lo < 0 or "ui" not in meta):  # signed (prior_mu) or no range to slide
        return w.FloatText(value=value, **common)
    if kind is float:  # every field on (0, inf) or [0, inf): a log slider over its ui range
        return LogSlider(value, ui_lo, ui_hi, zero=bool(lo == 0 and lo_inc), **common)
    if kind is int:
        return w.IntSlider(value=value, min=min(int(ui_lo), value), max=max(int(ui_hi), value), **common)
    raise ValueError(f"no widget for RunConfig field {name!r}")


def _log_slider(value: float, ui_lo: float, ui_hi: float, **common):
    low, high = math.log10(min(ui_lo, value)), math.log10(max(ui_hi, value))
    if value < ui_lo or value > ui_hi:  # widened: a hair more, as 10 ** log10(v) may fall short of v
        low, high = low - 1e-9 * (value < ui_lo), high + 1e-9 * (value > ui_hi)
    import ipywidgets as w

    return w.FloatLogSlider(value=value, base=10, min=low, max=high, step=0.001, readout_format=".3g", **common)


def LogSlider(value: float, ui_lo: float, ui_hi: float, zero: bool = False, **common):
    """A log slider over ``[ui_lo, ui_hi]`` (widened to hold ``value``); with ``zero``, also a "0" box.

    A log slider has no 0, so a field that allows 0 (beta: 0 accepts every step) gets a checkbox beside it
    that sets the value to exactly 0 (the slider is then greyed out).  Either way the widget has the
    ``value`` and ``disabled`` of a plain slider, so :class:`ConfigControls` reads and sets it like any other.
    """
    if not zero:
        return _log_slider(value, ui_lo, ui_hi, **common)
    return ZeroOrLogSlider(value, ui_lo, ui_hi, **common)


def _zero_or_log_slider_class():
    import ipywidgets as w

    class _ZeroOrLogSlider(w.HBox):
        def __init__(self, value: float, ui_lo: float, ui_hi: float, **common):
            layout = common.pop("layout", None)
            start = value if value > 0 else min(max(1.0, ui_lo), ui_hi)
            self.slider = _log_slider(start, ui_lo, ui_hi, layout=w.Layout(width="290px"), **common)
            self.zero = w.Checkbox(value=value == 0, description="0", indent=False, layout=w.Layout(width="45px"))
            self.slider.disabled = value == 0
            self.zero.observe(lambda ch: setattr(self.slider, "disabled", ch["new"] or self.zero.disabled), "value")
            super().__init__([self.slider, self.zero], layout=layout)

        @property
        def value(self) -> float:
            return 0.0 if self.zero.value else self.slider.value

        @value.setter
        def value(self, v: float) -> None:
            self.zero.value = v == 0
            if v != 0:
                e = math.log10(v)
                if e < self.slider.min or e > self.slider.max:  # widen the range, never change the value
                    self.slider.min, self.slider.max = min(self.slider.min, e - 1e-9), max(self.slider.max, e + 1e-9)
                self.slider.value = v

        @property
        def disabled(self) -> bool:
            return self.zero.disabled

        @disabled.setter
        def disabled(self, off: bool) -> None:
            self.zero.disabled = off
            self.slider.disabled = off or self.zero.value

    return _ZeroOrLogSlider


def ZeroOrLogSlider(value: float, ui_lo: float, ui_hi: float, **common):
    """See :func:`LogSlider` (the class is built on first use: ipywidgets is imported only then)."""
    global _ZERO_OR_LOG
    if _ZERO_OR_LOG is None:
        _ZERO_OR_LOG = _zero_or_log_slider_class()
    return _ZERO_OR_LOG(value, ui_lo, ui_hi, **common)


_ZERO_OR_LOG = None


class ConfigControls:
    """A group of widgets that reads back as a validated RunConfig."""

    def __init__(self, base: RunConfig, fields: Sequence[str] = DEFAULT_FIELDS):
        self.base = base
        self.controls = {name: control_for(name, getattr(base, name)) for name in fields}
        if "method" in self.controls:  # controls that do not apply to the chosen method are greyed out
            self.controls["method"].observe(lambda _change: self.update_applicable(), names="value")
        self.update_applicable()

    def applies(self, name: str, method: str) -> bool:
        """Whether field ``name`` changes a run of ``method`` (its metadata ``applies``: all, pruned or bayes)."""
        applies = "pruned" if name == "sparsity" else _field_meta(name)["applies"]  # the baseline has no target
        if applies == "bayes":
            return method.startswith("bayes-")
        return applies != "pruned" or method != "none"

    def update_applicable(self) -> None:
        method = self.controls["method"].value if "method" in self.controls else self.base.method
        for name, c in self.controls.items():
            c.disabled = not self.applies(name, method)

    def config(self) -> RunConfig:
        values = {name: c.value for name, c in self.controls.items()}
        for name in values:
            if field_type(name) is int and values[name] is not None:
                values[name] = int(values[name])
        if "prune_start_epoch" not in values and values.get("epochs", 1) < self.base.prune_start_epoch:
            values["prune_start_epoch"] = 1
        return self.base.replace(**values)

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            self.controls[name].value = value

    def box(self):
        import ipywidgets as w

        items = list(self.controls.values())
        half = math.ceil(len(items) / 2)
        return w.HBox([w.VBox(items[:half]), w.VBox(items[half:])])


def _label(cfg: RunConfig) -> str:
    extra = "" if cfg.method == "none" else f" {cfg.sparsity:.0%}"
    return f"{cfg.method}{extra} (s{cfg.seed})"


def render_png(fig, dpi: int = 80) -> bytes:
    """One off-screen Agg draw of a (pyplot-free) Figure, encoded as PNG.

    ``Figure.savefig`` draws the figure twice in current matplotlib; this draws once.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    w, h = canvas.get_width_height()
    buf = io.BytesIO()
    Image.frombuffer("RGBA", (w, h), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(buf, "png", compress_level=1)
    return buf.getvalue()


class LiveCurves:
    """The dashboard's figure: :func:`bayesprune.runs.plots.plot_curves` itself, on axes built once and redrawn.

    The axes and margins are made once; each :meth:`render` removes the lines and calls ``plot_curves``
    on the same four axes (``ax=``), with one legend entry per run (the line styles are keyed in the panel
    titles), and draws once off-screen.
    That is about half the cost of building the figure anew, which matters when a draw takes as long
    as a few epochs.  No pyplot: safe in the dashboard's worker thread.
    """

    def __init__(self):
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(12, 4.2))
        self.ax_loss, self.ax_bf = self.fig.subplots(1, 2)
        self.ax_acc, self.ax_sp = self.ax_loss.twinx(), self.ax_bf.twinx()
        self.fig.subplots_adjust(left=0.05, right=0.95, bottom=0.12, top=0.86, wspace=0.32)

    def render(self, runs: dict[str, Any], title: str = "", beta: Optional[float] = None, dpi: int = 80) -> bytes:
        """PNG of the runs (label -> history DataFrame or list of rows) overlaid."""
        from ..runs import plots

        axes = (self.ax_loss, self.ax_acc, self.ax_bf, self.ax_sp)
        for ax in axes:
            for artist in list(ax.lines) + list(ax.collections):
                artist.remove()
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        plots.plot_curves(runs, title, beta, ax=axes, legend="runs")
        for ax in (self.ax_loss, self.ax_acc, self.ax_bf):
            ax.relim()
            ax.autoscale_view()
        self.ax_sp.relim()
        self.ax_sp.autoscale_view(scaley=False)
        self.fig.suptitle(title)
        return render_png(self.fig, dpi)


class Dashboard:
    """Controls, Train and Stop buttons, a progress bar and live curves; runs can be overlaid.

    Train (``button``) queues a run of the current settings and returns at once; the runs go
    one after another in a background thread.  Stop (``stop_button``) ends the current run
    after its epoch (its finished epochs are kept, status ``stopped``) and cancels the queued
    ones.  :meth:`train` runs one config synchronously in the calling thread.  Errors are shown
    in the dashboard (and kept in ``last_error``), never swallowed; :meth:`raise_if_failed`
    waits for the queue and turns them into an exception for headless runs.

    Redraws: a run of at most ``every_epoch_up_to`` epochs redraws after every epoch (a short run,
    seconds on digits: the curves grow as the student watches).  A longer one redraws at most every
    ``redraw_every`` seconds, and only while the plotting time, the next draw included, stays within
    ``draw_budget`` of the time the queue has been running.  The queue's last epoch always draws.
    ``draw_seconds``/``busy_seconds`` is the plotting share.
    """

    def __init__(self, base: Optional[RunConfig] = None, fields: Sequence[str] = DEFAULT_FIELDS,
                 progress_bar: bool = False, redraw_every: float = 2.0, draw_budget: float = 0.05,
                 dpi: int = 80, every_epoch_up_to: int = 30):
        import ipywidgets as w

        self.base = base or RunConfig()
        self.form = ConfigControls(self.base, fields)
        self.button = w.Button(description="Train", button_style="primary", icon="play",
                               tooltip="train with these settings (queued if a run is going)")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True,
                                    tooltip="end the run after the current epoch and keep what was trained")
        self.overlay = w.Checkbox(value=True, description="overlay previous runs", indent=False)
        self.clear_button = w.Button(description="Clear runs", icon="trash")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="epochs", bar_style="info")
        self.status = w.HTML("Pick settings and press <b>Train</b>.")
        self.status.add_class("bayesprune-status")  # a stable handle for browser tests
        self.figure = w.Image(format="png", layout=w.Layout(display="none", max_width="100%"))
        self.figure.add_class("bayesprune-figure")
        self.errors = w.Output()
        self.runs: dict[str, Any] = {}
        self.results: dict[str, Any] = {}
        self.last_error: Optional[BaseException] = None
        self.last_result = None
        self._tqdm = progress_bar
        self.redraw_every = redraw_every
        self.draw_budget = draw_budget
        self.every_epoch_up_to = every_epoch_up_to
        self.dpi = dpi
        self.draw_seconds = 0.0  # plotting time, all runs
        self.busy_seconds = 0.0  # time the queue was running, all runs
        self.draws = 0
        self._fig = None
        self._queue: list[RunConfig] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._active = False  # a worker owns the queue (read and written under _lock)
        self._busy_since = 0.0
        self._draw_spent = 0.0  # plotting time since the queue started
        self._last_draw = -math.inf
        self.button.on_click(lambda _b: self.submit())
        self.stop_button.on_click(lambda _b: self.stop())
        self.clear_button.on_click(lambda _b: self.clear())

    # ---------------------------------------------------------------- layout
    def widget(self):
        import ipywidgets as w

        return w.VBox([self.form.box(), w.HBox([self.button, self.stop_button, self.clear_button, self.overlay]),
                       w.HBox([self.progress, self.status]), self.figure, self.errors])

    def _ipython_display_(self):  # pragma: no cover - used by Jupyter
        from IPython.display import display

        display(self.widget())

    # ---------------------------------------------------------------- queue
    @property
    def running(self) -> bool:
        """Whether a queue of runs is being worked through."""
        return self._active

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def draw_fraction(self) -> float:
        """Share of the queue's running time spent plotting (0 before any run)."""
        return self.draw_seconds / self.busy_seconds if self.busy_seconds else 0.0

    def submit(self) -> Optional[RunConfig]:
        """What Train does: queue a run of the current settings; start the worker if idle.

        The settings are read now, so the controls can change while the run waits.  Returns
        the queued config, or None if the settings are invalid (the error is shown).
        """
        try:
            cfg = self.form.config()
        except Exception as exc:  # an invalid combination of controls: show it, queue nothing
            self._show_error(exc)
            return None
        with self._lock:
            if self._active:  # a run is going: this one waits its turn
                self._queue.append(cfg)
                self.status.value += f" · <i>{len(self._queue)} queued</i>"
                return cfg
            self._active = True
            self._stop.clear()
            self.last_error = None
            self.errors.outputs = ()
            self.stop_button.disabled = False
            self.clear_button.disabled = True
            self._busy_since, self._draw_spent = time.perf_counter(), 0.0
            self._worker = threading.Thread(target=self._work, args=(cfg,), name="bayesprune-dashboard", daemon=True)
            self._worker.start()
        return cfg

    def stop(self) -> None:
        """What Stop does: end the current run after its epoch and cancel the queued ones."""
        with self._lock:
            cancelled = len(self._queue)
            self._queue.clear()
        self._stop.set()
        if self.running:
            extra = f"; {cancelled} queued run{'s' if cancelled != 1 else ''} cancelled" if cancelled else ""
            self.status.value = f"stopping after this epoch{extra} …"

    def wait(self, timeout: Optional[float] = None):
        """Block until the queue is done (headless use); returns the last RunResult."""
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
        return self.last_result

    def _work(self, cfg: RunConfig) -> None:
        """The worker: ``cfg`` (the run Train started) now, then the queue, until it is empty or stopped."""
        while True:
            try:
                ok = self._run(cfg) is not None
            except BaseException as exc:  # noqa: B036 - nothing may kill the worker while it owns the queue
                self._show_error(exc)
                ok = False
            with self._lock:
                if not ok or not self._queue or self._stop.is_set():  # a failure also ends the queue
                    self._queue.clear()
                    self.busy_seconds += time.perf_counter() - self._busy_since
                    self.stop_button.disabled = True
                    self.clear_button.disabled = False
                    self._active = False
                    return
                cfg = self._queue.pop(0)

    # ---------------------------------------------------------------- actions
    def clear(self) -> None:
        if self.running:
            return
        self.runs.clear()
        self.results.clear()
        self.figure.layout.display = "none"

    def _draw(self, current: dict[str, Any], cfg: RunConfig) -> None:
        t0 = time.perf_counter()
        runs = dict(self.runs) if self.overlay.value else {}
        runs.update(current)
        if self._fig is None:
            self._fig = LiveCurves()
        self.figure.value = self._fig.render(runs, f"{cfg.dataset} / {cfg.model}",
                                             cfg.beta if cfg.is_bayesian else None, self.dpi)
        self.figure.layout.display = ""
        spent = time.perf_counter() - t0
        self.draw_seconds += spent
        self._draw_spent += spent
        self.draws += 1

    def _should_draw(self, now: float) -> bool:
        if now - self._last_draw < self.redraw_every:
            return False
        last_cost = self.draw_seconds / self.draws if self.draws else 0.5  # a guess until one is measured
        return self._draw_spent + last_cost <= self.draw_budget * (now - self._busy_since)

    def train(self, cfg: Optional[RunConfig] = None):
        """Train one run now, in the calling thread (the current settings unless ``cfg``).

        Returns the RunResult (status ``ok`` or ``stopped``), or None on error.
        """
        if cfg is None:
            try:
                cfg = self.form.config()
            except Exception as exc:
                self._show_error(exc)
                return None
        self.last_error = None
        self.errors.outputs = ()
        if not self.running:
            self._busy_since, self._draw_spent = time.perf_counter(), 0.0
            self._stop.clear()
        t0 = time.perf_counter()
        result = self._run(cfg)
        if not self.running:
            self.busy_seconds += time.perf_counter() - t0
        return result

    def _run(self, cfg: RunConfig):
        from ..engine.training import StopTraining, train

        label, n = _label(cfg), 2
        while label in self.runs:  # the same settings again: keep both runs in the overlay
            label, n = f"{_label(cfg)} #{n}", n + 1
        rows: list[dict[str, Any]] = []
        try:
            self.progress.max, self.progress.value, self.progress.bar_style = cfg.epochs, 0, "info"
            self.status.value = f"training <b>{label}</b> on {cfg.dataset} / {cfg.model} …"

            def on_epoch(row: dict[str, Any]) -> None:
                rows.append(row)
                self.progress.value = row["epoch"]
                queued = f" · <i>{len(self._queue)} queued</i>" if self._queue else ""
                self.status.value = (f"<b>{label}</b>: epoch {row['epoch']}/{cfg.epochs} · test acc "
                                     f"{row['test_acc']:.4f} · sparsity {row['sparsity']:.3f}{queued}")
                now = time.perf_counter()
                short = cfg.epochs <= self.every_epoch_up_to  # a short run: watch it grow, epoch by epoch
                if row["epoch"] < cfg.epochs and not self._stop.is_set() and (short or self._should_draw(now)):
                    self._draw({label: rows}, cfg)
                    self._last_draw = time.perf_counter()
                if self._stop.is_set():
                    raise StopTraining

            result = train(cfg, callbacks=[on_epoch], progress=self._tqdm)
            self.runs[label] = result.history
            self.results[label] = result
            self.last_result = result
            if not self._queue:  # the queue's last run: always show the final curves
                self._draw({}, cfg)
                self._last_draw = time.perf_counter()
            if result.status == "stopped":
                self.progress.bar_style = "warning"
                self.status.value = (f"<b>{label}</b> stopped after epoch {len(result.history)} of {cfg.epochs}: "
                                     f"test accuracy <b>{result.test_accuracy:.4f}</b> at sparsity "
                                     f"<b>{result.final_sparsity:.3f}</b>; the trained epochs are kept")
            else:
                self.progress.bar_style = "success"
                self.status.value = (f"<b>{label}</b> done: final test accuracy <b>{result.test_accuracy:.4f}</b> "
                                     f"at sparsity <b>{result.final_sparsity:.3f}</b> in {result.seconds:.1f}s")
            return result
        except Exception as exc:  # shown to the student, kept for raise_if_failed()
            self._show_error(exc)
            return None

    def _show_error(self, exc: BaseException) -> None:
        self.last_error = exc
        self.progress.bar_style = "danger"
        self.status.value = f"<span style='color:#b00'><b>error:</b> {type(exc).__name__}: {exc}</span>"
        self.errors.append_stdout("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    def raise_if_failed(self) -> None:
        """Wait for the queue, then raise if the last run failed (for headless use)."""
        self.wait()
        if self.last_error is not None:
            raise RuntimeError(f"the last training run failed: {self.last_error}") from self.last_error


class DistanceExplorer:
    """Notebook 05's widget: the distribution, over random masks, of a fresh network's output distance.

    Pick a width, a rate, a strategy, rescaling and the number of masks; on release of a slider
    the histogram is recomputed once (``continuous_update=False``), with "computing…" shown
    meanwhile.  Masks stop after ``max_seconds`` (the title then says how many were drawn), and
    widths stop at 1024, so one update stays within about two seconds on two CPU cores.
    Networks are built once per width and cached.
    """

    WIDTHS = (16, 32, 64, 128, 256, 512, 1024)

    def __init__(self, x, num_classes: int, kind: str = "fcn", width: int = 256, rate: float = 0.6,
                 strategy: str = "random", rescale: bool = True, masks: int = 30, max_masks: int = 200,
                 max_seconds: float = 1.5, seed: int = 0):
        import ipywidgets as w

        self.x, self.num_classes, self.kind, self.seed = x, num_classes, kind, seed
        self.max_seconds = max_seconds
        style, layout = {"description_width": "70px"}, w.Layout(width="330px")
        common = dict(continuous_update=False, style=style, layout=layout)
        self.controls = {
            "width": w.SelectionSlider(options=list(self.WIDTHS), value=width, description="width", **common),
            "rate": w.FloatSlider(value=rate, min=0.0, max=0.99, step=0.01, description="rate", **common),
            "strategy": w.Dropdown(options=["random", "magnitude"], value=strategy, description="strategy",
                                   style=style, layout=layout),
            "rescale": w.Checkbox(value=rescale, description="rescale kept weights by 1/(1-rate)", indent=False),
            "masks": w.IntSlider(value=masks, min=1, max=max_masks, description="masks", **common),
        }
        self.status = w.HTML("")
        self.status.add_class("bayesprune-explorer-status")
        self.image = w.Image(format="png", layout=w.Layout(display="none", max_width="100%"))
        self.last = None  # the last measure_masks table
        self.computes = 0
        self._nets: dict[int, Any] = {}
        self._quiet = False
        for c in self.controls.values():
            c.observe(self._changed, names="value")

    def widget(self):
        import ipywidgets as w

        c = self.controls
        return w.VBox([w.HBox([w.VBox([c["width"], c["rate"], c["masks"]]), w.VBox([c["strategy"], c["rescale"]])]),
                       self.status, self.image])

    def _ipython_display_(self):  # pragma: no cover - used by Jupyter
        from IPython.display import display

        display(self.widget())

    def set(self, **values: Any):
        """Change several controls, then recompute once; returns the distances."""
        self._quiet = True
        try:
            for name, value in values.items():
                self.controls[name].value = value
        finally:
            self._quiet = False
        return self.compute()

    def _changed(self, _change) -> None:
        if not self._quiet:
            self.compute()

    def _net(self, width: int):
        from ..lab.theory import make_net

        if width not in self._nets:
            self._nets[width] = make_net(self.kind, width, self.x.shape[1:], self.num_classes, self.seed)
        return self._nets[width]

    def compute(self):
        """Measure and draw the current settings; returns the distances (one per mask drawn)."""
        from matplotlib.figure import Figure

        from ..lab.theory import measure_masks

        v = {k: c.value for k, c in self.controls.items()}
        for c in self.controls.values():
            c.disabled = True
        self.status.value = "<i>computing…</i>"
        try:
            t0 = time.perf_counter()
            m = measure_masks(self._net(v["width"]), self.x, v["rate"], v["masks"], v["strategy"], v["rescale"],
                              seed=self.seed, max_seconds=self.max_seconds)
            d = m["distance"].to_numpy()
            asked = 1 if v["strategy"] == "magnitude" else v["masks"]
            capped = f" (time cap: {len(d)} of {asked} masks)" if len(d) < asked else ""
            fig = Figure(figsize=(6, 3))
            ax = fig.subplots()
            ax.hist(d, bins=15, color="tab:purple")
            sd = f", sd {d.std(ddof=1):.3f}" if len(d) > 2 else ""
            ax.set(xlabel="relative output distance", ylabel="masks",
                   title=f"width {v['width']}, {v['strategy']} {v['rate']:.0%}: mean {d.mean():.3f}{sd}, "
                         f"{len(d)} mask{'s' if len(d) != 1 else ''}")
            fig.tight_layout()
            self.image.value = render_png(fig, dpi=80)
            self.image.layout.display = ""
            self.last = m
            self.computes += 1
            self.status.value = (f"{len(d)} mask{'s' if len(d) != 1 else ''} in {time.perf_counter() - t0:.1f}s"
                                 f"{capped} · signal kept {m['signal_kept'].mean():.2f}")
            return d
        except Exception as exc:
            self.status.value = f"<span style='color:#b00'><b>error:</b> {type(exc).__name__}: {exc}</span>"
            raise
        finally:
            for c in self.controls.values():
                c.disabled = False
