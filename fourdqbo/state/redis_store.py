"""The Redis state store: every key of one realm under `{STATE_PREFIX}:{realmId}:`.

Keys (all under the prefix):
    watermark        string, fixed-width ISO UTC (`2025-03-01T08:00:00.000000Z`)
    lock             string JSON {token, run_id, host, pid, since}, set NX with a TTL
    lock_last_token  token of the last acquisition not yet released (to notice expiries)
    lock_history     list of JSON lock events, newest first, capped at LOCK_HISTORY_LIMIT
    retry            hash quote -> JSON retry entry
    conflicts        hash quote -> JSON conflict (0.1; shown as attention items since 0.2)
    runs             list of JSON run summaries, newest first, capped at RUN_HISTORY_LIMIT
    ledger           hash quote -> JSON ledger entry (the last write the sync made)
    ledger:invoices  hash invoice id -> quote, the reverse index of `ledger`
    attention        hash quote -> JSON item needing a person
    accepted         hash quote -> JSON acceptance
    cdc_cursor       string, fixed-width ISO UTC: where the next CDC read starts
    reminded_at      string, fixed-width ISO UTC: when open items were last re-reported

Everything that must be atomic (lock take/extend/release, watermark advance, retry count,
a ledger write with its reverse index) is one Lua script, so two runs on two hosts can
never interleave inside it; moves between two hashes (give up, requeue) are MULTI
transactions. Any Redis failure surfaces as StateStoreError (exit 3) with a one-line
message without the password.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fourdqbo import jsonio
from fourdqbo.config import mask_url_password
from fourdqbo.errors import ConfigError, StateStoreError
from fourdqbo.state.base import (
    LOCK_HISTORY_LIMIT,
    RUN_HISTORY_LIMIT,
    ConflictEntry,
    LockEvent,
    LockInfo,
    RetryEntry,
    StateSnapshot,
    StateStore,
    SyncLock,
    acceptance_document,
    acceptance_entry,
    checked_attention,
    checked_ledger,
    conflict_document,
    conflict_entry,
    count_attention,
    error_text,
    gave_up_document,
    ledger_document,
    ledger_entry,
    lock_document,
    lock_info,
    merged_attention,
    one_attention,
    read_instant,
    requeued_retry,
    retry_document,
    retry_entry,
    scrubbed,
    sort_conflicts,
    sort_retry,
    stored_instant,
    unique,
)
from fourdqbo.state.items import Acceptance, AttentionItem, LedgerEntry
from fourdqbo.timefmt import utcnow

log = logging.getLogger(__name__)

# A cron job must not hang on a dead Redis: fail within seconds and let cron try again.
SOCKET_TIMEOUT_SECONDS = 3.0

# Server time as a string of microseconds since the epoch (a Lua number would lose digits
# when cjson encodes it), and a helper that pushes one event onto the capped history.
_LUA_HISTORY = """
local function now_us()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end
local function note(history, cap, entry)
  redis.call('LPUSH', history, cjson.encode(entry))
  redis.call('LTRIM', history, 0, tonumber(cap) - 1)
end
local function token_of(value)
  if not value then return nil end
  local ok, decoded = pcall(cjson.decode, value)
  if ok and type(decoded) == 'table' then return decoded.token, decoded end
  return nil
end
"""

# KEYS: lock, lock_last_token, lock_history. ARGV: lock JSON, ttl ms, history cap.
_ACQUIRE = (
    _LUA_HISTORY
    + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
local info = cjson.decode(ARGV[1])
local now = now_us()
local previous = redis.call('GET', KEYS[2])
if previous and previous ~= info.token then
  note(KEYS[3], ARGV[3], {event='expired', token=previous, at_us=now})
end
redis.call('SET', KEYS[2], info.token)
info.event = 'acquired'
info.ttl_ms = tonumber(ARGV[2])
info.at_us = now
note(KEYS[3], ARGV[3], info)
return 1
"""
)

