"""`fourdqbo qbo` commands (in progress)."""

from __future__ import annotations

import typer

app = typer.Typer(help="qbo commands.", no_args_is_help=True)
