"""House rules that hold without anyone remembering them: one-way imports, derived lists."""

import ast
from pathlib import Path

import pytest

import bayesprune as bp

PKG = Path(bp.__file__).parent
#: Higher layers may import lower ones, never the other way (cli -> sweeps/report -> training -> the rest).
LAYERS = {"__main__": 5, "cli": 4, "sweeps": 3, "report": 3, "widgets": 3, "tickets": 3, "bfcompare": 3, "training": 2}


def _imports(path: Path) -> set[str]:
    """bayesprune modules imported anywhere in the file (inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x, y
                out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("bayesprune."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("bayesprune."))
    return out


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PKG.glob("*.py")} - {"__init__"}
    return {m: _imports(PKG / f"{m}.py") & modules for m in modules}


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            pytest.fail("import cycle: " + " -> ".join(path + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


def test_imports_run_one_way():
    for m, deps in _graph().items():
        for d in deps:
            assert LAYERS.get(d, 0) < LAYERS.get(m, 0) or (LAYERS.get(d, 0) == 0 and LAYERS.get(m, 0) == 0), (
                f"{m} imports {d}, a module of an equal or higher layer")


def test_lower_modules_form_no_cycle_with_the_checker_itself():
    # the checker sees imports inside functions: a module importing itself lazily would show up
    assert "training" in _imports(PKG / "sweeps.py")
    assert "sweeps" not in _imports(PKG / "training.py")


def test_function_and_submodule_do_not_share_a_name():
    import importlib

    assert callable(bp.sweep) and importlib.import_module("bayesprune.sweeps").sweep is bp.sweep
    assert not hasattr(bp, "sweeps") or bp.sweeps.__name__ == "bayesprune.sweeps"


def test_public_names_are_declared():
    assert sorted(bp.__all__) == sorted(set(bp.__all__))
    for name in bp.__all__:
        assert hasattr(bp, name), name


def test_setting_columns_and_cli_flags_and_widgets_are_derived_from_the_config():
    from bayesprune.cli import build_parser
    from bayesprune.config import config_fields, fields_where
    from bayesprune.report import SETTING_COLUMNS

    names = [f.name for f in config_fields()]
    assert set(SETTING_COLUMNS) == set(names) - set(fields_where(role="axis")) - set(fields_where(role="io"))
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.dest for a in train._actions}
    assert set(names) <= flags
    from bayesprune.widgets import DEFAULT_FIELDS

    assert set(DEFAULT_FIELDS) == set(fields_where(widget=True)) and "sparsity" in DEFAULT_FIELDS


# ------------------------------------------------------------------ test tiers
#: Names whose use means a test starts another Python process (a few seconds each: torch is imported again).
STARTS_A_PROCESS = {"subprocess", "Popen", "ProcessPoolExecutor", "WorkerPool", "make_executor", "get_context",
                    "LocalCluster", "execute_notebook"}
TIER_MARKS = {"slow", "notebook", "browser"}


def _marks(decorators) -> set[str]:
    """``slow`` from ``@pytest.mark.slow`` or ``pytestmark = pytest.mark.slow`` (and lists of them)."""
    out = set()
    for d in decorators:
        for node in ast.walk(d):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark":
                out.add(node.attr)
    return out


def _names(node) -> set[str]:
    """Every name a function uses, its arguments included (so fixtures are followed too)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
           {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | \
           {n.arg for n in ast.walk(node) if isinstance(n, ast.arg)}


def _reached(funcs: dict, name: str, seen: set) -> set[str]:
    """The names a function uses, through the module's own helpers and fixtures."""
    if name in seen or name not in funcs:
        return set()
    seen.add(name)
    used = _names(funcs[name])
    return used.union(*(_reached(funcs, n, seen) for n in used & funcs.keys()))


def test_every_test_that_starts_a_process_is_out_of_the_inner_loop():
    """``pytest -m "not notebook and not browser"`` is the inner loop because of this rule (and conftest's)."""
    unmarked = []
    for path in sorted((PKG.parent / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marks = _marks([n.value for n in tree.body if isinstance(n, ast.Assign)
                               and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)])
        funcs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}

        for name, node in funcs.items():
            if name.startswith("test_") and isinstance(node, ast.FunctionDef):
                marks = module_marks | _marks(node.decorator_list)
                if _reached(funcs, name, set()) & STARTS_A_PROCESS and not marks & TIER_MARKS:
                    unmarked.append(f"{path.name}::{name}")
    assert unmarked == [], f"these start a process; mark them @pytest.mark.slow: {unmarked}"


@pytest.fixture
def conftest(request):
    """This folder's conftest module as pytest loaded it (an ``import conftest`` depends on sys.path)."""
    path = Path(__file__).with_name("conftest.py").resolve()
    for plugin in request.config.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", None) or "/").resolve() == path:
            return plugin
    pytest.fail(f"pytest did not load {path}")


@pytest.mark.parametrize("markexpr, wanted", [
    ("", True),  # bare pytest: the whole suite
    ("not notebook and not browser", False),  # the inner loop
    ("not notebook", False), ("not browser", False),  # these select unmarked tests: inner loops too
    ("slow", True), ("not slow", True), ("(not notebook and not browser) or slow", True),
    ("notebook", True), ("browser", True), ("notebook or browser", True),  # marked tests only: all of them
    ("notebook and not browser", True),
    ("not slowish", False),  # 'slow' as a whole word, not a prefix
])
def test_slow_tests_run_in_the_whole_suite_and_when_m_names_them_or_selects_marked_tests(conftest, markexpr,
                                                                                         wanted):
    assert conftest.slow_tests_wanted(markexpr) is wanted
    assert (conftest.slow_tests_notice(markexpr) is None) is wanted


def test_a_marker_run_that_does_not_name_slow_deselects_exactly_the_slow_tests(conftest):
    class Item:
        def __init__(self, name, slow):
            self.name, self.slow = name, slow

        def get_closest_marker(self, name):
            return object() if name == "slow" and self.slow else None

    class Config:
        def __init__(self, markexpr):
            self.markexpr, self.deselected = markexpr, []
            self.hook = self

        def getoption(self, name):
            assert name == "markexpr"
            return self.markexpr

        def pytest_deselected(self, items):
            self.deselected += items

    items = [Item("a", False), Item("b", True), Item("c", False), Item("d", True)]
    for markexpr, kept, dropped in [("not notebook and not browser", "ac", "bd"), ("", "abcd", ""),
                                    ("slow", "abcd", ""), ("notebook", "abcd", "")]:
        config, selected = Config(markexpr), list(items)
        conftest.pytest_collection_modifyitems(config, selected)
        assert "".join(i.name for i in selected) == kept
        assert "".join(i.name for i in config.deselected) == dropped
