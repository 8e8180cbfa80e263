"""`fourdqbo status`: health of config, state, lock, watermark, last run, token."""

from __future__ import annotations

import typer


def status(
    ctx: typer.Context,
    check: bool = typer.Option(False, "--check", help="Also call 4D and QBO."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Health at a glance. Exit 0 healthy, 1 not.

    Example: fourdqbo status --check
    """
    raise typer.Exit(0)
