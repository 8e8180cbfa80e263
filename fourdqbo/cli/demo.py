"""`fourdqbo demo`: a whole sync against the built-in sandbox, with nothing to configure.

Starts the sandbox, authorises through its OAuth with the real code path (authorisation
URL, redirect, one-time code exchange, token file), runs `sync run`, changes the practice
the way a day at the clinic does (an edited quote, a re-opened quote, a new one), runs
again; then a bookkeeper works in QBO by hand (edits one invoice, deletes another, takes a
payment on a third) and a third run reports what a person changed without undoing it.
It ends with the invoices, `fourdqbo reconcile`'s audit, what happened and why, and what a
bookkeeper would do next. The demo exits 0 although items stay open: it demonstrates, a
cron run would have exited 1 once for them.

Uses Redis when one answers at REDIS_URL (under a throwaway key prefix, removed
afterwards), the file backend in a temporary directory otherwise. Nothing outside that
directory and prefix is touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer

from fourdqbo.cli.output import Column, emit_table, info, stdout_is_terminal


def demo(
    ctx: typer.Context,
    seed: int = typer.Option(7, "--seed", help="Seed of the sandbox practice."),
    quotes: int = typer.Option(30, "--quotes", min=5, max=5000, help="How many 4D quotes."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temporary directory (logs, state)."),
) -> None:
    """Run a whole sync against the built-in sandbox; nothing to configure.

    Example: fourdqbo demo
    """
    from fourdqbo.config import load_settings
    from fourdqbo.log import setup_logging
    from fourdqbo.sandbox.server import Sandbox

    workdir = Path(tempfile.mkdtemp(prefix="fourdqbo-demo-"))
    try:
        with Sandbox(seed=seed, quotes=quotes) as sandbox, _state_backend() as state_env:
            env = sandbox.env(workdir / "data")
            Path(env["QBO_TOKEN_FILE"]).unlink()  # the demo authorises for real instead
            env.update(state_env)
            env["LOGS_DIR"] = str(workdir / "logs")
            settings = load_settings(env, dotenv_path=None)
            setup_logging(settings.logs_dir, console=False)
            _say(
                f"1. Sandbox up at {sandbox.url}: a practice with {quotes} quotes "
                f"and a QBO company (state: {state_env['STATE_BACKEND']})."
            )
            realm = _authorise(settings)
            _say(
                f"2. Authorised QBO through the sandbox's Intuit OAuth: realm {realm}, "
                f"token saved 0600 in {settings.qbo_token_file}."
            )
            first = _sync(settings, "3. First sync: every completed quote becomes one invoice.")
            changes = _change_the_practice(sandbox)
            _say("4. Meanwhile in 4D: " + "; ".join(changes) + ".")
            second = _sync(settings, "5. Second sync: only what changed is written.")
            by_hand = _work_in_qbo(sandbox, first, second)
            _say("6. Meanwhile in QBO, by hand: " + "; ".join(by_hand.said) + ".")
            third = _sync(
                settings,
                "7. Third sync: what a person changed in QBO is reported, never undone.",
            )
            _show_attention(settings, "8. What needs a person (`fourdqbo sync conflicts`):")
            _show_invoices(settings, "9. The QBO company now holds")
            _show_reconcile(settings, "10. Reconcile (`fourdqbo reconcile`): 4D against QBO.")
            _explain(first, second, third, by_hand)
            _next_steps(settings, by_hand)
            if keep:
                info(f"Logs and state: {workdir}")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _say(text: str) -> None:
    if stdout_is_terminal():
        from rich.console import Console

        Console().print(f"[bold]{text}[/bold]")
    else:
        print(text)


@contextlib.contextmanager
def _state_backend() -> Iterator[dict[str, str]]:
    """Redis when one answers (throwaway prefix, cleaned up), else the file backend."""
    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    prefix = f"fourdqbo-demo-{uuid.uuid4().hex[:8]}"
    client: Any = None
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
    except Exception:  # any failure means: no usable Redis here, use files
        client = None
    if client is None:
        yield {"STATE_BACKEND": "file"}
        return
    try:
        yield {"STATE_BACKEND": "redis", "REDIS_URL": url, "STATE_PREFIX": prefix}
    finally:
        with contextlib.suppress(Exception):
            keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
            if keys:
                client.delete(*keys)
        client.close()


def _authorise(settings: Any) -> str:
    """The real authorisation path: URL with state, the provider's redirect, exchange."""
    import httpx

    from fourdqbo.qbo.oauth import authorization_request, exchange_redirect, save_pending

    request = authorization_request(settings)
    save_pending(settings, request)
    # The sandbox's consent screen approves at once and redirects, as a browser would see.
    answer = httpx.get(request.url, follow_redirects=False, timeout=10)
    redirected = answer.headers.get("location", "")
    token = exchange_redirect(settings, redirected)
    return str(token.realm_id)


