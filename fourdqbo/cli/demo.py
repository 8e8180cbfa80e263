"""`fourdqbo demo`: a whole sync against the built-in sandbox (in progress)."""

from __future__ import annotations

import typer


def demo(ctx: typer.Context) -> None:
    """Run a whole sync against the built-in sandbox; nothing to configure.

    Example: fourdqbo demo
    """
    raise typer.Exit(0)
