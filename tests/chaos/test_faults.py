"""Faults: mixed faults on both services, 4D answering 401 mid-run, Redis restarted
mid-run and the QBO refresh token rotated by another process mid-run."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.fixtures.redis import RedisServer

pytestmark = pytest.mark.integration

QUOTES = 100


def test_ten_percent_mixed_faults_on_both_services_converge_through_creates_updates_deletes(
    chaos: ModuleType, redis_url: str, world_options: dict[str, object]
) -> None:
    result = chaos.faults_once(
        redis_url=redis_url, seed=101, quotes=QUOTES, rounds=1, **world_options
    )
    assert result.problems == []
    assert result.audit is not None and result.audit.converged
    assert result.rounds == 2 and result.changes["edited"] and result.changes["re-opened"]
    # The faults were there, on both sides.
    services = {key.split(":")[0] for key in result.faults}
    assert services == {"fourd", "qbo"}, result.faults
    assert sum(result.faults.values()) >= 5


def test_4d_refusing_credentials_mid_run_is_exit_3_and_the_fixed_next_run_converges(
    chaos: ModuleType, redis_url: str, world_options: dict[str, object]
) -> None:
    result = chaos.fourd_unauthorized_mid_run(
        redis_url=redis_url, quotes=QUOTES, after_fetches=20, **world_options
    )
    assert result.problems == []
    assert result.runs[0] == 3
    assert result.runs[-1] == 1  # the seed's conflict


def test_redis_restarted_mid_run_stops_the_run_and_the_next_converges(
    chaos: ModuleType, redis_server: RedisServer, world_options: dict[str, object]
) -> None:
    result = chaos.redis_restart_mid_run(
        server=redis_server, quotes=QUOTES, down_for=1.0, **world_options
    )
    assert result.problems == []
    assert result.runs[0] in (0, 1, 3)
    assert result.audit is not None and not result.audit.duplicates


@pytest.mark.parametrize("racer", [False, True], ids=["run-refreshes", "third-process-races"])
def test_refresh_token_rotated_by_another_process_mid_run_does_not_stop_the_run(
    chaos: ModuleType, redis_url: str, world_options: dict[str, object], racer: bool
) -> None:
    result = chaos.token_rotated_mid_run(
        redis_url=redis_url, quotes=200, after_batches=1, racer=racer, **world_options
    )
    assert result.problems == []
    assert result.runs[0] in (0, 1)
