"""Code run in separate processes by the state tests: real processes competing for the lock.

Each process opens its own store from a plain spec (picklable for `spawn`), as two cron
runs on one host (file) or two hosts (Redis) would.
"""

from __future__ import annotations

import os
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

from fourdqbo.state.base import StateStore
from fourdqbo.state.file_store import FileStateStore
from fourdqbo.state.redis_store import RedisStateStore


def open_store(spec: dict[str, Any]) -> StateStore:
    if spec["backend"] == "redis":
        return RedisStateStore(spec["url"], spec["prefix"], spec["realm"])
    return FileStateStore(Path(spec["root"]), spec["realm"])


def race_for_lock(
    spec: dict[str, Any], name: str, start: Barrier, results: Queue, finish: Event
) -> None:
    """Wait for every contender, grab the lock, report, and hold it until told to finish."""
    store = open_store(spec)
    start.wait(timeout=20)
    lock = store.acquire_lock(run_id=name, ttl_seconds=30)
    results.put((name, lock is not None))
    finish.wait(timeout=20)
    if lock is not None:
        lock.release()
    store.close()


def take_lock_and_die(spec: dict[str, Any], ttl_seconds: float, taken: Event) -> None:
    """A run that crashes while holding the lock: no release, no cleanup of any kind."""
    store = open_store(spec)
    lock = store.acquire_lock(run_id="crashed-run", ttl_seconds=ttl_seconds)
    if lock is None:
        os._exit(3)
    taken.set()
    os._exit(0)
