"""`fourdqbo sandbox serve`: the simulators in their own process, driven by the printed settings.

The test does what the help text tells a person to do: start it, take the printed
`export` lines, point other fourdqbo commands at it, and stop it with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from tests.fixtures.redis import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Every setting `Sandbox.env` hands out; the export lines must carry all of them.
EXPECTED = {
    "FOURD_BASE_URL",
    "FOURD_CLIENT_ID",
    "FOURD_CLIENT_SECRET",
    "FOURD_SUBSCRIPTION_KEY",
    "QBO_CLIENT_ID",
    "QBO_CLIENT_SECRET",
    "QBO_ENVIRONMENT",
    "QBO_API_BASE_URL",
    "QBO_DISCOVERY_URL",
    "QBO_TOKEN_FILE",
    "DATA_DIR",
    "SYNC_INITIAL_FROM",
    "SYNC_TIMEZONE",
}


class Served:
    """A running `fourdqbo sandbox serve` and what it printed so far."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.exports: dict[str, str] = {}
        self.stderr_lines: list[str] = []
        self._stderr = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr.start()

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)

    def read_exports(self, timeout: float = 20.0) -> dict[str, str]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while not set(self.exports) >= EXPECTED:
            assert time.monotonic() < deadline, f"exports so far: {sorted(self.exports)}"
            line = self.process.stdout.readline()
            assert line, "sandbox serve exited: " + "".join(self.stderr_lines)
            words = shlex.split(line)
            assert words[0] == "export", line  # stdout holds nothing but export lines
            name, _, value = words[1].partition("=")
            self.exports[name] = value
        return self.exports

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=15)
        self._stderr.join(timeout=5)
        return code


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[Served, int]]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fourdqbo",
            "sandbox",
            "serve",
            "--port",
            str(port),
            "--quotes",
            "15",
            "--seed",
            "3",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(process)
    try:
        yield served, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_printed_settings_drive_the_other_commands(
    serve: tuple[Served, int], tmp_path: Path
) -> None:
    served, port = serve
    exports = served.read_exports()
    assert exports["FOURD_BASE_URL"] == f"http://127.0.0.1:{port}/4d/api/public"
    token_file = Path(exports["QBO_TOKEN_FILE"])
    assert token_file.is_relative_to(tmp_path / "data" / "sandbox")  # the --data-dir default
    assert token_file.stat().st_mode & 0o777 == 0o600

    env = {**exports, "STATE_BACKEND": "file", "LOGS_DIR": str(tmp_path / "logs")}
    listed = CliRunner().invoke(
        app, ["4d", "list-quotes", "--from-date", "2020-01-01", "--json"], env=env
    )
    assert listed.exit_code == 0, listed.output
    document = json.loads(listed.stdout)
    assert document["count"] == 15
    assert len(document["quotes"]) == 15

    invoices = CliRunner().invoke(
        app, ["qbo", "list-invoices", "--from-date", "2000-01-01", "--json"], env=env
    )
    assert invoices.exit_code == 0, invoices.output
    json.loads(invoices.stdout)

    # A whole sync, as the help text suggests (QBO's minute scaled down to keep it short).
    run = CliRunner().invoke(
        app,
        ["sync", "run", "--since", "2020-01-01", "--json"],
        env={**env, "QBO_RATE_WINDOW_SECONDS": "1"},
    )
    assert run.exit_code in (0, 1), run.output
    assert json.loads(run.stdout)["counts"]["created"] > 0

    assert served.stop() == 0
    assert "sandbox stopped\n" in served.stderr_lines
    assert any(
        f"sandbox serving at http://127.0.0.1:{port}" in line for line in served.stderr_lines
    )
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # nothing listens any more


def test_stops_on_sigint_before_anyone_called_it(serve: tuple[Served, int]) -> None:
    served, _ = serve
    served.read_exports()
    assert served.stop() == 0
    assert "Traceback" not in "".join(served.stderr_lines)


def test_a_taken_port_is_one_line_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "fourdqbo", "sandbox", "serve", "--port", str(port)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"fourdqbo: --port: cannot listen on 127.0.0.1:{port} (Address already in use)\n"
    )
