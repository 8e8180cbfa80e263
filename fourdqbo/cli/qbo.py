"""`fourdqbo qbo …`: look at what the QuickBooks Online company holds.

Read-only operator commands over `QBOClient`. Dates are validated before anything is
built, only the QBO settings are demanded (never 4D's), and every QBO time is shown in
UTC whatever offset the company's answers carry. `--json` prints one document whose
times are ISO 8601 UTC with `Z` and whose money keeps its exact decimal digits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any

import typer

from fourdqbo.cli.context import settings_of
from fourdqbo.cli.output import (
    Column,
    date_option,
    emit_json,
    emit_pairs,
    emit_table,
    info,
    required_text,
)
from fourdqbo.timefmt import iso_z

if TYPE_CHECKING:
    from fourdqbo.config import Settings
    from fourdqbo.qbo.client import QBOClient
    from fourdqbo.qbo.records import Customer, Estimate, Invoice

app = typer.Typer(
    help="Look at QuickBooks Online invoices, estimates and customers (read-only).\n\n"
    "Example: fourdqbo qbo get-invoice 10023",
    no_args_is_help=True,
)

JSON_HELP = "Print one JSON document instead of a table."
FROM_DATE_HELP = "Changed on or after 00:00 UTC of this date (YYYY-MM-DD)."
INVOICE_COLUMNS = [
    Column("DocNumber"),
    Column("customer"),
    Column("date"),
    Column("total", "right"),
    Column("balance", "right"),
    Column("last updated (UTC)"),
]
ESTIMATE_COLUMNS = [
    Column("DocNumber"),
    Column("customer"),
    Column("date"),
    Column("status"),
    Column("total", "right"),
    Column("last updated (UTC)"),
]
LINE_COLUMNS = [
    Column("description"),
    Column("item"),
    Column("qty", "right"),
    Column("unit price", "right"),
    Column("amount", "right"),
]


@app.command("list-invoices")
def list_invoices(
    ctx: typer.Context,
    from_date: str = typer.Option(..., "--from-date", metavar="YYYY-MM-DD", help=FROM_DATE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Invoices created or changed since a date, oldest change first; times in UTC.

    Example: fourdqbo qbo list-invoices --from-date 2025-03-01
    """
    since = _start_of(date_option(from_date, "--from-date"))
    with _client(ctx) as client:
        invoices = client.invoices_changed_since(since)
    if as_json:
        emit_json([invoice_document(i, lines=False) for i in invoices])
        return
    emit_table(INVOICE_COLUMNS, [_invoice_row(i) for i in invoices], empty="no invoices changed")


