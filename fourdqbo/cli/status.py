"""`fourdqbo status`: health of the installation at a glance, for people and monitors.

Checks configuration, the QBO token, the state store (lock, watermark, last run, retry
queue, conflicts) and, with --check, that 4D and QBO answer. Exit 0 healthy, 1 not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import typer

from fourdqbo.cli.context import settings_of
from fourdqbo.cli.output import Column, emit_json, emit_table
from fourdqbo.errors import FourdqboError

OK, WARN, FAIL = "ok", "warn", "fail"
NEEDS = "needs a person"  # not broken, but exit 1 so a monitor keeps seeing it
REFRESH_WARNING = timedelta(days=30)


@dataclass
class Check:
    name: str
    result: str
    detail: str


def status(
    ctx: typer.Context,
    check: bool = typer.Option(False, "--check", help="Also call 4D and QBO."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Health at a glance: config, state store, lock, watermark, last run, token expiry.

    Exit 0 healthy, 1 not, or while anything needs a person (warnings do not count).

    Example: fourdqbo status --check
    """
    settings = settings_of(ctx)
    checks: list[Check] = []
    _config(settings, checks)
    realm = _token(settings, checks)
    if realm:
        _state(settings, realm, checks)
    if check:
        _upstreams(settings, checks)
    healthy = all(c.result not in (FAIL, NEEDS) for c in checks)
    needs_person = any(c.result == NEEDS for c in checks)
    if settings.metrics_file is not None:
        from fourdqbo.metrics import write_status_metrics

        write_status_metrics(settings)
    if as_json:
        emit_json(
            {
                "healthy": healthy,
                "checks": [
                    {"name": c.name, "result": c.result, "detail": c.detail} for c in checks
                ],
            }
        )
    else:
        emit_table(
            [Column("check"), Column("result"), Column("detail")],
            [(c.name, c.result, c.detail) for c in checks],
            title="fourdqbo status: "
            + (
                "healthy"
                if healthy
                else "needs a person"
                if needs_person and all(c.result != FAIL for c in checks)
                else "NOT healthy"
            ),
        )
    raise typer.Exit(0 if healthy else 1)


def _attempt(checks: list[Check], name: str, probe: Any) -> Any:
    try:
        return probe()
    except FourdqboError as exc:
        checks.append(Check(name, FAIL, str(exc)))
        return None


def _config(settings: Any, checks: list[Check]) -> None:
    if _attempt(checks, "config", lambda: settings.require_sync() or True):
        checks.append(
            Check("config", OK, f"QBO {settings.qbo_environment}, state {settings.state_backend}")
        )


def _token(settings: Any, checks: list[Check]) -> str | None:
    from fourdqbo.qbo.tokens import TokenStore
    from fourdqbo.timefmt import iso_z, utcnow

    token = _attempt(checks, "qbo token", lambda: TokenStore(settings).load())
    if token is None:
        return None
    now = utcnow()
    expiries = [token.refresh_expires_at, token.refresh_hard_expires_at]
    soonest = min((e for e in expiries if e is not None), default=None)
    if soonest is not None and soonest <= now:
        checks.append(Check("qbo token", FAIL, "refresh token expired: run `fourdqbo auth login`"))
    elif soonest is not None and soonest - now < REFRESH_WARNING:
        checks.append(
            Check(
                "qbo token",
                WARN,
                f"refresh token expires {iso_z(soonest)}: run `fourdqbo auth login` before then",
            )
        )
    else:
        until = f"refresh token valid until {iso_z(soonest)}" if soonest else "refresh token"
        checks.append(Check("qbo token", OK, f"realm {token.realm_id}, {until}"))
    return str(token.realm_id)


def _state(settings: Any, realm: str, checks: list[Check]) -> None:
    from fourdqbo.state import open_state_store
    from fourdqbo.timefmt import iso_z

    def probe() -> Any:
        store = open_state_store(settings, realm)
        store.ping()
        return store

    store = _attempt(checks, "state store", probe)
    if store is None:
        return
    try:
        checks.append(Check("state store", OK, settings.state_backend))
        holder = store.lock_holder()
        checks.append(
            Check("lock", OK, "free")
            if holder is None
            else Check(
                "lock", OK, f"held by {holder.host} pid {holder.pid} since {iso_z(holder.since)}"
            )
        )
        watermark = store.watermark()
        checks.append(
            Check("watermark", OK, iso_z(watermark))
            if watermark
            else Check(
                "watermark", WARN, "none yet: the first run needs --since or SYNC_INITIAL_FROM"
            )
        )
        runs = store.runs(1)
        if not runs:
            checks.append(Check("last run", WARN, "no run recorded yet"))
        else:
            last = runs[0]
            if last.get("aborted"):
                checks.append(
                    Check("last run", FAIL, f"{last.get('started_at')} aborted: {last['aborted']}")
                )
            else:
                counts = last.get("counts", {})
                detail = (
                    f"{last.get('started_at')}: seen {counts.get('seen', 0)}, "
                    f"failed {counts.get('failed', 0)}, conflicts {counts.get('conflicts', 0)}"
                )
                checks.append(Check("last run", WARN if last.get("exit_code") else OK, detail))
        queue = store.retry_queue()
        checks.append(Check("retry queue", WARN if queue else OK, f"{len(queue)} quotes"))
        counts = {kind: n for kind, n in store.attention_counts().items() if n}
        open_items = sum(counts.values())
        checks.append(
            Check(
                "needs a person",
                NEEDS if open_items else OK,
                f"{open_items} open ("
                + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
                + "): `fourdqbo sync conflicts`"
                if open_items
                else "nothing open",
            )
        )
    except FourdqboError as exc:
        checks.append(Check("state store", FAIL, str(exc)))
    finally:
        store.close()


def _upstreams(settings: Any, checks: list[Check]) -> None:
    from fourdqbo.emr.client import FourDClient
    from fourdqbo.qbo.client import QBOClient
    from fourdqbo.qbo.tokens import TokenStore
    from fourdqbo.timefmt import utcnow

    def fourd() -> None:
        with FourDClient(settings) as client:
            client.list_quotes(utcnow())

    def qbo() -> None:
        with QBOClient(settings, TokenStore(settings)) as client:
            client.query("SELECT * FROM Item MAXRESULTS 1")

    for name, probe in (("4D API", fourd), ("QBO API", qbo)):
        if _attempt(checks, name, lambda p=probe: p() or True):
            checks.append(Check(name, OK, "answered"))