def _sync(settings: Any, heading: str) -> dict[str, Any]:
    from fourdqbo.cli.sync import RichProgress, connect
    from fourdqbo.sync.engine import RunOptions, SilentProgress, SyncEngine

    _say(heading)
    show = stdout_is_terminal() and sys.stderr.isatty()
    with connect(settings) as conn:
        progress: Any = RichProgress() if show else SilentProgress()
        engine = SyncEngine(settings, conn.fourd, conn.qbo, conn.state, progress)
        with progress if show else contextlib.nullcontext():
            report = engine.run(RunOptions())
    document = report.as_dict()
    rows = [q for q in document["quotes"] if q["action"] != "unchanged"]
    emit_table(
        ["quote", Column("version", "right"), "status", "action", "invoice", "why"],
        [
            (
                q["quote"],
                q["version"],
                q["status"],
                f"{q['action']} ({q['kind']})" if q.get("kind") else q["action"],
                q["invoice_id"],
                q["error"] or q["reason"],
            )
            for q in rows
        ],
        empty="   nothing to write",
    )
    counts = document["counts"]
    print(
        "   "
        + ", ".join(f"{k} {v}" for k, v in counts.items() if v or k == "seen")
        + f"; customers created {document['customers']['created']}, reactivated "
        f"{document['customers']['reactivated']}; HTTP requests 4D "
        f"{document['requests']['fourd']}, QBO {document['requests']['qbo']}"
    )
    return document


def _change_the_practice(sandbox: Any) -> list[str]:
    """An edited quote, a re-opened quote and a new completed quote, a minute from now."""
    sandbox.clock.advance(60)
    practice = sandbox.practice
    completed = [n for n in practice.completed_numbers() if n != sandbox.facts.conflict_quote]
    edited, reopened = completed[0], completed[1]
    practice.edit_quote(edited)
    practice.set_status(reopened, 1)
    added = practice.add_quote(status_id=4)
    sandbox.clock.advance(60)
    return [
        f"quote {edited} edited (new version)",
        f"quote {reopened} re-opened",
        f"quote {added.number} completed",
    ]


@dataclass(frozen=True)
class HandWork:
    """What the demo's bookkeeper did in QBO, by quote number (None: too few invoices in a
    tiny practice), and how the demo said it."""

    edited: str | None
    deleted: str | None
    paid: str | None
    said: tuple[str, ...]


def _work_in_qbo(sandbox: Any, first: dict[str, Any], second: dict[str, Any]) -> HandWork:
    """A courtesy discount typed into one invoice, another invoice deleted, a third paid in
    full: invoices the sync wrote in the first run and has not touched since."""
    sandbox.clock.advance(60)
    touched = {q["quote"] for q in second["quotes"] if q["action"] != "unchanged"}
    written = [
        (q["quote"], q["invoice_id"])
        for q in first["quotes"]
        if q["action"] == "created" and q["quote"] not in touched
    ]
    picked: list[tuple[str, str] | None] = [*written[:3], None, None, None][:3]
    company = sandbox.company
    said: list[str] = []
    if picked[0] is not None:
        quote, invoice_id = picked[0]
        line = next(ln for ln in company.invoice(invoice_id)["Line"] if ln.get("LineNum") == 1)
        amount = Decimal(str(line["Amount"]))
        discount = min(Decimal("50.00"), amount / 2).quantize(Decimal("0.01"))
        company.edit_invoice(invoice_id, line_amounts={1: amount - discount})
        said.append(
            f"invoice {invoice_id} (quote {quote}) given a {discount:,.2f} courtesy discount "
            "on its first line"
        )
    if picked[1] is not None:
        quote, invoice_id = picked[1]
        company.delete_invoice(invoice_id)
        said.append(f"invoice {invoice_id} (quote {quote}) deleted")
    if picked[2] is not None:
        quote, invoice_id = picked[2]
        company.apply_payment(invoice_id, company.invoice(invoice_id)["TotalAmt"])
        said.append(f"invoice {invoice_id} (quote {quote}) paid in full")
    sandbox.clock.advance(60)
    edited, deleted, paid = (None if p is None else p[0] for p in picked)
    return HandWork(edited, deleted, paid, tuple(said) or ("nothing (too few invoices)",))


def _show_attention(settings: Any, heading: str) -> None:
    """The open items as `fourdqbo sync conflicts` lists them."""
    from fourdqbo.cli.attention import differences_text
    from fourdqbo.cli.sync import connect

    _say(heading)
    with connect(settings, clients=False) as conn:
        items = conn.state.attention_items()
    emit_table(
        ["quote", "kind", "invoice", "what differs / why"],
        [(i.quote, str(i.kind), i.invoice_id, differences_text(i)) for i in items],
        empty="   nothing needs a person",
    )


