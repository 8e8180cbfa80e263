"""`fourdqbo sync conflicts | accept | apply | retry` and the quiet-unless-new life cycle.

Against the sandbox over loopback with real Redis: each kind of item needing a person
arises as it would in a practice (a payment, a duplicate invoice, a bookkeeper's edit or
delete in QBO, two customers for one patient, a quote that fails every run), is reported
once by the run that finds it, stays quiet after that (while `fourdqbo status` keeps
exiting 1), is re-reported by the reminder, and is closed by the command the table names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.cli.sync import connect
from fourdqbo.config import load_settings
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.base import LoopbackServer
from fourdqbo.sandbox.seed import display_name
from fourdqbo.state import open_state_store
from fourdqbo.sync.engine import RunOptions, SyncEngine
from fourdqbo.sync.report import RunReport
from tests.cli.test_healthcheck import Monitor

pytestmark = pytest.mark.integration

Invoke = Callable[..., Result]


@pytest.fixture
def env(sandbox_redis_env: dict[str, str]) -> dict[str, str]:
    return {
        **sandbox_redis_env,
        "HTTP_TIMEOUT_SECONDS": "2",
        "SYNC_LOCK_TTL_SECONDS": "5",
        "SYNC_MAX_ATTEMPTS": "3",
        "QBO_RATE_WINDOW_SECONDS": "1",
    }


@pytest.fixture
def cli(env: dict[str, str]) -> Invoke:
    def invoke(*args: str, input: str | None = None, **overrides: str) -> Result:
        return CliRunner().invoke(app, list(args), env={**env, **overrides}, input=input)

    return invoke


def quiet_run(cli: Invoke, **overrides: str) -> Result:
    return cli("sync", "run", "--quiet", **overrides)


def json_run(cli: Invoke, **overrides: str) -> tuple[int, dict[str, Any]]:
    result = cli("sync", "run", "--json", **overrides)
    return result.exit_code, json.loads(result.stdout)


def items(cli: Invoke) -> dict[str, dict[str, Any]]:
    result = cli("sync", "conflicts", "--json")
    assert result.exit_code == 0, result.stderr
    return {item["quote"]: item for item in json.loads(result.stdout)["items"]}


def outcome(report: dict[str, Any], number: str) -> dict[str, Any]:
    return next(q for q in report["quotes"] if q["quote"] == number)


def plain_quote(sandbox: Sandbox) -> str:
    """A completed quote the seed left nothing special about."""
    facts = sandbox.facts
    special = {facts.conflict_quote, facts.inactive_customer_quote}
    return next(n for n in sandbox.practice.completed_numbers() if n not in special)


def break_mapping(sandbox: Sandbox, number: str) -> None:
    """A negative procedure amount: the quote fails to map on every run."""
    sandbox.practice.quote(number).procedures = [
        {"ProcedureName": "x", "Amount": "-5", "DiscountAmount": None}
    ]


def invoice_writes(sandbox: Sandbox, number: str) -> list[Any]:
    """Write requests naming the quote's invoice (by DocNumber or by its Id)."""
    ids = {i["Id"] for i in sandbox.company.invoices_by_doc(number)}
    found = []
    for record in sandbox.requests_to("qbo"):
        if not record.is_write:
            continue
        for item in (record.body or {}).get("BatchItemRequest") or [record.body or {}]:
            invoice = item.get("Invoice") if isinstance(item, dict) else None
            if invoice and (invoice.get("DocNumber") == number or invoice.get("Id") in ids):
                found.append(item)
    return found


def given_up_quote(sandbox: Sandbox, cli: Invoke) -> str:
    """A quote that failed SYNC_MAX_ATTEMPTS (3) runs and gave up."""
    number = plain_quote(sandbox)
    break_mapping(sandbox, number)
    for _ in range(3):
        quiet_run(cli)
    assert items(cli)[number]["kind"] == "gave_up"
    return number


def quote_fetches(sandbox: Sandbox, number: str) -> int:
    return sum(
        1
        for r in sandbox.requests_to("fourd")
        if r.path.strip("/") == "quotes"
        and [v.strip() for v in r.query.get("quoteNumber", [])] == [number]
    )


# -- the paid conflict: reported once, then quiet; accept; apply ------------------------


