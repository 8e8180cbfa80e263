"""`fourdqbo sync ...`: run the sync (what cron calls), and look after its state."""

from __future__ import annotations

import contextlib
import gc
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import typer

from fourdqbo.cli.context import settings_of
from fourdqbo.cli.output import (
    Column,
    datetime_option,
    emit_json,
    emit_pairs,
    emit_table,
    info,
    stdout_is_terminal,
)
from fourdqbo.config import Settings
from fourdqbo.errors import FourdqboError, LockHeld

app = typer.Typer(
    help="Sync completed 4D quotes to QBO invoices, and look after the sync's state.",
    no_args_is_help=True,
)


@dataclass
class Connections:
    settings: Settings
    state: Any
    fourd: Any
    qbo: Any
    counter: Any


@contextlib.contextmanager
def connect(
    settings: Settings, *, clients: bool = True, lock_free: bool = False
) -> Iterator[Connections]:
    """Open the state store (and the clients) in the order that gives the right exit code:
    settings (2), token file (2), state store reachable (3), and with `lock_free` the sync
    lock held by another run (75).

    `lock_free` is a look, not the lock: the engine takes it. A run that finds it held
    (cron starting a run while the last one still works) exits before building its HTTP
    clients, the most of its start-up."""
    from fourdqbo.http import RequestCounter
    from fourdqbo.qbo.tokens import TokenStore
    from fourdqbo.state import open_state_store

    if clients:
        settings.require_sync()
    else:
        settings.require_state()
    tokens = TokenStore(settings)
    state = open_state_store(settings, tokens.realm_id)
    try:
        state.ping()
        if lock_free:
            holder = state.lock_holder()
            if holder is not None:
                raise LockHeld.by(holder)
        counter = RequestCounter()
        if not clients:
            yield Connections(settings, state, None, None, counter)
            return
        from fourdqbo.emr.client import FourDClient
        from fourdqbo.qbo.client import QBOClient

        with (
            FourDClient(settings, counter=counter) as fourd,
            QBOClient(settings, tokens, counter=counter) as qbo,
        ):
            yield Connections(settings, state, fourd, qbo, counter)
    finally:
        state.close()


def freeze_start_up() -> None:
    """Leave what start-up made (modules, settings, clients) out of the collector's full
    passes: a run's threads share one interpreter, and a full pass over everything holds
    them all. Measured on a 4,000-quote backfill: passes of up to 65-99 ms, between a
    write's pacing stamp and its leaving, long enough to be counted by QBO in the window
    before (a 429). No collection first: on two busy cores one cost a run 150-220 ms, more
    than all else a run that then finds the lock held does."""
    gc.freeze()


class RichProgress:
    """Live progress of the whole window on a terminal: quotes done of the total, write
    items answered, the measured write rate and an ETA from it.

    The ETA assumes the quotes still to do need as many writes per quote as those done
    so far, at the write rate measured since the first write. The engine's producer
    thread reports too, so every update takes the lock.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        import time

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._clock = clock or time.monotonic
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._lock = threading.Lock()
        self._task: Any = None
        self._phase = "starting"
        self._total: int | None = None
        self._done = 0
        self._writes = 0
        self._first_write: float | None = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        self._task = self._progress.add_task(self._phase, total=None, detail="")
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def window(self, total: int) -> None:
        with self._lock:
            self._total = total
            self._show()

    def phase(self, name: str) -> None:
        with self._lock:
            self._phase = name
            self._show()

    def quotes_done(self, count: int) -> None:
        with self._lock:
            self._done += count
            self._show()

    def wrote(self, count: int) -> None:
        with self._lock:
            if self._first_write is None:
                self._first_write = self._clock()
            self._writes += count
            self._show()

    def detail(self) -> str:
        """The text after the bar: writes, rate and ETA (what a person waits for)."""
        parts = [f"writes {self._writes}"]
        rate = self.write_rate()
        if rate:
            parts.append(f"{rate:.1f}/s")
        eta = self.eta_seconds()
        if eta is not None:
            minutes, seconds = divmod(int(eta + 0.5), 60)
            parts.append(f"ETA {minutes}:{seconds:02d}")
        return "  ".join(parts)

    def write_rate(self) -> float | None:
        if self._first_write is None or self._writes < 2:
            return None
        elapsed = self._clock() - self._first_write
        return self._writes / elapsed if elapsed > 0 else None

    def eta_seconds(self) -> float | None:
        rate = self.write_rate()
        if rate is None or not self._done or self._total is None:
            return None
        remaining = max(self._total - self._done, 0)
        return remaining * (self._writes / self._done) / rate

    def _show(self) -> None:
        if self._task is None:
            return
        label = "quotes" if self._done else self._phase
        self._progress.update(
            self._task,
            description=label,
            total=self._total,
            completed=self._done,
            detail=self.detail(),
        )


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT: finish the batch in flight, record, release the lock, exit non-zero."""

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop now
        stop.set()
        info("stopping after the batch in flight (signal again to stop at once)")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@app.command("run")
