"""People work in QBO too: hand edits, deletes, voids, payments and e-mails between runs.

DESIGN.md "The ledger" and "People work in QBO too", end to end: `fourdqbo sync run`
in-process against the sandbox over loopback, the state in real Redis and in the file
backend (every test runs on both). A person's change is made with the company's person
knobs (`edit_invoice`, `delete_invoice`, …), which bump SyncToken and LastUpdatedTime
and reach the change log that CDC answers from, exactly as a change made in QBO's
screens does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.qbo import cdc as qbo_cdc
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox import qbo as sandbox_qbo
from fourdqbo.sandbox.audit import audit
from fourdqbo.state import StateStore, open_state_store
from fourdqbo.timefmt import utcnow

pytestmark = pytest.mark.integration

SyncRun = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def env(sandbox_state_env: dict[str, str]) -> dict[str, str]:
    return {
        **sandbox_state_env,
        "HTTP_TIMEOUT_SECONDS": "2",
        # The seed stamps some quotes a minute before the first run; without an overlap a
        # later window holds only what changed in 4D, so what a run re-checks is CDC's doing.
        "SYNC_OVERLAP_SECONDS": "0",
    }


@pytest.fixture
def sync(env: dict[str, str]) -> SyncRun:
    def run(*args: str, **overrides: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(app, ["sync", "run", "--json", *args], env={**env, **overrides})
        assert result.stdout.strip(), result.output
        return result.exit_code, json.loads(result.stdout)

    return run


@pytest.fixture
def store(env: dict[str, str], sandbox: Sandbox) -> Iterator[StateStore]:
    opened = open_state_store(load_settings(env, dotenv_path=None), sandbox.realm_id)
    yield opened
    opened.close()


def writes(sandbox: Sandbox) -> list[Any]:
    return [r for r in sandbox.requests_to("qbo") if r.is_write and r.status]


def written_items(sandbox: Sandbox) -> list[tuple[str, dict[str, Any]]]:
    """(operation, Invoice body) of every invoice write that reached QBO, batched or not."""
    found: list[tuple[str, dict[str, Any]]] = []
    for record in writes(sandbox):
        body = record.body if isinstance(record.body, dict) else {}
        if "BatchItemRequest" not in body:
            operation = record.query.get("operation", ["create or update"])[0]
            found.append((f"single {operation}", body))
        for item in body.get("BatchItemRequest", []):
            if "Invoice" in item:
                found.append((item.get("operation", "create"), item["Invoice"]))
    return found


def outcome(report: dict[str, Any], quote: str) -> dict[str, Any]:
    return next(q for q in report["quotes"] if q["quote"] == quote)


def settled(sandbox: Sandbox, sync: SyncRun) -> str:
    """A first full sync, the seed's paid conflict settled (payment refunded and the
    invoice brought to its quote), and a completed quote whose invoice equals its quote."""
    code, _ = sync()
    assert code == 1  # the seed's partly paid invoice
    paid = sandbox.company.invoice(sandbox.facts.conflict_invoice_id)
    assert paid is not None
    sandbox.company.apply_payment(paid["Id"], paid["Balance"] - paid["TotalAmt"])
    code, report = sync()
    assert code == 0, report["quotes"]
    return next(
        n
        for n in sandbox.practice.completed_numbers()
        if n != sandbox.facts.conflict_quote and len(sandbox.company.invoices_by_doc(n)) == 1
    )


def invoice_of(sandbox: Sandbox, number: str) -> dict[str, Any]:
    (found,) = sandbox.company.invoices_by_doc(number)
    return found


def converged(sandbox: Sandbox, env: dict[str, str]) -> bool:
    return audit(sandbox, load_settings(env, dotenv_path=None)).converged


# --- hand edits ---------------------------------------------------------------------------


def test_a_hand_edit_is_edited_in_qbo_with_what_differs_and_nothing_is_written(
    sandbox: Sandbox, sync: SyncRun, store: StateStore
) -> None:
    number = settled(sandbox, sync)
    invoice = invoice_of(sandbox, number)
    line = invoice["Line"][0]
    sandbox.company.edit_invoice(
        invoice["Id"], line_amounts={line["LineNum"]: "1.50"}, descriptions={1: "Changed"}
    )
    sandbox.clear_requests()

    code, report = sync()

    assert code == 1  # new: a person must look at it
    found = outcome(report, number)
    assert found["action"] == "conflict" and found["kind"] == "edited_in_qbo"
    differences = {d["field"]: (d["qbo"], d["quote"]) for d in found["differences"]}
    assert differences["Line 1 Amount"] == ("1.50", f"{Decimal(str(line['Amount'])):.2f}")
    assert differences["Line 1 Description"] == ("Changed", line["Description"])
    assert writes(sandbox) == []
    assert report["counts"]["seen"] == 1  # only the quote CDC pointed at
    item = store.attention_item(number)
    assert item is not None and item.kind == "edited_in_qbo"
    assert item.ledger is not None and item.ledger.invoice_id == invoice["Id"]

    # Known now: the next run says nothing new and still writes nothing.
    sandbox.clear_requests()
    code, report = sync()
    assert code == 0 and report["attention"] == {"new": 0, "open": 1}
    assert writes(sandbox) == []


def test_with_edits_revert_one_update_brings_the_invoice_back_to_the_quote(
    sandbox: Sandbox, sync: SyncRun, env: dict[str, str], store: StateStore
) -> None:
    number = settled(sandbox, sync)
    invoice = invoice_of(sandbox, number)
    sandbox.company.edit_invoice(invoice["Id"], line_amounts={1: "1.00"})
    sandbox.clear_requests()

    code, report = sync(SYNC_QBO_EDITS="revert")

    assert code == 0, report["quotes"]
    assert outcome(report, number)["action"] == "updated"
    assert "reverted" in outcome(report, number)["reason"]
    assert [op for op, _ in written_items(sandbox)] == ["update"]
    assert len(writes(sandbox)) == 1
    assert converged(sandbox, env)
    after = invoice_of(sandbox, number)
    assert after["Id"] == invoice["Id"]
    entry = store.ledger([number])[number]
    assert entry.action == "updated" and entry.sync_token == after["SyncToken"]
    # The revert is our own write: the run after it re-checks nothing.
    sandbox.clear_requests()
    code, report = sync(SYNC_QBO_EDITS="revert")
    assert (code, report["counts"]["seen"], writes(sandbox)) == (0, 0, [])


# --- hand deletes and voids ---------------------------------------------------------------


def test_a_hand_delete_is_deleted_in_qbo_and_nothing_is_created(
    sandbox: Sandbox, sync: SyncRun
) -> None:
    number = settled(sandbox, sync)
    invoice = invoice_of(sandbox, number)
    sandbox.company.delete_invoice(invoice["Id"])
    sandbox.clear_requests()

    code, report = sync()

    assert code == 1
    found = outcome(report, number)
    assert (found["action"], found["kind"]) == ("conflict", "deleted_in_qbo")
    assert invoice["Id"] in found["reason"]
    assert writes(sandbox) == []
    assert sandbox.company.invoices_by_doc(number) == []


def test_with_deletes_recreate_exactly_one_invoice_is_created(
    sandbox: Sandbox, sync: SyncRun, env: dict[str, str], store: StateStore
) -> None:
    number = settled(sandbox, sync)
    sandbox.company.delete_invoice(invoice_of(sandbox, number)["Id"])
    sandbox.clear_requests()

    code, report = sync(SYNC_QBO_DELETES="recreate")

    assert code == 0, report["quotes"]
    assert outcome(report, number)["action"] == "created"
    assert [op for op, _ in written_items(sandbox)] == ["create"]
    assert len(sandbox.company.invoices_by_doc(number)) == 1
    assert converged(sandbox, env)
    assert store.ledger([number])[number].action == "created"
    sandbox.clear_requests()
    code, report = sync(SYNC_QBO_DELETES="recreate")
    assert (code, report["counts"]["seen"], writes(sandbox)) == (0, 0, [])


def test_a_hand_void_is_deleted_in_qbo_and_recreate_updates_it_in_place(
    sandbox: Sandbox, sync: SyncRun, env: dict[str, str]
) -> None:
    number = settled(sandbox, sync)
    invoice = invoice_of(sandbox, number)
    sandbox.company.void_invoice(invoice["Id"])
    sandbox.clear_requests()

    code, report = sync()
    assert code == 1
    found = outcome(report, number)
    assert (found["action"], found["kind"]) == ("conflict", "deleted_in_qbo")
    assert "voided" in found["reason"]
    assert writes(sandbox) == []

    sandbox.clear_requests()
    code, report = sync(SYNC_QBO_DELETES="recreate")
    assert code == 0, report["quotes"]
    assert outcome(report, number)["action"] == "updated"
    assert [op for op, _ in written_items(sandbox)] == ["update"]
    (after,) = sandbox.company.invoices_by_doc(number)  # never a second one
    assert after["Id"] == invoice["Id"]
    assert Decimal(str(after["TotalAmt"])) == Decimal(str(invoice["TotalAmt"]))
    assert converged(sandbox, env)


# --- what is no person's edit -------------------------------------------------------------


@pytest.mark.parametrize("touch", ["payment", "email"])
def test_a_payment_or_an_email_is_nothing(sandbox: Sandbox, sync: SyncRun, touch: str) -> None:
    number = settled(sandbox, sync)
    invoice = invoice_of(sandbox, number)
    if touch == "payment":
        sandbox.company.apply_payment(invoice["Id"], "10.00")
    else:
        sandbox.company.send_invoice_email(invoice["Id"])
    sandbox.clear_requests()

    code, report = sync()

    assert code == 0, report["quotes"]
    assert report["attention"] == {"new": 0, "open": 0}
    assert outcome(report, number)["action"] == "unchanged"
    assert writes(sandbox) == []


def test_the_run_after_a_big_write_rechecks_no_quote(tmp_path: Path, env: dict[str, str]) -> None:
    with Sandbox(seed=5, quotes=80, timeout_delay=1.5) as big:
        run_env = {**env, **big.env(tmp_path / "big")}

        def run() -> tuple[int, dict[str, Any]]:
            result = CliRunner().invoke(app, ["sync", "run", "--json"], env=run_env)
            return result.exit_code, json.loads(result.stdout)

        code, first = run()
        assert first["counts"]["created"] >= 40, first["counts"]
        paid = big.company.invoice(big.facts.conflict_invoice_id)
        assert paid is not None
        big.company.apply_payment(paid["Id"], paid["Balance"] - paid["TotalAmt"])
        code, second = run()
        assert code == 0, second["quotes"]
        big.clear_requests()

        code, third = run()

    assert code == 0
    assert third["counts"]["seen"] == 0, third["quotes"]
    assert [r.path.rsplit("/", 1)[-1] for r in big.requests_to("qbo")] == ["cdc"]
    assert len(big.requests_to("fourd")) == 1


# --- the quote changes later --------------------------------------------------------------


@pytest.mark.parametrize("seen_first", [True, False], ids=["reported-first", "same-run"])
def test_a_new_quote_version_replaces_a_hand_edit_and_says_so(
    sandbox: Sandbox, sync: SyncRun, env: dict[str, str], store: StateStore, seen_first: bool
) -> None:
    number = settled(sandbox, sync)
    invoice = invoice_of(sandbox, number)
    sandbox.company.edit_invoice(invoice["Id"], descriptions={1: "Changed in QBO"})
    if seen_first:
        code, report = sync()
        assert outcome(report, number)["kind"] == "edited_in_qbo"
    sandbox.clock.advance(60)
    sandbox.practice.edit_quote(number)
    sandbox.clear_requests()

    code, report = sync()

    assert code == 0, report["quotes"]
    found = outcome(report, number)
    assert found["action"] == "updated"
    assert "replaces a change made in QBO" in found["reason"]
    assert [op for op, _ in written_items(sandbox)] == ["update"]
    assert converged(sandbox, env)
    assert store.attention_item(number) is None
    assert store.ledger([number])[number].version == sandbox.practice.quote(number).version


# --- a lost ledger ------------------------------------------------------------------------


def forget_the_ledger(env: dict[str, str], sandbox: Sandbox) -> None:
    """Lose the ledger as a wiped Redis or a deleted file would: below the store's API."""
    if env["STATE_BACKEND"] == "file":
        (Path(env["DATA_DIR"]) / "state" / sandbox.realm_id / "ledger.json").unlink()
        return
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        base = f"{env['STATE_PREFIX']}:{sandbox.realm_id}"
        assert client.delete(f"{base}:ledger", f"{base}:ledger:invoices") == 2
    finally:
        client.close()


