"""`fourdqbo fourd` commands (in progress)."""

from __future__ import annotations

import typer

app = typer.Typer(help="fourd commands.", no_args_is_help=True)
