"""What every command shares: the settings (loaded once, lazily, from the environment and
`./.env` or the global `--env-file`) and the --debug/--verbose flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from fourdqbo.config import Settings, load_settings


@dataclass
class AppState:
    debug: bool = False
    verbose: bool = False
    # --env-file: read instead of ./.env (one file per practice on a shared host).
    env_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            if self.env_file is not None:
                self._settings = load_settings(env_file=self.env_file)
            else:
                self._settings = load_settings()
        return self._settings


def app_state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState()
    return root.obj


def settings_of(ctx: typer.Context, *, logging: bool = True) -> Settings:
    """The settings, with logging set up on first use (file log in LOGS_DIR, LOG_FORMAT)."""
    state = app_state(ctx)
    settings = state.settings
    if logging:
        from fourdqbo.log import register_sensitive, setup_logging

        # A malformed LOG_FORMAT is exit 2 naming it, before anything is logged.
        settings.require("LOG_FORMAT")
        register_sensitive(
            settings.fourd_client_secret,
            settings.fourd_subscription_key,
            settings.qbo_client_secret,
        )
        setup_logging(settings.logs_dir, verbose=state.verbose, log_format=settings.log_format)
    return settings
