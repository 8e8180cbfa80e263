"""The QBO token store: the one file that holds the company's OAuth tokens, and their refresh.

The file (`QBO_TOKEN_FILE`) is JSON `{access_token, refresh_token, realm_id, expires_at,
refresh_expires_at[, refresh_hard_expires_at]}` with ISO 8601 instants carrying an offset.
It is created 0600 and only ever replaced atomically (temp file in the same directory,
fsync, rename, fsync of the directory), so a crash or a full disk leaves the previous file
whole. Intuit rotates refresh tokens and the replaced one dies about a day later, so the
newest one is written before anything else happens with it.

Refreshes are serialised across processes with an OS lock on `<token file>.lock`: cron and
an operator refreshing with the same refresh token at once is a known cause of
`invalid_grant`. Whoever takes the lock re-reads the file first and uses a token another
process refreshed meanwhile instead of refreshing again. intuit-oauth (which downloads a
discovery document when constructed) is only touched when a refresh is really due.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.errors import ConfigError, LockHeld, MalformedPayload, TokenMissing
from fourdqbo.log import register_sensitive
from fourdqbo.timefmt import iso_z, parse_instant, to_utc, utcnow

log = logging.getLogger(__name__)

# Refresh this long before the access token expires, so a request never leaves with a
# token that dies in flight.
REFRESH_MARGIN = timedelta(minutes=5)
LOGIN_HINT = "run `fourdqbo auth login`"
_REQUIRED = ("access_token", "refresh_token", "realm_id", "expires_at", "refresh_expires_at")


@dataclass(frozen=True)
class Token:
    """One company's token set. The token strings never show in a repr."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    realm_id: str
    expires_at: datetime  # of the access token
    refresh_expires_at: datetime  # rolling: about 100 days after the last refresh
    refresh_hard_expires_at: datetime | None = None  # absolute: five years after login

    @property
    def refresh_deadline(self) -> datetime:
        """When the refresh token stops working, whichever expiry comes first."""
        if self.refresh_hard_expires_at is None:
            return self.refresh_expires_at
        return min(self.refresh_expires_at, self.refresh_hard_expires_at)

    def expires_within(self, margin: timedelta, now: datetime) -> bool:
        return self.expires_at - now <= margin

    def to_document(self) -> dict[str, str]:
        document = {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "realm_id": self.realm_id,
            "expires_at": to_utc(self.expires_at).isoformat(),
            "refresh_expires_at": to_utc(self.refresh_expires_at).isoformat(),
        }
        if self.refresh_hard_expires_at is not None:
            document["refresh_hard_expires_at"] = to_utc(self.refresh_hard_expires_at).isoformat()
        return document

    @classmethod
    def from_document(cls, document: Any) -> Token:
        """Read the file's JSON; ValueError naming what is wrong with its shape."""
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        missing = [name for name in _REQUIRED if name not in document]
        if missing:
            raise ValueError("missing " + ", ".join(missing))
        for name in ("access_token", "refresh_token", "realm_id"):
            value = document[name]
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} is not a non-empty string")
        hard = document.get("refresh_hard_expires_at")
        return cls(
            access_token=document["access_token"],
            refresh_token=document["refresh_token"],
            realm_id=document["realm_id"],
            expires_at=_instant(document, "expires_at"),
            refresh_expires_at=_instant(document, "refresh_expires_at"),
            refresh_hard_expires_at=None
            if hard is None
            else _instant(document, "refresh_hard_expires_at"),
        )

    @classmethod
    def from_grant(
        cls,
        answer: Mapping[str, Any],
        *,
        realm_id: str,
        now: datetime,
        previous: Token | None = None,
    ) -> Token:
        """Build from a token-endpoint answer (`expires_in` and friends are seconds from now).

        What a refresh answer leaves out is kept from `previous`: the refresh token when
        none came back, and the hard expiry, which belongs to the authorisation and does not
        move when the refresh token rotates.
        """
        access_token = answer.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise MalformedPayload("Intuit's token answer has no access_token", service="oauth")
        refresh_token = answer.get("refresh_token") or (previous and previous.refresh_token)
        if not isinstance(refresh_token, str) or not refresh_token:
            raise MalformedPayload("Intuit's token answer has no refresh_token", service="oauth")
        expires_in = _seconds(answer, "expires_in")
        if expires_in is None:
            raise MalformedPayload("Intuit's token answer has no expires_in", service="oauth")
        refresh_in = _seconds(answer, "x_refresh_token_expires_in")
        if refresh_in is not None:
            refresh_expires_at = now + timedelta(seconds=refresh_in)
        elif previous is not None:
            refresh_expires_at = previous.refresh_expires_at
        else:
            raise MalformedPayload(
                "Intuit's token answer has no x_refresh_token_expires_in", service="oauth"
            )
        hard_in = _seconds(answer, "x_refresh_token_hard_expires_in")
        if hard_in is not None:
            hard_expires_at: datetime | None = now + timedelta(seconds=hard_in)
        else:
            hard_expires_at = previous.refresh_hard_expires_at if previous else None
        return cls(
            access_token=access_token,
            refresh_token=refresh_token,
            realm_id=realm_id,
            expires_at=now + timedelta(seconds=expires_in),
            refresh_expires_at=refresh_expires_at,
            refresh_hard_expires_at=hard_expires_at,
        )


