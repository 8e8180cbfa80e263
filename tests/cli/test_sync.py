"""`fourdqbo sync status | unlock | reset`: the operator's view of the sync's state.

Against the sandbox, on both state backends (real Redis under a per-test prefix, and
files under tmp_path). `sync run` itself is tested in tests/sync/test_engine.py.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.sandbox import Sandbox
from fourdqbo.state import ConflictEntry, StateStore, open_state_store

pytestmark = pytest.mark.integration

Invoke = Callable[..., Result]


def state_env(
    backend: str, sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> dict[str, str]:
    values = sandbox.env(tmp_path / "data")
    values.update(
        STATE_BACKEND=backend,
        LOGS_DIR=str(tmp_path / "logs"),
        HTTP_TIMEOUT_SECONDS="2",
        # Pace QBO as if its minute were a second: a first run writes 3 batches, and at
        # 40 batches a minute that alone would take 3 s.
        QBO_RATE_WINDOW_SECONDS="1",
    )
    if backend == "redis":
        values.update(
            REDIS_URL=request.getfixturevalue("redis_url"),
            STATE_PREFIX=request.getfixturevalue("state_prefix"),
        )
    return values


@pytest.fixture(params=["redis", "file"])
def env(request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    return state_env(request.param, sandbox, tmp_path, request)


@pytest.fixture
def redis_env(request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    return state_env("redis", sandbox, tmp_path, request)


def invoker(env: dict[str, str]) -> Invoke:
    def invoke(*args: str, input: str | None = None, **overrides: str) -> Result:
        return CliRunner().invoke(app, list(args), env={**env, **overrides}, input=input)

    return invoke


def opened_store(env: dict[str, str], sandbox: Sandbox) -> Iterator[StateStore]:
    opened = open_state_store(load_settings(env, dotenv_path=None), sandbox.realm_id)
    yield opened
    opened.close()


@pytest.fixture
def cli(env: dict[str, str]) -> Invoke:
    return invoker(env)


@pytest.fixture
def store(env: dict[str, str], sandbox: Sandbox) -> Iterator[StateStore]:
    """The same state store the CLI uses, opened by the test (the 'other process')."""
    yield from opened_store(env, sandbox)


@pytest.fixture
def redis_cli(redis_env: dict[str, str]) -> Invoke:
    return invoker(redis_env)


@pytest.fixture
def redis_store(redis_env: dict[str, str], sandbox: Sandbox) -> Iterator[StateStore]:
    yield from opened_store(redis_env, sandbox)


@pytest.fixture
def file_cli(sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest) -> Invoke:
    return invoker(state_env("file", sandbox, tmp_path, request))


@pytest.fixture
def file_store(sandbox: Sandbox, tmp_path: Path) -> Iterator[StateStore]:
    env = {**sandbox.env(tmp_path / "data"), "STATE_BACKEND": "file"}
    yield from opened_store(env, sandbox)


def status_document(cli: Invoke) -> dict[str, Any]:
    result = cli("sync", "status", "--json")
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


# --- sync status ---------------------------------------------------------------------------


def test_status_json_of_a_fresh_installation(
    cli: Invoke, env: dict[str, str], sandbox: Sandbox
) -> None:
    result = cli("sync", "status", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document == {
        "realm_id": sandbox.realm_id,
        "backend": env["STATE_BACKEND"],
        "watermark": None,
        "lock": None,
        "retry_queue": [],
        "conflicts": [],
        "cdc_cursor": None,
        "runs": [],
    }


def test_status_human_of_a_fresh_installation(cli: Invoke, env: dict[str, str]) -> None:
    result = cli("sync", "status")
    assert result.exit_code == 0, result.output
    assert "sync state" in result.stdout
    assert f"{env['STATE_BACKEND']} (realm " in result.stdout
    assert "(none yet)" in result.stdout
    assert "free" in result.stdout
    assert "last runs" not in result.stdout  # no table for what is not there


def test_status_after_a_run_shows_watermark_conflict_and_history(
    cli: Invoke, sandbox: Sandbox
) -> None:
    run = cli("sync", "run", "--json")
    assert run.exit_code == 1, run.output  # the seed's partly paid invoice is a conflict
    report = json.loads(run.stdout)

    document = status_document(cli)
    assert document["watermark"] is not None
    assert document["watermark"].endswith("Z")
    assert document["lock"] is None  # released at the end of the run
    assert [c["quote"] for c in document["conflicts"]] == [sandbox.facts.conflict_quote]
    assert document["conflicts"][0]["invoice_id"] == sandbox.facts.conflict_invoice_id
    assert [r["run_id"] for r in document["runs"]] == [report["run_id"]]
    assert document["runs"][0]["counts"] == report["counts"]

    human = cli("sync", "status")
    assert human.exit_code == 0
    assert document["watermark"] in human.stdout
    assert "needs a person" in human.stdout
    assert str(sandbox.facts.conflict_quote) in human.stdout
    assert "last runs" in human.stdout
    assert report["run_id"] in human.stdout
    assert "exit 1" in human.stdout


def test_status_lists_the_retry_queue(cli: Invoke, store: StateStore) -> None:
    when = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    store.record_failure("10042", "amount: negative (-5)", when)
    store.record_failure("10042", "amount: negative (-5)", when)
    store.record_conflict(ConflictEntry("10043", "77", "invoice is partly paid", when))
    document = status_document(cli)
    assert document["retry_queue"] == [
        {
            "quote": "10042",
            "attempts": 2,
            "error": "amount: negative (-5)",
            "first_failed_at": "2025-03-01T08:00:00Z",
            "last_failed_at": "2025-03-01T08:00:00Z",
        }
    ]
    assert document["conflicts"][0]["quote"] == "10043"
    human = cli("sync", "status")
    assert "retry queue" in human.stdout
    assert "amount: negative (-5)" in human.stdout
    assert "invoice is partly paid" in human.stdout


def test_status_runs_option_limits_the_history(cli: Invoke, store: StateStore) -> None:
    for n in range(3):
        store.append_run({"run_id": f"run-{n}", "started_at": "x", "counts": {}, "exit_code": 0})
    document = json.loads(cli("sync", "status", "--json", "--runs", "2").stdout)
    assert [r["run_id"] for r in document["runs"]] == ["run-2", "run-1"]
    assert json.loads(cli("sync", "status", "--json", "--runs", "0").stdout)["runs"] == []


def test_status_shows_who_holds_the_lock(cli: Invoke, store: StateStore) -> None:
    lock = store.acquire_lock("fake-run-1", ttl_seconds=30)
    assert lock is not None
    try:
        held = status_document(cli)["lock"]
        assert held["run_id"] == "fake-run-1"
        assert held["pid"] == os.getpid()
        assert held["host"] == socket.gethostname()
        human = cli("sync", "status")
        assert f"held by {socket.gethostname()} pid {os.getpid()}" in human.stdout
    finally:
        lock.release()


# --- sync unlock ---------------------------------------------------------------------------


def test_unlock_when_free_does_nothing(cli: Invoke) -> None:
    result = cli("sync", "unlock")
    assert result.exit_code == 0
    assert result.stderr == "the lock is free; nothing to do\n"


@pytest.mark.parametrize("answer", ["n\n", "\n", ""], ids=["no", "default", "eof"])
def test_unlock_asks_and_keeps_the_lock_unless_confirmed(
    cli: Invoke, store: StateStore, answer: str
) -> None:
    lock = store.acquire_lock("fake-run-2", ttl_seconds=30)
    assert lock is not None
    try:
        result = cli("sync", "unlock", input=answer)
        assert result.exit_code == 1
        assert "Release it?" in result.output
        assert f"lock held by {socket.gethostname()} pid {os.getpid()}" in result.stderr
        assert "Traceback" not in result.output
        holder = store.lock_holder()
        assert holder is not None and holder.run_id == "fake-run-2"
    finally:
        lock.release()


def test_unlock_releases_a_redis_lock_when_confirmed(
    redis_cli: Invoke, redis_store: StateStore
) -> None:
    cli, store = redis_cli, redis_store
    lock = store.acquire_lock("fake-run-3", ttl_seconds=30)
    assert lock is not None
    result = cli("sync", "unlock", input="y\n")
    assert result.exit_code == 0, result.output
    assert result.stderr.endswith("lock released\n")
    assert store.lock_holder() is None
    assert lock.release() is False  # the broken owner cannot release someone else's lock
    assert [e.event for e in store.lock_history()][-2:] == ["acquired", "broken"]
    again = store.acquire_lock("next-run", ttl_seconds=30)  # the next run can take it
    assert again is not None
    again.release()


def test_unlock_yes_releases_a_redis_lock_without_asking(
    redis_cli: Invoke, redis_store: StateStore
) -> None:
    lock = redis_store.acquire_lock("fake-run-4", ttl_seconds=30)
    assert lock is not None
    result = redis_cli("sync", "unlock", "--yes")
    assert result.exit_code == 0, result.output
    assert "Release it?" not in result.output
    assert redis_store.lock_holder() is None


def test_unlock_will_not_claim_to_release_a_live_file_lock(
    file_cli: Invoke, file_store: StateStore
) -> None:
    # The file backend's OS lock belongs to a live process (this one): it cannot be taken
    # away, and unlock must say so rather than claim it released it.
    lock = file_store.acquire_lock("fake-run-5", ttl_seconds=30)
    assert lock is not None
    try:
        result = file_cli("sync", "unlock", "--yes")
        assert result.exit_code == 75
        assert result.stderr.splitlines()[-1] == (
            f"fourdqbo: the lock is still held: its process (pid {os.getpid()} on "
            f"{socket.gethostname()}) is alive; stop that process to free it"
        )
        assert "lock released" not in result.stderr
        assert file_store.lock_holder() is not None
    finally:
        lock.release()
    assert file_store.lock_holder() is None


def test_unlock_removes_an_unreadable_redis_lock_record(
    redis_cli: Invoke, redis_env: dict[str, str], sandbox: Sandbox
) -> None:
    import redis

    cli, env = redis_cli, redis_env

    client = redis.Redis.from_url(env["REDIS_URL"])
    key = f"{env['STATE_PREFIX']}:{sandbox.realm_id}:lock"
    client.set(key, "not json", px=30_000)
    try:
        status = cli("sync", "status", "--json")
        assert status.exit_code == 3
        assert "sync unlock" in status.stderr  # the message says how to fix it
        result = cli("sync", "unlock", "--yes")
        assert result.exit_code == 0, result.output
        assert client.get(key) is None
        assert status_document(cli)["lock"] is None
    finally:
        client.delete(key)
        client.close()


# --- sync reset ----------------------------------------------------------------------------


def test_reset_asks_and_keeps_the_watermark_unless_confirmed(
    cli: Invoke, store: StateStore
) -> None:
    store.reset_watermark(datetime(2025, 3, 1, tzinfo=UTC))
    result = cli("sync", "reset", "--to", "2025-01-01T00:00:00Z", input="n\n")
    assert result.exit_code == 1
    assert "watermark 2025-03-01T00:00:00Z -> 2025-01-01T00:00:00Z" in result.stderr
    assert "Move it?" in result.output
    assert store.watermark() == datetime(2025, 3, 1, tzinfo=UTC)


def test_reset_moves_the_watermark_back_when_confirmed(cli: Invoke, store: StateStore) -> None:
    store.reset_watermark(datetime(2025, 3, 1, tzinfo=UTC))
    result = cli("sync", "reset", "--to", "2025-01-01T05:00:00+05:00", input="y\n")
    assert result.exit_code == 0, result.output
    assert result.stderr.endswith("watermark moved\n")
    assert store.watermark() == datetime(2025, 1, 1, tzinfo=UTC)
    assert status_document(cli)["watermark"] == "2025-01-01T00:00:00Z"


def test_reset_yes_sets_a_first_watermark_without_asking(cli: Invoke, store: StateStore) -> None:
    result = cli("sync", "reset", "--to", "2025-02-03", "--yes")
    assert result.exit_code == 0, result.output
    assert "watermark (none) -> 2025-02-03T00:00:00Z" in result.stderr
    assert "Move it?" not in result.output
    assert store.watermark() == datetime(2025, 2, 3, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["2025-02-30", "yesterday", "", "2025-03-01T25:00", "2025/03/01"])
def test_reset_to_a_bad_date_is_exit_2_and_changes_nothing(
    cli: Invoke, store: StateStore, sandbox: Sandbox, bad: str
) -> None:
    store.reset_watermark(datetime(2025, 3, 1, tzinfo=UTC))
    result = cli("sync", "reset", "--to", bad, "--yes")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("fourdqbo: --to: ")
    assert result.stderr.count("\n") == 1
    assert store.watermark() == datetime(2025, 3, 1, tzinfo=UTC)


def test_reset_needs_to(cli: Invoke) -> None:
    result = cli("sync", "reset", "--yes")
    assert result.exit_code == 2
    assert "--to" in result.stderr


def test_reset_then_run_resyncs_the_window_without_duplicates(
    cli: Invoke, sandbox: Sandbox
) -> None:
    first = cli("sync", "run", "--json")
    assert first.exit_code == 1
    invoices = len(sandbox.company.invoices())
    assert cli("sync", "reset", "--to", "2000-01-01", "--yes").exit_code == 0
    second = json.loads(cli("sync", "run", "--json").stdout)
    assert second["window"]["from"].startswith("1999-12-31T23:55")  # minus the overlap
    assert second["counts"]["created"] == 0
    assert second["counts"]["unchanged"] >= 1
    assert len(sandbox.company.invoices()) == invoices


# --- failures before any state is touched ----------------------------------------------------


def test_state_commands_with_redis_down_are_exit_3(
    cli: Invoke, env: dict[str, str], unreachable_redis_url: str
) -> None:
    for args in (
        ("sync", "status"),
        ("sync", "unlock", "--yes"),
        ("sync", "reset", "--to", "2025-01-01", "--yes"),
    ):
        result = cli(*args, STATE_BACKEND="redis", REDIS_URL=unreachable_redis_url)
        assert result.exit_code == 3, (args, result.output)
        assert result.stderr.startswith("fourdqbo: state store unreachable at redis://127.0.0.1:")
        assert result.stderr.count("\n") == 1


def test_state_commands_without_a_token_are_exit_2(cli: Invoke, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "token.json"
    for args in (
        ("sync", "status", "--json"),
        ("sync", "unlock"),
        ("sync", "reset", "--to", "2025-01-01"),
    ):
        result = cli(*args, QBO_TOKEN_FILE=str(missing))
        assert result.exit_code == 2, (args, result.output)
        assert result.stdout == ""
        assert result.stderr == f"fourdqbo: no QBO token at {missing}: run `fourdqbo auth login`\n"