def test_a_paid_conflict_is_reported_by_the_first_run_only_while_status_keeps_exit_1(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = sandbox.facts.conflict_quote
    first = quiet_run(cli)
    assert first.exit_code == 1
    assert f"quote {number}: paid" in first.stderr
    second = quiet_run(cli)
    assert second.exit_code == 0
    assert second.stdout == "" and second.stderr == ""
    status = cli("status")
    assert status.exit_code == 1
    assert "1 open (1 paid)" in status.stdout
    item = items(cli)[number]
    assert item["kind"] == "paid"
    assert item["invoice_id"] == sandbox.facts.conflict_invoice_id


def test_conflicts_json_has_the_documented_shape_with_amounts_as_decimal_strings(
    sandbox: Sandbox, cli: Invoke
) -> None:
    quiet_run(cli)
    document = json.loads(cli("sync", "conflicts", "--json").stdout)
    assert set(document) == {"items"}
    item = document["items"][0]
    assert {
        "quote",
        "kind",
        "invoice_id",
        "detected_at",
        "reason",
        "differences",
        "ledger",
    } <= set(item)
    assert item["detected_at"].endswith("Z")
    datetime.fromisoformat(item["detected_at"].replace("Z", "+00:00"))
    assert item["ledger"] is None  # the seed's invoice was not written by the sync
    total = next(d for d in item["differences"] if d["field"] == "TotalAmt")
    assert set(total) == {"field", "qbo", "quote"}
    quote_total = sandbox.practice.quote(sandbox.facts.conflict_quote).total()
    assert total["quote"] == f"{quote_total:.2f}"
    assert Decimal(total["quote"]) - Decimal(total["qbo"]) == Decimal("200.00")


def test_the_conflicts_table_shows_what_differs_and_the_command_that_closes_it(
    sandbox: Sandbox, cli: Invoke
) -> None:
    quiet_run(cli)
    result = cli("sync", "conflicts")
    assert result.exit_code == 0
    number = sandbox.facts.conflict_quote
    assert "TotalAmt QBO" in result.stdout
    assert f"fourdqbo sync accept {number}" in result.stdout
    assert f"fourdqbo sync apply {number} --paid" in result.stdout


def test_accept_silences_the_conflict_until_the_quote_has_a_new_version(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = sandbox.facts.conflict_quote
    assert quiet_run(cli).exit_code == 1
    accepted = cli("sync", "accept", number, "--yes")
    assert accepted.exit_code == 0, accepted.stderr
    assert items(cli) == {}
    assert cli("status").exit_code == 0
    sandbox.clear_requests()
    assert quiet_run(cli).exit_code == 0
    assert invoice_writes(sandbox, number) == []
    sandbox.clock.advance(60)
    sandbox.practice.edit_quote(number)
    again = quiet_run(cli)
    assert again.exit_code == 1
    assert f"quote {number}: paid" in again.stderr
    assert items(cli)[number]["version"] == sandbox.practice.quote(number).version


def test_accept_asks_and_n_writes_nothing(sandbox: Sandbox, cli: Invoke) -> None:
    number = sandbox.facts.conflict_quote
    quiet_run(cli)
    result = cli("sync", "accept", number, input="n\n")
    assert result.exit_code == 1
    assert number in items(cli)
    assert quiet_run(cli).exit_code == 0  # still open, still known: quiet
    result = cli("sync", "accept", number, input="y\n")
    assert result.exit_code == 0
    assert items(cli) == {}


def test_an_accept_made_while_a_run_is_under_way_is_not_undone_by_that_run(
    sandbox: Sandbox, cli: Invoke, env: dict[str, str]
) -> None:
    from fourdqbo.state.items import Acceptance

    number = sandbox.facts.conflict_quote
    quiet_run(cli)
    version = items(cli)[number]["version"]
    settings = load_settings(env, dotenv_path=None)

    class AcceptMidRun:
        """`sync accept` as a bookkeeper types it once the run has planned the quote."""

        def __init__(self, state: Any) -> None:
            self.state = state

        def window(self, total: int) -> None: ...
        def phase(self, name: str) -> None: ...
        def wrote(self, count: int) -> None: ...

        def quotes_done(self, count: int) -> None:
            when = datetime.now().astimezone()
            self.state.record_acceptance(Acceptance(number, version, when))
            self.state.clear_attention([number])

    with connect(settings) as conn:
        engine = SyncEngine(settings, conn.fourd, conn.qbo, conn.state, AcceptMidRun(conn.state))
        report = engine.run(RunOptions())
    assert report.outcomes[number].action == "conflict"  # planned before the accept
    assert number not in items(cli)
    assert quiet_run(cli).exit_code == 0


@pytest.mark.parametrize("command", ["accept", "apply", "retry"])
def test_an_unknown_quote_is_a_one_line_usage_error_and_nothing_changes(
    sandbox: Sandbox, cli: Invoke, command: str
) -> None:
    quiet_run(cli)
    before = items(cli)
    sandbox.clear_requests()
    result = (
        cli("sync", command, "99999", "--yes")
        if command != "retry"
        else cli("sync", command, "99999")
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "99999" in result.stderr
    assert items(cli) == before
    assert [r for r in sandbox.requests_to("qbo") if r.is_write] == []
    status = json.loads(cli("sync", "status", "--json").stdout)
    assert status["retry_queue"] == []


def test_accept_of_a_quote_with_nothing_open_is_exit_2_and_leaves_the_others(
    sandbox: Sandbox, cli: Invoke
) -> None:
    quiet_run(cli)
    result = cli("sync", "accept", sandbox.facts.conflict_quote, plain_quote(sandbox), "--yes")
    assert result.exit_code == 2
    assert "nothing open for quote " + plain_quote(sandbox) in result.stderr
    assert sandbox.facts.conflict_quote in items(cli)  # nothing half-done


def test_retry_without_quotes_or_all_is_a_usage_error(cli: Invoke) -> None:
    result = cli("sync", "retry")
    assert result.exit_code == 2
    assert "--all" in result.stderr


def test_apply_paid_updates_when_the_quote_total_covers_the_payment(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number, invoice_id = sandbox.facts.conflict_quote, sandbox.facts.conflict_invoice_id
    quiet_run(cli)
    result = cli("sync", "apply", number, "--paid", "--yes")
    assert result.exit_code == 0, result.output
    assert f"quote {number}: updated" in result.output
    invoice = sandbox.company.invoice(invoice_id)
    assert invoice["TotalAmt"] == sandbox.practice.quote(number).total()
    assert items(cli) == {}
    assert quiet_run(cli).exit_code == 0


def test_apply_paid_refuses_when_the_quote_total_is_below_the_amount_paid(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number, invoice_id = sandbox.facts.conflict_quote, sandbox.facts.conflict_invoice_id
    quiet_run(cli)
    before = sandbox.company.invoice(invoice_id)
    paid = before["TotalAmt"] - before["Balance"]
    sandbox.clock.advance(60)
    sandbox.practice.edit_quote(
        number,
        procedures=[{"ProcedureName": "Consultation", "Amount": "1.00", "DiscountAmount": None}],
        supplies=[],
        anesth_amt=None,
        facility_amt=None,
    )
    sandbox.clear_requests()
    result = cli("sync", "apply", number, "--paid", "--yes")
    assert result.exit_code == 1
    assert f"{paid:.2f}" in result.output and "credit memo" in result.output
    assert result.output.strip().splitlines() == [result.output.strip()]  # one line
    assert sandbox.company.invoice(invoice_id)["SyncToken"] == before["SyncToken"]
    assert invoice_writes(sandbox, number) == []
    assert items(cli)[number]["kind"] == "paid"


def test_apply_without_paid_refuses_a_paid_invoice(sandbox: Sandbox, cli: Invoke) -> None:
    number, invoice_id = sandbox.facts.conflict_quote, sandbox.facts.conflict_invoice_id
    quiet_run(cli)
    before = sandbox.company.invoice(invoice_id)
    result = cli("sync", "apply", number, "--yes")
    assert result.exit_code == 1
    assert "--paid" in result.output
    assert sandbox.company.invoice(invoice_id)["SyncToken"] == before["SyncToken"]


def test_apply_asks_and_n_writes_nothing(sandbox: Sandbox, cli: Invoke) -> None:
    number = sandbox.facts.conflict_quote
    quiet_run(cli)
    sandbox.clear_requests()
    result = cli("sync", "apply", number, "--paid", input="n\n")
    assert result.exit_code == 1
    assert sandbox.requests_to("qbo") == []
    assert items(cli)[number]["kind"] == "paid"


def test_apply_json_asks_on_stderr_and_prints_only_the_report(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = sandbox.facts.conflict_quote
    quiet_run(cli)
    result = cli("sync", "apply", number, "--paid", "--json", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Apply?" in result.stderr
    assert json.loads(result.stdout)["quotes"][0]["action"] == "updated"


@pytest.mark.parametrize("paid", [False, True])
def test_apply_never_deletes_or_voids_a_reopened_quotes_paid_invoice(
    sandbox: Sandbox, cli: Invoke, paid: bool
) -> None:
    number = plain_quote(sandbox)
    quiet_run(cli)
    invoice = sandbox.company.invoices_by_doc(number)[0]
    sandbox.company.apply_payment(invoice["Id"], "10.00")
    sandbox.clock.advance(60)
    sandbox.practice.set_status(number, 1)
    assert quiet_run(cli).exit_code == 1
    assert items(cli)[number]["kind"] == "paid"
    args = ["sync", "apply", number, "--yes"] + (["--paid"] if paid else [])
    result = cli(*args)
    assert result.exit_code == 1
    assert "payment" in result.output
    after = sandbox.company.invoices_by_doc(number)
    assert len(after) == 1 and after[0]["TotalAmt"] == invoice["TotalAmt"]
    assert not after[0].get("PrivateNote", "").startswith("Voided")


def test_apply_while_a_run_holds_the_lock_is_exit_75_and_writes_nothing(
    sandbox: Sandbox, cli: Invoke, env: dict[str, str]
) -> None:
    number = sandbox.facts.conflict_quote
    quiet_run(cli)
    settings = load_settings(env, dotenv_path=None)
    store = open_state_store(settings, sandbox.realm_id)
    lock = store.acquire_lock("cron", ttl_seconds=30)
    assert lock is not None
    sandbox.clear_requests()
    try:
        result = cli("sync", "apply", number, "--paid", "--yes")
    finally:
        lock.release()
        store.close()
    assert result.exit_code == 75
    assert [r for r in sandbox.requests_to("qbo") if r.is_write] == []
    assert items(cli)[number]["kind"] == "paid"


# -- the other kinds, each closed by its command ---------------------------------------


def test_edited_in_qbo_is_reported_once_and_apply_writes_the_quote_back(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = plain_quote(sandbox)
    quiet_run(cli)
    invoice = sandbox.company.invoices_by_doc(number)[0]
    sandbox.company.edit_invoice(invoice["Id"], line_amounts={1: "1.00"})
    first = quiet_run(cli)
    assert first.exit_code == 1 and f"quote {number}: edited_in_qbo" in first.stderr
    item = items(cli)[number]
    assert item["kind"] == "edited_in_qbo"
    assert item["ledger"]["invoice_id"] == invoice["Id"]
    assert any(d["qbo"] == "1.00" for d in item["differences"])
    assert quiet_run(cli).exit_code == 0
    result = cli("sync", "apply", number, "--yes")
    assert result.exit_code == 0, result.output
    assert sandbox.company.invoice(invoice["Id"])["TotalAmt"] == invoice["TotalAmt"]
    assert number not in items(cli)


def test_deleted_in_qbo_is_reported_once_and_apply_recreates_it(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = plain_quote(sandbox)
    quiet_run(cli)
    invoice = sandbox.company.invoices_by_doc(number)[0]
    sandbox.company.delete_invoice(invoice["Id"])
    assert quiet_run(cli).exit_code == 1
    assert items(cli)[number]["kind"] == "deleted_in_qbo"
    assert quiet_run(cli).exit_code == 0
    assert sandbox.company.invoices_by_doc(number) == []
    assert cli("sync", "apply", number, "--yes").exit_code == 0
    assert len(sandbox.company.invoices_by_doc(number)) == 1
    assert number not in items(cli)


def test_deleted_in_qbo_accepted_stays_deleted(sandbox: Sandbox, cli: Invoke) -> None:
    number = plain_quote(sandbox)
    quiet_run(cli)
    sandbox.company.delete_invoice(sandbox.company.invoices_by_doc(number)[0]["Id"])
    quiet_run(cli)
    assert cli("sync", "accept", number, "--yes").exit_code == 0
    sandbox.clock.advance(60)
    sandbox.practice.touch(number)  # in the window again, same Version
    assert quiet_run(cli).exit_code == 0
    assert sandbox.company.invoices_by_doc(number) == []


def test_duplicate_invoices_are_reported_once_and_close_when_one_is_left(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = plain_quote(sandbox)
    quiet_run(cli)
    original = sandbox.company.invoices_by_doc(number)[0]
    copy = {k: original[k] for k in ("DocNumber", "CustomerRef", "Line", "TxnDate")}
    sandbox.company.settings.duplicate_doc_number_check = False  # as a company may have it
    extra = sandbox.company.insert("Invoice", copy)
    sandbox.clock.advance(60)
    sandbox.practice.touch(number)
    first = quiet_run(cli)
    assert first.exit_code == 1 and f"quote {number}: duplicate_invoices" in first.stderr
    assert "delete or void the extra" in cli("sync", "conflicts").stdout
    assert quiet_run(cli).exit_code == 0
    sandbox.company.delete_invoice(extra["Id"])
    assert quiet_run(cli).exit_code == 0
    assert number not in items(cli)


def test_customer_ambiguous_is_reported_once_and_nothing_is_written(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = plain_quote(sandbox)
    patient = sandbox.practice.patient_of(number)
    # No customer under the template's name, two under the patient's id (initials differ).
    existing = sandbox.company.customer_by_name(display_name(patient))
    if existing is not None:
        sandbox.company.rename_customer(existing["Id"], f"{patient.id}.AA")
    else:
        sandbox.company.insert("Customer", {"DisplayName": f"{patient.id}.AA", "Active": True})
    sandbox.company.insert("Customer", {"DisplayName": f"{patient.id}.BB", "Active": True})
    invoices_before = sandbox.company.invoices_by_doc(number)
    sandbox.clock.advance(60)
    first = quiet_run(cli)
    assert first.exit_code == 1
    assert f"quote {number}: customer_ambiguous" in first.stderr
    item = items(cli)[number]
    assert item["kind"] == "customer_ambiguous"
    assert "merge the patient's customers" in cli("sync", "conflicts").stdout
    assert sandbox.company.invoices_by_doc(number) == invoices_before
    assert quiet_run(cli).exit_code == 0


# -- a quote that fails every run: first failure, give-up, retry ----------------------


def test_a_failing_quote_exits_1_on_its_first_failure_and_on_giving_up_only(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = plain_quote(sandbox)
    break_mapping(sandbox, number)
    first = quiet_run(cli)  # the seed's paid conflict and this quote's first failure
    assert first.exit_code == 1 and f"quote {number}: failed" in first.stderr
    accept = cli("sync", "accept", str(sandbox.facts.conflict_quote), "--yes")
    assert accept.exit_code == 0
    second, third = quiet_run(cli), quiet_run(cli)  # SYNC_MAX_ATTEMPTS=3
    assert second.exit_code == 0 and second.stderr == ""
    assert third.exit_code == 1
    assert f"quote {number}: gave_up" in third.stderr
    assert "queued" not in third.stderr
    item = items(cli)[number]
    assert item["kind"] == "gave_up"
    assert item["reason"].startswith("gave up after 3 tries")
    assert "fourdqbo sync retry " + number in cli("sync", "conflicts").stdout
    status = json.loads(cli("sync", "status", "--json").stdout)
    assert number not in [e["quote"] for e in status["retry_queue"]]
    assert item["version"] == sandbox.practice.quote(number).version
    sandbox.clock.advance(60)
    sandbox.practice.touch(number)  # listed again, the same Version
    sandbox.clear_requests()
    assert quiet_run(cli).exit_code == 0
    assert quote_fetches(sandbox, number) == 0  # given up: no longer fetched
    assert cli("status").exit_code == 1
    # retry brings it back: the next run fetches it (and it fails again, a first failure).
    retried = cli("sync", "retry", number)
    assert retried.exit_code == 0, retried.stderr
    assert number not in items(cli)
    sandbox.clear_requests()
    assert quiet_run(cli).exit_code == 1
    assert quote_fetches(sandbox, number) == 1


def test_accepting_a_quote_that_gave_up_leaves_that_version_alone(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = given_up_quote(sandbox, cli)
    assert cli("sync", "accept", number, "--yes").exit_code == 0
    sandbox.clock.advance(60)
    sandbox.practice.touch(number)  # in the window again, the same Version, still broken
    sandbox.clear_requests()
    _, report = json_run(cli)
    # Left alone as a quote that gave up is: not fetched, not reported, not written.
    assert number not in [q["quote"] for q in report["quotes"]]
    assert not [r for r in sandbox.requests_to("fourd") if number in str(r.query)]
    assert report["attention"]["new"] == 0
    status = json.loads(cli("sync", "status", "--json").stdout)
    assert number not in [e["quote"] for e in status["retry_queue"]]
    assert number not in items(cli)


def test_a_quote_that_gave_up_is_tried_again_when_its_version_changes(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = given_up_quote(sandbox, cli)
    sandbox.clock.advance(60)
    sandbox.practice.edit_quote(
        number,
        procedures=[{"ProcedureName": "Consultation", "Amount": "90.00", "DiscountAmount": None}],
    )
    _, report = json_run(cli)
    assert outcome(report, number)["action"] == "created"
    assert number not in items(cli)


def test_a_quote_that_gave_up_and_is_fixed_is_written_after_retry_all(
    sandbox: Sandbox, cli: Invoke
) -> None:
    number = plain_quote(sandbox)
    record = sandbox.practice.quote(number)
    saved = record.procedures
    break_mapping(sandbox, number)
    for _ in range(3):
        quiet_run(cli)
    assert items(cli)[number]["kind"] == "gave_up"
    record.procedures = saved
    assert cli("sync", "retry", "--all").exit_code == 0
    _, report = json_run(cli)
    assert outcome(report, number)["action"] == "created"
    assert number not in items(cli)


def test_a_queued_quote_gone_from_4d_gives_the_reason(sandbox: Sandbox, cli: Invoke) -> None:
    number = plain_quote(sandbox)
    break_mapping(sandbox, number)
    quiet_run(cli)
    with sandbox.practice.lock:
        del sandbox.practice.quotes_by_number[number]
    _, report = json_run(cli)
    assert "no such quote in 4D any more" in outcome(report, number)["error"]
    quiet_run(cli)
    assert "no such quote in 4D any more" in items(cli)[number]["reason"]


# -- the reminder ------------------------------------------------------------------------


def test_the_reminder_reports_everything_open_once_after_the_interval(
    sandbox: Sandbox, cli: Invoke, env: dict[str, str]
) -> None:
    remind = {"SYNC_REMIND_HOURS": "1.5"}
    assert quiet_run(cli, **remind).exit_code == 1
    assert quiet_run(cli, **remind).exit_code == 0
    # An hour and three quarters pass (the reminder clock is moved back by that much).
    settings = load_settings(env, dotenv_path=None)
    store = open_state_store(settings, sandbox.realm_id)
    try:
        last = store.last_reminded_at()
        assert last is not None
        store.set_last_reminded_at(last - timedelta(hours=1.75))
    finally:
        store.close()
    reminded = quiet_run(cli, **remind)
    assert reminded.exit_code == 1
    assert "reminder: 1 still open" in reminded.stderr
    assert f"quote {sandbox.facts.conflict_quote}: paid" in reminded.stderr
    after = quiet_run(cli, **remind)
    assert after.exit_code == 0 and after.stderr == ""


class Clock:
    """The engine's clock and the sandbox's, advanced together."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def __call__(self) -> datetime:
        return self.sandbox.clock.now()

    def advance(self, seconds: float) -> None:
        self.sandbox.clock.advance(seconds)


def engine_run(env: dict[str, str], clock: Clock, **overrides: str) -> RunReport:
    settings = load_settings({**env, **overrides}, dotenv_path=None)
    with connect(settings) as conn:
        return SyncEngine(settings, conn.fourd, conn.qbo, conn.state, now=clock).run(RunOptions())


def test_the_engine_reminds_once_per_interval_on_its_own_clock(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    clock = Clock(sandbox)
    remind = {"SYNC_REMIND_HOURS": "0.25"}  # every quarter of an hour
    codes = []
    for _ in range(8):  # 40 minutes, a run every five
        codes.append(engine_run(env, clock, **remind).exit_code)
        clock.advance(300)
    # detection at 0; reminders at 15 and 30 minutes (a reminder restarts the clock)
    assert codes == [1, 0, 0, 1, 0, 0, 1, 0]


# -- the health check follows the exit code ----------------------------------------------


@pytest.fixture
def monitor() -> Iterator[tuple[Monitor, str]]:
    recorder = Monitor()
    with LoopbackServer({"/ping/check-uuid": recorder}) as server:
        yield recorder, f"{server.url}/ping/check-uuid"


def test_a_known_conflict_pings_success(cli: Invoke, monitor: tuple[Monitor, str]) -> None:
    recorder, url = monitor
    assert quiet_run(cli, HEALTHCHECK_URL=url).exit_code == 1
    assert quiet_run(cli, HEALTHCHECK_URL=url).exit_code == 0
    assert recorder.pings == ["/start", "/fail", "/start", ""]


def test_apply_pings_nothing(sandbox: Sandbox, cli: Invoke, monitor: tuple[Monitor, str]) -> None:
    recorder, url = monitor
    quiet_run(cli)
    cli("sync", "apply", sandbox.facts.conflict_quote, "--yes", HEALTHCHECK_URL=url)
    assert recorder.pings == []