# KEYS: lock. ARGV: token, ttl ms.
_EXTEND = (
    _LUA_HISTORY
    + """
if token_of(redis.call('GET', KEYS[1])) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
)

# KEYS: lock, lock_last_token, lock_history. ARGV: token, history cap.
_RELEASE = (
    _LUA_HISTORY
    + """
local token, info = token_of(redis.call('GET', KEYS[1]))
if token ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
note(KEYS[3], ARGV[2], {event='released', token=token, run_id=info.run_id, at_us=now_us()})
return 1
"""
)

# KEYS: lock, lock_last_token, lock_history. ARGV: history cap.
# Returns {lock JSON or '', PTTL before removal}.
_BREAK = (
    _LUA_HISTORY
    + """
local current = redis.call('GET', KEYS[1])
local pttl = redis.call('PTTL', KEYS[1])
local last = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2])
if current then
  local token, info = token_of(current)
  local run_id = nil
  if info then run_id = info.run_id end
  note(KEYS[3], ARGV[1], {event='broken', token=token or '?', run_id=run_id, at_us=now_us()})
elseif last then
  note(KEYS[3], ARGV[1], {event='expired', token=last, at_us=now_us()})
end
return {current or '', pttl}
"""
)

# KEYS: lock_history. ARGV: event, token, run_id, history cap.
_NOTE = (
    _LUA_HISTORY
    + """
note(KEYS[1], ARGV[4], {event=ARGV[1], token=ARGV[2], run_id=ARGV[3], at_us=now_us()})
return 1
"""
)

# KEYS: watermark. ARGV: fixed-width ISO instant. Fixed width makes string order time order.
_ADVANCE = """
local current = redis.call('GET', KEYS[1])
if current and current >= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# KEYS: retry. ARGV: quote, error, instant. Returns the attempt count.
_RECORD_FAILURE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local entry = nil
if raw then
  local ok, decoded = pcall(cjson.decode, raw)
  if ok and type(decoded) == 'table' then entry = decoded end
end
if entry then
  entry.attempts = (tonumber(entry.attempts) or 0) + 1
  entry.error = ARGV[2]
  entry.last_failed_at = ARGV[3]
  if not entry.first_failed_at then entry.first_failed_at = ARGV[3] end
else
  entry = {quote=ARGV[1], error=ARGV[2], attempts=1,
           first_failed_at=ARGV[3], last_failed_at=ARGV[3]}
end
local encoded = cjson.encode(entry)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
return encoded
"""

# Drops the reverse index entry of a quote's current ledger entry, if it still points there.
_LUA_UNINDEX = """
local function unindex(ledger, index, quote, keep)
  local raw = redis.call('HGET', ledger, quote)
  if not raw then return end
  local ok, old = pcall(cjson.decode, raw)
  if ok and type(old) == 'table' and type(old.invoice_id) == 'string'
     and old.invoice_id ~= keep and redis.call('HGET', index, old.invoice_id) == quote then
    redis.call('HDEL', index, old.invoice_id)
  end
end
"""

# KEYS: ledger, ledger:invoices. ARGV: (quote, invoice id or '', JSON entry) repeated.
_RECORD_LEDGER = (
    _LUA_UNINDEX
    + """
for i = 1, #ARGV, 3 do
  unindex(KEYS[1], KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  if ARGV[i + 1] ~= '' then redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i]) end
end
return 1
"""
)

# KEYS: ledger, ledger:invoices. ARGV: quotes.
_FORGET_LEDGER = (
    _LUA_UNINDEX
    + """
for i = 1, #ARGV do
  unindex(KEYS[1], KEYS[2], ARGV[i], false)
  redis.call('HDEL', KEYS[1], ARGV[i])
end
return 1
"""
)

# KEYS: ledger, ledger:invoices. ARGV: invoice ids. Returns (invoice id, JSON entry) pairs
# of the ids the index knows, read in one step so an entry cannot move in between.
_LEDGER_FOR_INVOICES = """
local found = {}
for i = 1, #ARGV do
  local quote = redis.call('HGET', KEYS[2], ARGV[i])
  if quote then
    local raw = redis.call('HGET', KEYS[1], quote)
    if raw then
      table.insert(found, ARGV[i])
      table.insert(found, quote)
      table.insert(found, raw)
    end
  end
