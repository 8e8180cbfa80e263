"""Help text: every command shows examples, each `Example:` line on a line of its own.

Walks the whole app, so commands added later are held to it too.
"""

from __future__ import annotations

import inspect

import pytest
import typer.main
from typer.testing import CliRunner

from fourdqbo.cli.app import EXAMPLE, app, keep_example_lines, walk_commands

COMMANDS = list(walk_commands(typer.main.get_command(app)))


def docstring_examples(help_text: str) -> list[str]:
    return [
        line.strip()
        for line in inspect.cleandoc(help_text).replace("\b", "").splitlines()
        if line.strip().startswith(EXAMPLE)
    ]


def help_lines(path: tuple[str, ...]) -> list[str]:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return [line.strip() for line in result.stdout.splitlines()]


def test_the_walk_finds_the_whole_app() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "sync", "sync run", "status", "auth login", "sandbox serve", "demo"} <= paths


@pytest.mark.parametrize(
    "path", [path for path, _ in COMMANDS], ids=lambda p: " ".join(p) or "fourdqbo"
)
def test_each_example_line_prints_on_its_own_line(path: tuple[str, ...]) -> None:
    command = dict(COMMANDS)[path]
    examples = docstring_examples(command.help or "")
    leaf = not hasattr(command, "commands")
    if leaf or not path:
        assert examples, f"fourdqbo {' '.join(path)} has no Example: line in its docstring"
    lines = help_lines(path)
    for example in examples:
        assert example in lines, f"{example!r} not on its own line of --help"


def test_sync_run_examples_are_no_longer_run_together() -> None:
    lines = help_lines(("sync", "run"))
    assert "Example: fourdqbo sync run --quiet        (cron)" in lines
    assert "Example: fourdqbo sync run --dry-run --since 2025-03-01" in lines


def test_example_lines_are_split_off_prose_and_kept_apart() -> None:
    text = "Title line.\n\nSome prose\nthat wraps.\nExample: a --b\nExample: c\n\nMore prose."
    assert keep_example_lines(text) == (
        "Title line.\n\nSome prose\nthat wraps.\n\n\b\nExample: a --b\nExample: c\n\nMore prose."
    )
    assert keep_example_lines("No examples here.") == "No examples here."
    once = keep_example_lines(text)
    assert keep_example_lines(once) == once  # a command formatted twice stays the same
