"""The chaos tests drive `bench/chaos`'s scenarios with CI-sized numbers.

Each scenario runs `fourdqbo sync run` in subprocesses against a fresh sandbox and real
Redis (a unique key prefix, deleted afterwards) and returns its `problems`: the tests
assert there are none, plus the scenario's own figures.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from bench import chaos as chaos_module


@pytest.fixture(scope="session")
def chaos() -> ModuleType:
    return chaos_module


@pytest.fixture
def world_options(tmp_path: Path, state_prefix: str) -> dict[str, object]:
    """Where a scenario's world lives: the test's tmp_path and Redis prefix."""
    return {"directory": tmp_path / "world", "prefix": state_prefix}