def run(
    ctx: typer.Context,
    since: str | None = typer.Option(
        None, "--since", help="Start the window here (ISO date-time) instead of the watermark."
    ),
    quote: list[str] = typer.Option(
        [], "--quote", help="Sync only this quote number (repeatable); the watermark stays."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and report; write nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="For cron: print nothing on success, a summary on failure."
    ),
) -> None:
    """Sync 4D quotes changed since the watermark (plus the retry queue, the open items and
    the invoices a person changed in QBO) to QBO invoices.

    Exit 0 done, nothing new needs a person; 1 something new does (a conflict, a first
    failure, a quote that gave up) or a reminder of what is open; 2 usage/config;
    3 upstream or state store unreachable; 75 another run holds the lock. With --quiet
    only what is new is printed, so cron mails only then.

    Example: fourdqbo sync run --quiet        (cron)
    Example: fourdqbo sync run --dry-run --since 2025-03-01
    """
    since_value = datetime_option(since, "--since") if since is not None else None
    quotes = tuple(q.strip() for q in quote)
    if any(not q for q in quotes):
        from fourdqbo.errors import ConfigError

        raise ConfigError("--quote: empty quote number")
    run_engine(ctx, since=since_value, quotes=quotes, dry_run=dry_run, as_json=as_json, quiet=quiet)


def run_engine(
    ctx: typer.Context,
    *,
    since: Any = None,
    quotes: tuple[str, ...] = (),
    dry_run: bool = False,
    apply: bool = False,
    allow_paid: bool = False,
    as_json: bool = False,
    quiet: bool = False,
    show: Callable[[Any], None] | None = None,
) -> None:
    """One engine run as `sync run` and `sync apply` make it: progress, signals, health
    check, metrics, the report; exits with the run's code.

    `show` prints the report instead of the run's table (`sync apply`: one line a quote).
    The health check is pinged by the runs cron makes only: a dry run and `sync apply` are
    a person's doing, and a refused apply must not look like a failing cron job."""
    from fourdqbo.sync.engine import RunOptions, SilentProgress, SyncEngine
    from fourdqbo.sync.healthcheck import ping

    settings = settings_of(ctx)
    options = RunOptions(
        since=since, quotes=quotes, dry_run=dry_run, apply=apply, allow_paid=allow_paid
    )
    show_progress = stdout_is_terminal() and sys.stderr.isatty() and not (quiet or as_json)
    stop = threading.Event()
    healthcheck = settings.healthcheck_url if not (dry_run or apply) else ""
    progress: Any = RichProgress() if show_progress else SilentProgress()
    metrics = _run_metrics(settings, dry_run)
    try:
        with connect(settings, lock_free=not dry_run) as conn:
            freeze_start_up()
            engine = SyncEngine(settings, conn.fourd, conn.qbo, conn.state, progress, stop)
            engine.on_start = lambda: ping(healthcheck, "start")
            with _stop_on_signals(stop), progress if show_progress else contextlib.nullcontext():
                report = engine.run(options)
    except LockHeld:
        raise  # this run did nothing: nothing to report to the monitor
    except BaseException as exc:
        ping(healthcheck, "fail")  # including a broken setup (token, Redis): a person is needed
        metrics(None, exc)
        raise
    ping(healthcheck, "success" if report.exit_code == 0 else "fail")
    metrics(report, None)
    if as_json:
        emit_json(report.as_dict())
    elif show is not None:
        show(report)
    elif not quiet:
        _print_report(report, brief=False)
    elif report.exit_code:
        _print_news(report)
    raise typer.Exit(report.exit_code)