end
return found
"""

_CONNECTING = re.compile(r"^Error -?\d+ (?:connecting to|while writing to) \S+?\.? (.+)$")


def describe_redis_error(exc: redis.exceptions.RedisError, url: str) -> str:
    """One line for the operator: where, and the gist of what Redis or the socket said."""
    where = mask_url_password(url)
    detail = " ".join(str(exc).split()) or exc.__class__.__name__
    match = _CONNECTING.match(detail)
    if match:
        detail = match.group(1)
    detail = detail.rstrip(".")
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"state store unreachable at {where} ({detail})"
    return f"state store at {where} refused a command ({detail})"


class RedisStateStore(StateStore):
    """State of one realm in Redis (see the module docstring for the key layout)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        realm_id: str,
        *,
        socket_timeout: float = SOCKET_TIMEOUT_SECONDS,
    ) -> None:
        self.realm_id = realm_id
        self.url = url
        self.namespace = f"{prefix}:{realm_id}:"
        try:
            self._redis: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                # One immediate retry covers a pooled connection that died since its last
                # use (Redis restarted); more would only delay exit 3 for cron.
                retry=Retry(NoBackoff(), 1),
                decode_responses=True,
            )
        except ValueError as exc:
            raise ConfigError(
                f"REDIS_URL is not a usable Redis URL: {mask_url_password(url)} ({exc})"
            ) from None
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._extend = self._redis.register_script(_EXTEND)
        self._release = self._redis.register_script(_RELEASE)
        self._break = self._redis.register_script(_BREAK)
        self._note = self._redis.register_script(_NOTE)
        self._advance = self._redis.register_script(_ADVANCE)
        self._record_failure = self._redis.register_script(_RECORD_FAILURE)
        self._record_ledger = self._redis.register_script(_RECORD_LEDGER)
        self._forget_ledger = self._redis.register_script(_FORGET_LEDGER)
        self._ledger_for_invoices = self._redis.register_script(_LEDGER_FOR_INVOICES)

    def key(self, name: str) -> str:
        return self.namespace + name

    @contextmanager
    def _talking(self) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise StateStoreError(describe_redis_error(exc, self.url), service="redis") from exc

    def ping(self) -> None:
        with self._talking():
            self._redis.ping()

    # --- watermark -------------------------------------------------------------------

    def watermark(self) -> datetime | None:
        with self._talking():
            value = self._redis.get(self.key("watermark"))
        return None if value is None else read_instant(value, "watermark")

    def advance_watermark(self, to: datetime) -> bool:
        with self._talking():
            moved = self._advance(keys=[self.key("watermark")], args=[stored_instant(to)])
        return bool(moved)

    def reset_watermark(self, to: datetime) -> None:
        with self._talking():
            self._redis.set(self.key("watermark"), stored_instant(to))

    # --- lock ------------------------------------------------------------------------

    def _lock_keys(self) -> list[str]:
        return [self.key("lock"), self.key("lock_last_token"), self.key("lock_history")]

    def acquire_lock(self, run_id: str, ttl_seconds: float = 300.0) -> SyncLock | None:
        if ttl_seconds <= 0:
            raise ValueError("lock TTL must be above 0")
        since = utcnow()
        info = LockInfo(
            token=secrets.token_hex(16),
            run_id=run_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            since=since,
            expires_at=since + timedelta(seconds=ttl_seconds),
        )
        with self._talking():
            taken = self._acquire(
                keys=self._lock_keys(),
                args=[json.dumps(lock_document(info)), _ms(ttl_seconds), LOCK_HISTORY_LIMIT],
            )
        if not taken:
            return None
        return RedisSyncLock(self, info, ttl_seconds)

    def lock_holder(self) -> LockInfo | None:
        with self._talking():
            pipe = self._redis.pipeline(transaction=True)
            pipe.get(self.key("lock"))
            pipe.pttl(self.key("lock"))
            value, pttl = pipe.execute()
        return None if value is None else _lock_from(value, pttl)

    def break_lock(self) -> LockInfo | None:
        with self._talking():
            value, pttl = self._break(keys=self._lock_keys(), args=[LOCK_HISTORY_LIMIT])
        if not value:
            return None
        try:
            return _lock_from(value, int(pttl))
        except StateStoreError:
            # It was unreadable, and it is gone now: that is what unlock is for.
            return None

    def lock_history(self, limit: int = LOCK_HISTORY_LIMIT) -> list[LockEvent]:
        if limit <= 0:
            return []
        with self._talking():
            raw = self._redis.lrange(self.key("lock_history"), 0, limit - 1)
        events = [event for event in (_lock_event(item) for item in raw) if event is not None]
        events.reverse()
        return events

    def _note_event(self, event: str, lock: SyncLock) -> None:
        with self._talking():
            self._note(
                keys=[self.key("lock_history")],
                args=[event, lock.token, lock.info.run_id, LOCK_HISTORY_LIMIT],
            )

    # --- retry queue and conflicts ---------------------------------------------------

    def retry_queue(self) -> list[RetryEntry]:
        with self._talking():
            raw = self._redis.hgetall(self.key("retry"))
        return sort_retry([retry_entry(quote, _loads(text)) for quote, text in raw.items()])

    def record_failure(self, quote: str, error: str, at: datetime) -> RetryEntry:
        with self._talking():
            encoded = self._record_failure(
                keys=[self.key("retry")], args=[quote, error_text(error), stored_instant(at)]
            )
        return retry_entry(quote, _loads(encoded))

    def clear_failure(self, quote: str) -> None:
        with self._talking():
            self._redis.hdel(self.key("retry"), quote)

    def retry_entries(self, quotes: Iterable[str]) -> dict[str, RetryEntry]:
        wanted = unique(quotes)
        if not wanted:
            return {}
        with self._talking():
            raw = self._redis.hmget(self.key("retry"), wanted)
        return {
            quote: retry_entry(quote, _loads(text))
            for quote, text in zip(wanted, raw, strict=True)
            if text is not None
        }

    def retry_queue_size(self) -> int:
        with self._talking():
            return int(self._redis.hlen(self.key("retry")))

    def give_up(self, quote: str, item: AttentionItem) -> None:
        document = jsonio.dumps(gave_up_document(quote, item))
        with self._talking():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self.key("retry"), quote)
            pipe.hset(self.key("attention"), quote, document)
            pipe.execute()

    def requeue(self, quotes: Iterable[str], at: datetime) -> list[str]:
        wanted = unique(quotes)
        stored_instant(at)  # a naive `at` fails before anything is read
        if not wanted:
            return []
        attention, retry = self.key("attention"), self.key("retry")
        requeued: list[str] = []

        def move(pipe: redis.client.Pipeline) -> None:
            # Read under WATCH, decide in Python (one reader of stored items), write in
            # MULTI: a concurrent change of either hash makes redis-py run this again.
            requeued.clear()
            raw = pipe.hmget(attention, wanted)
            entries: dict[str, str] = {}
            for quote, text in zip(wanted, raw, strict=True):
                if text is None:
                    continue
                entry = requeued_retry(quote, _loads(text), at)
                if entry is not None:
                    requeued.append(quote)
                    entries[quote] = jsonio.dumps(retry_document(entry))
            pipe.multi()
            if entries:
                pipe.hdel(attention, *entries)
                pipe.hset(retry, mapping=entries)

        with self._talking():
            self._redis.transaction(move, attention, retry)
        return list(requeued)

    def conflicts(self) -> list[ConflictEntry]:
        with self._talking():
            raw = self._redis.hgetall(self.key("conflicts"))
        return sort_conflicts([conflict_entry(quote, _loads(text)) for quote, text in raw.items()])

    def record_conflict(self, entry: ConflictEntry) -> None:
        with self._talking():
            self._redis.hset(
                self.key("conflicts"), entry.quote, jsonio.dumps(conflict_document(entry))
            )

    def clear_conflict(self, quote: str) -> None:
        with self._talking():
            self._redis.hdel(self.key("conflicts"), quote)

    # --- ledger ----------------------------------------------------------------------

    def _ledger_keys(self) -> list[str]:
        return [self.key("ledger"), self.key("ledger:invoices")]

    def ledger(self, quotes: Iterable[str]) -> dict[str, LedgerEntry]:
        wanted = unique(quotes)
        if not wanted:
            return {}
        with self._talking():
            raw = self._redis.hmget(self.key("ledger"), wanted)
        return {
            quote: ledger_entry(quote, _loads(text))
            for quote, text in zip(wanted, raw, strict=True)
            if text is not None
        }

    def ledger_for_invoices(self, invoice_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        wanted = unique(invoice_ids)
        if not wanted:
            return {}
        with self._talking():
            found = self._ledger_for_invoices(keys=self._ledger_keys(), args=wanted)
        entries: dict[str, LedgerEntry] = {}
        for index in range(0, len(found), 3):
            invoice_id, quote, text = found[index : index + 3]
            entry = ledger_entry(quote, _loads(text))
            # The index is kept in step by the scripts; checking costs nothing and keeps a
            # hand-edited or half-restored index from naming the wrong quote.
            if entry.invoice_id == invoice_id:
                entries[invoice_id] = entry
        return entries

    def record_ledger(self, entries: Iterable[LedgerEntry]) -> None:
        args: list[str] = []
        for entry in checked_ledger(entries):
            args += [entry.quote, entry.invoice_id or "", jsonio.dumps(ledger_document(entry))]
        if not args:
            return
        with self._talking():
            self._record_ledger(keys=self._ledger_keys(), args=args)

    def forget_ledger(self, quotes: Iterable[str]) -> None:
        wanted = unique(quotes)
        if not wanted:
            return
        with self._talking():
            self._forget_ledger(keys=self._ledger_keys(), args=wanted)

    def ledger_size(self) -> int:
        with self._talking():
            return int(self._redis.hlen(self.key("ledger")))

    # --- items needing a person ------------------------------------------------------

    def attention_items(self) -> list[AttentionItem]:
        with self._talking():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hgetall(self.key("attention"))
            pipe.hgetall(self.key("conflicts"))
            items, legacy = pipe.execute()
        return merged_attention(_documents(items), _documents(legacy))

    def attention_item(self, quote: str) -> AttentionItem | None:
        with self._talking():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hget(self.key("attention"), quote)
            pipe.hget(self.key("conflicts"), quote)
            item, legacy = pipe.execute()
        return one_attention(
            quote,
            None if item is None else _loads(item),
            None if legacy is None else _loads(legacy),
        )

    def record_attention(self, items: Iterable[AttentionItem]) -> None:
        documents = {quote: jsonio.dumps(doc) for quote, doc in checked_attention(items)}
        if not documents:
            return
        with self._talking():
            self._redis.hset(self.key("attention"), mapping=documents)

    def clear_attention(self, quotes: Iterable[str]) -> None:
        wanted = unique(quotes)
        if not wanted:
            return
        with self._talking():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self.key("attention"), *wanted)
            pipe.hdel(self.key("conflicts"), *wanted)
            pipe.execute()

    def attention_counts(self) -> dict[str, int]:
        return count_attention(self.attention_items())

    # --- acceptances -----------------------------------------------------------------

    def acceptances(self, quotes: Iterable[str] | None = None) -> dict[str, Acceptance]:
        with self._talking():
            if quotes is None:
                raw: dict[str, str | None] = self._redis.hgetall(self.key("accepted"))
            else:
                wanted = unique(quotes)
                if not wanted:
                    return {}
                raw = dict(
                    zip(wanted, self._redis.hmget(self.key("accepted"), wanted), strict=True)
                )
        return {
            quote: acceptance_entry(quote, _loads(text))
            for quote, text in raw.items()
            if text is not None
        }

    def record_acceptance(self, acceptance: Acceptance) -> None:
        document = jsonio.dumps(acceptance_document(acceptance))
        with self._talking():
            self._redis.hset(self.key("accepted"), acceptance.quote, document)

    def clear_acceptance(self, quotes: Iterable[str]) -> None:
        wanted = unique(quotes)
        if not wanted:
            return
        with self._talking():
            self._redis.hdel(self.key("accepted"), *wanted)

    # --- CDC cursor and reminders ----------------------------------------------------

    def _instant(self, name: str, what: str) -> datetime | None:
        with self._talking():
            value = self._redis.get(self.key(name))
        return None if value is None else read_instant(value, what)

    def _set_instant(self, name: str, at: datetime) -> None:
        value = stored_instant(at)
        with self._talking():
            self._redis.set(self.key(name), value)

    def snapshot(self) -> StateSnapshot:
        with self._talking():
            pipe = self._redis.pipeline(transaction=True)
            pipe.mget(self.key("watermark"), self.key("cdc_cursor"), self.key("reminded_at"))
            pipe.hlen(self.key("retry"))
            pipe.hlen(self.key("ledger"))
            pipe.hgetall(self.key("attention"))
            pipe.hgetall(self.key("conflicts"))
            instants, retry_size, ledger_size, items, legacy = pipe.execute()
        watermark, cursor, reminded = (
            None if value is None else read_instant(value, what)
            for value, what in zip(
                instants, ("watermark", "CDC cursor", "reminder time"), strict=True
            )
        )
        return StateSnapshot(
            watermark=watermark,
            cdc_cursor=cursor,
            last_reminded_at=reminded,
            retry_queue_size=int(retry_size),
            ledger_size=int(ledger_size),
            attention=tuple(merged_attention(_documents(items), _documents(legacy))),
        )

    # --- run history -----------------------------------------------------------------

    def append_run(self, summary: dict[str, Any]) -> None:
        document = jsonio.dumps(scrubbed(summary))
        with self._talking():
            pipe = self._redis.pipeline(transaction=True)
            pipe.lpush(self.key("runs"), document)
            pipe.ltrim(self.key("runs"), 0, RUN_HISTORY_LIMIT - 1)
            pipe.execute()

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        with self._talking():
            raw = self._redis.lrange(self.key("runs"), 0, limit - 1)
        summaries = []
        for text in raw:
            try:
                summary = jsonio.loads(text)
            except ValueError:
                log.warning("skipping an unreadable run summary in the state store")
                continue
            if isinstance(summary, dict):
                summaries.append(summary)
        return summaries

    def close(self) -> None:
        self._redis.close()


