"""Settings: read once from the environment and `.env`, validated into a frozen object.

The environment wins over `.env`. Malformed values are recorded per variable rather than
raised at load time, so a command only fails on the settings it actually needs
(`Settings.require`), naming exactly those.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from string import Formatter
from typing import Any
from urllib.parse import SplitResult, urlsplit

from fourdqbo.errors import ConfigError
from fourdqbo.timefmt import iso_z, load_zone, parse_cli_datetime

DEFAULT_FOURD_BASE_URL = "https://api.4d-emr.com/api/public"
QBO_API_HOSTS = {
    "production": "https://quickbooks.api.intuit.com",
    "sandbox": "https://sandbox-quickbooks.api.intuit.com",
}
QBO_DISCOVERY_URLS = {
    "production": "https://developer.api.intuit.com/.well-known/openid_configuration",
    "sandbox": "https://developer.api.intuit.com/.well-known/openid_sandbox_configuration",
}
# Variables whose values are secrets: masked by `config show`, scrubbed from logs.
SECRET_VARIABLES = ("FOURD_CLIENT_SECRET", "FOURD_SUBSCRIPTION_KEY", "QBO_CLIENT_SECRET")
LEGACY_NAMES = {
    "4D_BASE_URL": "FOURD_BASE_URL",
    "4D_CLIENT_ID": "FOURD_CLIENT_ID",
    "4D_CLIENT_SECRET": "FOURD_CLIENT_SECRET",
    "4D_SUBSCRIPTION_KEY": "FOURD_SUBSCRIPTION_KEY",
}
FOURD_CREDENTIALS = ("FOURD_CLIENT_ID", "FOURD_CLIENT_SECRET", "FOURD_SUBSCRIPTION_KEY")
QBO_APP = ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET")


@dataclass(frozen=True)
class Settings:
    """Every setting of DESIGN.md, typed. Attribute names are the variable names, lower-cased."""

    fourd_base_url: str = DEFAULT_FOURD_BASE_URL
    fourd_client_id: str = ""
    fourd_client_secret: str = ""
    fourd_subscription_key: str = ""
    qbo_client_id: str = ""
    qbo_client_secret: str = ""
    qbo_environment: str = "production"
    qbo_redirect_uri: str = "http://localhost:8725/callback"
    qbo_callback_host: str = "127.0.0.1"
    qbo_callback_port: int = 8725
    qbo_callback_path: str = "/callback"
    qbo_api_base_url: str = QBO_API_HOSTS["production"]
    qbo_discovery_url: str = ""  # empty: intuit-oauth's own discovery for qbo_environment
    qbo_minor_version: str = "75"
    qbo_token_file: Path = Path("data/qbo_token.json")
    redis_url: str = "redis://localhost:6379/0"
    state_backend: str = "redis"
    state_prefix: str = "fourdqbo"
    sync_timezone: str = "America/New_York"
    sync_initial_from: datetime | None = None
    sync_overlap_seconds: int = 300
    sync_reopened_action: str = "delete"
    # How long the sync lock lives without a heartbeat: a crashed run's lock frees itself
    # after this. The heartbeat extends it every third of it while a run lives.
    sync_lock_ttl_seconds: float = 300.0
    # 0.2: what the sync does when a person changed or removed an invoice it owns in QBO.
    sync_qbo_edits: str = "report"  # or "revert" (unpaid ones back to the quote)
    sync_qbo_deletes: str = "report"  # or "recreate"
    # Failed tries before a quote gives up and needs a person.
    sync_max_attempts: int = 5
    # Re-report what is still open this often (hours, decimals allowed); 0 never.
    sync_remind_hours: float = 24.0
    # Quotes a run fetches, looks up and writes as one unit of its pipeline.
    sync_chunk_size: int = 250
    qbo_item_procedure: str = "Procedure"
    qbo_item_supplies: str = "Supplies Charge"
    qbo_item_anesthesia: str = "Anesthesia Fee"
    qbo_item_facility: str = "OR Facility Fee"
    qbo_custom_field_quote_version: str = "1"
    qbo_custom_field_quoted_by: str = "2"
    customer_name_template: str = "{patient_id}.{initials}"
    facility_fee_description: str = "Facility Fee"
    qbo_max_requests_per_minute: int = 500
    qbo_max_batches_per_minute: int = 40
    qbo_max_in_flight: int = 10
    # Length of QBO's throttle "minute" in seconds. Only the sandbox and the benchmarks
    # shorten it (scaled time); against the real QBO it stays 60.
    qbo_rate_window_seconds: float = 60.0
    fourd_max_in_flight: int = 4
    # Seconds to wait for an answer before giving up on a request (a write's outcome is
    # then unknown and looked up before any retry). Tests against the sandbox shorten it.
    http_timeout_seconds: float = 30.0
    healthcheck_url: str = ""
    metrics_file: Path | None = None  # Prometheus textfile written after each run
    log_format: str = "text"  # or "json": one JSON object a line
    logs_dir: Path = Path("logs")
    data_dir: Path = Path("data")
    # Variable name -> why its value was refused. Only reported when a command needs it.
    problems: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def require(self, *names: str) -> None:
        """Raise ConfigError (exit 2) naming each listed variable that is missing or malformed."""
        self._check(names)

    def _check(self, required: Sequence[str], optional: Sequence[str] = ()) -> None:
        """Like `require`, but the `optional` names may be unset (only a malformed one fails)."""
        missing = [name for name in required if name not in self.problems and self._unset(name)]
        malformed = [
            f"{name} ({self.problems[name]})"
            for name in dict.fromkeys([*required, *optional])
            if name in self.problems
        ]
        parts = []
        if missing:
            parts.append(
                "missing setting" + ("s " if len(missing) > 1 else " ") + ", ".join(missing)
            )
        if malformed:
            parts.append("malformed " + "; ".join(malformed))
        if parts:
            raise ConfigError(" and ".join(parts) + " (set it in the environment or .env)")

    def _unset(self, name: str) -> bool:
        # 0 is a value (SYNC_OVERLAP_SECONDS=0), only None and "" are "not set".
        current = self.value(name)
        return current is None or current == ""

    def require_fourd(self) -> None:
        self._check(
            ("FOURD_BASE_URL", *FOURD_CREDENTIALS, "FOURD_MAX_IN_FLIGHT", "HTTP_TIMEOUT_SECONDS")
        )

    def require_qbo(self) -> None:
        """What any QBO API call needs (the app keys are needed to refresh a token)."""
        self._check(
            (
                *QBO_APP,
                "QBO_ENVIRONMENT",
                "QBO_API_BASE_URL",
                "QBO_MINOR_VERSION",
                "QBO_TOKEN_FILE",
                "QBO_MAX_REQUESTS_PER_MINUTE",
                "QBO_MAX_BATCHES_PER_MINUTE",
                "QBO_MAX_IN_FLIGHT",
                "QBO_RATE_WINDOW_SECONDS",
                "HTTP_TIMEOUT_SECONDS",
            ),
            # Empty means intuit-oauth's own discovery document for QBO_ENVIRONMENT.
            optional=("QBO_DISCOVERY_URL",),
        )

    def require_oauth(self) -> None:
        self._check(
            (
                *QBO_APP,
                "QBO_ENVIRONMENT",
                "QBO_REDIRECT_URI",
                "QBO_CALLBACK_HOST",
                "QBO_CALLBACK_PORT",
                "QBO_CALLBACK_PATH",
                "QBO_TOKEN_FILE",
            ),
            optional=("QBO_DISCOVERY_URL",),
        )

    def require_state(self) -> None:
        names = ["STATE_BACKEND", "STATE_PREFIX", "DATA_DIR"]
        if self.state_backend == "redis":
            # The file backend never touches Redis: a bad REDIS_URL must not stop it.
            names.append("REDIS_URL")
        self._check(names)

    def require_sync(self) -> None:
        self.require_fourd()
        self.require_qbo()
        self.require_state()
        self._check(
            (
                "SYNC_TIMEZONE",
                "SYNC_OVERLAP_SECONDS",
                "SYNC_REOPENED_ACTION",
                "SYNC_LOCK_TTL_SECONDS",
                "SYNC_QBO_EDITS",
                "SYNC_QBO_DELETES",
                "SYNC_MAX_ATTEMPTS",
                "SYNC_REMIND_HOURS",
                "SYNC_CHUNK_SIZE",
                "CUSTOMER_NAME_TEMPLATE",
            ),
            # Optional: SYNC_INITIAL_FROM only matters without a watermark (the sync
            # engine asks for it then), empty custom-field ids turn the field off, and
            # the health check is opt-in.
            optional=(
                "SYNC_INITIAL_FROM",
                "QBO_CUSTOM_FIELD_QUOTE_VERSION",
                "QBO_CUSTOM_FIELD_QUOTED_BY",
                "HEALTHCHECK_URL",
                "METRICS_FILE",
            ),
        )

    def value(self, name: str) -> Any:
        return getattr(self, name.lower())

    @property
    def oauth_environment(self) -> str:
        """What intuit-oauth's AuthClient takes as `environment`: a discovery URL or a name."""
        return self.qbo_discovery_url or self.qbo_environment

    def shown(self) -> dict[str, str]:
        """Every setting as text for `config show`, secrets masked."""
        out: dict[str, str] = {}
        for item in fields(self):
            if item.name == "problems":
                continue
            name = item.name.upper()
            raw = getattr(self, item.name)
            text = "" if raw is None else iso_z(raw) if isinstance(raw, datetime) else str(raw)
            if name in SECRET_VARIABLES:
                text = mask(text)
            elif name == "REDIS_URL":
                text = mask_url_password(text)
            elif name == "HEALTHCHECK_URL" and text:
                # Ping URLs carry their check's secret in the path.
                parts = urlsplit(text)
                text = f"{parts.scheme}://{parts.netloc}/***"
            out[name] = text
        return out