def _print_news(report: Any) -> None:
    """What `--quiet` prints when the run's exit code is 1: only what is new (or, on a
    reminder, everything still open), one line each, and where to look."""
    lines = report.to_report or [
        f"quote {o.quote}: {o.action}: {o.error or o.reason}"
        for o in report.outcomes.values()
        if o.action in ("failed", "conflict")
    ]
    attention = report.attention or {}
    new, still_open = attention.get("new", 0), attention.get("open", 0)
    if new or not still_open:
        info(f"run {report.run_id}: {new} new, {still_open} open needing a person")
    else:
        # Nothing new and yet exit 1: the reminder (every SYNC_REMIND_HOURS) of what is open.
        info(f"run {report.run_id}: reminder: {still_open} still open needing a person")
    for line in lines:
        info(f"  {line}")
    info("  see `fourdqbo sync conflicts` for what differs and the command that settles it")


def _run_metrics(settings: Settings, dry_run: bool) -> Any:
    """What writes METRICS_FILE once this run ended: `(report, None)` or `(None, error)`.

    A dry run writes none (like the health check and the run history, it is a person's
    look, not a sync), and without METRICS_FILE prometheus_client is never imported.
    """
    if settings.metrics_file is None or dry_run:
        return lambda report, error: None
    from fourdqbo.log import RunContext
    from fourdqbo.timefmt import utcnow

    started_at, previous_run = utcnow(), RunContext.run_id

    def write(report: Any, error: BaseException | None) -> None:
        from fourdqbo.metrics import write_run_metrics

        if report is not None:
            code = report.exit_code
        elif isinstance(error, FourdqboError):
            code = error.exit_code
        else:
            code = 130 if isinstance(error, KeyboardInterrupt) else 1
        run_id = RunContext.run_id if RunContext.run_id != previous_run else None
        write_run_metrics(settings, report, exit_code=code, started_at=started_at, run_id=run_id)

    return write


def _print_report(report: Any, *, brief: bool) -> None:
    document = report.as_dict()
    counts = document["counts"]
    if not brief:
        interesting = [q for q in document["quotes"] if q["action"] != "unchanged"]
        emit_table(
            [
                Column("quote"),
                Column("version", "right"),
                Column("status"),
                Column("action"),
                Column("invoice"),
                Column("customer"),
                Column("why"),
            ],
            [
                (
                    q["quote"],
                    q["version"],
                    q["status"],
                    q["action"],
                    q["invoice_id"],
                    q["customer_id"],
                    q["error"] or q["reason"],
                )
                for q in interesting
            ],
            title=f"sync run {document['run_id']}" + (" (dry run)" if document["dry_run"] else ""),
            empty="no changes to write",
        )
    summary = ", ".join(f"{k} {v}" for k, v in counts.items() if v or k == "seen")
    window = document["window"]
    where = f" window {window['from']} .. {window['to']}" if window["from"] else ""
    line = f"run {document['run_id']}:{where}: {summary}"
    if document["customers"]["created"] or document["customers"]["reactivated"]:
        c = document["customers"]
        line += f"; customers created {c['created']}, reactivated {c['reactivated']}"
    line += f"; requests 4D {document['requests']['fourd']}, QBO {document['requests']['qbo']}"
    if brief:
        info(line)
        for q in document["quotes"]:
            if q["action"] in ("failed", "conflict"):
                info(f"  quote {q['quote']}: {q['action']}: {q['error'] or q['reason']}")
    else:
        print(line)
        attention = document.get("attention") or {}
        if attention.get("open") or attention.get("new"):
            print(
                f"needing a person: {attention.get('new', 0)} new, {attention.get('open', 0)} "
                "open (`fourdqbo sync conflicts` shows what differs)"
            )
        for notice in document.get("notices") or []:
            print(f"note: {notice}")


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    runs: int = typer.Option(5, "--runs", min=0, max=100, help="How many recent runs to list."),
) -> None:
    """Watermark, lock holder, retry queue, what needs a person and the last runs.

    Example: fourdqbo sync status --json
    """
    from fourdqbo.cli.attention import item_document
    from fourdqbo.timefmt import iso_z

    settings = settings_of(ctx)
    with connect(settings, clients=False) as conn:
        state = conn.state
        watermark = state.watermark()
        holder = state.lock_holder()
        queue = state.retry_queue()
        items = state.attention_items()
        cursor = state.cdc_cursor()
        recent = state.runs(runs)
    document = {
        "realm_id": state.realm_id,
        "backend": settings.state_backend,
        "watermark": iso_z(watermark) if watermark else None,
        "lock": None
        if holder is None
        else {
            "run_id": holder.run_id,
            "host": holder.host,
            "pid": holder.pid,
            "since": iso_z(holder.since),
            "expires_at": iso_z(holder.expires_at) if holder.expires_at else None,
        },
        "retry_queue": [
            {
                "quote": e.quote,
                "attempts": e.attempts,
                "error": e.error,
                "first_failed_at": iso_z(e.first_failed_at),
                "last_failed_at": iso_z(e.last_failed_at),
            }
            for e in queue
        ],
        # Every item needing a person (`sync conflicts` shows them in full).
        "conflicts": [item_document(item) for item in items],
        "cdc_cursor": iso_z(cursor) if cursor else None,
        "runs": recent,
    }
    if as_json:
        emit_json(document)
        return
    lock = document["lock"]
    emit_pairs(
        [
            ("state", f"{settings.state_backend} (realm {state.realm_id})"),
            ("watermark", document["watermark"] or "(none yet)"),
            (
                "lock",
                "free"
                if lock is None
                else f"held by {lock['host']} pid {lock['pid']} since {lock['since']}"
                f" (run {lock['run_id']})",
            ),
            ("retry queue", len(queue)),
            ("needs a person", len(items)),
            ("QBO changes read up to", document["cdc_cursor"] or "(not yet)"),
        ],
        title="sync state",
    )
    if queue:
        emit_table(
            ["quote", Column("attempts", "right"), "last failed", "error"],
            [
                (e["quote"], e["attempts"], e["last_failed_at"], e["error"])
                for e in document["retry_queue"]
            ],
            title="retry queue",
        )
    if items:
        emit_table(
            ["quote", "kind", "invoice", "detected", "reason"],
            [
                (c["quote"], c["kind"], c["invoice_id"], c["detected_at"], c["reason"])
                for c in document["conflicts"]
            ],
            title="needs a person (`fourdqbo sync conflicts` for what differs)",
        )
    if recent:
        emit_table(
            [
                "run",
                "started",
                "seen",
                "created",
                "updated",
                "deleted",
                "conflicts",
                "failed",
                "result",
            ],
            [
                (
                    r.get("run_id"),
                    r.get("started_at"),
                    r["counts"].get("seen"),
                    r["counts"].get("created"),
                    r["counts"].get("updated"),
                    r["counts"].get("deleted"),
                    r["counts"].get("conflicts"),
                    r["counts"].get("failed"),
                    "aborted: " + r["aborted"]
                    if r.get("aborted")
                    else f"exit {r.get('exit_code')}",
                )
                for r in recent
            ],
            title="last runs",
        )


