"""The shared Redis fixtures work, including the throwaway-server fallback."""

from __future__ import annotations

import redis

from tests.fixtures.redis import RedisServer, delete_keys_under, free_port, redis_answers


def test_the_session_redis_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=1)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_state_prefix_is_unique_and_empty(state_prefix: str, redis_client: redis.Redis) -> None:
    assert state_prefix.startswith("fourdqbo-test-")
    assert list(redis_client.scan_iter(match=f"{state_prefix}:*")) == []
    redis_client.set(f"{state_prefix}:123:watermark", "x")  # removed by the fixture


def test_a_throwaway_server_starts_on_a_free_port_and_stops() -> None:
    port = free_port()
    assert redis_answers("127.0.0.1", port, timeout=0.2) is False
    with RedisServer(port) as server:
        assert server.url == f"redis://127.0.0.1:{port}/0"
        assert redis_answers("127.0.0.1", port)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
        server.stop()
        assert redis_answers("127.0.0.1", port, timeout=0.2) is False
        server.start()
        assert redis_answers("127.0.0.1", port)
    assert redis_answers("127.0.0.1", port, timeout=0.2) is False


def test_nothing_listens_at_the_unreachable_url(unreachable_redis_url: str) -> None:
    port = int(unreachable_redis_url.rsplit(":", 1)[1].split("/")[0])
    assert redis_answers("127.0.0.1", port, timeout=0.2) is False


def test_keys_under_a_prefix_are_deleted_and_nothing_else(
    redis_url: str, redis_client: redis.Redis
) -> None:
    mine, neighbour = "fourdqbo-test-cleanup-a", "fourdqbo-test-cleanup-ab"
    try:
        for n in range(1200):  # more than one SCAN page
            redis_client.set(f"{mine}:{n}", "x")
        redis_client.set(f"{neighbour}:1", "y")
        delete_keys_under(redis_url, mine)
        assert list(redis_client.scan_iter(match=f"{mine}:*")) == []
        assert redis_client.get(f"{neighbour}:1") == "y"
    finally:
        delete_keys_under(redis_url, mine)
        delete_keys_under(redis_url, neighbour)
