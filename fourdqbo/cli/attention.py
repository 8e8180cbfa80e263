"""`fourdqbo sync conflicts | accept | apply | retry`: what needs a person, and closing it.

Every item needing a person (DESIGN.md "What needs a person") is listed with what differs
and the command that settles it. `accept` keeps QBO as it is for the quote's current
Version, `apply` writes the quote into QBO now (through the lock), `retry` gives quotes
that gave up another try. Nothing here decides what the books should hold: `apply` runs
the sync engine with the operator's permission, the rest only change the sync's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer

from fourdqbo.cli.context import settings_of
from fourdqbo.cli.output import emit_json, emit_table, info, required_text
from fourdqbo.errors import ConfigError, FourdqboError
from fourdqbo.state.items import Acceptance, AttentionItem, AttentionKind
from fourdqbo.timefmt import iso_z, utcnow

# What a bookkeeper does with each kind; `{q}` is the quote number.
SETTLE = {
    AttentionKind.PAID: (
        "correct the invoice in QBO (or issue a credit memo), then `fourdqbo sync accept {q}`; "
        "or `fourdqbo sync apply {q} --paid` when the quote's total covers the payment"
    ),
    AttentionKind.DUPLICATE_INVOICES: (
        "delete or void the extra invoices in QBO so one is left; the next run checks it again"
    ),
    AttentionKind.EDITED_IN_QBO: (
        "`fourdqbo sync accept {q}` keeps the change made in QBO; "
        "`fourdqbo sync apply {q}` writes the quote back"
    ),
    AttentionKind.DELETED_IN_QBO: (
        "`fourdqbo sync apply {q}` re-creates the invoice; "
        "`fourdqbo sync accept {q}` leaves it deleted"
    ),
    AttentionKind.CUSTOMER_AMBIGUOUS: (
        "merge the patient's customers in QBO (or make the extra ones inactive); "
        "the next run checks it again"
    ),
    AttentionKind.GAVE_UP: (
        "fix the cause shown, then `fourdqbo sync retry {q}`; "
        "or `fourdqbo sync accept {q}` to leave this Version alone"
    ),
}


def settle_command(item: AttentionItem) -> str:
    return SETTLE[AttentionKind(item.kind)].format(q=item.quote)


def item_document(item: AttentionItem) -> dict[str, Any]:
    """An item as `sync conflicts --json` shows it (DESIGN.md's shape, plus `version` and
    `settle`)."""
    ledger = item.ledger
    return {
        "quote": item.quote,
        "kind": str(item.kind),
        "version": item.version,
        "invoice_id": item.invoice_id,
        "detected_at": iso_z(item.detected_at),
        "reason": item.reason,
        "differences": [
            {"field": d.field, "qbo": d.qbo, "quote": d.quote} for d in item.differences
        ],
        "ledger": None if ledger is None else ledger.as_json(),
        "settle": settle_command(item),
    }


def differences_text(item: AttentionItem, limit: int = 4) -> str:
    """What differs, short enough for a table cell: `TotalAmt QBO 1250.00 / quote 1300.00`."""
    parts = [
        f"{d.field} QBO {d.qbo if d.qbo is not None else '(none)'}"
        f" / quote {d.quote if d.quote is not None else '(none)'}"
        for d in item.differences[:limit]
    ]
    if len(item.differences) > limit:
        parts.append(f"… {len(item.differences) - limit} more (--json shows all)")
    return "; ".join(parts) or item.reason


def conflicts(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List what needs a person: each quote with its kind, invoice, since when, what
    differs (QBO's value and the quote's) and the command that settles it.

    Example: fourdqbo sync conflicts
    Example: fourdqbo sync conflicts --json
    """
    from fourdqbo.cli.sync import connect

    settings = settings_of(ctx)
    with connect(settings, clients=False) as conn:
        items = conn.state.attention_items()
    if as_json:
        emit_json({"items": [item_document(item) for item in items]})
        return
    emit_table(
        [
            "quote",
            "kind",
            "invoice",
            "since",
            "what differs / why",
            "to settle it",
        ],
        [
            (
                item.quote,
                str(item.kind),
                item.invoice_id,
                iso_z(item.detected_at),
                differences_text(item),
                settle_command(item),
            )
            for item in items
        ],
        title="needs a person",
        empty="nothing needs a person",
    )


