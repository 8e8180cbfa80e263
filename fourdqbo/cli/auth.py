"""`fourdqbo auth …`: authorise the app with QuickBooks Online and look after its tokens.

The flows live in `fourdqbo.qbo.oauth` and the token file in `fourdqbo.qbo.tokens`; these
commands only parse options and render. Tokens are never printed, not even with --json.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer

from fourdqbo.cli.context import settings_of
from fourdqbo.cli.output import emit_json, emit_pairs, info
from fourdqbo.config import Settings, is_loopback
from fourdqbo.timefmt import iso_z, utcnow

if TYPE_CHECKING:  # the token store is imported by the commands that use it (start-up cost)
    from fourdqbo.qbo.tokens import Token, TokenStore

REFRESH_WARNING = timedelta(days=30)

app = typer.Typer(
    help="Authorise fourdqbo with QuickBooks Online and manage its tokens.\n\n"
    "Example: fourdqbo auth login",
    no_args_is_help=True,
)

# fourdqbo.qbo.oauth (intuit-oauth, requests) is imported inside the commands that use it,
# so `fourdqbo --help` and the other commands start without it. Its CALLBACK_TIMEOUT_SECONDS
# is repeated here for the same reason (tests/test_startup.py keeps the two equal).
CALLBACK_TIMEOUT_SECONDS = 300.0


def _finite_timeout(value: float) -> float:
    # click's FloatRange lets nan through (every comparison with nan is false).
    if not 1 <= value <= 86_400:
        raise typer.BadParameter("expected seconds between 1 and 86400")
    return value


_TIMEOUT = typer.Option(
    CALLBACK_TIMEOUT_SECONDS,
    "--timeout",
    callback=_finite_timeout,
    help="Seconds to wait for the browser to come back.",
)


@app.command("login")
def login(
    ctx: typer.Context,
    no_browser: bool = typer.Option(
        False, "--no-browser", help="Only print the URL; do not open a browser."
    ),
    timeout: float = _TIMEOUT,
) -> None:
    """Authorise the app: print the URL, open a browser, wait for the redirect, save the token.

    Listens once on QBO_CALLBACK_HOST:QBO_CALLBACK_PORT (loopback by default) for Intuit's
    redirect to QBO_REDIRECT_URI, checks its state, exchanges the code and writes
    QBO_TOKEN_FILE (mode 0600). On a server without a browser, use `auth url` and then
    `auth exchange`.

    Example: fourdqbo auth login --no-browser
    """
    from fourdqbo.qbo import oauth

    settings = settings_of(ctx)
    settings.require_oauth()
    settings.require("DATA_DIR")

    def announce(url: str) -> None:
        info("Open this address in a browser and approve the app for your QuickBooks company:")
        info(f"  {url}")
        info(f"Waiting up to {timeout:g} s for the redirect to {settings.qbo_redirect_uri} …")

    _redirect_hint(settings)
    token = oauth.login(settings, open_browser=not no_browser, announce=announce, timeout=timeout)
    _authorised(token, settings.qbo_token_file)


@app.command("url")
def url(ctx: typer.Context) -> None:
    """Print an authorisation URL (first half of a split login) and remember its state.

    Open the URL in any browser and approve the app. Then finish with `fourdqbo auth
    callback` (listens for the redirect on this machine), or paste the address the
    browser ends up at into `fourdqbo auth exchange`. The URL is valid for an hour.

    Example: fourdqbo auth url
    """
    from fourdqbo.qbo import oauth

    settings = settings_of(ctx)
    settings.require_oauth()
    settings.require("DATA_DIR")
    request = oauth.authorization_request(settings)
    oauth.save_pending(settings, request)
    print(request.url)
    info(
        "Open the URL above and approve the app, then run `fourdqbo auth callback` here, "
        "or paste the address your browser ends up at: fourdqbo auth exchange 'URL'"
    )


@app.command("callback")
def callback(ctx: typer.Context, timeout: float = _TIMEOUT) -> None:
    """Wait for Intuit's redirect of a pending `auth url` and finish the login.

    Serves exactly one request on QBO_CALLBACK_HOST:QBO_CALLBACK_PORT QBO_CALLBACK_PATH,
    refuses it unless its state matches, exchanges the code and saves the token.

    Example: fourdqbo auth callback --timeout 600
    """
    from fourdqbo.qbo import oauth

    settings = settings_of(ctx)
    settings.require_oauth()
    settings.require("DATA_DIR")
    pending = oauth.load_pending(settings)
    _redirect_hint(settings)
    info(
        f"Listening on {settings.qbo_callback_host}:{settings.qbo_callback_port}"
        f"{settings.qbo_callback_path} for up to {timeout:g} s …"
    )
    token = oauth.listen_and_exchange(settings, pending.state, timeout=timeout)
    _authorised(token, settings.qbo_token_file)


@app.command("exchange")
def exchange(
    ctx: typer.Context,
    redirected_url: str = typer.Argument(
        ..., metavar="REDIRECTED_URL", help="The whole address the browser shows after approval."
    ),
) -> None:
    """Finish a login on a headless server from the pasted redirect address.

    After `fourdqbo auth url`, approve the app in any browser; it is sent to
    QBO_REDIRECT_URI (a page that may fail to load: that is fine). Copy that address and
    pass it here, quoted. Its state must match the pending `auth url`.

    Example: fourdqbo auth exchange 'http://localhost:8725/callback?code=…&state=…&realmId=…'
    """
    from fourdqbo.qbo import oauth

    settings = settings_of(ctx)
    settings.require_oauth()
    settings.require("DATA_DIR")
    token = oauth.exchange_redirect(settings, redirected_url)
    _authorised(token, settings.qbo_token_file)


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show the realm and when the stored tokens expire (UTC); never shows the tokens.

    Warns when the refresh token stops working within 30 days. Reads the token file only:
    nothing is sent to Intuit.

    Example: fourdqbo auth status --json
    """
    settings = settings_of(ctx)
    settings.require("QBO_TOKEN_FILE")
    from fourdqbo.qbo.tokens import TokenStore

    store = TokenStore(settings)
    token = store.load()
    now = utcnow()
    warnings = _warnings(token, store, now)
    access_valid = token.expires_at > now
    if as_json:
        emit_json(
            {
                "realm_id": token.realm_id,
                "token_file": str(store.path),
                "access_token_expires_at": iso_z(token.expires_at),
                "access_token_valid": access_valid,
                "refresh_token_expires_at": iso_z(token.refresh_expires_at),
                "refresh_token_hard_expires_at": _maybe_iso(token.refresh_hard_expires_at),
                "refresh_token_days_left": _days(token.refresh_deadline - now),
                "warnings": warnings,
            }
        )
    else:
        access_note = "valid" if access_valid else "expired (refreshed automatically when used)"
        emit_pairs(
            [
                ("realm", token.realm_id),
                ("token file", str(store.path)),
                ("access token expires", f"{iso_z(token.expires_at)} ({access_note})"),
                ("refresh token expires", iso_z(token.refresh_expires_at)),
                (
                    "refresh token hard expiry",
                    _maybe_iso(token.refresh_hard_expires_at) or "unknown",
                ),
            ],
            title="QBO authorisation",
        )
    for warning in warnings:
        info(f"WARN {warning}")


