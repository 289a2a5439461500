"""The documentation covers the command line, and every page in the navigation exists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from optivgi.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: Pages written alongside their features; checked only once they exist.
OPTIONAL_PAGES = {
    "algorithm-lp.md",
    "algorithm-heuristics.md",
    "citrineos.md",
    "citrineos-contract.md",
    "citrineos-double.md",
}


def _commands(cmd: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, (*path, name))


def _cli_items() -> list[tuple[str, str]]:
    """(where, text that must appear in docs/cli.md) for every command, option and argument."""
    items: list[tuple[str, str]] = []
    for path, cmd in _commands(main):
        where = " ".join(("optivgi", *path))
        if path:
            items.append((where, where))
        for param in cmd.params:
            if isinstance(param, click.Option):
                for opt in (*param.opts, *param.secondary_opts):
                    items.append((where, opt))
            elif isinstance(param, click.Argument):
                items.append((where, (param.name or "").upper()))
    return items


def _mentions(text: str, needle: str) -> bool:
    # An option like "-a" must stand alone, not be a piece of "--algorithm" or "x-a".
    return re.search(rf"(?<![\w-]){re.escape(needle)}(?![\w-])", text) is not None


def test_cli_walk_finds_the_commands() -> None:
    names = {" ".join(path) for path, _ in _commands(main)}
    assert {"run", "plan", "list", "demo"} <= names


@pytest.mark.parametrize(("where", "needle"), _cli_items())
def test_cli_page_documents(where: str, needle: str) -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert _mentions(text, needle), f"docs/cli.md does not mention {needle!r} ({where})"


def _nav_pages(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        if node.endswith(".md"):
            yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_pages(value)


def _nav() -> list[str]:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return list(_nav_pages(config["nav"]))


def test_nav_lists_pages() -> None:
    pages = _nav()
    assert "index.md" in pages
    assert len(pages) == len(set(pages)), "a page is listed twice in the nav"


def test_nav_pages_exist() -> None:
    missing = [
        page for page in _nav()
        if page not in OPTIONAL_PAGES and not (DOCS / page).is_file()
    ]
    assert not missing, f"pages in mkdocs.yml nav but not in docs/: {missing}"


def test_optional_pages_are_in_nav() -> None:
    assert OPTIONAL_PAGES <= set(_nav())