class TokenStore:
    """The token file of `settings.qbo_token_file`; the TokenSource QBOClient asks for tokens."""

    def __init__(
        self,
        settings: Settings,
        *,
        now: Callable[[], datetime] = utcnow,
        lock_timeout: float | None = None,
    ) -> None:
        self.settings = settings
        self.path = Path(settings.qbo_token_file)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._now = now
        # Long enough for a refresh in another process to finish (discovery + token call,
        # each bounded by the HTTP timeout); a holder stuck longer than that is reported.
        self._lock_timeout = (
            lock_timeout if lock_timeout is not None else 3 * settings.http_timeout_seconds + 10
        )

    # -- the TokenSource protocol -----------------------------------------------------------

    @property
    def realm_id(self) -> str:
        return self.load().realm_id

    def access_token(self) -> str:
        """A valid access token; refreshed first when it is within 5 minutes of expiry."""
        token = self.load()
        if not token.expires_within(REFRESH_MARGIN, self._now()):
            return token.access_token
        with self.locked():
            token = self.load()  # another process may have refreshed while we waited
            if token.expires_within(REFRESH_MARGIN, self._now()):
                token = self._refresh_locked(token)
        return token.access_token

    def force_refresh(self, rejected: str) -> str:
        """QBO answered 401 to `rejected`: refresh, unless another process already has."""
        with self.locked():
            token = self.load()
            if token.access_token != rejected:
                return token.access_token
            return self._refresh_locked(token).access_token

    # -- for the auth commands --------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> Token:
        """The stored token. TokenMissing (exit 2) without a file, ConfigError when unusable."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise TokenMissing(f"no QBO token at {self.path}: {LOGIN_HINT}") from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read the QBO token file {self.path} ({exc.strerror}): "
                f"fix its permissions or {LOGIN_HINT}"
            ) from None
        try:
            document = jsonio.loads(raw)
        except (ValueError, UnicodeDecodeError):
            reason = "empty" if not raw.strip() else "not JSON"
            raise ConfigError(
                f"the QBO token file {self.path} is corrupt ({reason}): {LOGIN_HINT}"
            ) from None
        if isinstance(document, dict):
            # Scrub whatever token-like strings the file holds, even if it is malformed.
            register_sensitive(
                *(
                    document.get(k)
                    for k in ("access_token", "refresh_token")
                    if isinstance(document.get(k), str)
                )
            )
        try:
            return Token.from_document(document)
        except ValueError as exc:
            raise ConfigError(
                f"the QBO token file {self.path} is corrupt ({exc}): {LOGIN_HINT}"
            ) from None

    def refresh(self) -> Token:
        """Refresh now, whatever the expiry (`auth refresh`)."""
        with self.locked():
            return self._refresh_locked(self.load())

    def save(self, token: Token) -> None:
        """Store a token set (after login), serialised with any refresh in progress."""
        with self.locked():
            self._write(token)

    def remove(self) -> None:
        """Delete the token file (after a revoke)."""
        with self.locked(), contextlib.suppress(FileNotFoundError):
            self.path.unlink()
            _fsync_directory(self.path.parent)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cross-process refresh lock (not re-entrant: do not nest)."""
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot lock {self.lock_path} ({exc.strerror})") from None
        try:
            deadline = time.monotonic() + self._lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockHeld(
                            f"another process has been refreshing the QBO token for over "
                            f"{self._lock_timeout:g} s (lock {self.lock_path}); try again later"
                        ) from None
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # -- internals --------------------------------------------------------------------------

    def _refresh_locked(self, token: Token) -> Token:
        from fourdqbo.qbo import oauth  # intuit-oauth is imported only when a refresh is due

        log.info("refreshing the QBO access token (realm %s)", token.realm_id)
        answer = oauth.refresh_grant(self.settings, token.refresh_token)
        fresh = Token.from_grant(answer, realm_id=token.realm_id, now=self._now(), previous=token)
        self._write(fresh)
        log.info(
            "QBO token refreshed: access until %s, refresh until %s",
            iso_z(fresh.expires_at),
            iso_z(fresh.refresh_deadline),
        )
        return fresh

    def _write(self, token: Token) -> None:
        register_sensitive(token.access_token, token.refresh_token)
        payload = (jsonio.dumps(token.to_document(), indent=2) + "\n").encode()
        try:
            write_private_file(self.path, payload)
        except OSError as exc:
            # After a refresh Intuit has rotated the refresh token; the previous one still
            # works for about a day, so the next run can recover if the disk is fixed.
            raise ConfigError(
                f"cannot write the QBO token file {self.path} ({exc.strerror or exc}); "
                "the previous file was left as it was"
            ) from None


def write_private_file(path: Path, payload: bytes) -> None:
    """Replace `path` atomically with `payload`, readable by the owner only (0600).

    The temp file is created 0600 from the start (never a moment when it is readable by
    others), fsynced, renamed over `path`, and the directory fsynced so the rename survives
    a crash. On any failure `path` is untouched and the temp file removed.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    temp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself is atomic
    finally:
        os.close(fd)


def _instant(document: Mapping[str, Any], name: str) -> datetime:
    value = document[name]
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a date-time")
    try:
        return parse_instant(value)
    except ValueError:
        raise ValueError(f"{name} is not an ISO 8601 date-time with offset") from None


def _seconds(answer: Mapping[str, Any], name: str) -> int | None:
    value = answer.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise MalformedPayload(f"Intuit's token answer has a bad {name}", service="oauth")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise MalformedPayload(f"Intuit's token answer has a bad {name}", service="oauth") from None
    if number < 0:
        raise MalformedPayload(f"Intuit's token answer has a bad {name}", service="oauth")
    return number
