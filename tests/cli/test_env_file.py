"""`--env-file`: several practices on one host, each with its own settings file.

Two practices, each served by its own sandbox (its own 4D practice, QBO company and
realm), share one Redis and one STATE_PREFIX as they would on a real host. Their env
files use relative paths, and every run starts from an unrelated working directory whose
own `.env` would break the run if it were read. The runs go through real subprocesses,
one after the other and at once. Also METRICS_FILE and LOG_FORMAT=json as those runs
write them, and the bad cases of the three settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.sandbox import Sandbox
from fourdqbo.state import open_state_store
from tests.test_metrics import NAMES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REALMS = {"north": "9341453050370001", "south": "9341453050370002"}
METRIC_NAMES = set(NAMES)  # DESIGN.md "Operations"


@dataclass
class Practice:
    name: str
    folder: Path
    env_file: Path
    sandbox: Sandbox

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics" / "fourdqbo.prom"

    @property
    def log(self) -> Path:
        return self.folder / "logs" / "fourdqbo.log"


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))


def make_practice(
    root: Path, name: str, sandbox: Sandbox, backend: str, redis_url: str, prefix: str
) -> Practice:
    folder = root / name
    values = sandbox.env(folder / "data")  # mints the token under the practice's data
    values.update(
        # Relative: resolved against the env file's directory, not the working directory.
        DATA_DIR="data",
        QBO_TOKEN_FILE="data/qbo_token.json",
        LOGS_DIR="logs",
        METRICS_FILE="metrics/fourdqbo.prom",
        LOG_FORMAT="json",
        STATE_BACKEND=backend,
        REDIS_URL=redis_url,
        STATE_PREFIX=prefix,  # the same for both: the realm keeps their keys apart
        HTTP_TIMEOUT_SECONDS="2",
        QBO_RATE_WINDOW_SECONDS="1",
    )
    (folder / "metrics").mkdir()
    env_file = folder / f"{name}.env"
    write_env_file(env_file, values)
    return Practice(name, folder, env_file, sandbox)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """An unrelated working directory, with a `.env` that would fail every sync run."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    (cwd / ".env").write_text("SYNC_CHUNK_SIZE=not-a-number\nLOGS_DIR=decoy-logs\n")
    return cwd


@pytest.fixture(params=["redis", "file"])
def practices(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, state_prefix: str
) -> Iterator[dict[str, Practice]]:
    root = tmp_path / "etc"
    root.mkdir()
    with (
        Sandbox(seed=7, quotes=12, realm_id=REALMS["north"], timeout_delay=1.5) as north,
        Sandbox(
            seed=8, quotes=9, realm_id=REALMS["south"], timeout_delay=1.5, preexisting=False
        ) as south,
    ):
        yield {
            name: make_practice(root, name, box, request.param, redis_url, state_prefix)
            for name, box in (("north", north), ("south", south))
        }


