"""`open_state_store` picks the backend from the settings and refuses unusable input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fourdqbo.config import Settings
from fourdqbo.errors import ConfigError, StateStoreError
from fourdqbo.state import open_state_store
from fourdqbo.state.file_store import FileStateStore
from fourdqbo.state.redis_store import RedisStateStore

REALM = "9130350000000000"


def test_redis_is_the_default_backend(
    make_settings: Callable[..., Settings], redis_url: str, state_prefix: str
) -> None:
    settings = make_settings(REDIS_URL=redis_url, STATE_PREFIX=state_prefix)
    with open_state_store(settings, REALM) as store:
        assert isinstance(store, RedisStateStore)
        assert store.realm_id == REALM
        assert store.key("watermark") == f"{state_prefix}:{REALM}:watermark"
        store.ping()


def test_the_file_backend_lives_under_data_dir(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(STATE_BACKEND="file", DATA_DIR=tmp_path / "somewhere")
    with open_state_store(settings, REALM) as store:
        assert isinstance(store, FileStateStore)
        store.ping()
    assert (tmp_path / "somewhere" / "state" / REALM).is_dir()


def test_the_file_backend_ignores_a_bad_redis_url(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(STATE_BACKEND="file", REDIS_URL="http://nope")
    assert isinstance(open_state_store(settings, REALM), FileStateStore)


def test_opening_does_not_connect_but_ping_fails_fast(
    make_settings: Callable[..., Settings], unreachable_redis_url: str
) -> None:
    store = open_state_store(make_settings(REDIS_URL=unreachable_redis_url), REALM)
    with pytest.raises(StateStoreError, match="unreachable"):
        store.ping()


@pytest.mark.parametrize("realm", ["", "../etc", "a/b", "12:34", "*", ".hidden"])
def test_odd_realm_ids_are_refused(make_settings: Callable[..., Settings], realm: str) -> None:
    with pytest.raises(ConfigError, match="realm id"):
        open_state_store(make_settings(STATE_BACKEND="file"), realm)


def test_a_malformed_backend_setting_is_a_config_error(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ConfigError, match="STATE_BACKEND"):
        open_state_store(make_settings(STATE_BACKEND="mongo"), REALM)
