"""The sync engine against the sandbox over loopback HTTP, with real Redis.

Each test gets a fresh sandbox (seeded practice + QBO company + OAuth) and its own Redis
key prefix; runs go through the real CLI (`fourdqbo sync run`) in-process, or in
subprocesses where processes matter (lock contention, kills, log files).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.audit import audit

pytestmark = pytest.mark.integration

SyncRun = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def env(sandbox_redis_env: dict[str, str]) -> dict[str, str]:
    return {
        **sandbox_redis_env,
        "HTTP_TIMEOUT_SECONDS": "1",
        "SYNC_LOCK_TTL_SECONDS": "3",
    }


@pytest.fixture
def sync(env: dict[str, str]) -> SyncRun:
    def run(*args: str, **overrides: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(app, ["sync", "run", "--json", *args], env={**env, **overrides})
        document = json.loads(result.stdout) if result.stdout.strip() else {}
        return result.exit_code, document

    return run


def qbo_writes(sandbox: Sandbox) -> list[Any]:
    return [r for r in sandbox.requests_to("qbo") if r.is_write and r.status]


def test_first_run_creates_one_invoice_per_completed_quote_and_converges(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    code, report = sync()
    assert code == 1  # the seed's partly paid invoice is a conflict
    counts = report["counts"]
    completed = set(sandbox.practice.completed_numbers())
    created = {q["quote"] for q in report["quotes"] if q["action"] == "created"}
    assert created <= completed
    assert counts["conflicts"] == 1
    assert counts["failed"] == 0
    assert report["watermark_advanced"] is True
    result = audit(sandbox, load_settings(env, dotenv_path=None))
    assert result.converged, result.summary()
    assert result.paid == [sandbox.facts.conflict_quote]
    # The seed's inactive customer was reactivated rather than duplicated.
    inactive = sandbox.company.customer(sandbox.facts.inactive_customer_id)
    assert inactive["Active"] is True


def test_second_run_writes_nothing(sandbox: Sandbox, sync: SyncRun) -> None:
    sync()
    sandbox.clear_requests()
    code, report = sync()
    # Only the open conflict remains, and a person knows of it already: a quiet run.
    assert code == 0
    assert report["attention"] == {"new": 0, "open": 1}
    assert report["counts"]["conflicts"] == 1
    assert report["counts"]["created"] == report["counts"]["updated"] == 0
    assert report["counts"]["deleted"] == 0
    assert qbo_writes(sandbox) == []


def test_no_op_run_makes_one_4d_request_and_one_cdc_read(sandbox: Sandbox, sync: SyncRun) -> None:
    paid = sandbox.facts.conflict_invoice_id
    sync()
    # The bookkeeper settles the conflict (refunds the payment); the next run updates the
    # invoice and clears the conflict.
    invoice = sandbox.company.invoice(paid)
    sandbox.company.apply_payment(paid, invoice["Balance"] - invoice["TotalAmt"])
    code, report = sync()
    assert code == 0, report["quotes"]
    # Now nothing changes in 4D. The seed stamps some quotes a minute before the first run,
    # inside the default 300 s overlap, so the overlap is set to 0 here: the window then
    # starts at the previous run's start and holds nothing.
    sandbox.clear_requests()
    code, report = sync(SYNC_OVERLAP_SECONDS="0")
    assert code == 0, (report["quotes"], report["attention"], report["notices"])
    assert report["counts"]["seen"] == 0, report["quotes"]
    # One 4D list call and one QBO change-data-capture read: our own writes of the run
    # before are recognised by their SyncToken and cost nothing more.
    assert len(sandbox.requests_to("fourd")) == 1
    assert [r.path.rsplit("/", 1)[-1] for r in sandbox.requests_to("qbo")] == ["cdc"]
    assert report["requests"]["fourd"] == 1 and report["requests"]["qbo"] == 1


def test_edited_quote_updates_its_invoice(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    sync()
    number = next(
        n for n in sandbox.practice.completed_numbers() if n != sandbox.facts.conflict_quote
    )
    before = sandbox.company.invoices_by_doc(number)[0]
    sandbox.clock.advance(60)
    sandbox.practice.edit_quote(number)
    code, report = sync()
    assert code == 0  # the seed's conflict is still open, but nothing is new
    outcome = next(q for q in report["quotes"] if q["quote"] == number)
    assert outcome["action"] == "updated"
    after = sandbox.company.invoices_by_doc(number)
    assert len(after) == 1 and after[0]["Id"] == before["Id"]
    assert after[0]["TotalAmt"] == before["TotalAmt"] + 10
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged


@pytest.mark.parametrize("reopened_action", ["delete", "void"])
def test_reopened_quote_removes_its_invoice(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun, reopened_action: str
) -> None:
    sync(SYNC_REOPENED_ACTION=reopened_action)
    number = next(
        n for n in sandbox.practice.completed_numbers() if n != sandbox.facts.conflict_quote
    )
    sandbox.clock.advance(60)
    sandbox.practice.set_status(number, 1)
    code, report = sync(SYNC_REOPENED_ACTION=reopened_action)
    assert code == 0 and report["counts"]["failed"] == 0
    outcome = next(q for q in report["quotes"] if q["quote"] == number)
    remaining = sandbox.company.invoices_by_doc(number)
    if reopened_action == "delete":
        assert outcome["action"] == "deleted"
        assert remaining == []
    else:
        assert outcome["action"] == "voided"
        assert len(remaining) == 1 and remaining[0]["TotalAmt"] == 0
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged


def test_the_syncs_own_delete_lost_with_its_run_is_not_taken_for_a_persons_later(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    # Found by bench/chaos's people-in-QBO round: a run deleted the invoice of a
    # re-opened quote and was killed before recording it; when the quote was completed
    # again with the same Version, the stale ledger called it deleted in QBO by a person.
    sync()
    number = next(
        n for n in sandbox.practice.completed_numbers() if n != sandbox.facts.conflict_quote
    )
    invoice = sandbox.company.invoices_by_doc(number)[0]
    sandbox.clock.advance(60)
    sandbox.practice.set_status(number, 1)
    # What the killed run managed: its delete reached QBO, its record did not.
    sandbox.company.delete("Invoice", {"Id": invoice["Id"], "SyncToken": invoice["SyncToken"]})
    code, report = sync()
    assert code == 0 and report["counts"]["failed"] == 0
    sandbox.clock.advance(60)
    sandbox.practice.set_status(number, 4)  # completed again, same Version
    code, report = sync()
    outcome = next(q for q in report["quotes"] if q["quote"] == number)
    assert (code, outcome["action"]) == (0, "created"), outcome
    assert len(sandbox.company.invoices_by_doc(number)) == 1
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged


def test_an_update_lost_with_its_run_still_lets_a_later_hand_edit_be_seen(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    # The same loss for an update: the next run finds QBO equal to the new Version and
    # adopts it, so a person's later edit is reported rather than written over.
    from fourdqbo.state.redis_store import RedisStateStore

    sync()
    number = next(
        n for n in sandbox.practice.completed_numbers() if n != sandbox.facts.conflict_quote
    )
    store = RedisStateStore(env["REDIS_URL"], env["STATE_PREFIX"], sandbox.realm_id)
    before = store.ledger([number])[number]
    sandbox.clock.advance(60)
    sandbox.practice.edit_quote(number)
    _, report = sync("--quote", number)
    assert next(q for q in report["quotes"] if q["quote"] == number)["action"] == "updated"
    store.record_ledger([before])  # the killed run's record never happened
    _, report = sync()
    assert next(q for q in report["quotes"] if q["quote"] == number)["action"] == "unchanged"
    store.close()
    invoice = sandbox.company.invoices_by_doc(number)[0]
    sandbox.clock.advance(60)
    sandbox.company.edit_invoice(invoice["Id"], descriptions={1: "changed by the bookkeeper"})
    _, report = sync()
    outcome = next(q for q in report["quotes"] if q["quote"] == number)
    assert outcome["action"] == "conflict" and outcome["kind"] == "edited_in_qbo", outcome


def test_paid_invoice_of_edited_quote_is_a_conflict_with_exit_1(
    sandbox: Sandbox, sync: SyncRun
) -> None:
    sync()
    number = next(
        n for n in sandbox.practice.completed_numbers() if n != sandbox.facts.conflict_quote
    )
    invoice = sandbox.company.invoices_by_doc(number)[0]
    sandbox.company.apply_payment(invoice["Id"], "1.00")
    sandbox.clock.advance(60)
    sandbox.practice.edit_quote(number)
    sandbox.clear_requests()
    code, report = sync()
    assert code == 1
    outcome = next(q for q in report["quotes"] if q["quote"] == number)
    assert outcome["action"] == "conflict"
    assert all(
        r.body is None
        or "Invoice" not in json.dumps(r.body, default=str)
        or number not in json.dumps(r.body, default=str)
        for r in qbo_writes(sandbox)
    )
    status = CliRunner().invoke(app, ["sync", "status", "--json"], env=_env_of(sync))
    conflicts = {c["quote"] for c in json.loads(status.stdout)["conflicts"]}
    assert number in conflicts


def _env_of(sync: SyncRun) -> dict[str, str]:
    return sync.__closure__[0].cell_contents  # type: ignore[union-attr,index]


def test_dry_run_writes_nothing_and_keeps_the_watermark(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    code, report = sync("--dry-run")
    assert code == 1  # a dry run reports the conflict it would meet
    assert report["dry_run"] is True
    assert {q["action"] for q in report["quotes"]} >= {"would_create"}
    assert qbo_writes(sandbox) == []
    status = CliRunner().invoke(app, ["sync", "status", "--json"], env=env)
    assert json.loads(status.stdout)["watermark"] is None


def test_no_watermark_and_no_start_is_exit_2_before_any_call(
    sandbox: Sandbox, sync: SyncRun
) -> None:
    sandbox.clear_requests()
    result = CliRunner().invoke(
        app, ["sync", "run"], env={**_env_of(sync), "SYNC_INITIAL_FROM": ""}
    )
    assert result.exit_code == 2
    assert "--since" in result.stderr
    assert [r for r in sandbox.requests if r.service != "oauth"] == []


def test_failed_quote_is_queued_and_retried_first(sandbox: Sandbox, sync: SyncRun) -> None:
    number = next(
        n for n in sandbox.practice.completed_numbers() if n != sandbox.facts.conflict_quote
    )
    record = sandbox.practice.quote(number)
    saved = record.procedures
    record.procedures = [{"ProcedureName": "x", "Amount": "-5", "DiscountAmount": None}]
    code, report = sync()
    assert code == 1
    outcome = next(q for q in report["quotes"] if q["quote"] == number)
    assert outcome["action"] == "failed" and "negative" in outcome["error"]
    status = json.loads(
        CliRunner().invoke(app, ["sync", "status", "--json"], env=_env_of(sync)).stdout
    )
    assert [e["quote"] for e in status["retry_queue"]] == [number]
    record.procedures = saved  # fixed in 4D without touching its modified time
    sandbox.clock.advance(3600)
    code, report = sync()
    outcome = next(q for q in report["quotes"] if q["quote"] == number)
    assert outcome["action"] == "created"
    status = json.loads(
        CliRunner().invoke(app, ["sync", "status", "--json"], env=_env_of(sync)).stdout
    )
    assert status["retry_queue"] == []


def test_injected_faults_converge_without_duplicates(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    for service in ("fourd", "qbo"):
        sandbox.knobs.of(service).fault_rate = 0.25
        sandbox.knobs.of(service).timeout_delay = 1.5
    # The nastiest case first: the first write commits and its answer is dropped.
    sandbox.inject("qbo", "commit_then_drop", writes_only=True)
    for _ in range(8):
        code, report = sync()
        if code in (0, 1) and not report["counts"]["failed"]:
            break
    for service in ("fourd", "qbo"):
        sandbox.knobs.of(service).fault_rate = 0.0
    sync()
    result = audit(sandbox, load_settings(env, dotenv_path=None))
    assert result.converged, result.summary()
    assert any(r.fault == "commit_then_drop" for r in sandbox.requests_to("qbo"))


def test_redis_down_is_exit_3_with_no_writes(sandbox: Sandbox, sync: SyncRun) -> None:
    sandbox.clear_requests()
    code, _ = sync(REDIS_URL="redis://127.0.0.1:1/0")
    assert code == 3
    assert [r for r in sandbox.requests if r.service != "oauth"] == []


def test_4d_refusing_credentials_is_exit_3_and_keeps_the_watermark(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    sandbox.knobs.fourd.unauthorized = True
    result = CliRunner().invoke(app, ["sync", "run"], env=env)
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    status = json.loads(CliRunner().invoke(app, ["sync", "status", "--json"], env=env).stdout)
    assert status["watermark"] is None
    assert status["lock"] is None
    assert status["runs"][0]["aborted"]


def _spawn(env: dict[str, str], *args: str, root: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fourdqbo", *root, "sync", "run", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_runs_one_works_the_other_exits_75(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    # The first run is kept in its 4D fetches (a second each) until the second has
    # exited: however slowly the second starts, it meets the lock held.
    sandbox.knobs.fourd.latency_ms = 1000
    first = _spawn(env, "--quiet")
    deadline = time.monotonic() + 10
    while not any(r.service == "fourd" for r in sandbox.requests):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    second = _spawn(env, "--quiet")
    assert second.wait(timeout=20) == 75
    assert time.monotonic() - started < 5
    sandbox.knobs.fourd.latency_ms = 0
    assert first.wait(timeout=60) == 1
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged


def test_killed_run_leaves_a_lock_that_expires_and_the_next_run_converges(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    sandbox.knobs.qbo.latency_ms = 100
    victim = _spawn(env, "--quiet")
    deadline = time.monotonic() + 20
    while not any(r.service == "qbo" and r.is_write for r in sandbox.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    sandbox.knobs.qbo.latency_ms = 0
    blocked = _spawn(env, "--quiet")
    assert blocked.wait(timeout=20) == 75
    time.sleep(3.2)  # SYNC_LOCK_TTL_SECONDS=3 in these tests
    finisher = _spawn(env, "--quiet")
    assert finisher.wait(timeout=60) == 1, finisher.stderr.read() if finisher.stderr else ""
    result = audit(sandbox, load_settings(env, dotenv_path=None))
    assert result.converged, result.summary()


def test_sigterm_finishes_the_batch_releases_the_lock_and_keeps_the_watermark(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    sandbox.knobs.qbo.latency_ms = 200
    run = _spawn(env)
    deadline = time.monotonic() + 20
    while not any(r.service == "qbo" and r.is_write for r in sandbox.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=30) not in (0, 1)
    status = json.loads(CliRunner().invoke(app, ["sync", "status", "--json"], env=env).stdout)
    assert status["lock"] is None
    assert status["watermark"] is None
    sandbox.knobs.qbo.latency_ms = 0
    again = _spawn(env, "--quiet")
    assert again.wait(timeout=60) == 1
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged


def test_no_patient_name_in_logs_or_run_history(
    sandbox: Sandbox, env: dict[str, str], redis_url: str, state_prefix: str, tmp_path: Path
) -> None:
    run = _spawn({**env, "SYNC_LOCK_TTL_SECONDS": "30"}, root=("--verbose",))
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 1
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    values: list[str] = []
    for key in client.scan_iter(match=f"{state_prefix}:*"):
        kind = client.type(key)
        if kind == "string":
            values.append(client.get(key) or "")
        elif kind == "hash":
            values.extend(client.hgetall(key).values())
        elif kind == "list":
            values.extend(client.lrange(key, 0, -1))
    client.close()
    stored = "\n".join(values)
    assert "run_id" in stored  # the history is there to be searched
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log*"))
    assert "quote 1000" in logs  # the run did log, by quote number
    for patient in sandbox.practice.patients.values():
        for text in (patient.name, patient.last_name, patient.date_of_birth.isoformat()):
            if len(text) > 3:
                assert text not in logs
                assert text not in stderr
                assert text not in stored


def test_a_name_held_by_a_vendor_fails_that_quote_at_once_with_what_to_do(
    sandbox: Sandbox, sync: SyncRun
) -> None:
    from fourdqbo.sandbox.seed import display_name

    taken = next(
        n
        for n in sandbox.practice.completed_numbers()
        if n != sandbox.facts.conflict_quote
        and sandbox.company.customer_by_name(display_name(sandbox.practice.patient_of(n))) is None
    )
    name = display_name(sandbox.practice.patient_of(taken))
    sandbox.company.add_vendor(name)
    code, report = sync()
    assert code == 1
    outcome = next(q for q in report["quotes"] if q["quote"] == taken)
    assert outcome["action"] == "failed"
    assert "vendor or employee" in outcome["error"]
    creates = [
        r
        for r in sandbox.requests_to("qbo")
        if r.is_write and name in json.dumps(r.body, default=str)
    ]
    assert len(creates) == 1  # refused once, looked up, not hammered
    assert report["counts"]["created"] >= 1  # the other quotes went through