def _show_reconcile(settings: Any, heading: str) -> None:
    """`fourdqbo reconcile`'s audit since SYNC_INITIAL_FROM: findings, counts and totals."""
    from fourdqbo.cli.reconcile import _audit, _print_result
    from fourdqbo.cli.sync import connect
    from fourdqbo.sync.engine import SilentProgress

    _say(heading)
    with connect(settings) as conn:
        result = _audit(conn, SilentProgress(), settings.sync_initial_from)
    _print_result(result, title="   reconcile")


def _show_invoices(settings: Any, heading: str) -> None:
    from fourdqbo.qbo.client import QBOClient
    from fourdqbo.qbo.records import Invoice
    from fourdqbo.qbo.tokens import TokenStore

    with QBOClient(settings, TokenStore(settings)) as client:
        invoices = [Invoice.parse(raw) for raw in client.query_all("Invoice")]
    invoices.sort(key=lambda i: i.doc_number or "")
    _say(f"{heading} {len(invoices)} invoices:")
    emit_table(
        [
            "DocNumber",
            "customer",
            "date",
            Column("total", "right"),
            Column("balance", "right"),
            "last updated (UTC)",
        ],
        [
            (
                i.doc_number,
                i.customer_name or i.customer_id,
                i.txn_date,
                i.total,
                i.balance,
                i.updated_at,
            )
            for i in invoices
        ],
    )


WHY = {
    "created": "completed in 4D with no invoice yet: one invoice each, equal to the quote",
    "updated": "edited in 4D (a new version): the unpaid invoice was brought in line",
    "deleted": "no longer completed in 4D: the unpaid invoice was removed",
    "voided": "no longer completed in 4D: the unpaid invoice was voided",
    "conflict": "needs a person, left alone (`fourdqbo sync conflicts` lists it)",
    "skipped": "the quote has a status fourdqbo does not know: nothing done",
    "failed": "could not be synced this time: queued, tried first next run",
}
# Why a conflict needs a person, by kind (the kinds of DESIGN.md "What needs a person").
WHY_CONFLICT = {
    "paid": "the invoice differs from the quote but has a payment applied",
    "edited_in_qbo": "a person changed the invoice in QBO after the sync wrote it",
    "deleted_in_qbo": "a person deleted or voided the invoice of a completed quote",
    "duplicate_invoices": "several invoices carry the quote's number",
    "customer_ambiguous": "several QBO customers are the same patient",
    "gave_up": "failed too often; not tried again until fixed",
}


def _explain(
    first: dict[str, Any], second: dict[str, Any], third: dict[str, Any], by_hand: HandWork
) -> None:
    _say("11. What happened and why:")
    for title, document in (
        ("first sync", first),
        ("second sync", second),
        ("third sync", third),
    ):
        by_action: dict[str, list[str]] = {}
        kinds: dict[str, list[str]] = {}
        for q in document["quotes"]:
            by_action.setdefault(q["action"], []).append(q["quote"])
            if q["action"] == "conflict":
                kinds.setdefault(q.get("kind") or "paid", []).append(q["quote"])
        print(f"   {title}:")
        for action, why in WHY.items():
            numbers = by_action.get(action)
            if not numbers:
                continue
            if action == "conflict":
                for kind, quotes in kinds.items():
                    print(
                        f"     conflict {kind} {len(quotes)} ({_numbers(quotes)}): "
                        f"{WHY_CONFLICT.get(kind, why)}; left alone"
                    )
                continue
            print(f"     {action} {len(numbers)} ({_numbers(numbers)}): {why}")
        unchanged = len(by_action.get("unchanged", []))
        if unchanged:
            print(
                f"     unchanged {unchanged}: already right in QBO, or not completed and "
                "never invoiced"
            )
    if by_hand.paid is not None:
        print(
            f"   The payment on quote {by_hand.paid}'s invoice needs nobody: a payment "
            "changes nothing the sync writes."
        )
    print(
        "   A cron run exits 1 once for what is new and stays quiet about what is still "
        "open (a reminder every SYNC_REMIND_HOURS)."
    )


def _next_steps(settings: Any, by_hand: HandWork) -> None:
    """What a bookkeeper would type next, for each item still open."""
    from fourdqbo.cli.attention import settle_command
    from fourdqbo.cli.sync import connect

    with connect(settings, clients=False) as conn:
        items = conn.state.attention_items()
    _say(f"12. What a bookkeeper would do next ({len(items)} open, this demo exits 0 anyway):")
    print("   `fourdqbo sync conflicts` shows each item with what differs and how to settle it;")
    for item in items:
        print(f"   quote {item.quote} ({item.kind}): {settle_command(item)}")
    if by_hand.edited is not None:
        print(f"   Here: `fourdqbo sync accept {by_hand.edited}` if the discount was meant.")
    if by_hand.deleted is not None:
        print(
            f"   Here: `fourdqbo sync apply {by_hand.deleted}` if the invoice was deleted by "
            "mistake."
        )
    print("   Explore further with `fourdqbo sandbox serve`.")


def _numbers(numbers: list[str]) -> str:
    return ", ".join(numbers[:8]) + (" ..." if len(numbers) > 8 else "")
