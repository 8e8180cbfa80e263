"""Prometheus metrics for node_exporter's textfile collector (METRICS_FILE).

After every `sync run` (except one that found the lock held: it did nothing) and every
`status`, the CLI writes the installation's health here in the Prometheus text format,
atomically (a temporary file in the same directory, then a rename) and never
world-writable. Building the metrics is a pure function, `build_registry`, of the run
(its report, its history summary, or None for `status`), a snapshot of the state store
and what the token file says; the I/O around it is `write_run_metrics` /
`write_status_metrics`, which log a warning and carry on when anything goes wrong: the
metrics must never fail a run.

Only the CLI imports this module, and only when METRICS_FILE is set; prometheus_client
itself is imported inside the functions that need it, so start-up time does not change.
Every value is a quote count, a request count, a timestamp or an exit code: nothing here
can hold patient data.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fourdqbo.state.items import AttentionKind
from fourdqbo.sync.report import COUNT_KEYS, RunReport
from fourdqbo.timefmt import iso_z, utcnow

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from fourdqbo.config import Settings

log = logging.getLogger(__name__)

# A history entry without an exit code is a run that aborted (DESIGN.md: 3 is "upstream
# or state store unreachable", what aborts a run); the CLI passes the real code when known.
ABORTED_EXIT_CODE = 3
# Actions the report counts that are not an action: "seen" is their sum.
_NOT_ACTIONS = {"seen"}
_WRITE_ACTIONS = ("created", "updated", "deleted", "voided")
_BATCH_ITEMS = 30  # QBO's limit per batch POST (qbo.client.MAX_BATCH_ITEMS)
HISTORY_LOOKBACK = 100  # runs searched for the last success


@dataclass(frozen=True)
class StateSnapshot:
    """What the metrics need from the state store, read once."""

    realm_id: str
    runs: tuple[Mapping[str, Any], ...] = ()  # run history summaries, newest first
    retry_queue_size: int = 0
    attention: Mapping[str, int] = field(default_factory=dict)  # kind -> open items


@dataclass(frozen=True)
class TokenInfo:
    """What the token file says, read without refreshing anything."""

    realm_id: str
    refresh_expires_at: datetime  # whichever refresh expiry comes first


def build_registry(
    run: RunReport | Mapping[str, Any] | None,
    state: StateSnapshot | None,
    token: TokenInfo | None,
    *,
    exit_code: int | None = None,
) -> CollectorRegistry:
    """The metrics of one installation as a fresh registry.

    `run` is the run that just ended (its report, or its history summary when the engine
    raised), or None for `status`: then the newest run of `state`'s history. `exit_code`
    is the process's exit code for that run when the CLI knows it (a run that raised has
    no report to tell it). `state` is None when the state store could not be read: the
    metrics taken from it are left out rather than reported as zeros.
    """
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry(auto_describe=True)
    realm = (state.realm_id if state else "") or (token.realm_id if token else "")

    def gauge(name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(name, documentation, ["realm", *labels], registry=registry)

    if run is not None:
        summary: Mapping[str, Any] | None = _summary(run)
    else:
        summary = state.runs[0] if state and state.runs else None
    if summary is not None:
        finished = _instant(summary.get("finished_at")) or _instant(summary.get("started_at"))
        started = _instant(summary.get("started_at")) or finished
        code = exit_code if exit_code is not None else _exit_code(summary)
        if finished is not None:
            gauge(
                "fourdqbo_last_run_timestamp_seconds", "When the last sync run ended (Unix time)."
            ).labels(realm).set(finished.timestamp())
        gauge("fourdqbo_last_run_exit_code", "Exit code of the last sync run.").labels(realm).set(
            code
        )
        if started is not None and finished is not None:
            gauge("fourdqbo_run_duration_seconds", "How long the last sync run took.").labels(
                realm
            ).set(max(0.0, (finished - started).total_seconds()))
        quotes = gauge("fourdqbo_run_quotes", "Quotes of the last run by action.", "action")
        counts = summary.get("counts") or {}
        for action in dict.fromkeys([*COUNT_KEYS, *counts]):
            if action not in _NOT_ACTIONS:
                quotes.labels(realm, action).set(int(counts.get(action) or 0))
        requests = gauge(
            "fourdqbo_qbo_requests", "QBO requests the last run sent, by kind.", "kind"
        )
        for kind, number in qbo_request_kinds(summary).items():
            requests.labels(realm, kind).set(number)
        success = finished if code == 0 else None
    else:
        success = None
    if success is None and state is not None:
        success = last_success(state.runs)
    if success is not None:
        gauge(
            "fourdqbo_last_success_timestamp_seconds",
            "When the last sync run that exited 0 ended (Unix time).",
        ).labels(realm).set(success.timestamp())
    if state is not None:
        attention = gauge(
            "fourdqbo_attention_items", "Open items that need a person, by kind.", "kind"
        )
        for kind in dict.fromkeys([*(k.value for k in AttentionKind), *state.attention]):
            attention.labels(realm, kind).set(int(state.attention.get(kind, 0)))
        gauge("fourdqbo_retry_queue_size", "Quotes waiting in the retry queue.").labels(realm).set(
            state.retry_queue_size
        )
    if token is not None:
        gauge(
            "fourdqbo_refresh_token_expiry_timestamp_seconds",
            "When the QBO refresh token stops working (Unix time): run `fourdqbo auth login`"
            " before then.",
        ).labels(realm).set(token.refresh_expires_at.timestamp())
    return registry


def qbo_request_kinds(run: Mapping[str, Any]) -> dict[str, int]:
    """QBO requests of a run summary split into reads and writes.

    FALLBACK until the QBO client counts them apart: a summary whose `requests` carries
    `qbo_read` and `qbo_write` is taken as it is; otherwise the writes are estimated as the
    batch POSTs the report's writes need at least (invoice writes and customers created or
    reactivated, 30 to a batch) and the rest of the QBO requests count as reads.
    """
    requests = run.get("requests") or {}
    if "qbo_read" in requests and "qbo_write" in requests:
        return {"read": int(requests["qbo_read"]), "write": int(requests["qbo_write"])}
    total = int(requests.get("qbo") or 0)
    counts = run.get("counts") or {}
    customers = run.get("customers") or {}
    invoice_writes = sum(int(counts.get(action) or 0) for action in _WRITE_ACTIONS)
    customer_writes = int(customers.get("created") or 0) + int(customers.get("reactivated") or 0)
    writes = math.ceil(invoice_writes / _BATCH_ITEMS) + math.ceil(customer_writes / _BATCH_ITEMS)
    writes = min(writes, total)
    return {"read": total - writes, "write": writes}


def attention_counts(store: Any) -> dict[str, int]:
    """Open items that need a person, per AttentionKind value, every kind present.

    FALLBACK until the state store offers `attention_counts()` / `attention_items()`
    (used as soon as it does): today's `conflicts()` are counted as kind `paid`, the only
    conflict 0.1 keeps.
    """
    counts = {kind.value: 0 for kind in AttentionKind}
    if hasattr(store, "attention_counts"):
        for kind, number in store.attention_counts().items():
            counts[str(kind)] = int(number)
    elif hasattr(store, "attention_items"):
        for item in store.attention_items():
            counts[str(item.kind)] = counts.get(str(item.kind), 0) + 1
    else:
        counts[AttentionKind.PAID.value] = len(store.conflicts())
    return counts


def snapshot_state(store: Any) -> StateSnapshot:
    return StateSnapshot(
        realm_id=str(store.realm_id),
        runs=tuple(store.runs(HISTORY_LOOKBACK)),
        retry_queue_size=len(store.retry_queue()),
        attention=attention_counts(store),
    )


def last_success(runs: Sequence[Mapping[str, Any]]) -> datetime | None:
    """When the newest run of the history that exited 0 ended."""
    for entry in runs:
        if not entry.get("aborted") and entry.get("exit_code") == 0:
            return _instant(entry.get("finished_at")) or _instant(entry.get("started_at"))
    return None


# -- I/O: read what the metrics need, write the file -------------------------------------


def write_run_metrics(
    settings: Settings,
    report: RunReport | None,
    *,
    exit_code: int,
    started_at: datetime,
    run_id: str | None = None,
) -> None:
    """After a `sync run`: `report` when the engine returned one, else None (it raised;
    `run_id` names the run it had started, if any, to find its history entry)."""
    try:
        token = read_token_info(settings)
        state = read_state(settings, token.realm_id if token else None)
        run: RunReport | Mapping[str, Any] | None = report
        if run is None:
            run = _recorded(state, run_id) or {
                "started_at": iso_z(started_at),
                "finished_at": iso_z(utcnow()),
            }
        registry = build_registry(run, state, token, exit_code=exit_code)
        write_textfile(settings.metrics_file, registry)
    except Exception as exc:  # the metrics never fail a run
        log.warning("could not write the metrics file %s: %s", settings.metrics_file, _why(exc))


def write_status_metrics(settings: Settings) -> None:
    """After `status`: the last recorded run, the state store and the token."""
    try:
        token = read_token_info(settings)
        state = read_state(settings, token.realm_id if token else None)
        write_textfile(settings.metrics_file, build_registry(None, state, token))
    except Exception as exc:
        log.warning("could not write the metrics file %s: %s", settings.metrics_file, _why(exc))


def read_token_info(settings: Settings) -> TokenInfo | None:
    """The token file's realm and refresh expiry (no refresh, nothing sent), None when it
    cannot be read."""
    from fourdqbo.errors import FourdqboError
    from fourdqbo.qbo.tokens import TokenStore

    try:
        token = TokenStore(settings).load()
    except FourdqboError:
        return None
    return TokenInfo(realm_id=str(token.realm_id), refresh_expires_at=token.refresh_deadline)


def read_state(settings: Settings, realm_id: str | None) -> StateSnapshot | None:
    """A snapshot of the realm's state store, None when it cannot be read."""
    from fourdqbo.errors import FourdqboError
    from fourdqbo.state import open_state_store

    if not realm_id:
        return None
    try:
        settings.require_state()
        store = open_state_store(settings, realm_id)
        try:
            return snapshot_state(store)
        finally:
            store.close()
    except FourdqboError as exc:
        log.warning("metrics: cannot read the state store: %s", exc)
        return None


