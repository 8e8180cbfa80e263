"""The Sandbox object: mounts, the settings it hands out, and its token file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx

from fourdqbo.config import load_settings
from fourdqbo.qbo.tokens import Token
from fourdqbo.sandbox import QboLimits, Sandbox
from fourdqbo.timefmt import parse_cli_datetime


def test_env_is_complete_valid_settings(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    settings = load_settings(sandbox_env, dotenv_path=None)
    settings.require_fourd()
    settings.require_qbo()
    assert settings.fourd_base_url == sandbox.fourd_base_url
    assert settings.qbo_api_base_url == sandbox.qbo_api_base_url
    assert settings.qbo_environment == "sandbox"
    assert settings.sync_timezone == "America/New_York"
    assert settings.sync_initial_from is not None
    assert all(settings.sync_initial_from < q.modified_at for q in sandbox.practice.quotes())


def test_env_limits_match_the_sandbox(tmp_path: Path) -> None:
    limits = QboLimits(
        requests_per_window=50, batches_per_window=4, in_flight=3, window_seconds=2.5
    )
    with Sandbox(seed=2, quotes=3, limits=limits) as running:
        env = running.env(tmp_path / "data")
    assert env["QBO_MAX_REQUESTS_PER_MINUTE"] == "50"
    assert env["QBO_MAX_BATCHES_PER_MINUTE"] == "4"
    assert env["QBO_MAX_IN_FLIGHT"] == "3"
    assert env["QBO_RATE_WINDOW_SECONDS"] == "2.5"


def test_token_file_is_private_and_its_access_token_works(
    sandbox: Sandbox, sandbox_env: dict[str, str]
) -> None:
    path = Path(sandbox_env["QBO_TOKEN_FILE"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    token = Token.from_document(document)
    assert token.realm_id == sandbox.realm_id
    assert parse_cli_datetime(document["expires_at"]) > sandbox.clock.now()
    assert sandbox.oauth.check_access(token.access_token) == "ok"
    response = httpx.get(
        f"{sandbox.qbo_api_base_url}/v3/company/{sandbox.realm_id}/companyinfo/{sandbox.realm_id}",
        params={"minorversion": "75"},
        headers={"Authorization": f"Bearer {token.access_token}", "Accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.json()["CompanyInfo"]["CompanyName"]


def test_oauth_is_mounted_with_its_public_url(sandbox: Sandbox) -> None:
    discovery = httpx.get(sandbox.discovery_url).json()
    assert discovery["token_endpoint"].startswith(sandbox.url + "/oauth/")


def test_unknown_paths_are_404(sandbox: Sandbox) -> None:
    assert httpx.get(sandbox.url + "/nowhere").status_code == 404


def test_a_fixed_port_is_honoured(tmp_path: Path) -> None:
    probe = Sandbox(seed=1, quotes=2)
    port = probe.port
    assert probe.url == f"http://127.0.0.1:{port}"
    probe.start()
    probe.stop()
    with Sandbox(seed=1, quotes=2, port=port) as again:
        assert again.url.endswith(f":{port}")


def test_a_record_says_when_its_answer_left_after_the_latency_added(sandbox: Sandbox) -> None:
    sandbox.knobs.fourd.latency_ms = 60
    sandbox.clear_requests()
    httpx.get(sandbox.fourd_base_url + "/quotes/list", timeout=5)
    (record,) = sandbox.requests
    assert record.answered is not None
    assert (record.answered - record.at).total_seconds() >= 0.06