def mask(secret: str) -> str:
    """Show that a secret is set without showing any of it (not even a suffix)."""
    return "(set)" if secret else "(not set)"


def mask_url_password(url: str) -> str:
    """Hide a URL's password, in the user-info part and in a `password=` query parameter
    (redis-py accepts both)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = parts.query
    if query:
        query = "&".join(
            f"{pair.split('=', 1)[0]}=***" if pair.split("=", 1)[0].lower() == "password" else pair
            for pair in query.split("&")
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return parts._replace(netloc=netloc, query=query).geturl()


# Settings naming a path: a relative one read from an --env-file is relative to that file's
# directory (a practice's file works from any working directory, e.g. under systemd).
PATH_VARIABLES = ("DATA_DIR", "LOGS_DIR", "QBO_TOKEN_FILE", "METRICS_FILE")


def load_settings(
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | str | None = ".env",
    *,
    env_file: Path | str | None = None,
) -> Settings:
    """Read the environment (winning) and `.env`; never raises for bad values.

    `env_file` (the global `--env-file`) replaces `dotenv_path`: it must exist and be
    readable (ConfigError, exit 2, naming it, otherwise), and the relative paths in it
    (PATH_VARIABLES) resolve against its directory. Values from the environment stay
    relative to the working directory.
    """
    merged: dict[str, str] = {}
    if env_file is not None:
        merged.update(_read_env_file(Path(env_file)))
    elif dotenv_path is not None and Path(dotenv_path).is_file():
        merged.update(_read_dotenv(Path(dotenv_path)))
    env = dict(os.environ if environ is None else environ)
    merged.update(env)
    for legacy, modern in LEGACY_NAMES.items():
        # A modern name left empty (a copied .env-sample) does not hide the legacy value.
        if (merged.get(legacy) or "").strip() and not (merged.get(modern) or "").strip():
            merged[modern] = merged[legacy]
    return _build(merged)


def _read_dotenv(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values  # only when there is a .env: not for --help

    try:
        _check_dotenv_syntax(path)
        file_values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc.__class__.__name__}") from None
    return {k: v for k, v in file_values.items() if v is not None}


def _read_env_file(path: Path) -> dict[str, str]:
    """An --env-file's values, its relative paths made relative to its directory."""
    if not path.exists():
        raise ConfigError(f"--env-file {path}: no such file")
    if not path.is_file():
        raise ConfigError(f"--env-file {path}: not a file")
    values = _read_dotenv(path)
    for name in PATH_VARIABLES:
        text = (values.get(name) or "").strip()
        if text and not Path(text).is_absolute():
            values[name] = str(path.parent / text)
    return values