@app.command("list-estimates")
def list_estimates(
    ctx: typer.Context,
    from_date: str = typer.Option(..., "--from-date", metavar="YYYY-MM-DD", help=FROM_DATE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Estimates created or changed since a date, oldest change first; times in UTC.

    Example: fourdqbo qbo list-estimates --from-date 2025-03-01 --json
    """
    from fourdqbo.qbo.records import Estimate

    since = _start_of(date_option(from_date, "--from-date"))
    with _client(ctx) as client:
        estimates = [Estimate.parse(row) for row in client.estimates_changed_since(since)]
    if as_json:
        emit_json([estimate_document(e) for e in estimates])
        return
    rows = [
        (
            e.doc_number,
            _customer(e.customer_name, e.customer_id),
            e.txn_date,
            e.status,
            e.total,
            e.updated_at,
        )
        for e in estimates
    ]
    emit_table(ESTIMATE_COLUMNS, rows, empty="no estimates changed")


@app.command("get-invoice")
def get_invoice(
    ctx: typer.Context,
    doc_number: str = typer.Argument(..., metavar="DOCNUMBER", help="The invoice's DocNumber."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The invoice(s) with a DocNumber (the 4D price quote number), with their lines.

    Exits 1 when there is none. Two invoices sharing a DocNumber are both shown.

    Example: fourdqbo qbo get-invoice 10023 --json
    """
    doc_number = required_text(doc_number, "DOCNUMBER")
    with _client(ctx) as client:
        invoices = client.get_invoice_by_doc(doc_number)
    if as_json:
        emit_json([invoice_document(i) for i in invoices])
    else:
        for invoice in invoices:
            emit_pairs(_invoice_pairs(invoice), title=f"Invoice {invoice.doc_number}")
            lines = [
                (line.description, line.item_id, line.qty, line.unit_price, line.amount)
                for line in invoice.lines
            ]
            emit_table(LINE_COLUMNS, lines, empty="(no item lines)")
    if not invoices:
        info(f"no invoice with DocNumber {doc_number}")
        raise typer.Exit(1)
    if len(invoices) > 1:
        info(f"{len(invoices)} invoices share DocNumber {doc_number}: a conflict for the sync")


@app.command("get-customer")
def get_customer(
    ctx: typer.Context,
    display_name: str = typer.Argument(
        ..., metavar="DISPLAY_NAME", help="The customer's exact DisplayName."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A customer by exact DisplayName, inactive ones included. Exits 1 when there is none.

    Example: fourdqbo qbo get-customer 1042.JQD
    """
    display_name = required_text(display_name, "DISPLAY_NAME")
    with _client(ctx) as client:
        customer = client.get_customer_by_name(display_name)
    if as_json:
        emit_json(None if customer is None else customer_document(customer))
    elif customer is not None:
        emit_pairs(_customer_pairs(customer), title=f"Customer {customer.display_name}")
    if customer is None:
        info(f"no customer with DisplayName {display_name}")
        raise typer.Exit(1)


# -- building the client -------------------------------------------------------------


@contextmanager
def _client(ctx: typer.Context) -> Iterator[QBOClient]:
    """A QBO client on the token file; only the QBO settings are demanded."""
    settings: Settings = settings_of(ctx)
    settings.require_qbo()
    # Imported here so `fourdqbo --help` and the other commands stay light.
    from fourdqbo.qbo.client import QBOClient
    from fourdqbo.qbo.tokens import TokenStore

    with QBOClient(settings, TokenStore(settings)) as client:
        yield client


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


# -- documents and rows --------------------------------------------------------------


def _utc(moment: datetime | None) -> str | None:
    return None if moment is None else iso_z(moment)


def _iso_date(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _customer(name: str | None, customer_id: str | None) -> str | None:
    return name if name else customer_id


def invoice_document(invoice: Invoice, *, lines: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": invoice.id,
        "doc_number": invoice.doc_number,
        "sync_token": invoice.sync_token,
        "txn_date": _iso_date(invoice.txn_date),
        "customer_id": invoice.customer_id,
        "customer_name": invoice.customer_name,
        "total": invoice.total,
        "balance": invoice.balance,
        "paid": invoice.paid,
        "custom_fields": dict(invoice.custom_fields),
        "created_at": _utc(invoice.created_at),
        "updated_at": _utc(invoice.updated_at),
    }
    if lines:
        document["lines"] = [
            {
                "item_id": line.item_id,
                "description": line.description,
                "qty": line.qty,
                "unit_price": line.unit_price,
                "amount": line.amount,
            }
            for line in invoice.lines
        ]
    return document


def estimate_document(estimate: Estimate) -> dict[str, Any]:
    return {
        "id": estimate.id,
        "doc_number": estimate.doc_number,
        "sync_token": estimate.sync_token,
        "txn_date": _iso_date(estimate.txn_date),
        "customer_id": estimate.customer_id,
        "customer_name": estimate.customer_name,
        "status": estimate.status,
        "total": estimate.total,
        "created_at": _utc(estimate.created_at),
        "updated_at": _utc(estimate.updated_at),
    }


def customer_document(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "display_name": customer.display_name,
        "active": customer.active,
        "sync_token": customer.sync_token,
        "updated_at": _utc(customer.updated_at),
    }


def _invoice_row(invoice: Invoice) -> tuple[Any, ...]:
    return (
        invoice.doc_number,
        _customer(invoice.customer_name, invoice.customer_id),
        invoice.txn_date,
        invoice.total,
        invoice.balance,
        invoice.updated_at,
    )


def _invoice_pairs(invoice: Invoice) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = [
        ("Id", invoice.id),
        ("DocNumber", invoice.doc_number),
        ("customer", _customer(invoice.customer_name, invoice.customer_id)),
        ("customer id", invoice.customer_id),
        ("date", invoice.txn_date),
        ("total", invoice.total),
        ("balance", invoice.balance),
        ("payment applied", invoice.paid),
        ("SyncToken", invoice.sync_token),
        ("created (UTC)", invoice.created_at),
        ("last updated (UTC)", invoice.updated_at),
    ]
    pairs += [(f"custom field {k}", v) for k, v in sorted(invoice.custom_fields.items())]
    return pairs


def _customer_pairs(customer: Customer) -> list[tuple[str, Any]]:
    return [
        ("Id", customer.id),
        ("DisplayName", customer.display_name),
        ("active", customer.active),
        ("SyncToken", customer.sync_token),
        ("last updated (UTC)", customer.updated_at),
    ]
