"""The `fourdqbo` Typer application: global options and the one place errors become exit codes."""

from __future__ import annotations

import gc
import inspect
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
import typer
from typer.core import TyperGroup

from fourdqbo import __version__
from fourdqbo.cli import (
    attention,
    auth,
    config_cmd,
    demo,
    fourd,
    qbo,
    reconcile,
    sandbox,
    status,
    sync,
)
from fourdqbo.cli.context import app_state
from fourdqbo.errors import FourdqboError

EXAMPLE = "Example:"


def keep_example_lines(help_text: str) -> str:
    """Help text whose `Example:` lines each print on a line of their own.

    Typer (like click) joins the lines of a paragraph into one and wraps it, which runs
    two examples together. A paragraph marked with click's `\\b` keeps its lines, so each
    run of example lines becomes such a paragraph, split off from any prose before it.
    """
    paragraphs = []
    for paragraph in inspect.cleandoc(help_text).split("\n\n"):
        lines = paragraph.split("\n")
        first = next((i for i, line in enumerate(lines) if line.startswith(EXAMPLE)), None)
        if first is None or paragraph.startswith("\b"):
            paragraphs.append(paragraph)
            continue
        if first:
            paragraphs.append("\n".join(lines[:first]))
        paragraphs.append("\b\n" + "\n".join(lines[first:]))
    return "\n\n".join(paragraphs)


def walk_commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and group below `command` (itself first), with its path of names."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk_commands(sub, (*path, name))


class FourdqboGroup(TyperGroup):
    """Turns every expected failure into one line on stderr and its documented exit code.

    As the root of the app it also formats the help of every command below it (one place,
    so commands added later get it too): each `Example:` line stays on its own line.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for _, command in walk_commands(self):
            if command.help:
                command.help = keep_example_lines(command.help)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # a bad option of the root itself
            _usage_error(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # unknown flag, bad value, missing option, ...
            _usage_error(exc)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except FourdqboError as exc:
            if _debug(ctx):
                raise
            _one_line(str(exc))
            raise click.exceptions.Exit(exc.exit_code) from None
        except BrokenPipeError:
            # Output piped into `head` and the like: stop quietly.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(0) from None
        except KeyboardInterrupt:
            _one_line("interrupted")
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            if _debug(ctx):
                raise
            # Under cron nobody can re-run with --debug: keep the traceback in the log file
            # (scrubbed by the privacy filter like every record).
            _log_to_files("unexpected error")
            _one_line(
                f"unexpected error: {type(exc).__name__} "
                "(details in the log file; --debug shows them here)"
            )
            raise click.exceptions.Exit(1) from None


def _log_to_files(message: str) -> None:
    """Log the exception being handled, with its traceback, to the log files only: the
    console handler would print the traceback on stderr (and Python's last-resort handler,
    when logging is not set up, too)."""
    logger = logging.getLogger("fourdqbo")
    record = logger.makeRecord(
        logger.name, logging.ERROR, __file__, 0, message, None, sys.exc_info()
    )
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)  # its own filters (privacy, run id) apply


def _debug(ctx: click.Context) -> bool:
    obj = ctx.find_root().obj
    return bool(getattr(obj, "debug", False))


def _usage_error(exc: click.UsageError) -> NoReturn:
    """A usage error as one line and exit 2, like every other expected failure (click and
    typer would print the usage, a hint and a boxed message: five lines for cron's mail)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help was the answer
        raise exc
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    _one_line(exc.format_message() + hint)
    raise click.exceptions.Exit(exc.exit_code) from None


def _one_line(message: str) -> None:
    from fourdqbo.log import redact

    text = " ".join(redact(message).split())
    print(f"fourdqbo: {text}", file=sys.stderr)


app = typer.Typer(
    cls=FourdqboGroup,
    name="fourdqbo",
    help="Keep QuickBooks Online invoices in step with 4D EMR price quotes.\n\n"
    "Example: fourdqbo sync run --quiet   (what cron runs every few minutes)\n"
    "Example: fourdqbo --env-file /etc/fourdqbo/north.env sync run --quiet   (one practice)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"fourdqbo {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for failures."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details to the console."),
    env_file: str | None = typer.Option(
        None,
        "--env-file",
        metavar="PATH",
        help="Read settings from PATH instead of ./.env (relative paths in it are relative "
        "to its directory): one file per practice.",
    ),
) -> None:
    state = app_state(ctx)
    state.debug = debug
    state.verbose = verbose
    # Checked when the settings are first read (exit 2 naming it), so that `--help` and
    # the commands that need no settings (`demo`, `sandbox serve`) do not depend on it.
    state.env_file = Path(env_file) if env_file is not None else None


app.add_typer(config_cmd.app, name="config")
app.command("status")(status.status)
app.add_typer(auth.app, name="auth")
app.add_typer(qbo.app, name="qbo")
app.add_typer(fourd.app, name="4d")
attention.register(sync.app)  # sync conflicts | accept | apply | retry
app.add_typer(sync.app, name="sync")
app.command("reconcile")(reconcile.reconcile)
app.add_typer(sandbox.app, name="sandbox")
app.command("demo")(demo.demo)


def main(built: click.Command | None = None) -> None:
    """The console script. `built`: the app's click command, built beforehand with
    `typer.main.get_command(app)` (the chaos suite's pre-started runs build it before the
    word go, with the rest of their start-up)."""
    try:
        if built is None:
            app(prog_name="fourdqbo")
        else:
            built(prog_name="fourdqbo")
    finally:
        # The interpreter's last collections walk every object the command loaded (httpx,
        # redis, rich, typer): 170 ms of CPU after a run's work is done, and the most of
        # what a run that finds the lock held costs (eight cron runs started together on
        # two cores). Frozen, they are left to the process's end; files and stdout are
        # flushed and closed by then all the same.
        gc.freeze()