def _check_dotenv_syntax(path: Path) -> None:
    """A line python-dotenv cannot parse would be skipped with a warning, silently keeping
    a default (`SYNC_REOPENED_ACTION void` missing its `=`): refuse the file instead,
    naming the line but not its text (it may hold a secret)."""
    from dotenv.parser import parse_stream

    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                raise ConfigError(
                    f"{path}: line {binding.original.line} is not NAME=value; fix or remove it"
                )


def _build(raw: Mapping[str, str]) -> Settings:
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    defaults = Settings()

    def take(name: str, convert: Callable[[str], Any]) -> None:
        text = raw.get(name)
        if text is None:
            return
        text = text.strip()
        if text == "" and name not in _EMPTY_ALLOWED:
            return
        try:
            values[name.lower()] = convert(text)
        except ValueError as exc:
            problems[name] = str(exc)

    environment = (raw.get("QBO_ENVIRONMENT") or defaults.qbo_environment).strip().lower()
    for name, convert in _CONVERTERS.items():
        take(name, convert)
    if "QBO_ENVIRONMENT" not in problems and "qbo_api_base_url" not in values:
        values["qbo_api_base_url"] = QBO_API_HOSTS.get(environment, defaults.qbo_api_base_url)
    if "qbo_token_file" not in values and "data_dir" in values:
        # The token lives with the rest of the data unless placed elsewhere on purpose.
        values["qbo_token_file"] = values["data_dir"] / defaults.qbo_token_file.name
    settings = Settings(**values, problems=problems)
    return settings


