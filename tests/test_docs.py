"""The results pages show the committed result files, verbatim: `python benchmarks/sync_docs.py` keeps them so."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sync():
    spec = importlib.util.spec_from_file_location("sync_docs", ROOT / "benchmarks" / "sync_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sync = _sync()


def _blocks(text: str) -> list[tuple[str, str]]:
    """(path, body) of every include block, parsed here independently of the sync tool."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = re.fullmatch(r"<!-- include: (\S+) -->", lines[i])
        if m:
            end = lines.index("<!-- end include -->", i + 1)
            out.append((m[1], "\n".join(lines[i + 1:end])))
            i = end
        i += 1
    return out


def test_every_page_shows_its_included_files_verbatim():
    pages = sync.pages()
    assert len([p for p in pages if p.parent.name == "results"]) >= 4
    seen = 0
    for page in pages:
        for rel, body in _blocks(page.read_text()):
            path = ROOT / rel
            assert rel.startswith("benchmarks/results/") and path.is_file(), f"{page.name} includes a missing {rel}"
            assert body == path.read_text().rstrip("\n"), f"{page.name}: {rel} drifted; run benchmarks/sync_docs.py"
            seen += 1
    assert seen >= 5  # the Table 1 blocks at least
    assert sync.drifted() == []


def test_markers_open_and_close_in_pairs():
    for page in sync.pages():
        text = page.read_text()
        assert text.count("<!-- include: ") == text.count("<!-- end include -->") == len(_blocks(text)), page.name


def test_results_pages_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in (ROOT / "docs" / "results").glob("*.md"):
        assert f"docs/results/{page.name}" in readme, page.name


def _tree(tmp_path, page_text, result="| a |\n|---|\n| 1 |\n"):
    (tmp_path / "benchmarks" / "results" / "x").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x" / "t.md").write_text(result)
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "README.md").write_text("# r\n")
    page = tmp_path / "docs" / "results" / "p.md"
    page.write_text(page_text)
    return page


def test_the_tool_finds_and_fixes_drift(tmp_path):
    page = _tree(tmp_path, "intro\n<!-- include: benchmarks/results/x/t.md -->\n| a |\n|---|\n| 0 |\n"
                           "<!-- end include -->\noutro\n")
    assert sync.drifted(tmp_path) == [page]
    fixed = sync.synced(page.read_text(), tmp_path, page)
    assert fixed == "intro\n<!-- include: benchmarks/results/x/t.md -->\n| a |\n|---|\n| 1 |\n<!-- end include -->\noutro\n"
    page.write_text(fixed)
    assert sync.drifted(tmp_path) == []


@pytest.mark.parametrize("rel", ["benchmarks/results/x/gone.md", "README.md", "benchmarks/results/../../README.md"])
def test_a_missing_or_outside_file_is_an_error(tmp_path, rel):
    _tree(tmp_path, f"<!-- include: {rel} -->\n<!-- end include -->\n")
    with pytest.raises(sync.IncludeError, match=re.escape(rel)):
        sync.drifted(tmp_path)


def _first_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)\n```", readme, re.S)
    return block[1].splitlines()


def test_the_readmes_first_command_installs_and_runs_the_bayesian_preset():
    """The README's first line is install && train --preset bayesian, parsed by the real CLI parser."""
    import shlex

    from bayesprune.core.config import RunConfig
    from bayesprune.ui import cli

    install, train = _first_commands()[0].split(" && ")
    assert install == "pip install -r requirements.txt"
    argv = shlex.split(train)
    assert argv[:3] == ["python", "-m", "bayesprune"]
    ns = cli.build_parser().parse_args(argv[3:])
    assert ns.command == "train" and cli.config_from_args(ns) == RunConfig.preset("bayesian")
    assert RunConfig.preset("bayesian") != RunConfig()  # the first run is not the paper's default


def test_ci_runs_the_readmes_test_command():
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith("#")]
    assert _first_commands()[1] == commands[-1] == "pytest"


def test_the_readmes_presets_paragraph_lists_the_bayesian_recipe():
    import bayesprune as bp

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"`bayesian` is\n\n```python\n(bp\.RunConfig\(.*?\))\n```", readme, re.S)
    assert code, "the README's Presets paragraph lost its recipe"
    assert eval(code[1], {"bp": bp}) == bp.RunConfig.preset("bayesian")
