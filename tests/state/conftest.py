"""The contract suite runs every test against both backends through the `backend` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fourdqbo.state.base import StateStore
from tests.state.contenders import open_store

REALM = "9130350000000000"


@dataclass(frozen=True)
class Backend:
    name: str
    spec: dict[str, Any]

    def open(self) -> StateStore:
        """Another independent connection to the same state (another run, another host)."""
        return open_store(self.spec)


@pytest.fixture(params=["redis", "file"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "redis":
        spec = {
            "backend": "redis",
            "url": request.getfixturevalue("redis_url"),
            "prefix": request.getfixturevalue("state_prefix"),
            "realm": REALM,
        }
    else:
        spec = {"backend": "file", "root": str(tmp_path / "data" / "state"), "realm": REALM}
    return Backend(request.param, spec)


@pytest.fixture
def store(backend: Backend) -> Iterator[StateStore]:
    opened = backend.open()
    yield opened
    opened.close()
