"""What only the file backend does: permissions, atomic files, the OS lock and its side file."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fourdqbo.errors import StateStoreError
from fourdqbo.state import ConflictEntry
from fourdqbo.state.file_store import FileStateStore
from fourdqbo.state.items import Acceptance, AttentionItem, AttentionKind, LedgerEntry
from tests.state.conftest import REALM
from tests.state.contenders import take_lock_and_die

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data" / "state"


@pytest.fixture
def store(root: Path) -> Iterator[FileStateStore]:
    opened = FileStateStore(root, REALM)
    yield opened
    opened.close()


def exercise(store: FileStateStore) -> None:
    store.advance_watermark(T0)
    store.record_failure("1", "boom", T0)
    store.record_conflict(ConflictEntry("2", "9", "paid", T0))
    store.append_run({"run_id": "r"})
    lock = store.acquire_lock("run-a")
    assert lock is not None
    lock.release()
    store.acquire_lock("run-b")  # left held: lock.json present too


def test_files_are_0600_and_directories_0700_whatever_the_umask(
    store: FileStateStore, root: Path
) -> None:
    previous = os.umask(0o002)
    try:
        exercise(store)
    finally:
        os.umask(previous)
    directory = root / REALM
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = {path.name for path in directory.iterdir()}
    assert {
        "watermark.json",
        "retry.json",
        "conflicts.json",
        "runs.json",
        "lock",
        "lock.json",
        "lock_history.json",
        ".guard",
    } <= names
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_no_temporary_files_are_left_behind(store: FileStateStore, root: Path) -> None:
    exercise(store)
    assert not [path for path in (root / REALM).iterdir() if path.name.endswith(".tmp")]


def test_state_files_are_plain_json(store: FileStateStore, root: Path) -> None:
    exercise(store)
    directory = root / REALM
    assert json.loads((directory / "watermark.json").read_text()) == {
        "watermark": "2025-03-01T08:00:00.000000Z"
    }
    assert json.loads((directory / "retry.json").read_text())["1"]["attempts"] == 1
    holder = json.loads((directory / "lock.json").read_text())
    assert holder["run_id"] == "run-b" and holder["pid"] == os.getpid()


def test_a_corrupt_state_file_is_a_clear_error(store: FileStateStore, root: Path) -> None:
    store.advance_watermark(T0)
    (root / REALM / "watermark.json").write_text("{half a fi")
    with pytest.raises(StateStoreError, match=r"watermark\.json is not valid JSON") as raised:
        store.watermark()
    assert raised.value.exit_code == 3


def test_an_unusable_data_directory_is_a_state_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data directory should be")
    store = FileStateStore(blocker / "state", REALM)
    with pytest.raises(StateStoreError, match="unusable"):
        store.ping()
    with pytest.raises(StateStoreError, match="unusable"):
        store.acquire_lock("run-a")
    with pytest.raises(StateStoreError, match="unusable"):
        store.advance_watermark(T0)


def test_reads_of_a_store_never_written_create_nothing(store: FileStateStore, root: Path) -> None:
    assert store.watermark() is None
    assert store.retry_queue() == []
    assert store.conflicts() == []
    assert store.runs() == []
    assert store.lock_holder() is None
    assert store.lock_history() == []
    assert not root.exists()


def test_realms_are_kept_apart(root: Path) -> None:
    first, second = FileStateStore(root, "111"), FileStateStore(root, "222")
    first.advance_watermark(T0)
    lock = first.acquire_lock("run-a")
    assert lock is not None
    assert second.watermark() is None
    assert second.acquire_lock("run-b") is not None


def test_a_dead_holders_side_file_is_ignored_and_removed_by_break_lock(
    store: FileStateStore, root: Path
) -> None:
    context = multiprocessing.get_context("spawn")
    taken = context.Event()
    spec = {"backend": "file", "root": str(root), "realm": REALM}
    crashed = context.Process(target=take_lock_and_die, args=(spec, 300.0, taken))
    crashed.start()
    crashed.join(timeout=30)
    assert crashed.exitcode == 0 and taken.is_set()

    assert (root / REALM / "lock.json").exists()  # the dead run's note is still there
    assert store.lock_holder() is None  # but nobody holds the OS lock
    broken = store.break_lock()
    assert broken is not None and broken.run_id == "crashed-run" and broken.pid == crashed.pid
    assert not (root / REALM / "lock.json").exists()
    assert store.break_lock() is None
    assert [e.event for e in store.lock_history()] == ["acquired", "broken"]


def test_extend_is_true_exactly_while_the_os_lock_is_held(store: FileStateStore) -> None:
    lock = store.acquire_lock("run-a", ttl_seconds=0.1)
    assert lock is not None
    assert lock.info.expires_at is None
    assert lock.extend() is True
    lock.release()
    assert lock.extend() is False


def test_a_new_owners_side_file_survives_a_stale_release(store: FileStateStore) -> None:
    first = store.acquire_lock("run-a")
    assert first is not None
    first.release()
    second = store.acquire_lock("run-b")
    assert second is not None
    first.release()
    holder = store.lock_holder()
    assert holder is not None and holder.run_id == "run-b"


def test_a_corrupt_lock_note_of_a_dead_run_is_no_holder_and_unlock_removes_it(
    store: FileStateStore, root: Path
) -> None:
    lock = store.acquire_lock("run-a", ttl_seconds=5)
    assert lock is not None
    lock.release()
    (root / REALM / "lock.json").write_text("{not json")
    assert store.lock_holder() is None
    assert store.break_lock() is None
    assert not (root / REALM / "lock.json").exists()
    again = store.acquire_lock("run-b", ttl_seconds=5)
    assert again is not None
    again.release()


# --- 0.2 records -------------------------------------------------------------------------

NEW_FILES = {
    "ledger.json",
    "attention.json",
    "accepted.json",
    "cdc_cursor.json",
    "reminded_at.json",
}


def exercise_records(store: FileStateStore) -> None:
    store.record_ledger([LedgerEntry("1", "101", 3, "0", "run-1", T0)])
    store.record_attention([AttentionItem("2", AttentionKind.PAID, 1, "9", "paid", T0)])
    store.record_acceptance(Acceptance("3", 1, T0))
    store.set_cdc_cursor(T0)
    store.set_last_reminded_at(T0)


def test_the_new_files_are_0600_plain_json(store: FileStateStore, root: Path) -> None:
    previous = os.umask(0o002)
    try:
        exercise_records(store)
    finally:
        os.umask(previous)
    directory = root / REALM
    names = {path.name for path in directory.iterdir()}
    assert names >= NEW_FILES
    assert not [name for name in names if name.endswith(".tmp")]
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    ledger = json.loads((directory / "ledger.json").read_text())
    assert ledger["1"]["written_at"] == "2025-03-01T08:00:00.000000Z"
    assert json.loads((directory / "cdc_cursor.json").read_text()) == {
        "cdc_cursor": "2025-03-01T08:00:00.000000Z"
    }
    assert json.loads((directory / "attention.json").read_text())["2"]["kind"] == "paid"


def test_reading_the_new_records_creates_nothing(store: FileStateStore, root: Path) -> None:
    assert store.ledger(["1"]) == {}
    assert store.ledger_for_invoices(["1"]) == {}
    assert store.ledger_size() == 0
    assert store.attention_items() == []
    assert store.attention_item("1") is None
    assert store.acceptances() == {}
    assert store.retry_entries(["1"]) == {}
    assert store.cdc_cursor() is None and store.last_reminded_at() is None
    assert not root.exists()


@pytest.mark.parametrize("name", sorted(NEW_FILES))
def test_a_corrupt_new_file_is_a_clear_error(store: FileStateStore, root: Path, name: str) -> None:
    exercise_records(store)
    (root / REALM / name).write_text("{half a fi")
    reads = {
        "ledger.json": lambda: store.ledger(["1"]),
        "attention.json": store.attention_items,
        "accepted.json": store.acceptances,
        "cdc_cursor.json": store.cdc_cursor,
        "reminded_at.json": store.last_reminded_at,
    }
    with pytest.raises(StateStoreError, match=rf"{name.replace('.', '[.]')} is not valid JSON"):
        reads[name]()


def test_a_ledger_file_that_is_no_object_is_a_clear_error(
    store: FileStateStore, root: Path
) -> None:
    exercise_records(store)
    (root / REALM / "ledger.json").write_text("[]")
    with pytest.raises(StateStoreError, match="not a JSON object"):
        store.ledger_for_invoices(["101"])
    with pytest.raises(StateStoreError, match="not a JSON object"):
        store.record_ledger([LedgerEntry("4", "104", 1, "0", "run-2", T0)])


def fail_writing(monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """The disk refuses to replace one file, as a crash between two replaces would leave it."""
    real = FileStateStore._write

    def write(self: FileStateStore, name: str, document: object) -> None:
        if name == failing:
            raise OSError(5, "Input/output error")
        real(self, name, document)

    monkeypatch.setattr(FileStateStore, "_write", write)


def test_give_up_cut_short_leaves_the_quote_queued_and_given_up_never_neither(
    store: FileStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.record_failure("10023", "boom", T0)
    fail_writing(monkeypatch, "retry.json")
    gave_up = AttentionItem("10023", AttentionKind.GAVE_UP, 3, None, "boom", T0)
    with pytest.raises(StateStoreError, match="unusable"):
        store.give_up("10023", gave_up)
    assert store.attention_item("10023") == gave_up
    assert store.retry_queue_size() == 1


def test_requeue_cut_short_leaves_the_quote_queued_and_given_up_never_neither(
    store: FileStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    gave_up = AttentionItem("10023", AttentionKind.GAVE_UP, 3, None, "boom", T0)
    store.give_up("10023", gave_up)
    fail_writing(monkeypatch, "attention.json")
    with pytest.raises(StateStoreError, match="unusable"):
        store.requeue(["10023"], T0)
    assert store.retry_entries(["10023"])["10023"].attempts == 0
    assert store.attention_item("10023") == gave_up
    monkeypatch.undo()
    assert store.requeue(["10023"], T0) == ["10023"]  # doing it again completes the move
    assert store.attention_items() == []


def test_ledger_by_invoice_prefers_the_latest_write_when_two_quotes_name_one(
    store: FileStateStore, root: Path
) -> None:
    early = LedgerEntry("A", "145", 1, "0", "run-1", T0)
    late = LedgerEntry("B", "145", 1, "0", "run-2", T0.replace(minute=5))
    store.record_ledger([late])
    store.record_ledger([early])
    assert store.ledger_for_invoices(["145"]) == {"145": late}


def test_a_state_file_holds_one_entry_a_line(store: FileStateStore, root: Path) -> None:
    entries = [LedgerEntry(str(n), str(100 + n), 1, "0", "run-1", T0) for n in range(1, 4)]
    store.record_ledger(entries)
    store.append_run({"run_id": "run-1", "note": 'ünïcode "quoted"\nnewline'})
    store.append_run({"run_id": "run-2"})
    directory = root / REALM
    lines = (directory / "ledger.json").read_text().splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert [
        json.loads(line.rstrip(",").partition(": ")[2])["invoice_id"] for line in lines[1:-1]
    ] == [
        "101",
        "102",
        "103",
    ]
    runs = (directory / "runs.json").read_text().splitlines()
    assert runs[0] == "[" and runs[-1] == "]" and len(runs) == 4
    assert [json.loads(line.rstrip(","))["run_id"] for line in runs[1:-1]] == ["run-2", "run-1"]
    assert store.ledger(["2"])["2"].invoice_id == "102"
    assert store.runs()[1]["note"] == 'ünïcode "quoted"\nnewline'