def command(cwd: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fourdqbo", *args]


def child_env(**overrides: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        "PYTHONPATH": str(REPO),
        **overrides,
    }


def fourdqbo(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(cwd, *args),
        capture_output=True,
        text=True,
        env=child_env(**env),
        cwd=cwd,
        timeout=120,
        check=False,
    )


def sync_run(practice: Practice, cwd: Path) -> subprocess.CompletedProcess[str]:
    return fourdqbo(cwd, "--env-file", str(practice.env_file), "sync", "run", "--json")


def metric_samples(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def check_practice_after_run(
    practice: Practice, done: subprocess.CompletedProcess[str]
) -> dict[str, Any]:
    report = json.loads(done.stdout)
    # North's seed holds a paid invoice whose quote changed: a conflict, exit 1.
    expected = 1 if report["counts"]["conflicts"] or report["counts"]["failed"] else 0
    assert done.returncode == expected, done.stderr
    created = [q for q in report["quotes"] if q["action"] == "created"]
    assert created
    for outcome in created:  # in its own company, with its own quote number
        invoice = practice.sandbox.company.invoice(outcome["invoice_id"])
        assert invoice is not None and invoice["DocNumber"] == outcome["quote"]
    # Its files, and only under its own directory.
    assert (practice.folder / "data" / "qbo_token.json").is_file()
    assert practice.log.is_file()
    lines = [json.loads(line) for line in practice.log.read_text().splitlines()]
    assert lines and {line["run_id"] for line in lines} >= {report["run_id"]}
    patients = [p.name for p in practice.sandbox.practice.patients.values()]
    text = practice.log.read_text().lower()
    assert not [name for name in patients if name.lower() in text]
    # Its metrics: every named metric, with this run's figures, for its own realm.
    found = metric_samples(practice.metrics)
    realm = REALMS[practice.name]
    names = METRIC_NAMES - (
        {"fourdqbo_last_success_timestamp_seconds"} if done.returncode else set()
    )
    assert {name for name, _ in found} == names
    assert {dict(labels)["realm"] for _, labels in found} == {realm}

    def value(name: str, **labels: str) -> float:
        return found[(name, frozenset({"realm": realm, **labels}.items()))]

    assert value("fourdqbo_last_run_exit_code") == done.returncode
    for action, count in report["counts"].items():
        if action != "seen":
            assert value("fourdqbo_run_quotes", action=action) == count
    reads = value("fourdqbo_qbo_requests", kind="read")
    writes = value("fourdqbo_qbo_requests", kind="write")
    assert reads + writes == report["requests"]["qbo"] and writes >= 1
    if done.returncode == 0:
        assert value("fourdqbo_last_success_timestamp_seconds") == value(
            "fourdqbo_last_run_timestamp_seconds"
        )
    else:  # the first run of this practice: no success yet
        assert ("fourdqbo_last_success_timestamp_seconds", frozenset({("realm", realm)})) not in (
            found
        )
    # Until the state store counts attention items, its conflicts count as kind "paid".
    assert value("fourdqbo_attention_items", kind="paid") == report["counts"]["conflicts"]
    assert value("fourdqbo_attention_items", kind="gave_up") == 0
    assert value("fourdqbo_retry_queue_size") == 0
    token = json.loads((practice.folder / "data" / "qbo_token.json").read_text())
    assert value("fourdqbo_refresh_token_expiry_timestamp_seconds") == pytest.approx(
        datetime.fromisoformat(token["refresh_expires_at"]).timestamp()
    )
    mode = practice.metrics.stat().st_mode & 0o777
    assert mode & ~0o644 == 0, oct(mode)
    return report


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_two_practices_one_after_the_other(
    practices: dict[str, Practice], elsewhere: Path, tmp_path: Path
) -> None:
    north, south = practices["north"], practices["south"]
    south.sandbox.clear_requests()
    first = sync_run(north, elsewhere)
    assert south.sandbox.requests == []  # north's run never reached south's company
    check_practice_after_run(north, first)
    north.sandbox.clear_requests()
    second = sync_run(south, elsewhere)
    assert second.returncode == 0  # no invoice before it: a clean run, every metric there
    assert north.sandbox.requests == []
    check_practice_after_run(south, second)
    # Nothing was written to the working directory, and no practice wrote into the other's.
    assert sorted(p.name for p in elsewhere.iterdir()) == [".env"]
    assert files_under(tmp_path) == (
        files_under(north.folder) | files_under(south.folder) | {elsewhere / ".env"}
    )


def test_two_practices_at_once_do_not_block_each_other(
    practices: dict[str, Practice], elsewhere: Path
) -> None:
    north, south = practices["north"], practices["south"]
    running = {
        name: subprocess.Popen(
            command(elsewhere, "--env-file", str(p.env_file), "sync", "run", "--json"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=elsewhere,
        )
        for name, p in practices.items()
    }
    results = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert 75 not in {r.returncode for r in results.values()}, results
    check_practice_after_run(north, results["north"])
    check_practice_after_run(south, results["south"])


def test_the_metrics_file_is_replaced_by_each_run_and_by_status(
    practices: dict[str, Practice], elsewhere: Path
) -> None:
    north = practices["north"]
    assert sync_run(north, elsewhere).returncode in (0, 1)
    first = north.metrics.stat().st_ino
    again = sync_run(north, elsewhere)
    assert again.returncode in (0, 1), again.stderr
    assert north.metrics.stat().st_ino != first  # renamed over, never rewritten in place
    found = metric_samples(north.metrics)
    key = (
        "fourdqbo_run_quotes",
        frozenset({"realm": REALMS["north"], "action": "created"}.items()),
    )
    assert found[key] == 0  # the second run's figures: nothing new to create
    before = north.metrics.stat().st_ino
    status = fourdqbo(elsewhere, "--env-file", str(north.env_file), "status", "--json")
    assert status.returncode in (0, 1), status.stdout + status.stderr
    assert "could not write" not in status.stderr
    assert north.metrics.stat().st_ino != before
    found = metric_samples(north.metrics)
    # The first run found the seeded conflict (exit 1); the second knew it already: a
    # quiet, successful run, while the item stays open and counted.
    assert {name for name, _ in found} == METRIC_NAMES
    code = ("fourdqbo_last_run_exit_code", frozenset({("realm", REALMS["north"])}))
    assert found[code] == again.returncode == 0  # status shows the last recorded run
    paid = (
        "fourdqbo_attention_items",
        frozenset({"realm": REALMS["north"], "kind": "paid"}.items()),
    )
    assert found[paid] == 1
    assert sorted(p.name for p in north.metrics.parent.iterdir()) == ["fourdqbo.prom"]


def test_a_run_that_finds_the_lock_held_leaves_the_metrics_file_alone(
    practices: dict[str, Practice], elsewhere: Path
) -> None:
    north = practices["north"]
    north.metrics.write_text("# the previous run's metrics\n")
    before = north.metrics.stat()
    settings = load_settings({}, env_file=north.env_file)
    store = open_state_store(settings, REALMS["north"])
    lock = store.acquire_lock("someone-else", ttl_seconds=60)
    assert lock is not None
    try:
        done = sync_run(north, elsewhere)
    finally:
        lock.release()
        store.close()
    assert done.returncode == 75, done.stderr
    after = north.metrics.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert north.metrics.read_text() == "# the previous run's metrics\n"


def test_a_dry_run_leaves_the_metrics_file_alone(
    practices: dict[str, Practice], elsewhere: Path
) -> None:
    # Like the health check and the run history: a person's look, not a run of the sync.
    north = practices["north"]
    done = fourdqbo(elsewhere, "--env-file", str(north.env_file), "sync", "run", "--dry-run")
    assert done.returncode in (0, 1), done.stderr
    assert not north.metrics.exists()


def test_a_run_that_aborts_writes_its_recorded_figures(
    practices: dict[str, Practice], elsewhere: Path
) -> None:
    north = practices["north"]
    # The environment wins over the env file: 4D refuses these credentials, exit 3.
    args = ("--env-file", str(north.env_file), "sync", "run", "--quiet")
    done = fourdqbo(elsewhere, *args, FOURD_CLIENT_SECRET="not-the-secret")
    assert done.returncode == 3, done.stderr
    status = fourdqbo(elsewhere, "--env-file", str(north.env_file), "sync", "status", "--json")
    recorded = json.loads(status.stdout)["runs"][0]
    assert recorded["aborted"]
    found = metric_samples(north.metrics)
    realm = frozenset({("realm", REALMS["north"])})
    assert found[("fourdqbo_last_run_exit_code", realm)] == 3
    finished = datetime.fromisoformat(recorded["finished_at"]).timestamp()
    assert found[("fourdqbo_last_run_timestamp_seconds", realm)] == finished
    assert found[("fourdqbo_retry_queue_size", realm)] == 0
    assert ("fourdqbo_last_success_timestamp_seconds", realm) not in found
    lines = [json.loads(line) for line in north.log.read_text().splitlines()]
    assert recorded["run_id"] in {line["run_id"] for line in lines}


def test_a_failed_run_still_writes_its_metrics(
    practices: dict[str, Practice], elsewhere: Path
) -> None:
    north = practices["north"]
    (north.folder / "data" / "qbo_token.json").unlink()
    done = sync_run(north, elsewhere)
    assert done.returncode == 2, done.stderr
    found = metric_samples(north.metrics)
    # No token: no realm and no state store to read, but the run and its exit code show.
    assert found[("fourdqbo_last_run_exit_code", frozenset({("realm", "")}))] == 2
    assert ("fourdqbo_last_success_timestamp_seconds", frozenset({("realm", "")})) not in found


# --- bad settings, in process -------------------------------------------------------------


@pytest.fixture
def env_of(sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    return {**sandbox.env(tmp_path / "data"), "STATE_BACKEND": "file", "LOGS_DIR": "logs"}


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def test_a_missing_env_file_is_exit_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "north.env"
    result = invoke("--env-file", str(missing), "config", "show")
    assert result.exit_code == 2
    assert result.stderr == f"fourdqbo: --env-file {missing}: no such file\n"


def test_a_directory_as_env_file_is_exit_2_naming_it(tmp_path: Path) -> None:
    result = invoke("--env-file", str(tmp_path), "sync", "status")
    assert result.exit_code == 2
    assert result.stderr == f"fourdqbo: --env-file {tmp_path}: not a file\n"


def test_an_unreadable_env_file_is_exit_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    undecodable = tmp_path / "latin1.env"
    undecodable.write_bytes(b"QBO_CLIENT_SECRET=\xff\n")
    result = invoke("--env-file", str(undecodable), "config", "show")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"fourdqbo: cannot read {undecodable}: UnicodeDecodeError")
    # Permission denied (chmod does not stop root, which runs this suite in CI).
    locked = tmp_path / "locked.env"
    locked.write_text("STATE_PREFIX=x\n")
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    result = invoke("--env-file", str(locked), "status")
    assert result.exit_code == 2
    assert result.stderr == f"fourdqbo: cannot read {locked}: PermissionError\n"


def test_the_env_file_replaces_dot_env_and_its_paths_follow_it(tmp_path: Path) -> None:
    Path(".env").write_text("STATE_PREFIX=from-dot-env\nSYNC_MAX_ATTEMPTS=9\n")
    folder = tmp_path / "etc" / "north"
    folder.mkdir(parents=True)
    env_file = folder / "north.env"
    env_file.write_text(
        "STATE_PREFIX=north\nDATA_DIR=data\nLOGS_DIR=../logs/north\n"
        "METRICS_FILE=north.prom\nQBO_TOKEN_FILE=/abs/token.json\n"
    )
    settings = load_settings({"LOGS_DIR": "env-logs"}, env_file=env_file)
    assert settings.state_prefix == "north"
    assert settings.sync_max_attempts == 5  # ./.env not read at all
    assert settings.data_dir == folder / "data"
    assert settings.metrics_file == folder / "north.prom"
    assert settings.qbo_token_file == Path("/abs/token.json")
    assert settings.logs_dir == Path("env-logs")  # the environment's stays as it is
    derived = tmp_path / "south.env"
    derived.write_text("DATA_DIR=south-data\n")
    # No QBO_TOKEN_FILE: the token lives with the (resolved) data directory.
    assert load_settings({}, env_file=derived).qbo_token_file == (
        tmp_path / "south-data" / "qbo_token.json"
    )
    shown = invoke("--env-file", str(env_file), "config", "show", "--json")
    assert shown.exit_code == 0, shown.output
    assert "north" in shown.stdout and "from-dot-env" not in shown.stdout


def test_a_bad_log_format_is_exit_2_naming_it(env_of: dict[str, str]) -> None:
    for args in (("sync", "status"), ("status",), ("auth", "status")):
        result = invoke(*args, env={**env_of, "LOG_FORMAT": "xml"})
        assert result.exit_code == 2, (args, result.output)
        assert "LOG_FORMAT" in result.stderr and "text, json" in result.stderr
        assert result.stderr.count("\n") == 1
    assert not Path("logs", "fourdqbo.log").exists()  # failed before logging anything


def test_an_unwritable_metrics_file_is_a_warning_not_a_failure(
    env_of: dict[str, str], tmp_path: Path
) -> None:
    env = {**env_of, "METRICS_FILE": str(tmp_path / "no-such-dir" / "fourdqbo.prom")}
    result = invoke("status", "--json", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["healthy"] is True
    log_text = Path("logs", "fourdqbo.log").read_text()
    assert "WARNING" in log_text and "could not write the metrics file" in log_text
    assert "could not write the metrics file" in result.stderr  # the console shows warnings
    assert not (tmp_path / "no-such-dir").exists()
