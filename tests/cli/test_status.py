"""`fourdqbo status`: health at a glance; exit 0 healthy, 1 not; --check calls 4D and QBO."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.qbo.tokens import Token, TokenStore
from fourdqbo.sandbox import Sandbox
from fourdqbo.timefmt import utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def env(sandbox_redis_env: dict[str, str]) -> dict[str, str]:
    return {
        **sandbox_redis_env,
        "HTTP_TIMEOUT_SECONDS": "2",
        "QBO_RATE_WINDOW_SECONDS": "1",  # a first sync's 3 batches without 1.5 s pacing each
    }


def status(env: dict[str, str], *args: str, **overrides: str) -> Result:
    return CliRunner().invoke(app, ["status", *args], env={**env, **overrides})


def checks_of(result: Result) -> dict[str, dict[str, Any]]:
    document = json.loads(result.stdout)
    assert set(document) == {"healthy", "checks"}
    assert document["healthy"] is (result.exit_code == 0)
    return {c["name"]: c for c in document["checks"]}


def test_fresh_installation_is_healthy_with_warnings(env: dict[str, str], sandbox: Sandbox) -> None:
    result = status(env, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    checks = checks_of(result)
    assert list(checks) == [
        "config",
        "qbo token",
        "state store",
        "lock",
        "watermark",
        "last run",
        "retry queue",
        "needs a person",
    ]
    assert checks["config"]["result"] == "ok"
    assert checks["config"]["detail"] == "QBO sandbox, state redis"
    assert checks["qbo token"]["result"] == "ok"
    assert sandbox.realm_id in checks["qbo token"]["detail"]
    assert checks["lock"] == {"name": "lock", "result": "ok", "detail": "free"}
    assert checks["watermark"]["result"] == "warn"
    assert checks["last run"]["result"] == "warn"
    assert sandbox.requests == []  # without --check nothing is called


def test_healthy_after_a_sync(env: dict[str, str], sandbox: Sandbox) -> None:
    run = CliRunner().invoke(app, ["sync", "run", "--quiet"], env=env)
    assert run.exit_code == 1, run.output  # the seed's paid invoice: a conflict to look at
    result = status(env, "--json")
    # Nothing is broken, but a person is needed: exit 1 for as long as the item is open,
    # so a monitor keeps seeing it.
    assert result.exit_code == 1, result.output
    checks = checks_of(result)
    assert all(c["result"] != "fail" for c in checks.values())
    assert checks["watermark"]["result"] == "ok"
    assert checks["watermark"]["detail"].endswith("Z")
    assert checks["last run"]["result"] == "warn"  # exit 1: someone should look
    assert "conflicts 1" in checks["last run"]["detail"]
    assert checks["needs a person"]["result"] == "needs a person"
    assert checks["needs a person"]["detail"].startswith("1 open (1 paid)")
    human = status(env)
    assert human.exit_code == 1
    assert human.stdout.startswith("fourdqbo status: needs a person\n")
    assert "watermark" in human.stdout


def test_healthy_again_once_the_item_is_accepted(env: dict[str, str], sandbox: Sandbox) -> None:
    CliRunner().invoke(app, ["sync", "run", "--quiet"], env=env)
    accepted = CliRunner().invoke(
        app, ["sync", "accept", sandbox.facts.conflict_quote, "--yes"], env=env
    )
    assert accepted.exit_code == 0, accepted.output
    result = status(env, "--json")
    assert result.exit_code == 0, result.output
    assert checks_of(result)["needs a person"]["detail"] == "nothing open"


def test_aborted_last_run_is_not_healthy(env: dict[str, str], sandbox: Sandbox) -> None:
    sandbox.knobs.fourd.unauthorized = True
    run = CliRunner().invoke(app, ["sync", "run", "--quiet"], env=env)
    assert run.exit_code == 3
    result = status(env, "--json")
    assert result.exit_code == 1
    last = checks_of(result)["last run"]
    assert last["result"] == "fail"
    assert "aborted" in last["detail"]


def test_redis_down_is_not_healthy(env: dict[str, str], unreachable_redis_url: str) -> None:
    result = status(env, "--json", REDIS_URL=unreachable_redis_url)
    assert result.exit_code == 1
    checks = checks_of(result)
    assert checks["state store"]["result"] == "fail"
    assert "unreachable" in checks["state store"]["detail"]
    assert "lock" not in checks  # nothing read from a store that is not there
    human = status(env, REDIS_URL=unreachable_redis_url)
    assert human.exit_code == 1
    assert human.stdout.startswith("fourdqbo status: NOT healthy\n")
    assert "Traceback" not in human.output


def test_missing_token_is_not_healthy(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "none" / "qbo_token.json"
    result = status(env, "--json", QBO_TOKEN_FILE=str(missing))
    assert result.exit_code == 1
    checks = checks_of(result)
    assert checks["qbo token"]["result"] == "fail"
    assert "auth login" in checks["qbo token"]["detail"]
    assert "state store" not in checks  # the state is per realm, and the realm is unknown


def test_missing_configuration_is_not_healthy(env: dict[str, str]) -> None:
    result = status(env, "--json", FOURD_CLIENT_SECRET="")
    assert result.exit_code == 1
    config = checks_of(result)["config"]
    assert config["result"] == "fail"
    assert "FOURD_CLIENT_SECRET" in config["detail"]


def _save_token(env: dict[str, str], refresh_in: timedelta) -> None:
    settings = load_settings(env, dotenv_path=None)
    store = TokenStore(settings)
    current = store.load()
    now = utcnow()
    store.save(
        Token(
            access_token=current.access_token,
            refresh_token=current.refresh_token,
            realm_id=current.realm_id,
            expires_at=now + timedelta(hours=1),
            refresh_expires_at=now + refresh_in,
        )
    )


def test_refresh_token_expiring_soon_is_a_warning(env: dict[str, str]) -> None:
    _save_token(env, timedelta(days=10))
    result = status(env, "--json")
    assert result.exit_code == 0
    token = checks_of(result)["qbo token"]
    assert token["result"] == "warn"
    assert "auth login" in token["detail"]


def test_expired_refresh_token_is_not_healthy(env: dict[str, str]) -> None:
    _save_token(env, timedelta(seconds=-1))
    result = status(env, "--json")
    assert result.exit_code == 1
    token = checks_of(result)["qbo token"]
    assert token == {
        "name": "qbo token",
        "result": "fail",
        "detail": "refresh token expired: run `fourdqbo auth login`",
    }


def test_check_calls_4d_and_qbo(env: dict[str, str], sandbox: Sandbox) -> None:
    result = status(env, "--check", "--json")
    assert result.exit_code == 0, result.output
    checks = checks_of(result)
    assert checks["4D API"] == {"name": "4D API", "result": "ok", "detail": "answered"}
    assert checks["QBO API"] == {"name": "QBO API", "result": "ok", "detail": "answered"}
    called = {(r.service, r.path.rsplit("/", 1)[-1]) for r in sandbox.requests}
    assert ("fourd", "list") in called
    assert ("qbo", "query") in called
    assert all(not r.is_write for r in sandbox.requests)  # a health check writes nothing


def test_check_reports_an_upstream_that_refuses(env: dict[str, str], sandbox: Sandbox) -> None:
    sandbox.knobs.fourd.unauthorized = True
    result = status(env, "--check", "--json")
    assert result.exit_code == 1
    checks = checks_of(result)
    assert checks["4D API"]["result"] == "fail"
    assert checks["QBO API"]["result"] == "ok"  # one failure does not hide the other
