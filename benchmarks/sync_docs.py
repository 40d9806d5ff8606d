"""Copy the result files of ``benchmarks/results`` into the pages that show them.

    python benchmarks/sync_docs.py            # rewrite every page whose included content drifted
    python benchmarks/sync_docs.py --check    # only report (exit 1 on drift or a missing file)

A page (``docs/results/*.md`` and ``README.md``) embeds a file by markers, each on its own line::

    <!-- include: benchmarks/results/<path>.md -->
    ...the file's content, verbatim...
    <!-- end include -->

The path is relative to the repository root.  ``tests/test_docs.py`` fails when a page
differs from what this script would write, or names a file that does not exist.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^<!-- include: (?P<path>\S+) -->\n(?P<body>.*?)^<!-- end include -->$", re.M | re.S)


class IncludeError(ValueError):
    """A page names a file that is missing, outside benchmarks/results, or not a .md file."""


def pages(root: Path = ROOT) -> list[Path]:
    """The pages the markers may appear in."""
    return sorted((root / "docs" / "results").glob("*.md")) + [root / "README.md"]


def _content(root: Path, rel: str, page: Path) -> str:
    path = (root / rel).resolve()
    results = (root / "benchmarks" / "results").resolve()
    if not (rel.endswith(".md") and results in path.parents):
        raise IncludeError(f"{page.name}: include path {rel!r} is invalid: allowed a .md file under benchmarks/results/")
    if not path.is_file():
        raise IncludeError(f"{page.name}: included file {rel} does not exist")
    return path.read_text(encoding="utf-8").rstrip("\n") + "\n"


def synced(text: str, root: Path = ROOT, page: Path = Path("page")) -> str:
    """``text`` with every include block's body replaced by its file's content."""
    return BLOCK.sub(lambda m: f"<!-- include: {m['path']} -->\n{_content(root, m['path'], page)}<!-- end include -->",
                     text)


def drifted(root: Path = ROOT) -> list[Path]:
    """The pages whose include blocks differ from their files (raises IncludeError for a missing file)."""
    out = []
    for page in pages(root):
        if page.is_file():
            text = page.read_text(encoding="utf-8")
            if synced(text, root, page) != text:
                out.append(page)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report drift, change nothing (exit 1 on drift)")
    args = ap.parse_args(argv)
    try:
        stale = drifted()
    except IncludeError as exc:
        print(exc, file=sys.stderr)
        return 1
    for page in stale:
        if args.check:
            print(f"out of date: {page.relative_to(ROOT)}")
        else:
            page.write_text(synced(page.read_text(encoding="utf-8"), ROOT, page), encoding="utf-8")
            print(f"rewrote {page.relative_to(ROOT)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
