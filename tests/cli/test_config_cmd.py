"""`fourdqbo config show`: effective settings, secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fourdqbo.cli.app import app

SECRETS = {
    "FOURD_CLIENT_SECRET": "fd-secret-7Q2vX9pL",
    "FOURD_SUBSCRIPTION_KEY": "fd-subkey-Wm4Rt8Zs",
    "QBO_CLIENT_SECRET": "qbo-secret-Hn3Kd6Yb",
}
REDIS_PASSWORD = "redis-pw-Jc5Tf1Ua"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def assert_no_secret(text: str) -> None:
    for secret in [*SECRETS.values(), REDIS_PASSWORD]:
        assert secret not in text
        # Not even a recognisable part of it.
        assert secret[-6:] not in text
        assert secret[:8] not in text


def test_config_show_json_parses_and_masks(runner: CliRunner) -> None:
    env = {
        **SECRETS,
        "FOURD_CLIENT_ID": "fd-client",
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@cache:6379/0",
    }
    result = runner.invoke(app, ["config", "show", "--json"], env=env)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"settings", "problems"}
    shown = document["settings"]
    for name in SECRETS:
        assert shown[name] == "(set)"
    assert shown["QBO_CLIENT_ID"] == ""
    assert shown["FOURD_CLIENT_ID"] == "fd-client"
    assert shown["REDIS_URL"] == "redis://:***@cache:6379/0"
    assert shown["QBO_API_BASE_URL"] == "https://quickbooks.api.intuit.com"
    assert document["problems"] == {}
    assert_no_secret(result.output)
    assert result.stderr == ""


def test_config_show_table_masks(runner: CliRunner) -> None:
    Path(".env").write_text(
        "".join(f"{k}={v}\n" for k, v in SECRETS.items())
        + f"REDIS_URL=redis://default:{REDIS_PASSWORD}@cache:6379/0\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "FOURD_CLIENT_SECRET" in result.stdout
    assert "(set)" in result.stdout
    assert "redis://default:***@cache:6379/0" in result.stdout
    assert_no_secret(result.output)


def test_config_show_reads_legacy_names_from_dotenv(runner: CliRunner) -> None:
    Path(".env").write_text(
        "4D_CLIENT_ID=legacy-client\n4D_CLIENT_SECRET=legacy-secret-Ab12Cd34\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["config", "show", "--json"])
    shown = json.loads(result.stdout)["settings"]
    assert shown["FOURD_CLIENT_ID"] == "legacy-client"
    assert shown["FOURD_CLIENT_SECRET"] == "(set)"
    assert "legacy-secret" not in result.output


def test_config_show_lists_problems(runner: CliRunner) -> None:
    env = {"QBO_MAX_IN_FLIGHT": "lots", "FOURD_BASE_URL": "http://example.com/api"}
    as_json = runner.invoke(app, ["config", "show", "--json"], env=env)
    assert as_json.exit_code == 0
    problems = json.loads(as_json.stdout)["problems"]
    assert set(problems) == {"QBO_MAX_IN_FLIGHT", "FOURD_BASE_URL"}
    as_table = runner.invoke(app, ["config", "show"], env=env)
    line = next(x for x in as_table.stdout.splitlines() if x.startswith("QBO_MAX_IN_FLIGHT"))
    assert "<- expected a whole number" in line


def test_config_show_needs_no_credentials_and_writes_no_logs(runner: CliRunner) -> None:
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0
    assert not Path("logs").exists()
    assert not Path("data").exists()


def test_config_show_bad_dotenv_is_one_line_exit_2(runner: CliRunner) -> None:
    Path(".env").write_bytes(b"QBO_CLIENT_SECRET=\xff\xfe\n")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("fourdqbo: cannot read .env")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_config_without_subcommand_shows_help(runner: CliRunner) -> None:
    result = runner.invoke(app, ["config"])
    assert "show" in result.output


def test_config_show_help_has_an_example(runner: CliRunner) -> None:
    result = runner.invoke(app, ["config", "show", "--help"])
    assert result.exit_code == 0
    assert "fourdqbo config show --json" in result.stdout
