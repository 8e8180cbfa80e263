"""`fourdqbo demo`: a whole sync against the built-in sandbox with nothing configured.

Run as an operator would: a fresh process with an empty environment, in an empty
directory, so nothing from the developer's shell, `.env` or data can help it along.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import redis

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STEPS = [
    "1. Sandbox up at http://127.0.0.1:",
    "2. Authorised QBO through the sandbox's Intuit OAuth",
    "3. First sync",
    "4. Meanwhile in 4D",
    "5. Second sync",
    "6. Meanwhile in QBO, by hand",
    "7. Third sync",
    "8. What needs a person",
    "9. The QBO company now holds",
    "10. Reconcile",
    "11. What happened and why",
    "12. What a bookkeeper would do next",
]


def run_demo(
    tmp_path: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The demo in a fresh process, cwd an empty directory, HOME and TMPDIR of its own."""
    work, home, scratch = tmp_path / "work", tmp_path / "home", tmp_path / "tmp"
    for directory in (work, home, scratch):
        directory.mkdir(exist_ok=True)
    clean = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(scratch),
        "PYTHONPATH": str(REPO),
        "LANG": "C.UTF-8",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "fourdqbo", "demo", *args],
        env=clean,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, work


def assert_ran_the_whole_story(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    positions = [done.stdout.find(step) for step in STEPS]
    assert -1 not in positions, done.stdout
    assert positions == sorted(positions)
    assert " created " in done.stdout and " updated " in done.stdout
    assert " deleted " in done.stdout
    assert_reported_the_hand_changes(done.stdout)


def assert_reported_the_hand_changes(stdout: str) -> None:
    """The third sync reports the edited and the deleted invoice (with what differs), the
    reconcile summary counts them, and the next steps name the commands that settle them."""
    said = re.search(
        r"invoice (\d+) \(quote (\d+)\) given a ([\d,.]+) courtesy discount.*"
        r"invoice (\d+) \(quote (\d+)\) deleted; invoice \d+ \(quote (\d+)\) paid in full",
        stdout,
    )
    assert said, stdout
    edited_id, edited, _, deleted_id, deleted, paid = said.groups()
    third = stdout[stdout.index("7. Third sync") : stdout.index("8. What needs a person")]
    assert re.search(rf"{edited} .*conflict \(edited_in_qbo\)\s+{edited_id} ", third), third
    assert re.search(rf"{deleted} .*conflict \(deleted_in_qbo\) .*{deleted_id}", third), third
    assert paid not in third  # a payment needs nobody
    items = stdout[stdout.index("8. What needs a person") : stdout.index("9. The QBO company")]
    assert re.search(rf"{edited}\s+edited_in_qbo\s+{edited_id}\s+TotalAmt QBO ", items), items
    assert re.search(rf"{deleted}\s+deleted_in_qbo\s+Invoice QBO \(none\)", items), items
    audit = stdout[stdout.index("10. Reconcile") : stdout.index("11. What happened")]
    assert re.search(rf"{edited} .* differs ", audit), audit
    assert re.search(rf"{deleted} .* missing ", audit), audit
    summary = re.search(
        r"(\d+) quotes: ok \d+, missing 1, differs 1, .*totals quotes ([\d.]+), "
        r"invoices ([\d.]+), difference ([\d.]+)",
        audit,
    )
    assert summary, audit
    quotes_total, invoices_total, difference = (Decimal(v) for v in summary.groups()[1:])
    assert quotes_total - invoices_total == difference > 0
    steps = stdout[stdout.index("12. What a bookkeeper would do next") :]
    assert f"`fourdqbo sync accept {edited}`" in steps
    assert f"`fourdqbo sync apply {deleted}`" in steps
    assert "`fourdqbo sync conflicts`" in steps


def test_demo_runs_with_nothing_configured_and_leaves_nothing_behind(
    tmp_path: Path, unreachable_redis_url: str
) -> None:
    # A .env full of nonsense in the working directory: the demo configures itself.
    env_file_text = "FOURD_BASE_URL=http://example.com\nSTATE_BACKEND=bogus\nQBO_ENVIRONMENT=x\n"
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / ".env").write_text(env_file_text, encoding="utf-8")
    done, work = run_demo(
        tmp_path,
        REDIS_URL=unreachable_redis_url,  # no Redis here: the file backend instead
        FOURD_BASE_URL="http://example.com",  # nor does the caller's environment matter
    )
    assert_ran_the_whole_story(done)
    assert "(state: file)" in done.stdout
    assert "token saved 0600" in done.stdout
    # Nothing written where it was run, and its temporary directory removed.
    assert sorted(p.name for p in work.iterdir()) == [".env"]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_demo_uses_redis_when_it_answers_and_cleans_up(tmp_path: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        done, work = run_demo(tmp_path, "--quotes", "12", REDIS_URL=redis_url)
        assert_ran_the_whole_story(done)
        assert "(state: redis)" in done.stdout
        assert list(client.scan_iter(match="fourdqbo-demo-*", count=1000)) == []
    finally:
        client.close()
    assert list(work.iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_demo_keep_leaves_its_directory_and_says_where(
    tmp_path: Path, unreachable_redis_url: str
) -> None:
    done, _ = run_demo(tmp_path, "--quotes", "5", "--keep", REDIS_URL=unreachable_redis_url)
    assert done.returncode == 0, done.stderr
    kept = [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("fourdqbo-demo-")]
    assert len(kept) == 1
    assert f"Logs and state: {kept[0]}" in done.stderr
    assert (kept[0] / "logs" / "fourdqbo.log").is_file()
    token = kept[0] / "data" / "qbo_token.json"
    assert token.stat().st_mode & 0o777 == 0o600