def accept(
    ctx: typer.Context,
    quotes: list[str] = typer.Argument(..., help="Quote numbers (PriceQuoteNo)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Keep QBO as it is for the quote's current Version: the item closes, and the quote
    is neither reported nor written again until its Version changes in 4D.

    Example: fourdqbo sync accept 10023
    Example: fourdqbo sync accept 10023 10031 --yes
    """
    from fourdqbo.cli.sync import connect

    numbers = _numbers(quotes)
    settings = settings_of(ctx)
    with connect(settings, clients=False) as conn:
        items = _open_items(conn.state, numbers)
        unversioned = [item.quote for item in items if item.version is None]
        versions = {item.quote: item.version for item in items if item.version is not None}
        if unversioned:
            versions.update(_current_versions(settings, unversioned))
        for item in items:
            kept = (
                "not tried again at this Version"
                if AttentionKind(item.kind) is AttentionKind.GAVE_UP
                else "QBO stays as it is"
            )
            info(f"quote {item.quote} version {versions[item.quote]}: {item.kind}: {kept}")
        if not yes and not typer.confirm("Accept?"):
            raise typer.Exit(1)
        now = utcnow()
        for item in items:
            conn.state.record_acceptance(
                Acceptance(item.quote, int(versions[item.quote]), now, AttentionKind(item.kind))
            )
        conn.state.clear_attention([item.quote for item in items])
    info(f"accepted {len(items)}; a new Version of a quote in 4D is synced again")


def retry(
    ctx: typer.Context,
    quotes: list[str] = typer.Argument(None, help="Quote numbers that gave up."),
    all_: bool = typer.Option(False, "--all", help="Every quote that gave up."),
) -> None:
    """Give quotes that gave up (failed SYNC_MAX_ATTEMPTS times) another try: they go back
    into the retry queue and the next run tries them first.

    Example: fourdqbo sync retry 10023
    Example: fourdqbo sync retry --all
    """
    from fourdqbo.cli.sync import connect

    given = _numbers(quotes or []) if quotes else []
    if bool(given) == all_:
        raise ConfigError("give quote numbers or --all (not both)")
    settings = settings_of(ctx)
    with connect(settings, clients=False) as conn:
        gave_up = {
            item.quote
            for item in conn.state.attention_items()
            if AttentionKind(item.kind) is AttentionKind.GAVE_UP
        }
        wanted = sorted(gave_up) if all_ else given
        unknown = [q for q in wanted if q not in gave_up]
        if unknown:
            raise ConfigError(
                "has not given up: " + ", ".join(unknown) + " (see `fourdqbo sync conflicts`)"
            )
        requeued = conn.state.requeue(wanted, utcnow()) if wanted else []
    info(
        f"back in the retry queue: {', '.join(requeued)}; the next run tries them first"
        if requeued
        else "no quote has given up; nothing to do"
    )


def apply(
    ctx: typer.Context,
    quotes: list[str] = typer.Argument(..., help="Quote numbers (PriceQuoteNo)."),
    paid: bool = typer.Option(
        False,
        "--paid",
        help="Also change an invoice with a payment applied (only when the quote's new "
        "total covers what was paid).",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
) -> None:
    """Write the quote into QBO now (create if missing, update if it differs), over an
    acceptance or a change made in QBO. Takes the sync lock; never moves the watermark.
    A paid invoice changes only with --paid, and never gets deleted or voided.

    Example: fourdqbo sync apply 10023
    Example: fourdqbo sync apply 10023 --paid --yes
    """
    from fourdqbo.cli.sync import run_engine

    numbers = _numbers(quotes)
    settings = settings_of(ctx)
    # Unknown numbers are refused before the lock is taken or anything is written (a run
    # for them would only queue "not found" failures).
    versions = _current_versions(settings, numbers)
    if not yes:
        what = "including invoices with a payment applied" if paid else "unpaid invoices only"
        listed = ", ".join(f"{q} (version {versions[q]})" for q in numbers)
        info(f"write into QBO now ({what}): {listed}")
        if not typer.confirm("Apply?", err=True):  # stdout stays the --json document
            raise typer.Exit(1)
    run_engine(
        ctx,
        quotes=tuple(numbers),
        apply=True,
        allow_paid=paid,
        as_json=as_json,
        show=_print_applied,
    )


def _print_applied(report: Any) -> None:
    """One line a quote: what was written, or why it was refused (exit 1 then)."""
    for outcome in report.outcomes.values():
        if outcome.action == "conflict":
            what = f"refused ({outcome.kind}): {outcome.reason}"
        elif outcome.action == "failed":
            what = f"failed: {outcome.error or outcome.reason}"
        else:
            invoice = f" invoice {outcome.invoice_id}" if outcome.invoice_id else ""
            what = f"{outcome.action}{invoice}: {outcome.reason}"
        print(f"quote {outcome.quote}: {what}")


def _numbers(quotes: Sequence[str]) -> list[str]:
    numbers = [required_text(q, "quote number") for q in quotes]
    return list(dict.fromkeys(numbers))


def _open_items(state: Any, numbers: Sequence[str]) -> list[AttentionItem]:
    """The open item of each quote; any quote with none is refused before anything is
    written (nothing half-done)."""
    items = {q: state.attention_item(q) for q in numbers}
    missing = [q for q, item in items.items() if item is None]
    if missing:
        raise ConfigError(
            "nothing open for quote " + ", ".join(missing) + " (see `fourdqbo sync conflicts`)"
        )
    return [item for item in items.values() if item is not None]


def _current_versions(settings: Any, numbers: Sequence[str]) -> dict[str, int]:
    """The quotes' Versions in 4D now; a number 4D does not know is a usage error (exit 2)
    and any other failure to read one is refused before anything is written."""
    from fourdqbo.emr.client import FourDClient, NotFound

    settings.require_fourd()
    with FourDClient(settings) as fourd:
        fetched = fourd.get_quotes(list(numbers))
    unknown = [n for n in numbers if isinstance(fetched.get(n), NotFound)]
    if unknown:
        raise ConfigError("4D has no quote " + ", ".join(unknown))
    versions: dict[str, int] = {}
    for number in numbers:
        quote = fetched.get(number)
        if isinstance(quote, FourdqboError):
            raise quote  # one line, with its own exit code (3: 4D failed on it)
        if quote is None:
            raise FourdqboError(f"quote {number}: 4D did not answer for it")
        versions[number] = quote.version
    return versions


def register(app: typer.Typer) -> None:
    """Add the commands to the `sync` group."""
    app.command("conflicts")(conflicts)
    app.command("accept")(accept)
    app.command("apply")(apply)
    app.command("retry")(retry)


__all__ = ["item_document", "register", "settle_command"]
