"""Every link from a teaching notebook to ``docs/`` resolves: the file exists, and a ``#anchor`` names a heading in it.

Why: the notebooks send students to the glossary and teachers to the instructor notes; a link that points
nowhere is an answer that is not there.  Covered: every notebook.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
COVERED = sorted(p.name for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))  # every notebook has its notes
LINK = re.compile(r"(?:\.\./)?(docs/[\w./-]+\.md)(#[\w-]+)?")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_github_anchor_matches_githubs_rule():
    assert github_anchor("Exercise 1") == "exercise-1"
    assert github_anchor("What the seed changes") == "what-the-seed-changes"
    assert github_anchor("Probability and Bayes") == "probability-and-bayes"


@pytest.mark.parametrize("name", COVERED)
def test_every_docs_link_in_the_notebook_resolves(name):
    cells = json.loads((NB_DIR / name).read_text())["cells"]
    links = {(m.group(1), m.group(2)) for c in cells for m in LINK.finditer("".join(c["source"]))}
    assert any(path.startswith("docs/instructor/") for path, _ in links), f"{name} links no instructor notes"
    for path, anchor in links:
        target = ROOT / path
        assert target.is_file(), f"{name} links {path}, which does not exist"
        if anchor:
            headings = {github_anchor(h) for h in re.findall(r"^#+\s+(.*)$", target.read_text(), re.M)}
            assert anchor[1:] in headings, f"{name} links {path}{anchor}: no such heading"


@pytest.mark.parametrize("name", COVERED)
def test_instructor_notes_cover_every_exercise(name):
    """Each exercise cell of the notebook has its section in the notes."""
    cells = json.loads((NB_DIR / name).read_text())["cells"]
    numbers = {m.group(1) for c in cells if c["cell_type"] == "code"
               for m in re.finditer(r"^# Exercise (\d+)", "".join(c["source"]), re.M)}
    notes = (ROOT / "docs" / "instructor" / name.replace(".ipynb", ".md")).read_text()
    assert numbers, f"{name} has no exercise cells"
    for n in numbers:
        assert re.search(rf"^## Exercise {n}\b", notes, re.M), f"the notes of {name} have no section for exercise {n}"
