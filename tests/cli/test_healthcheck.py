"""HEALTHCHECK_URL: `/start` once the run holds the lock, the bare URL on success, `/fail`
on any other result but 75; a monitor that is down never fails the run."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.base import LoopbackServer, SimRequest, SimResponse
from fourdqbo.state import open_state_store

pytestmark = pytest.mark.integration


class Monitor:
    """A healthchecks.io stand-in that records the pings it gets."""

    def __init__(self, status: int = 200) -> None:
        self.pings: list[str] = []
        self.status = status
        self._lock = threading.Lock()

    def handle(self, request: SimRequest) -> SimResponse:
        with self._lock:
            self.pings.append("/" + request.path if request.path else "")
        return SimResponse(self.status, "OK", content_type="text/plain")


@pytest.fixture
def monitor() -> Iterator[tuple[Monitor, str]]:
    recorder = Monitor()
    with LoopbackServer({"/ping/check-uuid": recorder}) as server:
        yield recorder, f"{server.url}/ping/check-uuid"


@pytest.fixture
def env(sandbox_redis_env: dict[str, str]) -> dict[str, str]:
    return {
        **sandbox_redis_env,
        "QBO_RATE_WINDOW_SECONDS": "1",
    }


def run(env: dict[str, str], *args: str) -> int:
    return CliRunner().invoke(app, ["sync", "run", "--quiet", *args], env=env).exit_code


def test_success_pings_start_then_the_bare_url(
    sandbox: Sandbox, env: dict[str, str], monitor: tuple[Monitor, str]
) -> None:
    recorder, url = monitor
    # A company without the seed's paid conflict: the run can end clean.
    invoice = sandbox.company.invoice(sandbox.facts.conflict_invoice_id)
    sandbox.company.apply_payment(invoice["Id"], invoice["Balance"] - invoice["TotalAmt"])
    assert run({**env, "HEALTHCHECK_URL": url}) == 0
    assert recorder.pings == ["/start", ""]


def test_a_conflict_pings_fail(env: dict[str, str], monitor: tuple[Monitor, str]) -> None:
    recorder, url = monitor
    assert run({**env, "HEALTHCHECK_URL": url}) == 1
    assert recorder.pings == ["/start", "/fail"]


def test_an_aborted_run_pings_fail(
    sandbox: Sandbox, env: dict[str, str], monitor: tuple[Monitor, str]
) -> None:
    recorder, url = monitor
    sandbox.knobs.fourd.unauthorized = True
    assert run({**env, "HEALTHCHECK_URL": url}) == 3
    assert recorder.pings == ["/start", "/fail"]


def test_a_broken_setup_pings_fail(
    env: dict[str, str], monitor: tuple[Monitor, str], unreachable_redis_url: str
) -> None:
    recorder, url = monitor
    assert run({**env, "HEALTHCHECK_URL": url, "REDIS_URL": unreachable_redis_url}) == 3
    assert recorder.pings == ["/fail"]


def test_a_run_that_finds_the_lock_taken_pings_nothing(
    env: dict[str, str], monitor: tuple[Monitor, str]
) -> None:
    recorder, url = monitor
    settings = load_settings(env, dotenv_path=None)
    store = open_state_store(settings, settings_realm(env))
    holder = store.acquire_lock("someone-else", ttl_seconds=30)
    assert holder is not None
    try:
        assert run({**env, "HEALTHCHECK_URL": url}) == 75
    finally:
        holder.release()
        store.close()
    assert recorder.pings == []


def test_dry_run_pings_nothing(env: dict[str, str], monitor: tuple[Monitor, str]) -> None:
    recorder, url = monitor
    assert run({**env, "HEALTHCHECK_URL": url}, "--dry-run") == 1
    assert recorder.pings == []


def test_a_monitor_that_is_down_never_fails_the_run(
    sandbox: Sandbox, env: dict[str, str], unreachable_redis_url: str
) -> None:
    port = unreachable_redis_url.rsplit(":", 1)[1].split("/")[0]
    assert run({**env, "HEALTHCHECK_URL": f"http://127.0.0.1:{port}/nobody"}) == 1
    erroring = Monitor(status=500)
    with LoopbackServer({"/hc": erroring}) as server:
        # The seed's conflict is known by now: a quiet run, and a success ping.
        assert run({**env, "HEALTHCHECK_URL": f"{server.url}/hc"}) == 0
    assert erroring.pings == ["/start", ""]
    assert len(sandbox.company.invoices()) > 2


def settings_realm(env: dict[str, str]) -> str:
    from fourdqbo.qbo.tokens import TokenStore

    return TokenStore(load_settings(env, dotenv_path=None)).realm_id
