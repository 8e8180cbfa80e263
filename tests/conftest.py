"""Shared fixtures: settings, real Redis, the sandbox. Each lives in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.settings",
    "tests.fixtures.redis",
    "tests.fixtures.sandbox",
]
