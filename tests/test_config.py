"""Settings: sources and precedence, defaults, validation, `require`, masking."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourdqbo.config import Settings, is_loopback, load_settings, mask, mask_url_password
from fourdqbo.errors import ConfigError

FOURD_CREDENTIALS = {
    "FOURD_CLIENT_ID": "client-4d",
    "FOURD_CLIENT_SECRET": "s3cr3t-4d-value",
    "FOURD_SUBSCRIPTION_KEY": "subkey-4d-value",
}
QBO_KEYS = {"QBO_CLIENT_ID": "qbo-client-id", "QBO_CLIENT_SECRET": "qbo-secret-value"}


def write_env(text: str, path: Path | None = None) -> Path:
    target = path or Path(".env")
    target.write_text(text, encoding="utf-8")
    return target


# --- sources and precedence -------------------------------------------------------------


def test_dotenv_in_the_working_directory_is_read() -> None:
    write_env("FOURD_CLIENT_ID=from-dotenv\nSTATE_PREFIX=practice\n")
    settings = load_settings({})
    assert settings.fourd_client_id == "from-dotenv"
    assert settings.state_prefix == "practice"


def test_environment_wins_over_dotenv() -> None:
    write_env("FOURD_CLIENT_ID=from-dotenv\nSTATE_PREFIX=from-dotenv\n")
    settings = load_settings({"FOURD_CLIENT_ID": "from-environment"})
    assert settings.fourd_client_id == "from-environment"
    assert settings.state_prefix == "from-dotenv"


def test_process_environment_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    write_env("STATE_PREFIX=from-dotenv\n")
    monkeypatch.setenv("STATE_PREFIX", "from-process")
    assert load_settings().state_prefix == "from-process"


def test_dotenv_path_none_reads_no_file() -> None:
    write_env("STATE_PREFIX=from-dotenv\n")
    assert load_settings({}, dotenv_path=None).state_prefix == "fourdqbo"


def test_missing_dotenv_is_fine() -> None:
    assert not Path(".env").exists()
    assert load_settings({}).state_prefix == "fourdqbo"


def test_explicit_dotenv_path_is_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "conf" / "fourdqbo.env"
    elsewhere.parent.mkdir()
    write_env("STATE_PREFIX=elsewhere\n", elsewhere)
    assert load_settings({}, dotenv_path=elsewhere).state_prefix == "elsewhere"


@pytest.mark.parametrize(
    ("legacy", "attribute"),
    [
        ("4D_BASE_URL", "fourd_base_url"),
        ("4D_CLIENT_ID", "fourd_client_id"),
        ("4D_CLIENT_SECRET", "fourd_client_secret"),
        ("4D_SUBSCRIPTION_KEY", "fourd_subscription_key"),
    ],
)
def test_legacy_4d_names_are_accepted_from_dotenv(legacy: str, attribute: str) -> None:
    value = "https://practice.example/api/public" if legacy == "4D_BASE_URL" else "legacy-v"
    write_env(f"{legacy}={value}\n")
    assert getattr(load_settings({}), attribute) == value


def test_modern_name_wins_over_legacy_in_the_same_dotenv() -> None:
    write_env("4D_CLIENT_ID=legacy\nFOURD_CLIENT_ID=modern\n")
    assert load_settings({}).fourd_client_id == "modern"


def test_modern_name_in_environment_wins_over_legacy_in_dotenv() -> None:
    write_env("4D_CLIENT_SECRET=legacy-secret\n")
    settings = load_settings({"FOURD_CLIENT_SECRET": "modern-secret"})
    assert settings.fourd_client_secret == "modern-secret"


def test_modern_name_in_dotenv_wins_over_legacy_in_environment() -> None:
    write_env("FOURD_CLIENT_ID=modern\n")
    assert load_settings({"4D_CLIENT_ID": "legacy"}).fourd_client_id == "modern"


def test_empty_modern_name_does_not_hide_legacy_value() -> None:
    # A copied .env-sample leaves FOURD_CLIENT_ID= empty; the legacy line must still count.
    write_env("FOURD_CLIENT_ID=\n4D_CLIENT_ID=legacy-id\n")
    assert load_settings({}).fourd_client_id == "legacy-id"


def test_legacy_credentials_satisfy_require_fourd() -> None:
    write_env(
        "4D_BASE_URL=https://practice.example/api/public\n"
        "4D_CLIENT_ID=a\n4D_CLIENT_SECRET=bbbb\n4D_SUBSCRIPTION_KEY=cccc\n"
    )
    load_settings({}).require_fourd()


def test_values_are_stripped_and_quotes_in_dotenv_removed() -> None:
    write_env("FOURD_CLIENT_ID='  quoted  '\nSTATE_PREFIX=  spaced  \n")
    settings = load_settings({})
    assert settings.fourd_client_id == "quoted"
    assert settings.state_prefix == "spaced"


def test_dotenv_that_is_not_utf8_is_a_config_error() -> None:
    Path(".env").write_bytes(b"FOURD_CLIENT_ID=\xff\xfe\xfa\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({})
    assert ".env" in str(caught.value)
    assert caught.value.exit_code == 2


def test_unreadable_dotenv_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests run as root, for whom mode 000 is still readable: make the read fail.
    write_env("FOURD_CLIENT_ID=x\n")

    def refuse(*args: object, **kwargs: object) -> dict[str, str]:
        raise PermissionError(13, "Permission denied")

    import dotenv

    monkeypatch.setattr(dotenv, "dotenv_values", refuse)
    with pytest.raises(ConfigError, match=r"cannot read \.env: PermissionError"):
        load_settings({})


# --- defaults ---------------------------------------------------------------------------

DESIGN_DEFAULTS = {
    "fourd_base_url": "https://api.4d-emr.com/api/public",
    "fourd_client_id": "",
    "fourd_client_secret": "",
    "fourd_subscription_key": "",
    "qbo_client_id": "",
    "qbo_client_secret": "",
    "qbo_environment": "production",
    "qbo_redirect_uri": "http://localhost:8725/callback",
    "qbo_callback_host": "127.0.0.1",
    "qbo_callback_port": 8725,
    "qbo_callback_path": "/callback",
    "qbo_api_base_url": "https://quickbooks.api.intuit.com",
    "qbo_discovery_url": "",
    "qbo_minor_version": "75",
    "qbo_token_file": Path("data/qbo_token.json"),
    "redis_url": "redis://localhost:6379/0",
    "state_backend": "redis",
    "state_prefix": "fourdqbo",
    "sync_timezone": "America/New_York",
    "sync_initial_from": None,
    "sync_overlap_seconds": 300,
    "sync_reopened_action": "delete",
    "sync_lock_ttl_seconds": 300.0,  # beyond DESIGN.md's table, like the two below
    "qbo_item_procedure": "Procedure",
    "qbo_item_supplies": "Supplies Charge",
    "qbo_item_anesthesia": "Anesthesia Fee",
    "qbo_item_facility": "OR Facility Fee",
    "qbo_custom_field_quote_version": "1",
    "qbo_custom_field_quoted_by": "2",
    "customer_name_template": "{patient_id}.{initials}",
    "facility_fee_description": "Facility Fee",
    "qbo_max_requests_per_minute": 500,
    "qbo_max_batches_per_minute": 40,
    "qbo_max_in_flight": 10,
    "qbo_rate_window_seconds": 60.0,
    "fourd_max_in_flight": 4,
    "http_timeout_seconds": 30.0,
    "healthcheck_url": "",
    "logs_dir": Path("logs"),
    "data_dir": Path("data"),
    "sync_qbo_edits": "report",
    "sync_qbo_deletes": "report",
    "sync_max_attempts": 5,
    "sync_remind_hours": 24.0,
    "sync_chunk_size": 250,
    "metrics_file": None,
    "log_format": "text",
}


@pytest.mark.parametrize(
    "template",
    ["{patient_id}{initials}", "{initials}{patient_id}", "{initials}{patient_id}{initials}"],
)
def test_template_without_a_literal_next_to_the_patient_id_is_refused(template: str) -> None:
    settings = load_settings({"CUSTOMER_NAME_TEMPLATE": template}, dotenv_path=None)
    assert "literal character" in settings.problems["CUSTOMER_NAME_TEMPLATE"]
    with pytest.raises(ConfigError, match="CUSTOMER_NAME_TEMPLATE"):
        settings.require("CUSTOMER_NAME_TEMPLATE")


@pytest.mark.parametrize(
    "template",
    [
        "{patient_id}.{initials}",
        "{initials}-{patient_id}",
        "P{patient_id}{initials}",
        "{patient_id}",
    ],
)
def test_template_with_a_literal_next_to_the_patient_id_is_accepted(template: str) -> None:
    settings = load_settings({"CUSTOMER_NAME_TEMPLATE": template}, dotenv_path=None)
    assert settings.problems == {}
    assert settings.customer_name_template == template


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        ("SYNC_QBO_EDITS", "Revert", "sync_qbo_edits", "revert"),
        ("SYNC_QBO_DELETES", "recreate", "sync_qbo_deletes", "recreate"),
        ("SYNC_MAX_ATTEMPTS", "3", "sync_max_attempts", 3),
        ("SYNC_REMIND_HOURS", "0.25", "sync_remind_hours", 0.25),
        ("SYNC_REMIND_HOURS", "0", "sync_remind_hours", 0.0),
        ("SYNC_CHUNK_SIZE", "100", "sync_chunk_size", 100),
        (
            "METRICS_FILE",
            "/var/lib/node/fourdqbo.prom",
            "metrics_file",
            Path("/var/lib/node/fourdqbo.prom"),
        ),
        ("LOG_FORMAT", "JSON", "log_format", "json"),
    ],
)
def test_new_settings_are_read(name: str, value: str, attribute: str, expected: object) -> None:
    settings = load_settings({name: value}, dotenv_path=None)
    assert settings.problems == {}
    assert getattr(settings, attribute) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYNC_QBO_EDITS", "overwrite"),
        ("SYNC_QBO_DELETES", "ignore"),
        ("SYNC_MAX_ATTEMPTS", "0"),
        ("SYNC_REMIND_HOURS", "-1"),
        ("SYNC_REMIND_HOURS", "nan"),
        ("SYNC_CHUNK_SIZE", "0"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_new_settings_refuse_bad_values(name: str, value: str) -> None:
    settings = load_settings({name: value}, dotenv_path=None)
    assert name in settings.problems


@pytest.mark.parametrize(("attribute", "expected"), sorted(DESIGN_DEFAULTS.items()))
def test_default_matches_design_table(attribute: str, expected: object) -> None:
    settings = load_settings({}, dotenv_path=None)
    assert getattr(settings, attribute) == expected
    assert settings.problems == {}


def test_every_setting_has_a_checked_default() -> None:
    # A new setting needs its default pinned in DESIGN_DEFAULTS above.
    names = {f for f in Settings.__dataclass_fields__ if f != "problems"}
    assert names == set(DESIGN_DEFAULTS)


def test_empty_values_fall_back_to_defaults() -> None:
    settings = load_settings(
        {"STATE_PREFIX": "", "QBO_MAX_IN_FLIGHT": "  ", "SYNC_TIMEZONE": ""}, dotenv_path=None
    )
    assert settings.state_prefix == "fourdqbo"
    assert settings.qbo_max_in_flight == 10
    assert settings.sync_timezone == "America/New_York"
    assert settings.problems == {}


def test_typed_values_are_converted() -> None:
    settings = load_settings(
        {
            "QBO_CALLBACK_PORT": "9000",
            "QBO_MAX_REQUESTS_PER_MINUTE": "5000",
            "QBO_RATE_WINDOW_SECONDS": "0.5",
            "HTTP_TIMEOUT_SECONDS": "2.5",
            "SYNC_OVERLAP_SECONDS": "0",
            "QBO_TOKEN_FILE": "/var/lib/fourdqbo/token.json",
            "STATE_BACKEND": "FILE",
            "SYNC_REOPENED_ACTION": "Void",
        },
        dotenv_path=None,
    )
    assert settings.qbo_callback_port == 9000
    assert settings.qbo_max_requests_per_minute == 5000
    assert settings.qbo_rate_window_seconds == 0.5
    assert settings.http_timeout_seconds == 2.5
    assert settings.sync_overlap_seconds == 0
    assert settings.qbo_token_file == Path("/var/lib/fourdqbo/token.json")
    assert settings.state_backend == "file"
    assert settings.sync_reopened_action == "void"
    assert settings.problems == {}


# --- QBO environment --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "host"),
    [
        ("production", "https://quickbooks.api.intuit.com"),
        ("sandbox", "https://sandbox-quickbooks.api.intuit.com"),
        ("Sandbox", "https://sandbox-quickbooks.api.intuit.com"),
    ],
)
def test_api_base_url_follows_qbo_environment(environment: str, host: str) -> None:
    settings = load_settings({"QBO_ENVIRONMENT": environment}, dotenv_path=None)
    assert settings.qbo_api_base_url == host
    assert settings.qbo_environment == environment.lower()


@pytest.mark.parametrize("environment", ["production", "sandbox"])
def test_api_base_url_override_wins(environment: str) -> None:
    settings = load_settings(
        {"QBO_ENVIRONMENT": environment, "QBO_API_BASE_URL": "http://127.0.0.1:9000/"},
        dotenv_path=None,
    )
    assert settings.qbo_api_base_url == "http://127.0.0.1:9000"


def test_oauth_environment_is_discovery_url_when_set() -> None:
    plain = load_settings({"QBO_ENVIRONMENT": "sandbox"}, dotenv_path=None)
    assert plain.oauth_environment == "sandbox"
    custom = load_settings(
        {"QBO_DISCOVERY_URL": "http://127.0.0.1:9001/.well-known/openid"}, dotenv_path=None
    )
    assert custom.oauth_environment == "http://127.0.0.1:9001/.well-known/openid"


def test_unknown_qbo_environment_is_a_problem() -> None:
    settings = load_settings({"QBO_ENVIRONMENT": "staging"}, dotenv_path=None)
    assert "QBO_ENVIRONMENT" in settings.problems
    assert "production" in settings.problems["QBO_ENVIRONMENT"]


# --- malformed values and require -------------------------------------------------------

MALFORMED = {
    "QBO_CALLBACK_PORT": "70000",
    "QBO_MAX_IN_FLIGHT": "0",
    "QBO_MAX_REQUESTS_PER_MINUTE": "many",
    "FOURD_MAX_IN_FLIGHT": "-1",
    "SYNC_OVERLAP_SECONDS": "-5",
    "SYNC_TIMEZONE": "Mars/Olympus",
    "SYNC_INITIAL_FROM": "yesterday",
    "SYNC_REOPENED_ACTION": "archive",
    "STATE_BACKEND": "sqlite",
    "REDIS_URL": "http://localhost:6379",
    "QBO_MINOR_VERSION": "v75",
    "QBO_CALLBACK_PATH": "callback",
    "QBO_CUSTOM_FIELD_QUOTE_VERSION": "Quote Version",
    "QBO_RATE_WINDOW_SECONDS": "0",
    "HTTP_TIMEOUT_SECONDS": "soon",
    "SYNC_LOCK_TTL_SECONDS": "-1",
    "FOURD_BASE_URL": "ftp://api.4d-emr.com",
    "HEALTHCHECK_URL": "not a url",
    "CUSTOMER_NAME_TEMPLATE": "{patient_id}.{surname}",
}


@pytest.mark.parametrize(("name", "value"), sorted(MALFORMED.items()))
def test_malformed_value_is_recorded_not_raised(name: str, value: str) -> None:
    settings = load_settings({name: value}, dotenv_path=None)
    assert name in settings.problems
    assert settings.problems[name]
    # The default stays in place; nothing is raised until a command needs the setting.
    assert getattr(settings, name.lower()) == DESIGN_DEFAULTS[name.lower()]
    with pytest.raises(ConfigError) as caught:
        settings.require(name)
    assert f"malformed {name} (" in str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYNC_TIMEZONE", "America"),  # a folder of the zone database
        ("SYNC_TIMEZONE", "../../etc/passwd"),
        ("CUSTOMER_NAME_TEMPLATE", "{patient_id.real}"),
        ("CUSTOMER_NAME_TEMPLATE", "{patient_id[0]}"),
        ("CUSTOMER_NAME_TEMPLATE", "{}"),
        ("CUSTOMER_NAME_TEMPLATE", "{0}"),
        ("CUSTOMER_NAME_TEMPLATE", "{patient_id"),
        ("CUSTOMER_NAME_TEMPLATE", "{initials}"),  # two patients could share a name
        ("HTTP_TIMEOUT_SECONDS", "inf"),
        ("HTTP_TIMEOUT_SECONDS", "nan"),
        ("QBO_RATE_WINDOW_SECONDS", "infinity"),
        ("QBO_API_BASE_URL", "https://qbo.example:port"),
    ],
)
def test_tricky_malformed_values_never_crash_loading(name: str, value: str) -> None:
    settings = load_settings({name: value}, dotenv_path=None)
    assert name in settings.problems


@pytest.mark.parametrize(
    "template",
    ["{patient_id}.{initials}", "{patient_id}", "P{patient_id} {initials}", "{{x}} {patient_id}"],
)
def test_good_templates_accepted(template: str) -> None:
    settings = load_settings({"CUSTOMER_NAME_TEMPLATE": template}, dotenv_path=None)
    assert settings.problems == {}
    assert settings.customer_name_template == template


def test_problem_messages_never_repeat_secret_values() -> None:
    settings = load_settings(
        {"REDIS_URL": "http://:hunter2-pass@cache:6379", "FOURD_BASE_URL": "ftp://x:pw-in-url@h"},
        dotenv_path=None,
    )
    text = json.dumps(dict(settings.problems))
    assert "hunter2-pass" not in text
    assert "pw-in-url" not in text


def test_require_names_exactly_the_missing_ones() -> None:
    settings = load_settings({"FOURD_CLIENT_ID": "id"}, dotenv_path=None)
    with pytest.raises(ConfigError) as caught:
        settings.require_fourd()
    message = str(caught.value)
    assert "FOURD_CLIENT_SECRET" in message
    assert "FOURD_SUBSCRIPTION_KEY" in message
    assert "FOURD_CLIENT_ID" not in message
    assert "FOURD_BASE_URL" not in message  # has a default
    assert "QBO" not in message
    assert message.startswith("missing settings ")


def test_require_one_missing_uses_singular() -> None:
    settings = load_settings({}, dotenv_path=None)
    with pytest.raises(ConfigError, match=r"^missing setting QBO_CLIENT_ID \("):
        settings.require("QBO_CLIENT_ID")


def test_require_names_missing_and_malformed_together() -> None:
    settings = load_settings(
        {**FOURD_CREDENTIALS, "FOURD_SUBSCRIPTION_KEY": "", "FOURD_MAX_IN_FLIGHT": "lots"},
        dotenv_path=None,
    )
    with pytest.raises(ConfigError) as caught:
        settings.require_fourd()
    message = str(caught.value)
    assert "missing setting FOURD_SUBSCRIPTION_KEY" in message
    assert "malformed FOURD_MAX_IN_FLIGHT (expected a whole number)" in message
    assert "FOURD_CLIENT_SECRET" not in message


def test_require_fourd_ignores_qbo_problems() -> None:
    settings = load_settings(
        {
            **FOURD_CREDENTIALS,
            "QBO_ENVIRONMENT": "staging",
            "QBO_API_BASE_URL": "http://example.com",
            "QBO_MAX_IN_FLIGHT": "zero",
            "REDIS_URL": "nonsense",
        },
        dotenv_path=None,
    )
    assert {"QBO_ENVIRONMENT", "QBO_API_BASE_URL", "QBO_MAX_IN_FLIGHT", "REDIS_URL"} <= set(
        settings.problems
    )
    settings.require_fourd()  # a `4d` command needs none of those


def test_require_qbo_does_not_demand_4d_settings() -> None:
    settings = load_settings({**QBO_KEYS, "FOURD_BASE_URL": "http://example.com"}, dotenv_path=None)
    settings.require_qbo()
    settings.require_oauth()


def test_require_qbo_reports_only_qbo_problems() -> None:
    settings = load_settings(
        {**QBO_KEYS, "QBO_MAX_BATCHES_PER_MINUTE": "0", "FOURD_MAX_IN_FLIGHT": "x"},
        dotenv_path=None,
    )
    with pytest.raises(ConfigError) as caught:
        settings.require_qbo()
    assert "QBO_MAX_BATCHES_PER_MINUTE" in str(caught.value)
    assert "FOURD" not in str(caught.value)


def test_discovery_url_is_optional_but_must_be_well_formed() -> None:
    # Regression: require_qbo()/require_oauth() demanded QBO_DISCOVERY_URL, which is an
    # optional override (empty means intuit-oauth's own discovery document).
    settings = load_settings(QBO_KEYS, dotenv_path=None)
    settings.require_qbo()
    settings.require_oauth()
    bad = load_settings({**QBO_KEYS, "QBO_DISCOVERY_URL": "http://example.com/d"}, None)
    with pytest.raises(ConfigError, match="malformed QBO_DISCOVERY_URL"):
        bad.require_qbo()
    with pytest.raises(ConfigError, match="malformed QBO_DISCOVERY_URL"):
        bad.require_oauth()


def test_require_sync_accepts_optional_settings_unset() -> None:
    settings = load_settings(
        {
            **FOURD_CREDENTIALS,
            **QBO_KEYS,
            "SYNC_OVERLAP_SECONDS": "0",
            "QBO_CUSTOM_FIELD_QUOTE_VERSION": "",
            "QBO_CUSTOM_FIELD_QUOTED_BY": "",
        },
        dotenv_path=None,
    )
    assert settings.sync_initial_from is None
    assert settings.healthcheck_url == ""
    settings.require_sync()


def test_require_sync_reports_malformed_optional_settings() -> None:
    settings = load_settings(
        {**FOURD_CREDENTIALS, **QBO_KEYS, "HEALTHCHECK_URL": "http://hc.example.com/ping"},
        dotenv_path=None,
    )
    with pytest.raises(ConfigError, match="malformed HEALTHCHECK_URL"):
        settings.require_sync()


def test_explicit_require_of_optional_setting_reports_it_missing() -> None:
    # The sync engine asks for SYNC_INITIAL_FROM by name when there is no watermark.
    settings = load_settings({}, dotenv_path=None)
    with pytest.raises(ConfigError, match="missing setting SYNC_INITIAL_FROM"):
        settings.require("SYNC_INITIAL_FROM")


def test_require_zero_is_a_value_not_missing() -> None:
    settings = load_settings({"SYNC_OVERLAP_SECONDS": "0"}, dotenv_path=None)
    settings.require("SYNC_OVERLAP_SECONDS")


def test_require_state_file_backend_ignores_redis_url() -> None:
    settings = load_settings({"STATE_BACKEND": "file", "REDIS_URL": "bogus"}, dotenv_path=None)
    settings.require_state()
    redis_backend = load_settings({"REDIS_URL": "bogus"}, dotenv_path=None)
    with pytest.raises(ConfigError, match="malformed REDIS_URL"):
        redis_backend.require_state()


def test_require_with_nothing_wrong_passes() -> None:
    load_settings({**FOURD_CREDENTIALS, **QBO_KEYS}, dotenv_path=None).require_sync()


# --- base URLs: https, or plain http only to loopback -----------------------------------

URL_SETTINGS = ["FOURD_BASE_URL", "QBO_API_BASE_URL", "QBO_DISCOVERY_URL", "HEALTHCHECK_URL"]


@pytest.mark.parametrize("name", URL_SETTINGS)
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000",
        "http://127.0.0.1",
        "http://[::1]:9000/api",
        "http://localhost:8080/x",
        "http://LOCALHOST",
        "https://api.example.com/api/public",
        "https://10.0.0.5",
    ],
)
def test_url_accepted(name: str, url: str) -> None:
    settings = load_settings({name: url}, dotenv_path=None)
    assert name not in settings.problems
    assert getattr(settings, name.lower()) == url.rstrip("/")


@pytest.mark.parametrize("name", URL_SETTINGS)
@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5",
        "http://10.0.0.5:8080/api",
        "http://example.com",
        "http://localhost.example.com",
        "http://127.0.0.1@example.com/",
        "http://192.168.1.1",
        "ftp://127.0.0.1",
        "127.0.0.1:9000",
        "https://",
    ],
)
def test_url_refused(name: str, url: str) -> None:
    settings = load_settings({name: url}, dotenv_path=None)
    assert name in settings.problems


def test_plain_http_refusal_says_why() -> None:
    settings = load_settings({"FOURD_BASE_URL": "http://example.com"}, dotenv_path=None)
    assert "loopback" in settings.problems["FOURD_BASE_URL"]


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("http://localhost:8725/callback", True),
        ("https://app.example.com/callback", True),
        ("http://app.example.com/callback", False),
        ("localhost:8725/callback", False),
    ],
)
def test_redirect_uri(uri: str, ok: bool) -> None:
    settings = load_settings({"QBO_REDIRECT_URI": uri}, dotenv_path=None)
    assert ("QBO_REDIRECT_URI" not in settings.problems) is ok


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("10.0.0.5", False),
        ("0.0.0.0", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# --- masking ----------------------------------------------------------------------------


def test_secrets_are_masked_completely_in_shown() -> None:
    secrets = {
        "FOURD_CLIENT_SECRET": "ABCDEFGHIJKLMNOP",
        "FOURD_SUBSCRIPTION_KEY": "QRSTUVWXYZ123456",
        "QBO_CLIENT_SECRET": "qbo-0123456789",
    }
    shown = load_settings(secrets, dotenv_path=None).shown()
    for name, secret in secrets.items():
        assert shown[name] == "(set)"
        everything = json.dumps(shown)
        # No prefix or suffix of 4+ characters of the secret anywhere.
        for size in range(4, len(secret) + 1):
            assert secret[:size] not in everything
            assert secret[-size:] not in everything


def test_unset_secret_is_shown_as_not_set() -> None:
    shown = load_settings({}, dotenv_path=None).shown()
    assert shown["QBO_CLIENT_SECRET"] == "(not set)"
    assert mask("") == "(not set)"
    assert mask("x") == "(set)"


@given(st.text(min_size=1, max_size=40))
def test_mask_never_shows_any_character_sequence_of_a_secret(secret: str) -> None:
    shown = mask(secret)
    assert shown == "(set)"


def test_shown_lists_every_setting_as_text() -> None:
    shown = load_settings({"SYNC_INITIAL_FROM": "2025-01-02T03:04:05-05:00"}, None).shown()
    assert set(shown) == {name.upper() for name in DESIGN_DEFAULTS}
    assert all(isinstance(v, str) for v in shown.values())
    assert shown["SYNC_INITIAL_FROM"] == "2025-01-02T08:04:05Z"
    assert shown["QBO_CALLBACK_PORT"] == "8725"
    assert shown["FOURD_CLIENT_ID"] == ""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://default:hunter2@cache:6379/0", "redis://default:***@cache:6379/0"),
        ("rediss://user:p@ss:w0rd@cache:6380/1", "rediss://user:***@cache:6380/1"),
        ("redis://cache:6379/0?password=hunter2", "redis://cache:6379/0?password=***"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
    ],
)
def test_redis_password_masked(url: str, expected: str) -> None:
    assert mask_url_password(url) == expected


def test_redis_password_masked_in_shown() -> None:
    shown = load_settings({"REDIS_URL": "redis://:pa55-w0rd@cache:6379/0"}, None).shown()
    assert shown["REDIS_URL"] == "redis://:***@cache:6379/0"
    assert "pa55-w0rd" not in json.dumps(shown)


# --- individual settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-01", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01T08:30", datetime(2025, 1, 1, 8, 30, tzinfo=UTC)),
        ("2025-01-01T08:30:00Z", datetime(2025, 1, 1, 8, 30, tzinfo=UTC)),
        ("2025-01-01T08:30:00-05:00", datetime(2025, 1, 1, 13, 30, tzinfo=UTC)),
    ],
)
def test_sync_initial_from_parsed_to_utc(text: str, expected: datetime) -> None:
    settings = load_settings({"SYNC_INITIAL_FROM": text}, dotenv_path=None)
    assert settings.sync_initial_from == expected
    assert settings.sync_initial_from.tzinfo is UTC


@pytest.mark.parametrize("text", ["2025-13-01", "01/02/2025", "yesterday", "2025-02-30"])
def test_sync_initial_from_rejects_nonsense(text: str) -> None:
    settings = load_settings({"SYNC_INITIAL_FROM": text}, dotenv_path=None)
    assert "SYNC_INITIAL_FROM" in settings.problems
    assert settings.sync_initial_from is None


@pytest.mark.parametrize("name", ["QBO_CUSTOM_FIELD_QUOTE_VERSION", "QBO_CUSTOM_FIELD_QUOTED_BY"])
def test_empty_custom_field_id_turns_the_field_off(name: str) -> None:
    settings = load_settings({name: ""}, dotenv_path=None)
    assert getattr(settings, name.lower()) == ""
    assert settings.problems == {}


def test_custom_field_ids_are_numeric() -> None:
    settings = load_settings({"QBO_CUSTOM_FIELD_QUOTED_BY": "3"}, dotenv_path=None)
    assert settings.qbo_custom_field_quoted_by == "3"
    assert (
        "QBO_CUSTOM_FIELD_QUOTED_BY"
        in load_settings({"QBO_CUSTOM_FIELD_QUOTED_BY": "x3"}, None).problems
    )


def test_item_settings_take_names_or_ids() -> None:
    settings = load_settings(
        {"QBO_ITEM_PROCEDURE": "17", "QBO_ITEM_SUPPLIES": "Supplies: Surgical"}, None
    )
    assert settings.qbo_item_procedure == "17"
    assert settings.qbo_item_supplies == "Supplies: Surgical"


def test_settings_are_frozen() -> None:
    settings = load_settings({}, dotenv_path=None)
    with pytest.raises(AttributeError):
        settings.state_prefix = "other"  # type: ignore[misc]


def test_make_settings_fixture_builds_usable_settings(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(QBO_MAX_IN_FLIGHT=3)
    assert settings.qbo_max_in_flight == 3
    settings.require_sync()


def test_token_file_follows_data_dir_unless_set() -> None:
    moved = load_settings({"DATA_DIR": "/srv/fourdqbo/data"}, dotenv_path=None)
    assert moved.qbo_token_file == Path("/srv/fourdqbo/data/qbo_token.json")
    pinned = load_settings(
        {"DATA_DIR": "/srv/data", "QBO_TOKEN_FILE": "/secure/token.json"}, dotenv_path=None
    )
    assert pinned.qbo_token_file == Path("/secure/token.json")


def test_healthcheck_url_path_is_masked_in_config_show() -> None:
    settings = load_settings(
        {"HEALTHCHECK_URL": "https://hc-ping.com/8f1d2c3b-secret-uuid"}, dotenv_path=None
    )
    shown = settings.shown()["HEALTHCHECK_URL"]
    assert shown == "https://hc-ping.com/***"
    assert "secret" not in shown


def test_unparsable_dotenv_line_is_refused_naming_the_line(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("FOURD_CLIENT_ID=abc\nSYNC_REOPENED_ACTION void\nQBO_CLIENT_SECRET=s3cr3t\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, dotenv_path=dotenv)
    assert "line 2" in str(caught.value)
    assert "void" not in str(caught.value)