def _choice(*options: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        lowered = text.lower()
        if lowered not in options:
            raise ValueError("expected one of " + ", ".join(options))
        return lowered

    return convert


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if number <= 0:
        raise ValueError("expected a number above 0")
    return number


def _non_negative_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if number < 0:
        raise ValueError("expected 0 or more")
    return number


def _positive_float(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(number) or not number > 0:
        raise ValueError("expected a number above 0")
    return number


def _non_negative_float(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError("expected 0 or a number above it")
    return number


def _port(text: str) -> int:
    number = _positive_int(text)
    if number > 65535:
        raise ValueError("expected a port number")
    return number


def _url(text: str) -> str:
    """An http(s) URL; plain http only to a loopback host (patient data never travels clear)."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL")
    _check_port(parts)
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("plain http is only allowed to a loopback host; use https")
    return text.rstrip("/")


def _check_port(parts: SplitResult) -> None:
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("expected an http(s) URL with a numeric port") from None


def _redirect_uri(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL")
    _check_port(parts)
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("Intuit only allows http for localhost; use https")
    return text


def _redis_url(text: str) -> str:
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected redis://, rediss:// or unix://")
    return text


def _zone(text: str) -> str:
    load_zone(text)
    return text


def _instant(text: str) -> datetime:
    return parse_cli_datetime(text)


def _template(text: str) -> str:
    """A DisplayName template: only `{patient_id}` and `{initials}`, and `{patient_id}` must
    be there (DisplayNames are unique, so two patients must never share one)."""
    refused = "may use only {patient_id} and {initials}"
    try:
        placeholders = [name for _, name, _, _ in Formatter().parse(text) if name is not None]
        # Attribute or index access ("{patient_id.real}") is refused, not evaluated.
        if any(name not in ("patient_id", "initials") for name in placeholders):
            raise ValueError(refused)
        text.format(patient_id="1", initials="AB")
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        raise ValueError(refused) from None
    if "patient_id" not in placeholders:
        raise ValueError("must contain {patient_id} (customer names are unique per patient)")
    problem = template_id_problem(text)
    if problem:
        raise ValueError(problem)
    return text


def template_id_problem(template: str) -> str | None:
    """Why a patient's customer could not be found safely by the id part of `template`.

    Customers are looked up by `{patient_id}` with every other placeholder matched by LIKE
    (`{patient_id}.{initials}` -> `1003.%`). Without a literal character right next to
    `{patient_id}` on at least one side, that pattern also matches another patient's id
    (`{patient_id}{initials}` -> `1003%` matches `10034AB`). A template with no other
    placeholder is an exact name and needs no such guard.
    """
    parts = list(Formatter().parse(template))
    if not any(name not in (None, "patient_id") for _, name, _, _ in parts):
        return None
    for index, (_literal, name, _, _) in enumerate(parts):
        if name != "patient_id":
            continue
        before = parts[index][0]  # literal text right before this placeholder
        after = parts[index + 1][0] if index + 1 < len(parts) else ""
        if before or after:
            return None
    return (
        "needs a literal character right before or after {patient_id} "
        "(e.g. {patient_id}.{initials}), or a LIKE look-up could match another patient's id"
    )


def _definition_id(text: str) -> str:
    if text and not text.isdigit():
        raise ValueError("expected a numeric DefinitionId or empty")
    return text


def _path(text: str) -> Path:
    return Path(text)


def _path_segment(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError("expected a path starting with /")
    return text


def _minor_version(text: str) -> str:
    if not text.isdigit():
        raise ValueError("expected a number")
    return text


def _text(text: str) -> str:
    return text


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_EMPTY_ALLOWED = {"QBO_CUSTOM_FIELD_QUOTE_VERSION", "QBO_CUSTOM_FIELD_QUOTED_BY"}

_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "FOURD_BASE_URL": _url,
    "FOURD_CLIENT_ID": _text,
    "FOURD_CLIENT_SECRET": _text,
    "FOURD_SUBSCRIPTION_KEY": _text,
    "QBO_CLIENT_ID": _text,
    "QBO_CLIENT_SECRET": _text,
    "QBO_ENVIRONMENT": _choice("production", "sandbox"),
    "QBO_REDIRECT_URI": _redirect_uri,
    "QBO_CALLBACK_HOST": _text,
    "QBO_CALLBACK_PORT": _port,
    "QBO_CALLBACK_PATH": _path_segment,
    "QBO_API_BASE_URL": _url,
    "QBO_DISCOVERY_URL": _url,
    "QBO_MINOR_VERSION": _minor_version,
    "QBO_TOKEN_FILE": _path,
    "REDIS_URL": _redis_url,
    "STATE_BACKEND": _choice("redis", "file"),
    "STATE_PREFIX": _text,
    "SYNC_TIMEZONE": _zone,
    "SYNC_INITIAL_FROM": _instant,
    "SYNC_OVERLAP_SECONDS": _non_negative_int,
    "SYNC_REOPENED_ACTION": _choice("delete", "void"),
    "SYNC_LOCK_TTL_SECONDS": _positive_float,
    "SYNC_QBO_EDITS": _choice("report", "revert"),
    "SYNC_QBO_DELETES": _choice("report", "recreate"),
    "SYNC_MAX_ATTEMPTS": _positive_int,
    "SYNC_REMIND_HOURS": _non_negative_float,
    "SYNC_CHUNK_SIZE": _positive_int,
    "QBO_ITEM_PROCEDURE": _text,
    "QBO_ITEM_SUPPLIES": _text,
    "QBO_ITEM_ANESTHESIA": _text,
    "QBO_ITEM_FACILITY": _text,
    "QBO_CUSTOM_FIELD_QUOTE_VERSION": _definition_id,
    "QBO_CUSTOM_FIELD_QUOTED_BY": _definition_id,
    "CUSTOMER_NAME_TEMPLATE": _template,
    "FACILITY_FEE_DESCRIPTION": _text,
    "QBO_MAX_REQUESTS_PER_MINUTE": _positive_int,
    "QBO_MAX_BATCHES_PER_MINUTE": _positive_int,
    "QBO_MAX_IN_FLIGHT": _positive_int,
    "QBO_RATE_WINDOW_SECONDS": _positive_float,
    "FOURD_MAX_IN_FLIGHT": _positive_int,
    "HTTP_TIMEOUT_SECONDS": _positive_float,
    "HEALTHCHECK_URL": _url,
    "METRICS_FILE": _path,
    "LOG_FORMAT": _choice("text", "json"),
    "LOGS_DIR": _path,
    "DATA_DIR": _path,
}
