"""The METRICS_FILE content: `build_registry` as a pure function, read back with
prometheus_client's own parser, and the atomic, never world-writable file write."""

from __future__ import annotations

import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fourdqbo.metrics import (
    StateSnapshot,
    TokenInfo,
    attention_counts,
    build_registry,
    last_success,
    qbo_request_kinds,
    write_textfile,
)
from fourdqbo.state import ConflictEntry
from fourdqbo.state.items import AttentionKind
from fourdqbo.sync.report import QuoteOutcome, RunReport

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
REALM = "9130350000000001"
NAMES = (  # every metric of DESIGN.md "Operations"
    "fourdqbo_last_run_timestamp_seconds",
    "fourdqbo_last_run_exit_code",
    "fourdqbo_last_success_timestamp_seconds",
    "fourdqbo_run_duration_seconds",
    "fourdqbo_run_quotes",
    "fourdqbo_attention_items",
    "fourdqbo_retry_queue_size",
    "fourdqbo_qbo_requests",
    "fourdqbo_refresh_token_expiry_timestamp_seconds",
)


def samples(registry: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition text, keyed by (name, labels)."""
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, frozenset({"realm": REALM, **labels}.items()))]


def report(*actions: str, requests: int = 7, seconds: float = 42.5) -> RunReport:
    run = RunReport(run_id="r1", started_at=T0, finished_at=T0 + timedelta(seconds=seconds))
    for number, action in enumerate(actions, start=1001):
        run.record(QuoteOutcome(str(number), 1, "Completed", action))
    run.requests = {"fourd": 3, "qbo": requests}
    return run


def history(*entries: tuple[datetime, int | None]) -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            "run_id": f"h{index}",
            "started_at": (at - timedelta(seconds=10)).isoformat(),
            "finished_at": at.isoformat(),
            "exit_code": code,
            "aborted": None if code is not None else "qbo unreachable",
            "counts": {"seen": 1, "created": 1},
            "requests": {"fourd": 1, "qbo": 2},
        }
        for index, (at, code) in enumerate(entries)
    )


STATE = StateSnapshot(
    realm_id=REALM,
    runs=history((T0 - timedelta(hours=1), 0)),
    retry_queue_size=2,
    attention={"paid": 3, "gave_up": 1},
)
TOKEN = TokenInfo(realm_id=REALM, refresh_expires_at=T0 + timedelta(days=90))


def test_a_successful_run_has_every_metric_with_its_figures() -> None:
    run = report("created", "created", "updated", "unchanged", requests=9)
    found = samples(build_registry(run, STATE, TOKEN))
    assert {name for name, _ in found} == set(NAMES)
    end = (T0 + timedelta(seconds=42.5)).timestamp()
    assert value(found, "fourdqbo_last_run_timestamp_seconds") == end
    assert value(found, "fourdqbo_last_run_exit_code") == 0
    assert value(found, "fourdqbo_last_success_timestamp_seconds") == end
    assert value(found, "fourdqbo_run_duration_seconds") == 42.5
    assert value(found, "fourdqbo_run_quotes", action="created") == 2
    assert value(found, "fourdqbo_run_quotes", action="updated") == 1
    assert value(found, "fourdqbo_run_quotes", action="unchanged") == 1
    assert value(found, "fourdqbo_retry_queue_size") == 2
    assert (
        value(found, "fourdqbo_refresh_token_expiry_timestamp_seconds")
        == (T0 + timedelta(days=90)).timestamp()
    )
    reads = value(found, "fourdqbo_qbo_requests", kind="read")
    writes = value(found, "fourdqbo_qbo_requests", kind="write")
    assert (reads, writes) == (8, 1)  # 3 invoice writes fit one batch


def test_every_action_and_every_attention_kind_is_there_with_zeros() -> None:
    found = samples(build_registry(report(), STATE, TOKEN))
    for action in ("created", "updated", "deleted", "voided", "unchanged", "skipped"):
        assert value(found, "fourdqbo_run_quotes", action=action) == 0
    assert value(found, "fourdqbo_run_quotes", action="conflicts") == 0
    assert value(found, "fourdqbo_run_quotes", action="failed") == 0
    assert (("fourdqbo_run_quotes", frozenset({"realm": REALM, "action": "seen"}.items()))) not in (
        found
    )
    for kind in AttentionKind:
        expected = {"paid": 3, "gave_up": 1}.get(kind.value, 0)
        assert value(found, "fourdqbo_attention_items", kind=kind.value) == expected


def test_a_failed_run_takes_its_last_success_from_the_history() -> None:
    earlier = T0 - timedelta(minutes=20)
    state = StateSnapshot(
        realm_id=REALM,
        runs=history((T0 - timedelta(minutes=5), None), (earlier, 0), (T0 - timedelta(hours=2), 0)),
    )
    found = samples(build_registry(report("failed", "created"), state, TOKEN))
    assert value(found, "fourdqbo_last_run_exit_code") == 1
    assert value(found, "fourdqbo_run_quotes", action="failed") == 1
    assert value(found, "fourdqbo_last_success_timestamp_seconds") == earlier.timestamp()


def test_the_exit_code_the_cli_knows_wins_and_a_summary_is_a_run_too() -> None:
    # The engine raised: the CLI passes the run's history entry and the process exit code.
    entry = history((T0, None))[0]
    found = samples(build_registry(entry, STATE, TOKEN, exit_code=3))
    assert value(found, "fourdqbo_last_run_exit_code") == 3
    assert value(found, "fourdqbo_last_run_timestamp_seconds") == T0.timestamp()
    assert value(found, "fourdqbo_run_duration_seconds") == 10
    assert (
        value(found, "fourdqbo_last_success_timestamp_seconds")
        == (T0 - timedelta(hours=1)).timestamp()
    )


def test_status_describes_the_newest_recorded_run() -> None:
    state = StateSnapshot(realm_id=REALM, runs=history((T0, None), (T0 - timedelta(hours=3), 0)))
    found = samples(build_registry(None, state, TOKEN))
    assert value(found, "fourdqbo_last_run_timestamp_seconds") == T0.timestamp()
    assert value(found, "fourdqbo_last_run_exit_code") == 3  # aborted, no code recorded
    assert (
        value(found, "fourdqbo_last_success_timestamp_seconds")
        == (T0 - timedelta(hours=3)).timestamp()
    )


def test_nothing_known_leaves_the_metrics_out_rather_than_zero() -> None:
    found = samples(build_registry(None, None, None))
    assert found == {}
    no_runs = samples(build_registry(None, StateSnapshot(realm_id=REALM), None))
    assert {name for name, _ in no_runs} == {
        "fourdqbo_attention_items",
        "fourdqbo_retry_queue_size",
    }


def test_the_realm_label_comes_from_the_token_without_a_state_store() -> None:
    found = samples(build_registry(report("created"), None, TOKEN, exit_code=3))
    assert value(found, "fourdqbo_last_run_exit_code") == 3
    assert "fourdqbo_retry_queue_size" not in {name for name, _ in found}


@given(
    invoices=st.integers(0, 200),
    customers=st.integers(0, 90),
    total=st.integers(0, 400),
)
def test_request_kinds_add_up_to_the_qbo_requests(
    invoices: int, customers: int, total: int
) -> None:
    summary = {
        "counts": {"created": invoices},
        "customers": {"created": customers, "reactivated": 0},
        "requests": {"qbo": total},
    }
    kinds = qbo_request_kinds(summary)
    assert kinds["read"] + kinds["write"] == total
    assert kinds["read"] >= 0 and kinds["write"] >= 0
    assert kinds["write"] == min(total, -(-invoices // 30) - (-customers // 30))


def test_request_kinds_counted_apart_are_taken_as_they_are() -> None:
    summary = {"requests": {"qbo": 10, "qbo_read": 4, "qbo_write": 6}, "counts": {}}
    assert qbo_request_kinds(summary) == {"read": 4, "write": 6}


class _OldStore:
    def conflicts(self) -> list[ConflictEntry]:
        return [ConflictEntry("1001", "7", "paid", T0), ConflictEntry("1002", "8", "paid", T0)]


class _NewStore(_OldStore):
    def attention_counts(self) -> dict[AttentionKind, int]:
        return {AttentionKind.EDITED_IN_QBO: 4}


def test_attention_falls_back_to_conflicts_as_paid_until_the_store_counts_items() -> None:
    old = attention_counts(_OldStore())
    assert old == {kind.value: (2 if kind is AttentionKind.PAID else 0) for kind in AttentionKind}
    new = attention_counts(_NewStore())
    assert new["edited_in_qbo"] == 4 and new["paid"] == 0
    assert set(new) == {kind.value for kind in AttentionKind}


def test_last_success_skips_failed_and_aborted_runs() -> None:
    runs = history((T0, 1), (T0 - timedelta(minutes=1), None), (T0 - timedelta(minutes=2), 0))
    assert last_success(runs) == T0 - timedelta(minutes=2)
    assert last_success(history((T0, 1))) is None


def test_the_file_is_replaced_atomically_and_never_world_writable(tmp_path: Path) -> None:
    target = tmp_path / "fourdqbo.prom"
    target.write_text("old\n")
    before = target.stat().st_ino
    previous = os.umask(0)  # the most permissive umask a service could run under
    try:
        write_textfile(target, build_registry(report("created"), STATE, TOKEN))
    finally:
        os.umask(previous)
    assert target.stat().st_ino != before  # a new file renamed over the old one
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & ~0o644 == 0, oct(mode)
    assert os.umask(previous) == previous  # the umask was given back
    parsed = list(text_string_to_metric_families(target.read_text()))
    assert {family.name for family in parsed} >= {"fourdqbo_run_quotes", "fourdqbo_qbo_requests"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fourdqbo.prom"]  # no temp left


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "fourdqbo.prom"
    with pytest.raises(OSError):
        write_textfile(target, build_registry(None, STATE, TOKEN))
    assert list(tmp_path.iterdir()) == []


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "fourdqbo.prom"
    registry = build_registry(report("created", "updated"), STATE, TOKEN)
    write_textfile(target, registry)
    whole = target.read_text()
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(target.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(200):
            write_textfile(target, registry)
    finally:
        stop.set()
        reader.join()
    assert seen and all(text == whole for text in seen)
