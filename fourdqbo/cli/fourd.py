"""`fourdqbo 4d ...`: look at what the 4D EMR holds (quotes, patients, appointments, charges).

Read-only operator commands over `FourDClient`. Arguments and dates are validated before
the client is built, so a typo costs no HTTP call. These commands need only the 4D
settings. Patient names appear on the operator's own screen here, never in the log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import typer

from fourdqbo import jsonio
from fourdqbo.cli.context import settings_of
from fourdqbo.cli.output import (
    Column,
    date_option,
    datetime_option,
    emit_json,
    emit_pairs,
    emit_table,
    info,
    required_text,
)
from fourdqbo.emr.records import Patient, Quote, RecordError, quote_number, record_document
from fourdqbo.errors import ConfigError
from fourdqbo.money import cents
from fourdqbo.timefmt import iso_z

if TYPE_CHECKING:  # the client (httpx) is imported only by the commands that call 4D
    from fourdqbo.emr.client import FourDClient

app = typer.Typer(
    help="Read from the 4D EMR: price quotes, patients, appointments, charges.\n\n"
    "Example: fourdqbo 4d list-quotes --from-date 2025-03-01",
    no_args_is_help=True,
)

AS_JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")
MONEY = "right"
# Patient fields shown in their own rows; the rest of 4D's record follows them.
_PATIENT_KEYS = frozenset(
    {
        "Id",
        "PatientId",
        "id",
        "patientId",
        "Name",
        "FullName",
        "name",
        "FirstName",
        "firstName",
        "Firstname",
        "LastName",
        "lastName",
        "Lastname",
        "DateOfBirth",
        "Dob",
        "DOB",
        "dob",
        "BirthDate",
    }
)


def _client(ctx: typer.Context) -> FourDClient:
    from fourdqbo.emr.client import FourDClient

    return FourDClient(settings_of(ctx))


@contextlib.contextmanager
def _not_found_exits_1(message: str) -> Iterator[None]:
    """ "Not there" is an answer, not an upstream failure: exit 1 like `qbo get-invoice`."""
    from fourdqbo.emr.client import NotFound

    try:
        yield
    except NotFound:
        info(message)
        raise typer.Exit(1) from None


@app.command("get-patient")
def get_patient(
    ctx: typer.Context,
    patient_id: str = typer.Argument(..., metavar="PATIENT_ID", help="4D patient id."),
    as_json: bool = AS_JSON,
) -> None:
    """Show one patient: id, name, date of birth and the other fields 4D holds.

    Example: fourdqbo 4d get-patient 12345
    """
    ident = required_text(patient_id, "PATIENT_ID")
    with _client(ctx) as client, _not_found_exits_1(f"no patient {ident} in 4D"):
        patient = client.get_patient(ident)
    if as_json:
        emit_json(record_document(patient))
        return
    emit_pairs(_patient_rows(patient), title=f"4D patient {patient.id}")


@app.command("list-appointments")
def list_appointments(
    ctx: typer.Context,
    on: str = typer.Option(..., "--date", metavar="YYYY-MM-DD", help="Day to list."),
    as_json: bool = AS_JSON,
) -> None:
    """List the appointments of one day.

    Example: fourdqbo 4d list-appointments --date 2025-03-05
    """
    day = date_option(on, "--date")
    with _client(ctx) as client:
        appointments = client.list_appointments(day)
    if as_json:
        emit_json(
            {
                "date": day.isoformat(),
                "count": len(appointments),
                "appointments": [record_document(a) for a in appointments],
            }
        )
        return
    emit_table(
        ["id", "start", "patient id", "patient", "provider", "type", "status"],
        [
            (a.id, a.start, a.patient_id, a.patient_name, a.provider, a.kind, a.status)
            for a in appointments
        ],
        title=f"4D appointments on {day.isoformat()} ({len(appointments)})",
        empty=f"no appointments on {day.isoformat()}",
    )


@app.command("list-quotes")
def list_quotes(
    ctx: typer.Context,
    from_date: str = typer.Option(
        ...,
        "--from-date",
        metavar="DATETIME",
        help="Quotes changed since then: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[Z|±HH:MM] (UTC "
        "when no zone is given).",
    ),
    as_json: bool = AS_JSON,
) -> None:
    """List the price quotes changed since a date-time (4D's quotes/list).

    4D's list has no date or total; `get-quote` shows them.

    Example: fourdqbo 4d list-quotes --from-date 2025-03-01T08:00:00Z
    """
    since = datetime_option(from_date, "--from-date")
    with _client(ctx) as client:
        summaries = client.list_quotes(since)
    if as_json:
        emit_json(
            {
                "from_date": iso_z(since),
                "count": len(summaries),
                "quotes": [record_document(s) for s in summaries],
            }
        )
        return
    emit_table(
        ["number", Column("version", MONEY), "status", "patient id"],
        [(s.number, s.version, s.status, s.patient_id) for s in summaries],
        title=f"4D quotes changed since {iso_z(since)} ({len(summaries)})",
        empty=f"no quotes changed since {iso_z(since)}",
    )


@app.command("get-quote")
def get_quote(
    ctx: typer.Context,
    number: str = typer.Argument(..., metavar="PRICE_QUOTE_NO", help="4D PriceQuoteNo."),
    as_json: bool = AS_JSON,
) -> None:
    """Show one price quote in full: header, lines (procedures, supplies including hidden
    ones, anesthesia, facility) and total.

    Example: fourdqbo 4d get-quote 10023
    """
    try:
        wanted = quote_number(number)
    except RecordError:
        raise ConfigError(f"PRICE_QUOTE_NO: not a price quote number: {number!r}") from None
    with _client(ctx) as client, _not_found_exits_1(f"no price quote {wanted} in 4D"):
        quote = client.get_quote(wanted)
    if as_json:
        emit_json(record_document(quote))
        return
    emit_pairs(_quote_header(quote), title=f"4D quote {quote.number}")
    emit_table(
        [
            "line",
            "description",
            Column("qty", MONEY),
            Column("unit cost", MONEY),
            Column("amount", MONEY),
            Column("discount", MONEY),
            Column("net", MONEY),
            "on quote",
        ],
        quote_lines(quote),
        title="lines",
        empty="this quote has no lines",
    )


@app.command("list-charges")
def list_charges(
    ctx: typer.Context,
    begin: str = typer.Option(..., "--from", metavar="YYYY-MM-DD", help="First day."),
    end: str = typer.Option(..., "--to", metavar="YYYY-MM-DD", help="Last day (inclusive)."),
    as_json: bool = AS_JSON,
) -> None:
    """List patient charges (4D's "Money" tab) between two days, both included.

    Example: fourdqbo 4d list-charges --from 2025-03-01 --to 2025-03-31
    """
    first = date_option(begin, "--from")
    last = date_option(end, "--to")
    if first > last:
        raise ConfigError(f"--from {first.isoformat()} is after --to {last.isoformat()}")
    with _client(ctx) as client:
        charges = client.list_charges(first, last)
    total = sum((c.amount for c in charges), Decimal("0"))
    if as_json:
        emit_json(
            {
                "from": first.isoformat(),
                "to": last.isoformat(),
                "count": len(charges),
                "total": total,
                "charges": [record_document(c) for c in charges],
            }
        )
        return
    emit_table(
        ["id", "date", "patient id", "patient", "code", "description", Column("amount", MONEY)],
        [
            (c.id, c.date, c.patient_id, c.patient_name, c.code, c.description, c.amount)
            for c in charges
        ],
        title=f"4D charges {first.isoformat()} to {last.isoformat()} "
        f"({len(charges)}, total {total:,.2f})",
        empty=f"no charges from {first.isoformat()} to {last.isoformat()}",
    )


def quote_lines(quote: Quote) -> list[tuple[Any, ...]]:
    """The quote's lines as table rows: procedures, supplies, anesthesia, facility.

    Amounts are shown rounded half-up to cents, as an invoice would carry them; quantity
    and unit cost keep all their digits (a unit cost of 19.995 is not 20.00).
    """
    rows: list[tuple[Any, ...]] = []
    for procedure in quote.procedures:
        net = cents(procedure.amount - procedure.discount)
        rows.append(
            (
                "procedure",
                procedure.name,
                None,
                None,
                cents(procedure.amount),
                cents(procedure.discount),
                net,
                True,
            )
        )
    for supply in quote.supplies:
        amount = cents(supply.quantity * supply.unit_cost)
        rows.append(
            (
                "supply",
                supply.title,
                _digits(supply.quantity),
                _digits(supply.unit_cost, places=2),
                amount,
                None,
                amount,
                supply.show_on_quote,
            )
        )
    group = quote.anesthesia_group.name if quote.anesthesia_group else None
    fees = [
        ("anesthesia", group, quote.anesthesia_amount),
        ("facility", None, quote.facility_amount),
    ]
    for kind, description, amount in fees:
        if amount:
            rows.append(
                (kind, description or "", None, None, cents(amount), None, cents(amount), True)
            )
    return rows


def _digits(value: Decimal, *, places: int = 0) -> str:
    """A number with every digit it has (up to 8 decimals), and at least `places` decimals."""
    exponent = value.normalize().as_tuple().exponent
    shown = min(max(places, -exponent if isinstance(exponent, int) else 0), 8)
    return f"{value:,.{shown}f}"


def _quote_header(quote: Quote) -> list[tuple[str, Any]]:
    return [
        ("number", quote.number),
        ("version", quote.version),
        ("status", _status_text(quote)),
        ("date", quote.date),
        ("patient id", quote.patient_id),
        ("patient", quote.patient_name),
        ("created by", _ref_text(quote.created_by)),
        ("provider", _ref_text(quote.provider)),
        ("anesthesia group", _ref_text(quote.anesthesia_group)),
        ("total", quote.total_amount),
    ]


def _status_text(quote: Quote) -> str:
    label = quote.status
    if quote.status_name and quote.status_name.lower() != label:
        return f"{label} ({quote.status_name})"
    return label


def _ref_text(ref: Any) -> str | None:
    if ref is None:
        return None
    if ref.name and ref.id:
        return f"{ref.name} ({ref.id})"
    return ref.name or ref.id


def _patient_rows(patient: Patient) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("id", patient.id),
        ("name", patient.name),
        ("first name", patient.first_name),
        ("last name", patient.last_name),
        ("date of birth", patient.date_of_birth),
    ]
    for key, value in patient.raw.items():
        if key not in _PATIENT_KEYS and value is not None:
            rows.append((str(key), _shown(value)))
    return rows


def _shown(value: Any) -> Any:
    """A raw 4D value for a table cell: scalars as they are, structures as short JSON."""
    if isinstance(value, Mapping | Sequence) and not isinstance(value, str):
        text = jsonio.dumps(value)
        return text if len(text) <= 100 else text[:99] + "…"
    if isinstance(value, date | datetime | Decimal | bool | int | str):
        return value
    return str(value)
