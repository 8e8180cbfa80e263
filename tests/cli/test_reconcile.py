"""`fourdqbo reconcile`: the audit against the sandbox over loopback, state in real Redis.

A company is seeded with every finding (a sync run first, then what people do in QBO and
4D), and the audit must report each exactly, read in bulk, write nothing and leave the
state alone; `--fix` repairs what it may and a second audit shows only what needs a person.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.emr.records import STATUS_ACTIVE
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.server import QboLimits
from fourdqbo.state import StateStore, open_state_store
from fourdqbo.state.items import Acceptance
from fourdqbo.timefmt import utcnow

pytestmark = pytest.mark.integration

Invoke = Callable[..., Result]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # More quotes than the shared fixture, so that every finding has a quote of its own.
    with Sandbox(seed=7, quotes=30, timeout_delay=1.5) as running:
        yield running


@pytest.fixture
def env(sandbox_redis_env: dict[str, str]) -> dict[str, str]:
    return {**sandbox_redis_env, "HTTP_TIMEOUT_SECONDS": "2", "QBO_RATE_WINDOW_SECONDS": "1"}


@pytest.fixture
def cli(env: dict[str, str]) -> Invoke:
    def invoke(*args: str, **overrides: str) -> Result:
        return CliRunner().invoke(app, list(args), env={**env, **overrides})

    return invoke


@pytest.fixture
def store(env: dict[str, str], sandbox: Sandbox) -> Iterator[StateStore]:
    opened = open_state_store(load_settings(env, dotenv_path=None), sandbox.realm_id)
    yield opened
    opened.close()


@dataclass
class Seeded:
    """Which quote was given which finding."""

    expected: dict[str, str]  # quote -> finding, for every quote of the window
    foreign_invoice: str
    accepted_quote: str


def _line(invoice: dict[str, Any], amount: str) -> list[dict[str, Any]]:
    lines = [dict(line) for line in invoice["Line"] if line["DetailType"] != "SubTotalLineDetail"]
    lines[0] = {**lines[0], "Amount": Decimal(amount)}
    lines[0].pop("Id", None)
    lines[0]["SalesItemLineDetail"] = {
        "ItemRef": lines[0]["SalesItemLineDetail"]["ItemRef"]
    }  # amount only: no Qty x UnitPrice to keep
    return lines


def seed_every_finding(sandbox: Sandbox, cli: Invoke, store: StateStore) -> Seeded:
    run = cli("sync", "run", "--json")
    assert run.exit_code == 1, run.output  # the seed's partly paid invoice
    company, practice, facts = sandbox.company, sandbox.practice, sandbox.facts
    assert facts.conflict_quote and facts.unknown_status_quote
    expected = {q.number: "ok" for q in practice.quotes()}
    expected[facts.conflict_quote] = "paid_differs"
    expected[facts.unknown_status_quote] = "unknown_status"
    invoiced = [
        q.number
        for q in practice.quotes()
        if q.completed and q.number != facts.conflict_quote and company.invoices_by_doc(q.number)
    ]
    missing, differs, orphan, paid_orphan, duplicate, mismatch, accepted = invoiced[:7]

    def invoice(number: str) -> dict[str, Any]:
        (found,) = company.invoices_by_doc(number)
        return found

    gone = invoice(missing)
    company.delete("Invoice", {"Id": gone["Id"], "SyncToken": gone["SyncToken"]})
    expected[missing] = "missing"
    for number in (differs, accepted):
        current = invoice(number)
        company.update(
            "Invoice",
            {"Id": current["Id"], "SyncToken": current["SyncToken"], "sparse": True,
             "Line": _line(current, "1.00")},
        )  # fmt: skip
    expected[differs] = "differs"
    expected[accepted] = "accepted"
    practice.set_status(orphan, STATUS_ACTIVE)
    expected[orphan] = "orphan"
    paid = invoice(paid_orphan)
    company.apply_payment(paid["Id"], paid["TotalAmt"])
    practice.set_status(paid_orphan, STATUS_ACTIVE)
    expected[paid_orphan] = "paid_orphan"
    twin = invoice(duplicate)
    company.settings.duplicate_doc_number_check = False
    company.insert(
        "Invoice",
        {"DocNumber": duplicate, "TxnDate": twin["TxnDate"], "CustomerRef": twin["CustomerRef"],
         "Line": _line(twin, str(twin["TotalAmt"]))},
    )  # fmt: skip
    company.settings.duplicate_doc_number_check = True
    expected[duplicate] = "duplicate"
    other = company.customer_by_name("Cool Cars")
    assert other is not None
    moved = invoice(mismatch)
    company.update(
        "Invoice",
        {"Id": moved["Id"], "SyncToken": moved["SyncToken"], "sparse": True,
         "CustomerRef": {"value": other["Id"]}},
    )  # fmt: skip
    expected[mismatch] = "customer_mismatch"
    walk_in = company.customer_by_name("Walk-in Patient")
    assert walk_in is not None
    foreign = company.insert(
        "Invoice",
        {"DocNumber": "S-5001", "TxnDate": company.today().isoformat(),
         "CustomerRef": {"value": walk_in["Id"]},
         "Line": [{"DetailType": "SalesItemLineDetail", "Amount": Decimal("45.00"),
                   "Description": "Arnica Tablets",
                   "SalesItemLineDetail": {"ItemRef": {"value": "2"}}}]},
    )  # fmt: skip
    version = practice.quote(accepted).version
    store.record_acceptance(Acceptance(accepted, version, utcnow()))
    return Seeded(expected, foreign["Id"], accepted)


def audit(cli: Invoke, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli("reconcile", "--json", *args)
    assert result.exit_code in (0, 1), result.output
    assert result.stdout, result.output
    return result.exit_code, json.loads(result.stdout)


def findings(document: dict[str, Any]) -> dict[str, str]:
    return {f["quote"]: f["finding"] for f in document["findings"]}


def test_a_company_with_every_finding_reports_each_exactly(
    cli: Invoke, sandbox: Sandbox, store: StateStore
) -> None:
    seeded = seed_every_finding(sandbox, cli, store)
    watermark, runs = store.watermark(), store.runs(10)
    queue, conflicts = store.retry_queue(), store.conflicts()
    sandbox.clear_requests()

    code, document = audit(cli)

    assert code == 1
    assert findings(document) == seeded.expected
    assert {kind for kind in document["counts"] if document["counts"][kind]} == set(
        seeded.expected.values()
    )
    for kind, count in document["counts"].items():
        assert count == sum(1 for f in seeded.expected.values() if f == kind)
    assert [i["invoice_id"] for i in document["not_from_4d"]] == [seeded.foreign_invoice]
    accepted = next(f for f in document["findings"] if f["quote"] == seeded.accepted_quote)
    assert any(
        d["field"] == "Line 1 Amount" and d["qbo"] == "1.00" for d in accepted["differences"]
    )
    # Read-only and lock-free: no write reached QBO, the sync's state is as it was.
    assert not [r for r in sandbox.requests_to("qbo") if r.is_write]
    assert document["requests"]["qbo"] == len(sandbox.requests_to("qbo"))
    assert document["requests"]["fourd"] == len(sandbox.requests_to("fourd"))
    assert store.watermark() == watermark and store.runs(10) == runs
    assert store.retry_queue() == queue and store.conflicts() == conflicts
    assert store.lock_holder() is None


def test_totals_add_up_to_the_cent(cli: Invoke, sandbox: Sandbox, store: StateStore) -> None:
    seed_every_finding(sandbox, cli, store)
    _, document = audit(cli)
    completed = [f for f in document["findings"] if f["status"] == "completed"]
    quotes = sum((Decimal(f["quote_total"]) for f in completed), Decimal(0))
    invoices = sum(
        (Decimal(f["invoice_total"]) for f in completed if f["invoice_total"]), Decimal(0)
    )
    totals = document["totals"]
    assert Decimal(totals["quotes"]) == quotes
    assert Decimal(totals["invoices"]) == invoices
    assert Decimal(totals["difference"]) == quotes - invoices
    assert all(len(v.split(".")[1]) == 2 for v in totals.values())


def test_the_json_document_has_the_documented_shape(cli: Invoke) -> None:
    code, document = audit(cli)
    assert code == 1  # before any sync, completed quotes have no invoice
    assert set(document) == {"since", "findings", "not_from_4d", "counts", "totals", "requests"}
    assert set(document["totals"]) == {"quotes", "invoices", "difference"}
    assert set(document["requests"]) == {"fourd", "qbo"}
    for finding in document["findings"]:
        assert {
            "quote", "version", "status", "finding", "invoice_id", "quote_total",
            "invoice_total", "differences",
        } <= set(finding)  # fmt: skip


def test_csv_holds_one_row_per_finding(cli: Invoke, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "audit.csv"
    result = cli("reconcile", "--csv", str(target))
    assert result.exit_code == 1, result.output
    _, document = audit(cli)
    with target.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["quote"], r["finding"]) for r in rows] == [
        (f["quote"], f["finding"]) for f in document["findings"]
    ]
    assert [p.name for p in out.iterdir()] == ["audit.csv"]  # no temporary left


def test_human_output_is_a_table_and_the_totals(
    cli: Invoke, sandbox: Sandbox, store: StateStore
) -> None:
    seed_every_finding(sandbox, cli, store)
    result = cli("reconcile")
    assert result.exit_code == 1
    assert "finding" in result.stdout and "paid_differs" in result.stdout
    assert "totals quotes " in result.stdout
    assert "invoices not from 4D" in result.stdout


def test_fix_repairs_what_it_may_and_leaves_what_needs_a_person(
    cli: Invoke, sandbox: Sandbox, store: StateStore
) -> None:
    seeded = seed_every_finding(sandbox, cli, store)
    watermark = store.watermark()
    by_finding: dict[str, list[str]] = {}
    for quote, finding in seeded.expected.items():
        by_finding.setdefault(finding, []).append(quote)
    paid_invoices = {
        i["Id"]: i["SyncToken"]
        for q in (*by_finding["paid_differs"], *by_finding["paid_orphan"], seeded.accepted_quote)
        for i in sandbox.company.invoices_by_doc(q)
    }

    result = cli("reconcile", "--fix", "--json")

    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    actions = {q["quote"]: q["action"] for q in document["fix"]["quotes"]}
    assert actions == {
        **{q: "created" for q in by_finding["missing"]},
        **{q: "updated" for q in by_finding["differs"] + by_finding["customer_mismatch"]},
        **{q: "deleted" for q in by_finding["orphan"]},
    }
    person = {"paid_differs", "paid_orphan", "duplicate", "unknown_status", "accepted"}
    after = findings(document)
    assert {q: f for q, f in after.items() if f != "ok"} == {
        q: f for q, f in seeded.expected.items() if f in person
    }
    # Paid and accepted invoices were not touched; the watermark did not move.
    for invoice_id, token in paid_invoices.items():
        current = sandbox.company.invoice(invoice_id)
        assert current is not None and current["SyncToken"] == token
    assert store.watermark() == watermark
    assert store.lock_holder() is None

    code, again = audit(cli)
    assert code == 1
    assert findings(again) == after


def test_no_start_is_exit_2_saying_how(cli: Invoke, sandbox: Sandbox) -> None:
    sandbox.clear_requests()
    result = cli("reconcile", SYNC_INITIAL_FROM="")
    assert result.exit_code == 2
    assert "--since" in result.stderr and "SYNC_INITIAL_FROM" in result.stderr
    assert sandbox.requests == []


@pytest.mark.parametrize("since", ["yesterday", "2025-13-01", ""])
def test_a_bad_since_is_exit_2_before_any_call(cli: Invoke, sandbox: Sandbox, since: str) -> None:
    sandbox.clear_requests()
    result = cli("reconcile", "--since", since)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "--since" in result.stderr
    assert sandbox.requests == []


def test_an_unwritable_csv_is_exit_2_before_any_call(
    cli: Invoke, sandbox: Sandbox, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    sandbox.clear_requests()
    for target in (tmp_path / "no-such-dir" / "a.csv", a_file / "a.csv", tmp_path):
        result = cli("reconcile", "--csv", str(target))
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and "--csv" in result.stderr
    assert sandbox.requests == []
    assert a_file.read_text() == "x"


def test_300_quotes_take_at_most_12_qbo_requests(tmp_path: Path, redis_url: str,
                                                 state_prefix: str) -> None:  # fmt: skip
    # QBO's minute scaled down to a tenth of a second: the first sync writes ~200 invoices.
    with Sandbox(seed=11, quotes=300, limits=QboLimits(window_seconds=0.1)) as big:
        env = {
            **big.env(tmp_path / "data"),
            "STATE_BACKEND": "redis",
            "REDIS_URL": redis_url,
            "STATE_PREFIX": state_prefix,
            "LOGS_DIR": str(tmp_path / "logs"),
        }
        runner = CliRunner()
        first = runner.invoke(app, ["sync", "run", "--json"], env=env)
        assert first.exit_code in (0, 1), first.output
        big.clear_requests()
        result = runner.invoke(app, ["reconcile", "--json"], env=env)
        assert result.exit_code == 1, result.output  # the seed's paid conflict
        document = json.loads(result.stdout)
        qbo = big.requests_to("qbo")
        assert len(document["findings"]) == 300
        assert document["requests"]["qbo"] == len(qbo) <= 12
        assert not [r for r in qbo if r.is_write]


def test_fix_prints_before_the_run_report_and_after(cli: Invoke, sandbox: Sandbox) -> None:
    result = cli("reconcile", "--fix")
    assert result.exit_code == 1, result.output  # the seed's paid conflict stays
    out = result.stdout
    assert out.index("before --fix") < out.index("sync run ") < out.index("after --fix")
    assert "created" in out
    before, after = out.split("after --fix")
    assert "missing" in before and "missing" not in after


def test_the_audit_needs_no_lock_and_fix_waits_for_none(
    cli: Invoke, sandbox: Sandbox, store: StateStore
) -> None:
    lock = store.acquire_lock("another-run", ttl_seconds=30)
    assert lock is not None
    try:
        code, document = audit(cli)
        assert code == 1 and "missing" in findings(document).values()
        sandbox.clear_requests()
        fixed = cli("reconcile", "--fix")
        assert fixed.exit_code == 75, fixed.output
        assert not [r for r in sandbox.requests_to("qbo") if r.is_write]
        holder = store.lock_holder()
        assert holder is not None and holder.run_id == "another-run"
    finally:
        lock.release()
