"""LOG_FORMAT=json: one JSON object a line in the log file, scrubbed like the text log."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fourdqbo.log import REDACTED, RunContext, quote_context, register_sensitive, setup_logging

PATIENT = "Quintessa Varga-Lund"


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[Path]:
    """A JSON file log in tmp_path (the autouse fixture resets the logger afterwards)."""
    setup_logging(tmp_path / "logs", console=False, log_format="json")
    yield tmp_path / "logs" / "fourdqbo.log"
    RunContext.run_id = "-"


def records(path: Path) -> list[dict[str, Any]]:
    for handler in logging.getLogger("fourdqbo").handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_each_line_is_one_object_with_the_documented_fields(json_log: Path) -> None:
    RunContext.run_id = "a1b2c3d4e5f6"
    before = datetime.now(UTC)
    logging.getLogger("fourdqbo.sync.engine").info("quote %s written", "10023")
    logging.getLogger("fourdqbo.qbo").warning("throttled\nsecond line")
    first, second = records(json_log)
    assert set(first) == {"time", "level", "logger", "run_id", "quote", "message"}
    assert first["level"] == "INFO"
    assert first["logger"] == "fourdqbo.sync.engine"
    assert first["run_id"] == "a1b2c3d4e5f6"
    assert first["message"] == "quote 10023 written"
    assert first["quote"] is None  # not said
    assert first["time"].endswith("Z")
    moment = datetime.fromisoformat(first["time"])
    assert moment.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= moment <= datetime.now(UTC)
    assert second["message"] == "throttled\nsecond line"  # still one line in the file
    assert json_log.read_text().count("\n") == 2


def test_the_quote_comes_from_extra_or_the_context(json_log: Path) -> None:
    log = logging.getLogger("fourdqbo.sync")
    log.info("by extra", extra={"quote": "10031"})
    with quote_context("10032"):
        log.info("by context")
        log.info("extra wins", extra={"quote": "10033"})
    log.info("after")
    quotes = [(r["message"], r["quote"]) for r in records(json_log)]
    assert quotes == [
        ("by extra", "10031"),
        ("by context", "10032"),
        ("extra wins", "10033"),
        ("after", None),
    ]


def test_the_quote_context_belongs_to_its_thread(json_log: Path) -> None:
    log = logging.getLogger("fourdqbo.sync")
    with quote_context("10040"):
        worker = threading.Thread(target=lambda: log.info("other thread"))
        worker.start()
        worker.join()
    assert records(json_log)[0]["quote"] is None


def test_a_patient_name_never_reaches_the_json_log(json_log: Path) -> None:
    register_sensitive(PATIENT)
    log = logging.getLogger("fourdqbo.emr")
    log.info("customer for %s", PATIENT)
    log.info("quote", extra={"quote": PATIENT})
    try:
        raise ValueError(f"bad name {PATIENT.upper()}")
    except ValueError:
        log.exception("mapping failed")
    text = json_log.read_text(encoding="utf-8")
    assert "quintessa" not in text.lower()
    first, second, third = records(json_log)
    assert first["message"] == f"customer for {REDACTED}"
    assert second["quote"] == REDACTED
    assert third["message"] == "mapping failed"
    assert third["exc"].startswith("Traceback")
    assert f"ValueError: bad name {REDACTED}" in third["exc"]


def test_text_stays_the_default(tmp_path: Path) -> None:
    setup_logging(tmp_path / "logs", console=False)
    RunContext.run_id = "feedc0ffee00"
    logging.getLogger("fourdqbo.sync").info("plain", extra={"quote": "10050"})
    for handler in logging.getLogger("fourdqbo").handlers:
        handler.flush()
    line = (tmp_path / "logs" / "fourdqbo.log").read_text().strip()
    RunContext.run_id = "-"
    assert not line.startswith("{")
    assert "INFO run=feedc0ffee00 fourdqbo.sync: plain" in line
