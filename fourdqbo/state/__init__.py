"""State between sync runs — watermark, lock, retry queue, conflicts, run history, and
since 0.2 the ledger, the items needing a person, acceptances, CDC cursor and reminders.

`open_state_store(settings, realm_id)` picks the backend named by `STATE_BACKEND`:
Redis (`REDIS_URL`, keys under `{STATE_PREFIX}:{realmId}:`) or local files
(`DATA_DIR/state/{realmId}/`). Opening does not connect; call `ping()` to fail early.
"""

from __future__ import annotations

from fourdqbo.config import Settings
from fourdqbo.state.base import (
    LOCK_HISTORY_LIMIT,
    RUN_HISTORY_LIMIT,
    ConflictEntry,
    LockEvent,
    LockInfo,
    LockLost,
    RetryEntry,
    StateSnapshot,
    StateStore,
    SyncLock,
    check_realm_id,
)
from fourdqbo.state.items import (
    Acceptance,
    AttentionItem,
    AttentionKind,
    Difference,
    LedgerEntry,
)

__all__ = [
    "LOCK_HISTORY_LIMIT",
    "RUN_HISTORY_LIMIT",
    "Acceptance",
    "AttentionItem",
    "AttentionKind",
    "ConflictEntry",
    "Difference",
    "LedgerEntry",
    "LockEvent",
    "LockInfo",
    "LockLost",
    "RetryEntry",
    "StateSnapshot",
    "StateStore",
    "SyncLock",
    "open_state_store",
]


def open_state_store(settings: Settings, realm_id: str) -> StateStore:
    """The state store of one QBO realm, per the settings (ConfigError if they are unusable)."""
    settings.require_state()
    check_realm_id(realm_id)
    if settings.state_backend == "file":
        from fourdqbo.state.file_store import FileStateStore

        return FileStateStore(settings.data_dir / "state", realm_id)
    from fourdqbo.state.redis_store import RedisStateStore

    return RedisStateStore(settings.redis_url, settings.state_prefix, realm_id)