def test_without_a_ledger_a_hand_edit_is_still_caught_by_the_quote_version_field(
    sandbox: Sandbox, sync: SyncRun, env: dict[str, str], store: StateStore
) -> None:
    number = settled(sandbox, sync)
    forget_the_ledger(env, sandbox)
    assert store.ledger_size() == 0
    invoice = invoice_of(sandbox, number)
    sandbox.company.edit_invoice(invoice["Id"], line_amounts={1: "2.00"})
    sandbox.clear_requests()

    code, report = sync()

    assert code == 1
    found = outcome(report, number)
    assert (found["action"], found["kind"]) == ("conflict", "edited_in_qbo")
    assert writes(sandbox) == []


def test_a_lost_ledger_is_rebuilt_by_adoption_and_later_edits_are_caught(
    sandbox: Sandbox, sync: SyncRun, env: dict[str, str], store: StateStore
) -> None:
    number = settled(sandbox, sync)
    forget_the_ledger(env, sandbox)
    sandbox.clear_requests()

    # A run over the whole period (the quotes are all re-checked) finds QBO in step.
    code, report = sync("--since", env["SYNC_INITIAL_FROM"])

    assert code == 0, report["quotes"]
    assert writes(sandbox) == []
    invoiced = [
        n
        for n in sandbox.practice.completed_numbers()
        if len(sandbox.company.invoices_by_doc(n)) == 1
    ]
    ledger = store.ledger(invoiced)
    assert set(ledger) == set(invoiced)
    assert {e.action for e in ledger.values()} == {"adopted"}
    assert ledger[number].sync_token == invoice_of(sandbox, number)["SyncToken"]

    sandbox.company.edit_invoice(invoice_of(sandbox, number)["Id"], line_amounts={1: "3.00"})
    sandbox.clear_requests()
    code, report = sync()
    assert code == 1
    assert outcome(report, number)["kind"] == "edited_in_qbo"
    assert report["counts"]["seen"] == 1
    assert writes(sandbox) == []


