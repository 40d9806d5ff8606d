"""Shared fixtures: everything offline, nothing from ../shared."""

import os
import re
from pathlib import Path

# One torch thread, for this process and every process a test starts (set before torch is imported): the test
# models are tiny, and two threads ran the inner loop 1.4x slower on 2 cores (77 s against 56 s). Set
# OMP_NUM_THREADS yourself to test with more.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


# ------------------------------------------------------------------ test tiers
def _selects_unmarked(markexpr: str) -> bool:
    """Whether ``-m markexpr`` would select a test that carries no marker at all."""
    try:
        from _pytest.mark.expression import Expression  # pytest's own -m parser (not public API)
    except ImportError:  # a pytest that moved it: treat every expression as an inner loop, as before
        return True
    try:
        return Expression.compile(markexpr).evaluate(lambda name, /, **kwargs: False)
    except SyntaxError:  # pytest itself reports the bad expression
        return True


def slow_tests_wanted(markexpr: str) -> bool:
    """Run the ``slow`` tests (they start Python processes) unless ``-m`` asks for an inner loop.

    Why: ``pytest -m "not notebook and not browser"`` is the inner loop; with its process tests (each imports
    torch again) it took 212 s here, without them under a minute.  An expression that would select plain,
    unmarked tests (``not notebook``, ``not browser``) is such a loop, so it leaves the slow tests out unless
    it names ``slow``.  Bare ``pytest`` runs everything; so does a selection of marked tests only
    (``-m notebook``, ``-m browser``), slow ones included.
    """
    markexpr = markexpr.strip()
    if not markexpr or "slow" in re.findall(r"[A-Za-z_][\w.-]*", markexpr):
        return True
    return not _selects_unmarked(markexpr)


def pytest_collection_modifyitems(config, items):
    if slow_tests_wanted(config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
        config.hook.pytest_deselected(items=slow)


def slow_tests_notice(markexpr: str) -> str | None:
    """The line that says the slow tests were left out, or None where they ran."""
    if slow_tests_wanted(markexpr):
        return None
    return (f"-m {markexpr!r} selects unmarked tests and does not name 'slow': the tests that start Python "
            "processes were left out (bare pytest runs everything; add 'or slow' to -m to include them)")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """At the end, where ``-q`` and xdist still show it (the header is hidden by ``-q``)."""
    notice = slow_tests_notice(config.getoption("markexpr") or "")
    if notice:
        terminalreporter.write_sep("-", "test tiers")
        terminalreporter.write_line(notice)


@pytest.fixture
def small_cfg():
    import bayesprune as bp

    return bp.RunConfig(dataset="synthetic", epochs=2, fcn_hidden=(32, 16), bf_samples=128)


@pytest.fixture
def cli_run(capsys):
    """``python -m bayesprune ARGS`` in this process: ``cli_run(*args)`` -> (exit status, stdout, stderr).

    Argparse's own errors (usage, exit 2) arrive as SystemExit and become the status; any other
    exception fails the test, as a traceback on the command line would.
    """
    from bayesprune.ui import cli

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(args))
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def ipywidgets7() -> Path:
    """The folder holding ipywidgets 7.7 (Colab's version) for the compatibility tests, or skip.

    `.ci/run` installs it with ``pip install --target .venv-ci/ipywidgets7 --no-deps "ipywidgets==7.7.*"
    ipython_genutils`` and sets BAYESPRUNE_REQUIRE_IPYWIDGETS7=1, so in CI a missing folder fails.
    """
    root = Path(__file__).resolve().parents[1]
    path = Path(os.environ.get("BAYESPRUNE_IPYWIDGETS7", root / ".venv-ci" / "ipywidgets7"))
    if (path / "ipywidgets").is_dir():
        return path
    why = f"no ipywidgets 7.7 in {path} (pip install --target {path} --no-deps 'ipywidgets==7.7.*' ipython_genutils)"
    if os.environ.get("BAYESPRUNE_REQUIRE_IPYWIDGETS7") == "1":
        pytest.fail(why)
    pytest.skip(why)
