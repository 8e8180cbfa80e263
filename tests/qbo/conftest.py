"""Fixtures for the QBO client tests: respx router, fake tokens and time, a client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import respx

from fourdqbo.config import Settings
from fourdqbo.qbo.client import QBOClient
from tests.qbo.fakes import BASE, FakeTime, FakeTokens


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def tokens() -> FakeTokens:
    return FakeTokens()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings], tokens: FakeTokens, fake_time: FakeTime
) -> Iterator[Callable[..., QBOClient]]:
    made: list[QBOClient] = []

    def build(**overrides: Any) -> QBOClient:
        client = QBOClient(
            make_settings(**overrides), tokens, sleep=fake_time.sleep, clock=fake_time.clock
        )
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., QBOClient]) -> QBOClient:
    return make_client()
