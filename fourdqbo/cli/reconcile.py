"""`fourdqbo reconcile`: audit 4D quotes against QBO invoices, and with --fix repair them.

Read-only and lock-free by default (DESIGN.md "Reconcile"); `--fix` hands the quotes whose
finding needs a write to the sync engine with 4D winning (SYNC_QBO_EDITS=revert,
SYNC_QBO_DELETES=recreate), never paid or accepted invoices, then audits again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
import tempfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fourdqbo.cli.context import settings_of
from fourdqbo.cli.output import (
    Column,
    datetime_option,
    emit_json,
    emit_table,
    info,
    stdout_is_terminal,
)
from fourdqbo.errors import ConfigError

if TYPE_CHECKING:  # the sync modules load only when the command runs (start-up time)
    from fourdqbo.cli.sync import Connections
    from fourdqbo.sync.engine import Progress
    from fourdqbo.sync.reconcile import ReconcileResult
    from fourdqbo.sync.report import RunReport

CSV_COLUMNS = (
    "quote",
    "version",
    "status",
    "finding",
    "invoice_id",
    "quote_total",
    "invoice_total",
    "differences",
    "reason",
)


def reconcile(
    ctx: typer.Context,
    since: str | None = typer.Option(
        None,
        "--since",
        help="Audit quotes changed since this ISO date-time (default SYNC_INITIAL_FROM).",
    ),
    fix: bool = typer.Option(
        False,
        "--fix",
        help="Write what the sync would (4D wins; paid and accepted invoices "
        "are left alone), then audit again.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    csv_file: Path | None = typer.Option(
        None, "--csv", help="Also write one row per finding to this file.", dir_okay=False
    ),
) -> None:
    """Compare every 4D quote changed since a date with QBO: one finding per quote.

    Findings: ok, missing, differs, paid_differs, orphan, paid_orphan, duplicate,
    customer_mismatch, accepted, unknown_status (and failed when 4D could not give a
    quote). Invoices of the period that no 4D quote made are listed apart. Exit 0 when
    every finding is ok or accepted, 1 otherwise, 2 usage/config, 3 upstream down,
    75 (--fix only) another sync holds the lock.

    Example: fourdqbo reconcile --since 2025-01-01 --csv audit.csv

    Example: fourdqbo reconcile --since 2025-01-01 --fix
    """
    from fourdqbo.cli.sync import RichProgress, connect
    from fourdqbo.sync.engine import SilentProgress

    since_value = datetime_option(since, "--since") if since is not None else None
    target = _csv_target(csv_file) if csv_file is not None else None
    settings = settings_of(ctx)
    start = since_value or settings.sync_initial_from
    if start is None:
        raise ConfigError(
            "reconcile needs a start: `fourdqbo reconcile --since YYYY-MM-DD` "
            "or set SYNC_INITIAL_FROM"
        )
    show_progress = stdout_is_terminal() and sys.stderr.isatty() and not as_json
    progress: Any = RichProgress() if show_progress else SilentProgress()
    report = None
    with connect(settings) as conn, progress if show_progress else contextlib.nullcontext():
        before = after = _audit(conn, progress, start)
        if fix:
            report = _fix(conn, progress, before)
            if report is not None:
                after = _audit(conn, progress, start)
    if target is not None:
        _write_csv(target, after)
    exit_code = max(after.exit_code, report.exit_code if report is not None else 0)
    if as_json:
        document = after.as_dict()
        if fix:
            document["before"] = {"counts": before.counts()}
            document["fix"] = None if report is None else report.as_dict()
        emit_json(document)
    else:
        if fix:
            _print_result(before, title="before --fix")
            if report is None:
                info("nothing for --fix to write")
            else:
                from fourdqbo.cli.sync import _print_report

                _print_report(report, brief=False)
            _print_result(after, title="after --fix")
        else:
            _print_result(after, title="reconcile")
        if target is not None:
            info(f"wrote {len(after.findings)} findings to {target}")
    raise typer.Exit(exit_code)


def _audit(conn: Connections, progress: Progress, since: datetime) -> ReconcileResult:
    from fourdqbo.sync.engine import SilentProgress
    from fourdqbo.sync.extract import Extractor
    from fourdqbo.sync.reconcile import Reconciler, acceptances_of

    # The sync's own item resolution (one query), so reconcile and sync agree on ids.
    extract = Extractor(conn.settings, conn.fourd, conn.qbo, conn.state, SilentProgress())
    reconciler = Reconciler(
        conn.settings,
        conn.fourd,
        conn.qbo,
        item_ids=extract.item_ids,
        accepted=acceptances_of(conn.state),
        ledger=conn.state.ledger,
        progress=progress,
    )
    return reconciler.run(since)


def _fix(conn: Connections, progress: Progress, before: ReconcileResult) -> RunReport | None:
    """Hand the quotes that need a write to the engine, 4D winning; None when there are none."""
    from fourdqbo.sync.engine import RunOptions, SyncEngine
    from fourdqbo.sync.reconcile import fix_quotes

    quotes = fix_quotes(before)
    if not quotes:
        return None
    settings = replace(conn.settings, sync_qbo_edits="revert", sync_qbo_deletes="recreate")
    engine = SyncEngine(settings, conn.fourd, conn.qbo, conn.state, progress)
    # An explicit quote list: the engine takes the lock and leaves the watermark alone.
    return engine.run(RunOptions(quotes=quotes))


def _print_result(result: ReconcileResult, *, title: str) -> None:
    document = result.as_dict()
    rows = [f for f in document["findings"] if f["finding"] != "ok"]
    emit_table(
        [
            Column("quote"),
            Column("version", "right"),
            Column("status"),
            Column("finding"),
            Column("invoice"),
            Column("quote total", "right"),
            Column("invoice total", "right"),
            Column("what differs"),
        ],
        [
            (
                f["quote"],
                f["version"],
                f["status"],
                f["finding"],
                f["invoice_id"],
                f["quote_total"],
                f["invoice_total"],
                _differences_text(f["differences"]) or f["reason"],
            )
            for f in rows
        ],
        title=f"{title} since {document['since']}",
        empty=f"{title}: every quote is ok",
    )
    foreign = document["not_from_4d"]
    if foreign:
        emit_table(
            [Column("invoice"), Column("doc number"), Column("date"), Column("total", "right")],
            [(i["invoice_id"], i["doc_number"], i["txn_date"], i["total"]) for i in foreign],
            title="invoices not from 4D (information)",
        )
    counts = ", ".join(f"{k} {v}" for k, v in document["counts"].items() if v)
    totals = document["totals"]
    print(
        f"{len(document['findings'])} quotes: {counts or 'none'}; "
        f"totals quotes {totals['quotes']}, invoices {totals['invoices']}, "
        f"difference {totals['difference']}; "
        f"requests 4D {document['requests']['fourd']}, QBO {document['requests']['qbo']}"
    )


def _differences_text(differences: list[dict[str, Any]]) -> str:
    """`field: QBO's value -> the quote's`, with `(none)` where a side has no such field
    (as `sync conflicts` shows it)."""

    def shown(value: Any) -> str:
        return "(none)" if value is None else str(value)

    return "; ".join(f"{d['field']}: {shown(d['qbo'])} -> {shown(d['quote'])}" for d in differences)


def _csv_target(path: Path) -> Path:
    """The --csv path, checked before any call by creating (and removing) a file beside it,
    the way it will be written: a path that cannot be written is exit 2, not a lost audit."""
    target = path.expanduser()
    if target.is_dir():
        raise ConfigError(f"--csv: {target} is a directory")
    if not target.parent.is_dir():
        raise ConfigError(f"--csv: directory {target.parent} does not exist")
    try:
        descriptor, probe = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"--csv: cannot write in {target.parent} ({exc.strerror})") from None
    return target


def _write_csv(target: Path, result: ReconcileResult) -> None:
    """One row per finding, written to a temporary file and moved into place."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for finding in result.as_dict()["findings"]:
        writer.writerow(
            [
                finding["quote"],
                finding["version"],
                finding["status"],
                finding["finding"],
                finding["invoice_id"] or "",
                finding["quote_total"] or "",
                finding["invoice_total"] or "",
                _differences_text(finding["differences"]),
                finding["reason"],
            ]
        )
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