@app.command("unlock")
def unlock(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Release a lock left by a crashed run (a crashed run's lock also expires by itself).

    Example: fourdqbo sync unlock --yes
    """
    from fourdqbo.errors import StateStoreError

    settings = settings_of(ctx)
    with connect(settings, clients=False) as conn:
        try:
            holder = conn.state.lock_holder()
        except StateStoreError as exc:
            # An unreadable lock record: removing it is exactly what unlock is for (a
            # store that stopped answering fails again, with its own message, below).
            info(str(exc))
            holder = None
            unreadable = True
        else:
            unreadable = False
        if holder is None and not unreadable:
            info("the lock is free; nothing to do")
            return
        if holder is not None:
            info(
                f"lock held by {holder.host} pid {holder.pid} "
                f"since {holder.since:%Y-%m-%d %H:%M:%SZ}"
            )
        if not yes and not typer.confirm("Release it? Only do this if that run is dead"):
            raise typer.Exit(1)
        conn.state.break_lock()
        still = conn.state.lock_holder()
        if still is not None and holder is not None and still.token == holder.token:
            # The file backend's OS lock cannot be taken from a live process.
            raise LockHeld(
                f"the lock is still held: its process (pid {holder.pid} on {holder.host}) "
                "is alive; stop that process to free it"
            )
        info("lock released")


@app.command("reset")
def reset(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", help="The new watermark (ISO date-time)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Move the watermark (backwards to re-sync a period; the sync is idempotent).

    Example: fourdqbo sync reset --to 2025-03-01T00:00:00Z --yes
    """
    from fourdqbo.timefmt import iso_z

    when = datetime_option(to, "--to")
    settings = settings_of(ctx)
    with connect(settings, clients=False) as conn:
        current = conn.state.watermark()
        info(f"watermark {iso_z(current) if current else '(none)'} -> {iso_z(when)}")
        if not yes and not typer.confirm("Move it?"):
            raise typer.Exit(1)
        conn.state.reset_watermark(when)
        info("watermark moved")