class RedisSyncLock(SyncLock):
    """A lock key whose value carries this handle's token; only that token moves it."""

    def __init__(self, store: RedisStateStore, info: LockInfo, ttl_seconds: float) -> None:
        super().__init__(info, ttl_seconds)
        self._store = store

    def _extend(self) -> bool:
        store = self._store
        with store._talking():
            extended = store._extend(
                keys=[store.key("lock")], args=[self.token, _ms(self.ttl_seconds)]
            )
        if extended:
            self.info = replace(
                self.info, expires_at=utcnow() + timedelta(seconds=self.ttl_seconds)
            )
        return bool(extended)

    def _release(self) -> bool:
        store = self._store
        with store._talking():
            released = store._release(
                keys=store._lock_keys(), args=[self.token, LOCK_HISTORY_LIMIT]
            )
        return bool(released)

    def _on_lost(self, reason: str) -> None:
        self._store._note_event("lost", self)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


# What a stored value that is not JSON reads as: every entry reader fails on it (indexing
# and `.get` both raise) and turns that into a StateStoreError naming the quote.
_UNREADABLE = object()


def _loads(text: str) -> Any:
    try:
        return jsonio.loads(text)
    except ValueError:
        return _UNREADABLE


def _documents(raw: dict[str, str]) -> dict[str, Any]:
    return {quote: _loads(text) for quote, text in raw.items()}


def _lock_from(value: str, pttl: int) -> LockInfo:
    # PTTL: -1 = no expiry (set by hand), -2 = gone between the two reads.
    expires_at = utcnow() + timedelta(milliseconds=pttl) if pttl >= 0 else None
    return lock_info(_loads(value), expires_at)


def _lock_event(text: str) -> LockEvent | None:
    document = _loads(text)
    try:
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(document["at_us"]))
        pid = document.get("pid")
        ttl_ms = document.get("ttl_ms")
        return LockEvent(
            event=str(document["event"]),
            token=str(document["token"]),
            at=at,
            run_id=document.get("run_id"),
            host=document.get("host"),
            pid=None if pid is None else int(pid),
            ttl_ms=None if ttl_ms is None else int(ttl_ms),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        log.warning("skipping an unreadable lock history entry")
        return None