def write_textfile(path: Path | None, registry: CollectorRegistry) -> None:
    """Write `registry` to `path` atomically (prometheus_client writes a temporary file
    beside it and renames it), created rw-r--r-- at most whatever the umask says."""
    from prometheus_client import write_to_textfile

    if path is None:
        raise ValueError("METRICS_FILE is not set")
    # The umask is the only way to create write_to_textfile's temporary file with a mode
    # of our choosing before it is renamed: no moment in which the file is world-writable.
    previous = os.umask(0o133)  # returns the umask in force, kept and only tightened
    try:
        os.umask(previous | 0o133)
        write_to_textfile(str(path), registry)
    finally:
        os.umask(previous)


def _summary(run: RunReport | Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(run, RunReport):
        return run
    # The report's own instants: the summary's text has whole seconds only.
    return {**run.summary(), "started_at": run.started_at, "finished_at": run.finished_at}


def _recorded(state: StateSnapshot | None, run_id: str | None) -> Mapping[str, Any] | None:
    if state is None or not run_id:
        return None
    return next((entry for entry in state.runs if entry.get("run_id") == run_id), None)


def _exit_code(summary: Mapping[str, Any]) -> int:
    code = summary.get("exit_code")
    return int(code) if isinstance(code, int) else ABORTED_EXIT_CODE


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