@app.command("refresh")
def refresh(ctx: typer.Context) -> None:
    """Refresh the access token now and store the new refresh token.

    Normally not needed: every command refreshes by itself when the access token is
    within 5 minutes of expiry. Useful to test the credentials or to renew a refresh token
    that would expire unused.

    Example: fourdqbo auth refresh
    """
    settings = settings_of(ctx)
    settings.require_oauth()
    from fourdqbo.qbo.tokens import TokenStore

    token = TokenStore(settings).refresh()
    info(
        f"refreshed the QBO token for realm {token.realm_id}: access token valid until "
        f"{iso_z(token.expires_at)}, refresh token until {iso_z(token.refresh_deadline)}"
    )


@app.command("revoke")
def revoke(ctx: typer.Context) -> None:
    """Disconnect the app: revoke the token at Intuit and delete the token file.

    Sync stops working until the next `fourdqbo auth login`.

    Example: fourdqbo auth revoke
    """
    from fourdqbo.qbo import oauth

    settings = settings_of(ctx)
    settings.require_oauth()
    from fourdqbo.qbo.tokens import TokenStore

    realm = TokenStore(settings).load().realm_id
    if oauth.revoke(settings):
        info(f"revoked the QBO authorisation for realm {realm}; removed {settings.qbo_token_file}")
    else:
        info(
            f"Intuit no longer knew the token for realm {realm} (already revoked or expired); "
            f"removed {settings.qbo_token_file}"
        )


def _redirect_hint(settings: Settings) -> None:
    """Warn when the redirect cannot reach the listener (a common set-up slip).

    Only for a loopback redirect URI: behind a tunnel or proxy the ports may differ on
    purpose.
    """
    parts = urlsplit(settings.qbo_redirect_uri)
    if not parts.hostname or not is_loopback(parts.hostname):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port != settings.qbo_callback_port or (parts.path or "/") != settings.qbo_callback_path:
        info(
            f"WARN QBO_REDIRECT_URI {settings.qbo_redirect_uri} does not point at the listener "
            f"(port {settings.qbo_callback_port}, path {settings.qbo_callback_path}): "
            "check QBO_CALLBACK_PORT / QBO_CALLBACK_PATH"
        )


def _authorised(token: Token, path: Any) -> None:
    info(
        f"authorised realm {token.realm_id}; token saved to {path} "
        f"(access until {iso_z(token.expires_at)}, refresh until {iso_z(token.refresh_deadline)})"
    )


def _warnings(token: Token, store: TokenStore, now: datetime) -> list[str]:
    warnings: list[str] = []
    deadline = token.refresh_deadline
    if deadline <= now:
        warnings.append(f"the refresh token expired {iso_z(deadline)}: run `fourdqbo auth login`")
    elif deadline - now <= REFRESH_WARNING:
        days = _days(deadline - now)
        hard = token.refresh_hard_expires_at
        if hard is not None and deadline == hard:
            warnings.append(
                f"the refresh token reaches its hard expiry {iso_z(hard)} (in {days} days): "
                "run `fourdqbo auth login` before then"
            )
        else:
            warnings.append(
                f"the refresh token expires {iso_z(deadline)} (in {days} days) unless used: "
                "run `fourdqbo auth refresh` (or any sync run) before then"
            )
    try:
        mode = stat.S_IMODE(os.stat(store.path).st_mode)
    except OSError:
        return warnings
    if mode & 0o077:
        warnings.append(
            f"the token file {store.path} is readable by others (mode {mode:04o}): "
            f"chmod 600 {store.path}"
        )
    return warnings


def _maybe_iso(moment: datetime | None) -> str | None:
    return iso_z(moment) if moment is not None else None


def _days(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() // 86400))
