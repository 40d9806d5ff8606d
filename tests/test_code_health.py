"""House rules that hold without anyone remembering them: one-way imports, derived lists."""

import ast
from pathlib import Path

import pytest

import bayesprune as bp

PKG = Path(bp.__file__).parent
#: The subpackages, lowest first: a module may import its own subpackage or a lower one, never a higher one.
PACKAGE_RANK = {"core": 0, "bayes": 1, "engine": 2, "runs": 3, "analysis": 4, "lab": 5, "ui": 6, "": 7}


def _module_name(path: Path) -> str:
    """``core.config`` for bayesprune/core/config.py, ``__init__`` for bayesprune/__init__.py."""
    return ".".join(path.relative_to(PKG).with_suffix("").parts)


def _package(module: str) -> str:
    return module.split(".")[0] if "." in module else ""


def _imports(path: Path) -> set[str]:
    """bayesprune modules (``sub.mod``) imported anywhere in the file (inside functions too)."""
    here = _module_name(path)
    base = here.rsplit(".", 1)[0] if path.name != "__init__.py" else here
    base = "" if base in ("__init__", "__main__") else base
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base.split(".") if base else []
                parent = parent[: len(parent) - (node.level - 1)]
                prefix = ".".join(parent + ([node.module] if node.module else []))
                if node.module:
                    out.add(prefix)
                else:  # from . import x, y
                    out.update(f"{prefix}.{a.name}" if prefix else a.name for a in node.names)
            elif node.module and node.module.startswith("bayesprune."):
                out.add(node.module[len("bayesprune."):])
        elif isinstance(node, ast.Import):
            out.update(a.name[len("bayesprune."):] for a in node.names if a.name.startswith("bayesprune."))
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p) for p in PKG.rglob("*.py")}
    return {m: _imports(PKG.joinpath(*m.split(".")).with_suffix(".py")) & modules for m in modules}


def test_every_module_is_in_a_ranked_package():
    unranked = sorted(m for m in _graph() if _package(m) not in PACKAGE_RANK)
    assert unranked == [], f"modules outside the ranked subpackages: {unranked}"


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
    upward = {(m, d) for m, deps in _graph().items() for d in deps
              if PACKAGE_RANK[_package(d)] > PACKAGE_RANK[_package(m)]}
    assert upward == set(), f"imports of a higher subpackage: {sorted(upward)}"


def test_the_checker_sees_imports_inside_functions():
    # a lazy import of a higher layer must show up: sweeps imports training inside a function
    assert "engine.training" in _imports(PKG / "runs" / "sweeps.py")
    assert not any(d.startswith("runs.sweeps") for d in _imports(PKG / "engine" / "training.py"))


def test_install_hints_name_extras_that_exist():
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = set(tomllib.loads((PKG.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = {m for p in PKG.rglob("*.py") for m in re.findall(r"bayesprune\[(\w+)\]", p.read_text())}
    assert named and named <= extras, f"install hints name extras that pyproject.toml lacks: {sorted(named - extras)}"
    assert {"laplace", "notebooks", "dask", "dev"} <= extras
    readme = (PKG.parent / "README.md").read_text()
    assert all(f'".[{e}]"' in readme for e in ("laplace", "notebooks", "dask", "dev")), "the README names each extra"


def test_public_names_are_declared():
    assert sorted(bp.__all__) == sorted(set(bp.__all__))
    for name in bp.__all__:
        assert hasattr(bp, name), name


def test_setting_columns_and_cli_flags_and_widgets_are_derived_from_the_config():
    from bayesprune.analysis.report import SETTING_COLUMNS
    from bayesprune.core.config import config_fields, fields_where
    from bayesprune.ui.cli import build_parser

    names = [f.name for f in config_fields()]
    assert set(SETTING_COLUMNS) == set(names) - set(fields_where(role="axis")) - set(fields_where(role="io"))
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.dest for a in train._actions}
    assert set(names) <= flags
    from bayesprune.ui.widgets import DEFAULT_FIELDS

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
