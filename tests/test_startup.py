"""Start-up cost: commands that do not talk to 4D, QBO or Redis do not import their clients.

Each case runs the real CLI in a fresh interpreter and records, at exit, which heavy
modules were imported (compared with a bare interpreter of the same venv, since a `.pth`
file of intuit-oauth creates an empty `intuitlib` namespace module at every start-up).
The timing itself is `bench/startup.py`; it is too noisy on a shared machine for a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fourdqbo.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[1]

# Third-party packages only the commands that make network calls need.
HEAVY_PACKAGES = {"httpx", "httpcore", "redis", "requests", "urllib3", "intuitlib", "jwt"}
# Our own modules that pull those in (or are big and only needed by one command).
HEAVY_OURS = {
    "fourdqbo.http",
    "fourdqbo.emr.client",
    "fourdqbo.qbo.client",
    "fourdqbo.qbo.oauth",
    "fourdqbo.sync.engine",
    "fourdqbo.state.redis_store",
    "fourdqbo.sandbox",
}

# Runs the CLI as `fourdqbo ARGS` and writes the modules loaded by then to $MODULES_OUT.
PROBE = """
import atexit, json, os, sys
before = set(sys.modules)
def record():
    with open(os.environ["MODULES_OUT"], "w") as out:
        json.dump({"before": sorted(before), "after": sorted(sys.modules)}, out)
atexit.register(record)
sys.argv = ["fourdqbo", *sys.argv[1:]]
from fourdqbo.cli.app import main
main()
"""


def heavy(modules: set[str], preloaded: set[str]) -> list[str]:
    """The heavy modules in `modules` that a bare interpreter had not loaded already."""
    found = set()
    for name in modules - preloaded:
        top = name.split(".")[0]
        if top in HEAVY_PACKAGES or any(
            name == ours or name.startswith(ours + ".") for ours in HEAVY_OURS
        ):
            found.add(name)
    return sorted(found)


def run_probe(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "modules.json"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        "PYTHONPATH": str(REPO),
        "MODULES_OUT": str(out),
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    document = json.loads(out.read_text())
    return done, heavy(set(document["after"]), set(document["before"]))


def test_importing_the_app_loads_no_network_client(tmp_path: Path) -> None:
    code = (
        "import sys, json; before = set(sys.modules); import fourdqbo.cli.app; "
        "print(json.dumps([sorted(before), sorted(sys.modules)]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    before, after = json.loads(done.stdout)
    assert heavy(set(after), set(before)) == []


@pytest.mark.parametrize(
    "args",
    [("--help",), ("sync", "--help"), ("auth", "--help"), ("4d", "--help"), ("--version",)],
    ids=" ".join,
)
def test_help_and_version_load_no_network_client(tmp_path: Path, args: tuple[str, ...]) -> None:
    done, loaded = run_probe(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert "fourdqbo" in done.stdout
    assert loaded == []


def test_status_on_the_file_backend_loads_no_network_client(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    env = {**sandbox.env(tmp_path / "data"), "STATE_BACKEND": "file"}
    done, loaded = run_probe(tmp_path, "status", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr  # healthy: config, token, state
    assert json.loads(done.stdout)["healthy"] is True
    assert loaded == []


def test_status_on_redis_loads_redis_but_no_http_client(
    sandbox: Sandbox, tmp_path: Path, redis_url: str, state_prefix: str
) -> None:
    env = {**sandbox.env(tmp_path / "data"), "REDIS_URL": redis_url, "STATE_PREFIX": state_prefix}
    done, loaded = run_probe(tmp_path, "status", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "redis" in {name.split(".")[0] for name in loaded}
    assert [n for n in loaded if n.split(".")[0] in {"httpx", "requests", "intuitlib"}] == []


def test_auth_callback_timeout_default_matches_the_listener() -> None:
    from fourdqbo.cli import auth
    from fourdqbo.qbo import oauth

    assert auth.CALLBACK_TIMEOUT_SECONDS == oauth.CALLBACK_TIMEOUT_SECONDS


def test_the_probe_does_see_clients_a_command_needs(sandbox: Sandbox, tmp_path: Path) -> None:
    # The control: `status --check` calls 4D and QBO, so it must load their clients.
    env = {**sandbox.env(tmp_path / "data"), "STATE_BACKEND": "file"}
    done, loaded = run_probe(tmp_path, "status", "--check", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"httpx", "fourdqbo.emr.client", "fourdqbo.qbo.client"} <= set(loaded)
