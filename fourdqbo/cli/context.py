"""What every command shares: the settings (loaded once, lazily) and the --debug flag."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from fourdqbo.config import Settings, load_settings


@dataclass
class AppState:
    debug: bool = False
    verbose: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings


def app_state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState()
    return root.obj


def settings_of(ctx: typer.Context, *, logging: bool = True) -> Settings:
    """The settings, with logging set up on first use (file log in LOGS_DIR)."""
    state = app_state(ctx)
    settings = state.settings
    if logging:
        from fourdqbo.log import register_sensitive, setup_logging

        register_sensitive(
            settings.fourd_client_secret,
            settings.fourd_subscription_key,
            settings.qbo_client_secret,
        )
        setup_logging(settings.logs_dir, verbose=state.verbose)
    return settings
