"""`fourdqbo config show`: the effective settings, secrets masked."""

from __future__ import annotations

import typer

from fourdqbo.cli.context import settings_of
from fourdqbo.cli.output import emit_json, emit_pairs

app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)


@app.command("show")
def show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show every setting as the tool sees it (environment first, then .env); secrets masked.

    Malformed values are listed as problems; a command that needs one refuses to run.

    Example: fourdqbo config show --json
    """
    settings = settings_of(ctx, logging=False)
    shown = settings.shown()
    problems = dict(settings.problems)
    if as_json:
        emit_json({"settings": shown, "problems": problems})
        return
    rows = [
        (name, value + (f"   <- {problems[name]}" if name in problems else ""))
        for name, value in shown.items()
    ]
    emit_pairs(rows, title="fourdqbo settings")