# --- change data capture: full answers, the 30-day gap, the dry run -----------------------


def test_full_cdc_answers_are_split_and_no_change_is_missed(
    sandbox: Sandbox, sync: SyncRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = settled(sandbox, sync)
    invoiced = [
        n
        for n in sandbox.practice.completed_numbers()
        if n != sandbox.facts.conflict_quote and len(sandbox.company.invoices_by_doc(n)) == 1
    ]
    assert number in invoiced and len(invoiced) >= 6
    # QBO answers at most 1,000 objects; here both sides agree on 3, so the people's
    # edits below fill several answers. Their times are a second apart at most two by two
    # (QBO's times have whole seconds: a full answer must span more than one to be paged).
    monkeypatch.setattr(sandbox_qbo, "CDC_MAX_OBJECTS", 3)
    monkeypatch.setattr(qbo_cdc, "MAX_CDC_OBJECTS", 3)
    for index, quote in enumerate(invoiced):
        if index % 2 == 0:
            sandbox.clock.advance(1)
        sandbox.company.edit_invoice(invoice_of(sandbox, quote)["Id"], descriptions={1: "Edit"})
    sandbox.clear_requests()

    code, report = sync()

    assert code == 1
    kinds = {q["quote"]: q.get("kind") for q in report["quotes"]}
    assert kinds == {quote: "edited_in_qbo" for quote in invoiced}
    cdc_calls = [r for r in sandbox.requests_to("qbo") if r.path.endswith("/cdc")]
    assert len(cdc_calls) >= len(invoiced) // 3
    assert writes(sandbox) == []


def test_a_cursor_past_cdcs_reach_is_reported_once_and_moved_to_now(
    sandbox: Sandbox, sync: SyncRun, store: StateStore
) -> None:
    settled(sandbox, sync)
    old = utcnow() - timedelta(days=31)
    store.set_cdc_cursor(old)
    sandbox.clear_requests()

    code, report = sync()

    assert code == 1
    command = f"fourdqbo reconcile --since {old:%Y-%m-%d}"
    assert any(command in notice for notice in report["notices"]), report["notices"]
    assert not [r for r in sandbox.requests_to("qbo") if r.path.endswith("/cdc")]
    cursor = store.cdc_cursor()
    assert cursor is not None and utcnow() - cursor < timedelta(minutes=5)
    code, report = sync()
    assert (code, report["notices"]) == (0, [])


def test_the_dry_run_reads_cdc_but_moves_no_cursor(
    sandbox: Sandbox, sync: SyncRun, store: StateStore
) -> None:
    number = settled(sandbox, sync)
    cursor = store.cdc_cursor()
    assert cursor is not None
    sandbox.company.edit_invoice(invoice_of(sandbox, number)["Id"], line_amounts={1: "4.00"})
    sandbox.clock.advance(5)
    sandbox.clear_requests()

    code, report = sync("--dry-run")

    assert code == 1
    assert outcome(report, number)["kind"] == "edited_in_qbo"
    assert [r for r in sandbox.requests_to("qbo") if r.path.endswith("/cdc")]
    assert writes(sandbox) == []
    assert store.cdc_cursor() == cursor
    assert store.attention_item(number) is None  # a dry run records nothing either


def test_a_copy_of_our_invoice_under_a_number_4d_does_not_know_is_no_failure(
    sandbox: Sandbox, sync: SyncRun, store: StateStore
) -> None:
    number = settled(sandbox, sync)
    original = invoice_of(sandbox, number)
    # QBO's "Copy" keeps the custom fields, the Quote Version among them; the bookkeeper
    # gives the copy a number of their own.
    copy = {
        key: original[key] for key in ("TxnDate", "CustomerRef", "CustomField") if key in original
    }
    lines = [
        {k: v for k, v in line.items() if k not in ("Id", "LineNum")}
        for line in original["Line"]
        if line["DetailType"] == "SalesItemLineDetail"
    ]
    made = sandbox.company.create("Invoice", {**copy, "DocNumber": "99077", "Line": lines})
    sandbox.clear_requests()

    code, report = sync()

    assert code == 0, report["quotes"]
    assert report["counts"]["failed"] == 0, report["quotes"]
    assert outcome(report, "99077")["action"] == "skipped"
    assert store.retry_queue() == []
    assert writes(sandbox) == []
    assert sandbox.company.invoice(made["Id"]) is not None


def test_a_hand_edit_found_without_cdc_is_still_a_person_s_edit(
    sandbox: Sandbox, sync: SyncRun
) -> None:
    number = settled(sandbox, sync)
    sandbox.company.edit_invoice(invoice_of(sandbox, number)["Id"], line_amounts={1: "5.00"})
    sandbox.practice.touch(number)  # saved in 4D, same Version: the window lists it too
    sandbox.clear_requests()

    # `--quote` makes no CDC read: the ledger alone says the invoice was changed by a person.
    code, report = sync("--quote", number)

    assert code == 1
    assert outcome(report, number)["kind"] == "edited_in_qbo"
    assert not [r for r in sandbox.requests_to("qbo") if r.path.endswith("/cdc")]
    assert writes(sandbox) == []
