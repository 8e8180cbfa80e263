"""Benchmark: what "people work in QBO too" costs in QBO requests (issue 9's targets).

    .venv/bin/python bench/people.py [--noop-quotes 300] [--reconcile-quotes 300 3000]
                                     [--cdc-quotes 2000] [--seed 11] [--window-seconds 0.1]

Two figures, each from the sandbox's own request log (not from fourdqbo's counters):

- the no-op run: after a full sync (and the seed's paid conflict settled, so no item is
  open), one more `sync run` with nothing changed in 4D or QBO makes at most 2 requests —
  the 4D list call and the QBO CDC read (our own writes are recognised by their SyncToken
  and cost nothing);
- the CDC split: more than 1,000 invoices edited by people (QBO's cap on one CDC answer)
  are every one caught as `edited_in_qbo` by the next run, which pages CDC by time;
- reconcile: after a full sync, `fourdqbo reconcile` reads QBO in bulk, at most 12 QBO
  requests for 300 quotes and 40 for 3,000 (never one read per quote).

Everything runs in this process through the real CLI (`CliRunner`), against the sandbox
over loopback, with the file state backend in a temporary directory and QBO's minute
scaled to `--window-seconds` so the first sync's writes take seconds. The no-op run uses
SYNC_OVERLAP_SECONDS=0: the seed stamps some quotes a minute before the first run, which
the default 300 s overlap would list again. Exit 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.server import QboLimits

MAX_NOOP_REQUESTS = 2
RECONCILE_TARGETS = {300: 12, 3000: 40}  # quotes -> most QBO requests


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noop-quotes", type=int, default=300, help="(300)")
    parser.add_argument(
        "--reconcile-quotes", type=int, nargs="+", default=[300, 3000], help="(300 3000)"
    )
    parser.add_argument(
        "--cdc-quotes", type=int, default=2000, help="quotes for the CDC split, 0: skip (2000)"
    )
    parser.add_argument("--seed", type=int, default=11, help="sandbox seed (11)")
    parser.add_argument(
        "--window-seconds", type=float, default=0.1, help="QBO's minute, scaled (0.1)"
    )
    return parser.parse_args(argv)


def cli(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, [*args, "--json"], env=env)
    if result.exit_code not in (0, 1):
        raise SystemExit(f"{' '.join(args)} exited {result.exit_code}: {result.output[-400:]}")
    return result.exit_code, json.loads(result.stdout)


def sandbox_env(sandbox: Sandbox, scratch: Path) -> dict[str, str]:
    return {
        **sandbox.env(scratch / "data"),
        "STATE_BACKEND": "file",
        "LOGS_DIR": str(scratch / "logs"),
    }


def noop_run(quotes: int, seed: int, limits: QboLimits, scratch: Path) -> dict[str, Any]:
    with Sandbox(seed=seed, quotes=quotes, limits=limits) as sandbox:
        env = {**sandbox_env(sandbox, scratch), "SYNC_OVERLAP_SECONDS": "0"}
        _, first = cli(env, "sync", "run")
        paid = sandbox.company.invoice(sandbox.facts.conflict_invoice_id or "")
        if paid is not None:  # a person refunds the seed's partial payment
            sandbox.company.apply_payment(paid["Id"], paid["Balance"] - paid["TotalAmt"])
        cli(env, "sync", "run")  # updates that invoice: the last write before the no-op
        sandbox.clear_requests()
        started = time.perf_counter()
        code, report = cli(env, "sync", "run")
        seconds = time.perf_counter() - started
        log = sandbox.requests
    qbo = [r.path.rsplit("/", 1)[-1] for r in log if r.service == "qbo"]
    fourd = [r for r in log if r.service == "fourd"]
    return {
        "quotes": quotes,
        "written_by_full_sync": first["counts"]["created"] + first["counts"]["updated"],
        "exit_code": code,
        "seen": report["counts"]["seen"],
        "fourd_requests": len(fourd),
        "qbo_requests": len(qbo),
        "qbo_paths": qbo,
        "seconds": round(seconds, 2),
        "ok": code == 0 and len(fourd) + len(qbo) <= MAX_NOOP_REQUESTS,
    }


def reconcile_requests(quotes: int, seed: int, limits: QboLimits, scratch: Path) -> dict[str, Any]:
    with Sandbox(seed=seed, quotes=quotes, limits=limits) as sandbox:
        env = sandbox_env(sandbox, scratch)
        cli(env, "sync", "run")
        sandbox.clear_requests()
        started = time.perf_counter()
        _, document = cli(env, "reconcile")
        seconds = time.perf_counter() - started
        log = sandbox.requests
    qbo = [r for r in log if r.service == "qbo"]
    target = RECONCILE_TARGETS.get(quotes)
    kinds = Counter(request_kind(r) for r in qbo)
    return {
        "quotes": quotes,
        "findings": len(document["findings"]),
        "qbo_requests": len(qbo),
        "qbo_writes": sum(1 for r in qbo if r.is_write),
        "fourd_requests": sum(1 for r in log if r.service == "fourd"),
        "reported_qbo": document["requests"]["qbo"],
        "kinds": dict(kinds),
        "target": target,
        "seconds": round(seconds, 2),
        "ok": (target is None or len(qbo) <= target) and not any(r.is_write for r in qbo),
    }


def request_kind(record: Any) -> str:
    """ "query Invoice TxnDate", "query Customer Active", "batch", … for the breakdown."""
    name = record.path.rsplit("/", 1)[-1]
    if name != "query":
        return name
    statement = (record.query.get("query") or [""])[0]
    words = statement.split()
    entity = words[3] if len(words) > 3 else "?"
    where = words[words.index("WHERE") + 1] if "WHERE" in words else ""
    return f"query {entity} {where}".strip()


def cdc_split(quotes: int, seed: int, limits: QboLimits, scratch: Path) -> dict[str, Any]:
    """More than 1,000 invoices edited by people between two runs: every one is caught."""
    with Sandbox(seed=seed, quotes=quotes, limits=limits) as sandbox:
        env = {**sandbox_env(sandbox, scratch), "SYNC_OVERLAP_SECONDS": "0"}
        cli(env, "sync", "run")
        company = sandbox.company
        ours = [
            (n, found[0]["Id"])
            for n in sandbox.practice.completed_numbers()
            if n != sandbox.facts.conflict_quote
            and len(found := company.invoices_by_doc(n)) == 1
            and found[0]["Balance"] == found[0]["TotalAmt"]
        ]
        for index, (_, invoice_id) in enumerate(ours):
            if index % 400 == 0:
                sandbox.clock.advance(1)  # QBO's times have whole seconds
            company.edit_invoice(invoice_id, descriptions={1: "Changed in QBO"})
        sandbox.clear_requests()
        started = time.perf_counter()
        _, report = cli(env, "sync", "run")
        seconds = time.perf_counter() - started
        log = sandbox.requests
    edited = {q["quote"] for q in report["quotes"] if q.get("kind") == "edited_in_qbo"}
    cdc_calls = sum(1 for r in log if r.service == "qbo" and r.path.endswith("/cdc"))
    wanted = {n for n, _ in ours}
    return {
        "edited": len(wanted),
        "caught": len(edited & wanted),
        "cdc_calls": cdc_calls,
        "writes": sum(1 for r in log if r.service == "qbo" and r.is_write),
        "seconds": round(seconds, 2),
        "ok": len(wanted) > 1000 and edited >= wanted and cdc_calls >= 2,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    limits = QboLimits(window_seconds=args.window_seconds)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fourdqbo-bench-people-") as scratch:
        root = Path(scratch)
        noop = noop_run(args.noop_quotes, args.seed, limits, root / "noop")
        print(
            f"no-op run after a full sync of {noop['quotes']} quotes "
            f"({noop['written_by_full_sync']} invoices written): "
            f"4D {noop['fourd_requests']}, QBO {noop['qbo_requests']} {noop['qbo_paths']}, "
            f"seen {noop['seen']}, exit {noop['exit_code']}, {noop['seconds']} s "
            f"(target <= {MAX_NOOP_REQUESTS} requests) {'ok' if noop['ok'] else 'MISSED'}"
        )
        results.append(noop)
        for quotes in args.reconcile_quotes:
            found = reconcile_requests(quotes, args.seed, limits, root / f"reconcile-{quotes}")
            print(
                f"reconcile of {found['quotes']} quotes: QBO {found['qbo_requests']} requests "
                f"(its report says {found['reported_qbo']}; writes {found['qbo_writes']}), "
                f"4D {found['fourd_requests']}, {found['findings']} findings, "
                f"{found['seconds']} s (target <= {found['target']}) "
                f"{'ok' if found['ok'] else 'MISSED'}\n    QBO requests by kind: {found['kinds']}"
            )
            results.append(found)
        if args.cdc_quotes:
            split = cdc_split(args.cdc_quotes, args.seed, limits, root / "cdc")
            print(
                f"CDC split: {split['edited']} invoices edited by people, {split['caught']} "
                f"caught as edited_in_qbo, {split['cdc_calls']} CDC calls, "
                f"{split['writes']} writes, {split['seconds']} s "
                f"(target: > 1,000 edited, all caught) {'ok' if split['ok'] else 'MISSED'}"
            )
            results.append(split)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
