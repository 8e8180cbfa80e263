"""Faults: 10% mixed faults on both services through a first sync and rounds of changes
in 4D; and the special ones: 4D answering 401 mid-run, Redis restarted mid-run, the QBO
refresh token rotated by another process mid-run."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.world import (
    LOST_ANSWERS,
    Launched,
    World,
    change_quotes,
    finish,
    is_customer_batch,
    is_qbo_write,
    is_quote_fetch,
    lock_history_problems,
    private_redis,
    say,
    wait_for_requests,
)
from fourdqbo.sandbox.audit import Audit
from fourdqbo.sandbox.server import FAULT_KINDS
from fourdqbo.sync.load import WRITES_IN_FLIGHT


@dataclass
class FaultResult:
    seed: int
    runs: list[int] = field(default_factory=list)
    rounds: int = 0
    runs_per_round: list[int] = field(default_factory=list)
    changes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    audit: Audit | None = None
    problems: list[str] = field(default_factory=list)


def faults_once(
    *,
    redis_url: str,
    seed: int,
    quotes: int,
    rate: float = 0.10,
    rounds: int = 2,
    max_runs: int = 8,
    **world: Any,
) -> FaultResult:
    """Mixed faults on both services: the first sync, then `rounds` rounds of changes in 4D
    (edits, re-opened, completed and new quotes); after each, runs until one gets through
    with nothing failed, and the audit.

    A sync makes a few hundred 4D requests but only a dozen or two QBO requests (batches
    of 30), so 10% alone may spare QBO's writes: the first QBO writes of each round also
    meet the faults that lose an answer (committed then dropped, timed out, dropped).
    """
    result = FaultResult(seed)
    rng = random.Random(seed)
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        w.mixed_faults(rate)
        for round_number in range(rounds + 1):
            if round_number:
                result.changes.update(change_quotes(w.sandbox, rng))
            w.lose_first_answers()
            attempt = w.run_until_finished(result.runs, result.problems, max_runs)
            result.rounds += 1
            result.runs_per_round.append(attempt)
            check = w.audit()
            if not check.converged:
                result.problems.append(f"round {round_number}: not converged: {check.summary()}")
            result.audit = check if result.audit is None else _merge(result.audit, check)
        result.requests, result.faults = w.faults_met()
        result.problems += lock_history_problems(w.store.lock_history())
    return result


def _merge(first: Audit, second: Audit) -> Audit:
    """Every finding of two audits (a quote found twice counts once)."""
    merged = Audit()
    for name in ("duplicates", "missing", "mismatched", "stray", "duplicate_customers", "paid"):
        setattr(merged, name, sorted(set(getattr(first, name)) | set(getattr(second, name))))
    return merged


def faults_suite(
    *, redis_url: str, seeds: Sequence[int], quotes: int, strict: bool = True
) -> list[FaultResult]:
    say(f"faults: 10% mixed faults on 4D and QBO, {len(seeds)} seeds, {quotes} quotes each")
    results = []
    for seed in seeds:
        result = faults_once(redis_url=redis_url, seed=seed, quotes=quotes, strict=strict)
        results.append(result)
        audit_text = result.audit.summary() if result.audit else "no audit"
        changes = ", ".join(f"{n} {what}" for what, n in result.changes.items())
        say(
            f"  seed {seed}: first sync + {result.rounds - 1} rounds of changes ({changes}); "
            f"{sum(result.faults.values())} faults injected in {result.requests} requests; "
            f"runs exit {result.runs}; {audit_text}"
            + (f"  PROBLEMS: {result.problems}" if result.problems else "")
        )
    return results


def faults_figures(results: Sequence[FaultResult]) -> str:
    total: Counter[str] = Counter()
    for result in results:
        total.update(result.faults)
    by_kind: Counter[str] = Counter()
    for key, n in total.items():
        by_kind[key.split(":", 1)[1]] += n
    by_service: Counter[str] = Counter()
    for key, n in total.items():
        by_service[key.split(":", 1)[0]] += n
    audits = [r.audit for r in results if r.audit is not None]
    runs = [n for r in results for n in r.runs_per_round]
    requests = sum(r.requests for r in results)
    scripted = len(LOST_ANSWERS) * sum(r.rounds for r in results)
    kinds = ", ".join(f"{k} {by_kind[k]}" for k in FAULT_KINDS)
    return (
        f"{len(results)} seeds, {sum(total.values())} faults in {requests} requests "
        f"(4D {by_service['fourd']}, QBO {by_service['qbo']} of which up to {scripted} scripted on "
        f"the first QBO writes of each round; {kinds}), "
        "runs to converge per round "
        f"{min(runs, default=0)}-{max(runs, default=0)}, "
        f"{sum(len(a.duplicates) for a in audits)} duplicates, "
        f"{sum(len(a.mismatched) for a in audits)} mismatches, "
        f"{sum(len(a.missing) for a in audits)} missing, "
        f"{sum(len(a.stray) for a in audits)} stray, "
        f"{sum(len(a.duplicate_customers) for a in audits)} duplicate customers"
    )


@dataclass
class ScenarioResult:
    name: str
    runs: list[int] = field(default_factory=list)
    audit: Audit | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        audit_text = self.audit.summary() if self.audit else "no audit"
        return f"{self.name}: exits {self.runs}; {'; '.join(self.notes)}; {audit_text}" + (
            f"  PROBLEMS: {self.problems}" if self.problems else ""
        )


def _converge_and_audit(w: World, result: ScenarioResult) -> None:
    runs = w.converge()
    result.runs += [r.code for r in runs]
    if not runs[-1].finished:
        result.problems.append(f"no clean run finished: {runs[-1].stderr.strip()[-300:]}")
    result.audit = w.audit()
    if not result.audit.converged:
        result.problems.append("not converged: " + result.audit.summary())


def fourd_unauthorized_mid_run(
    *, redis_url: str, seed: int = 11, quotes: int = 300, after_fetches: int = 40, **world: Any
) -> ScenarioResult:
    """4D starts answering 401 while quotes are fetched: exit 3, nothing moved, then fixed."""
    result = ScenarioResult("4D 401 mid-run")
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        w.latency(fourd_ms=15)
        started = time.monotonic()
        run = w.spawn("--json")
        if not wait_for_requests(w.sandbox, is_quote_fetch, after_fetches, run):
            result.problems.append("the run ended before the 401s started")
        w.sandbox.knobs.fourd.unauthorized = True
        first = finish(run, started, 120)
        result.runs.append(first.code)
        if first.code != 3:
            result.problems.append(f"expected exit 3, got {first.code}")
        if "Traceback" in first.stderr or first.stderr.strip().count("\n") > 0:
            result.problems.append(f"not one line on stderr: {first.stderr!r}")
        # The run is a pipeline: chunks read before the refusal may be written, but once the
        # run has been told a read is refused nothing more may leave except the write
        # batches already past their last check (at most WRITES_IN_FLIGHT). "Told" is when
        # the first 401 answer left the sandbox (its arrival plus the latency added): a
        # write arriving between the two was sent before the run could know.
        log = w.sandbox.requests
        refused = [r.answered or r.at for r in log if r.service == "fourd" and r.status == 401]
        late = [r for r in log if is_qbo_write(r) and refused and r.at > min(refused)]
        if len(late) > WRITES_IN_FLIGHT:
            result.problems.append(
                f"{len(late)} QBO writes after 4D refused the credentials "
                f"(at most {WRITES_IN_FLIGHT} may have been in flight)"
            )
        if w.store.watermark() is not None:
            result.problems.append("the watermark moved")
        if w.store.lock_holder() is not None:
            result.problems.append("the lock was not released")
        history = w.store.runs(1)
        if not history or not history[0].get("aborted"):
            result.problems.append("the aborted run is not in the run history")
        result.notes.append(f"first run: {first.stderr.strip()[:90]}")
        w.sandbox.knobs.fourd.unauthorized = False
        w.latency()
        _converge_and_audit(w, result)
        result.problems += lock_history_problems(w.store.lock_history())
    return result


def redis_restart_mid_run(
    *,
    seed: int = 12,
    quotes: int = 300,
    down_for: float = 1.0,
    after_batches: int = 1,
    server: Any = None,
    **world: Any,
) -> ScenarioResult:
    """Redis goes away while customers and invoices are written and comes back empty (no
    persistence: lock, watermark and retry queue are gone): exit 3 (or a finished run),
    then the next run converges with no duplicate. `server`: a RedisServer to use (one of
    our own is started otherwise)."""
    result = ScenarioResult(f"Redis restarted mid-run (down {down_for:g} s)")
    own = server is None
    server = server or private_redis()
    server.start()
    try:
        with World(seed=seed, quotes=quotes, redis_url=server.url, **world) as w:
            w.latency(qbo_ms=250)  # the writing outlasts a short outage
            started = time.monotonic()
            run = w.spawn("--json")
            if not wait_for_requests(w.sandbox, is_customer_batch, after_batches, run):
                result.problems.append("the run ended before Redis went down")
            server.stop()
            time.sleep(down_for)
            server.start()
            first = finish(run, started, 120)
            result.runs.append(first.code)
            if first.code not in (0, 1, 3):
                result.problems.append(f"expected exit 3 (or 0/1), got {first.code}")
            if "Traceback" in first.stderr:
                result.problems.append("a traceback on stderr")
            result.notes.append(
                "first run: " + (first.stderr.strip().splitlines() or ["(no message)"])[-1][:160]
            )
            w.latency()
            _converge_and_audit(w, result)
    finally:
        if own:
            server.close()
    return result


def token_rotated_mid_run(
    *,
    redis_url: str,
    seed: int = 13,
    quotes: int = 300,
    after_batches: int = 2,
    racer: bool = False,
    **world: Any,
) -> ScenarioResult:
    """Another process refreshes (rotates) the QBO token while a run writes customers; then
    every access token expires, so the run meets a 401 and must refresh with the rotated
    refresh token from the file (the replaced one is dead). With `racer`, a third process
    refreshes at that same instant: the run must use what it wrote. The run must finish."""
    name = "QBO refresh token rotated by another process mid-run"
    result = ScenarioResult(name + (", a third one refreshing with the run" if racer else ""))
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        oauth = w.sandbox.oauth
        oauth.refresh_grace_seconds = 0  # a replaced refresh token dies at once
        w.latency(qbo_ms=300)  # the run outlasts the outside refreshes (~3 s of writes left)
        third = Launched(w, [], command=("auth", "refresh")) if racer else None
        if third is not None:
            third.wait_ready()
        started = time.monotonic()
        run = w.spawn("--json")
        if not wait_for_requests(w.sandbox, is_customer_batch, after_batches, run):
            result.problems.append("the run ended before the rotation")
        other = w.fourdqbo("auth", "refresh")
        if other.returncode != 0:
            result.problems.append(f"`auth refresh` in another process: exit {other.returncode}")
        # The run goes on with the rotated token from the file. A second later (requests
        # that left with the old token are answered by then) every access token issued so
        # far expires (sandbox clock +1 h): the run's next QBO call is a 401 and it must
        # refresh with the rotated refresh token. (A token issued after the jump is valid.)
        time.sleep(1.0)
        w.sandbox.clock.advance(oauth.access_ttl + 1)
        if third is not None:
            third.go()
        first = finish(run, started, 120)
        racer_code = third.join(timeout=60) if third is not None else None
        result.runs.append(first.code)
        if not first.finished:
            result.problems.append(
                f"the run did not finish: exit {first.code}: {first.stderr.strip()[-200:]}"
            )
        if racer_code not in (None, 0):
            result.problems.append(f"the racing `auth refresh`: exit {racer_code}")
        refreshes = [e for e in oauth.token_requests if e["grant_type"] == "refresh_token"]
        refused = [e for e in refreshes if not e["ok"]]
        if refused:
            result.problems.append(f"{len(refused)} refresh(es) refused: {refused[:2]}")
        auth_failures = sum(
            1 for r in w.sandbox.requests_to("qbo") if r.status == 401 and r.fault is None
        )
        outside = (other.returncode == 0) + (racer_code == 0)  # `auth refresh` always refreshes
        own = len(refreshes) - outside
        if not racer and own < 1:
            result.problems.append("the run met the expiry but did not refresh")
        if not auth_failures:
            result.problems.append("the run met no 401: the scenario missed its point")
        result.notes.append(
            f"{len(refreshes)} refreshes ({outside} by other processes, {own} by the run, "
            f"{len(refused)} refused); the run met {auth_failures} QBO 401(s) and carried on"
            + (
                " with the token another process had written"
                if not own
                else ", refreshing with the rotated refresh token it read from the file"
            )
        )
        w.latency()
        _converge_and_audit(w, result)
    return result
