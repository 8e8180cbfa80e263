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
