"""Issue 8 end to end: the sync against the sandbox's recorded QBO shapes, over loopback,
with real Redis (and the file backend where it costs nothing).

A patient's customer is found by patient id: an inactive customer QBO renamed
"… (deleted)" comes back under its plain name (or under its current one, said in the
report, when the plain name is held elsewhere), a patient whose initials changed keeps
their customer, and several customers of one patient stop the patient's writes. Around
that: the CUSTOMER_NAME_TEMPLATE rule, throttles answered in XML with 429 and 403, the
lower-case 401 of an expired token and the token fragment it quotes, how many reads a
run makes, and what counts as a void.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.audit import audit, patient_customers
from fourdqbo.sandbox.qbo import TOKEN_ECHO
from fourdqbo.sandbox.seed import display_name
from fourdqbo.sandbox.server import QboLimits, RequestRecord
from fourdqbo.sync.pipeline import chunked
from tests.test_privacy import redis_dump

pytestmark = pytest.mark.integration

TEMPLATE = "{patient_id}.{initials}"
SyncRun = Callable[..., tuple[int, dict[str, Any]]]


def _redis_env(
    sandbox: Sandbox, tmp_path: Path, redis_url: str, state_prefix: str
) -> dict[str, str]:
    return {
        **sandbox.env(tmp_path / "data"),
        "STATE_BACKEND": "redis",
        "REDIS_URL": redis_url,
        "STATE_PREFIX": state_prefix,
        "LOGS_DIR": str(tmp_path / "logs"),
        "HTTP_TIMEOUT_SECONDS": "1",
        "SYNC_LOCK_TTL_SECONDS": "10",
    }


@pytest.fixture
def env(sandbox: Sandbox, tmp_path: Path, redis_url: str, state_prefix: str) -> dict[str, str]:
    return _redis_env(sandbox, tmp_path, redis_url, state_prefix)


def runner_for(env: dict[str, str]) -> SyncRun:
    def run(*args: str, **overrides: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(app, ["sync", "run", "--json", *args], env={**env, **overrides})
        assert "Traceback" not in result.stderr, result.stderr
        document = json.loads(result.stdout) if result.stdout.strip() else {}
        return result.exit_code, document

    return run


@pytest.fixture
def sync(env: dict[str, str]) -> SyncRun:
    return runner_for(env)


def outcome(report: dict[str, Any], number: str) -> dict[str, Any]:
    return next(q for q in report["quotes"] if q["quote"] == number)


def customers_of(sandbox: Sandbox, patient_id: int) -> set[str]:
    """Every customer that is this patient by the template, inactive ones too."""
    return patient_customers(sandbox.company.customers(), str(patient_id), TEMPLATE)


def plain_quote(sandbox: Sandbox) -> str:
    """A completed quote of the seed with nothing special about its patient's customer."""
    facts = sandbox.facts
    special = {facts.conflict_quote, facts.inactive_customer_quote}
    special_patients = {sandbox.practice.quote(n).patient_id for n in special if n}
    return next(
        n
        for n in sandbox.practice.completed_numbers()
        if n not in special and sandbox.practice.quote(n).patient_id not in special_patients
    )


def first_run_and_a_patient(sandbox: Sandbox, sync: SyncRun) -> tuple[str, Any, dict[str, Any]]:
    """After a first run: a plain completed quote, its patient and the patient's customer."""
    sync()
    number = plain_quote(sandbox)
    patient = sandbox.practice.patient_of(number)
    customer = sandbox.company.customer_by_name(display_name(patient))
    assert customer is not None
    return number, patient, customer


def qbo_writes(sandbox: Sandbox) -> list[RequestRecord]:
    return [r for r in sandbox.requests_to("qbo") if r.is_write and r.status]


def mentions(record: RequestRecord, text: str) -> bool:
    return text in json.dumps(record.body, default=str)


def new_quote_for(sandbox: Sandbox, patient_id: int) -> str:
    sandbox.clock.advance(60)
    return sandbox.practice.add_quote(patient_id=patient_id, status_id=4).number


# --- inactive customers ("… (deleted)") ------------------------------------------------


@pytest.fixture(params=["deleted", "Deleted"], ids=["suffix", "legacy-suffix"])
def spelled(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, state_prefix: str
) -> Iterator[tuple[Sandbox, SyncRun, dict[str, str]]]:
    """A sandbox whose inactive customers are renamed with " (deleted)", or with the
    " (Deleted)" of older QBO answers."""
    legacy = request.param == "Deleted"
    with Sandbox(seed=7, quotes=12, timeout_delay=1.5, legacy_deleted_spelling=legacy) as box:
        env = _redis_env(box, tmp_path, redis_url, state_prefix)
        yield box, runner_for(env), env


def test_a_deactivated_customer_comes_back_with_its_id_and_plain_name(
    spelled: tuple[Sandbox, SyncRun, dict[str, str]],
) -> None:
    sandbox, sync, env = spelled
    _number, patient, customer = first_run_and_a_patient(sandbox, sync)
    name = display_name(patient)
    gone = sandbox.company.deactivate_customer(customer["Id"])
    suffix = " (Deleted)" if sandbox.company.settings.legacy_deleted_spelling else " (deleted)"
    assert gone["DisplayName"] == name + suffix and gone["Active"] is False
    added = new_quote_for(sandbox, patient.id)
    code, report = sync()
    assert code == 0, report["quotes"]
    assert outcome(report, added)["action"] == "created"
    back = sandbox.company.customer(customer["Id"])
    assert back is not None
    assert back["Active"] is True and back["DisplayName"] == name
    assert back["FullyQualifiedName"] == name
    assert customers_of(sandbox, patient.id) == {customer["Id"]}
    (invoice,) = sandbox.company.invoices_by_doc(added)
    assert invoice["CustomerRef"]["value"] == customer["Id"]
    assert report["customers"] == {"created": 0, "reactivated": 1}
    assert report["notices"] == []
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged


def test_the_seeds_inactive_customer_is_named_back_on_the_first_run(
    spelled: tuple[Sandbox, SyncRun, dict[str, str]],
) -> None:
    sandbox, sync, _ = spelled
    ident = sandbox.facts.inactive_customer_id
    assert ident is not None
    before = sandbox.company.customer(ident)
    assert before is not None and before["DisplayName"].casefold().endswith(" (deleted)")
    sync()
    after = sandbox.company.customer(ident)
    assert after is not None and after["Active"] is True
    patient = sandbox.practice.patient_of(sandbox.facts.inactive_customer_quote or "")
    assert after["DisplayName"] == display_name(patient)
    assert customers_of(sandbox, patient.id) == {ident}


def test_a_plain_name_held_by_a_vendor_reactivates_without_renaming_and_says_so(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    _number, patient, customer = first_run_and_a_patient(sandbox, sync)
    name = display_name(patient)
    sandbox.company.deactivate_customer(customer["Id"])
    sandbox.company.add_vendor(name)  # the freed plain name went to a vendor
    added = new_quote_for(sandbox, patient.id)
    code, report = sync()
    assert outcome(report, added)["action"] == "created", report["quotes"]
    assert code == 0
    back = sandbox.company.customer(customer["Id"])
    assert back is not None and back["Active"] is True
    assert back["DisplayName"] == name + " (deleted)"  # left as it is
    assert customers_of(sandbox, patient.id) == {customer["Id"]}
    (invoice,) = sandbox.company.invoices_by_doc(added)
    assert invoice["CustomerRef"]["value"] == customer["Id"]
    assert report["customers"]["reactivated"] == 1
    (notice,) = report["notices"]
    assert customer["Id"] in notice and "plain name" in notice
    assert name not in notice  # ids only in the report, never a patient's initials
    # Tried with the name once, refused, then without: no hammering.
    updates = [r for r in qbo_writes(sandbox) if mentions(r, f'"Id": "{customer["Id"]}"')]
    assert len(updates) == 2


def test_a_plain_name_taken_by_a_new_customer_bills_it_and_leaves_the_old_one_inactive(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    """A person made the customer inactive and created a new one under the same name: the
    customer under today's name wins; reactivating the old one would undo what they did."""
    _number, patient, customer = first_run_and_a_patient(sandbox, sync)
    name = display_name(patient)
    sandbox.company.deactivate_customer(customer["Id"])
    fresh = sandbox.company.insert("Customer", {"DisplayName": name})
    added = new_quote_for(sandbox, patient.id)
    sandbox.clear_requests()
    code, report = sync()
    assert code == 0 and outcome(report, added)["action"] == "created", report["quotes"]
    (invoice,) = sandbox.company.invoices_by_doc(added)
    assert invoice["CustomerRef"]["value"] == fresh["Id"]
    old = sandbox.company.customer(customer["Id"])
    assert old is not None and old["Active"] is False
    assert report["customers"] == {"created": 0, "reactivated": 0}
    assert like_batches(sandbox) == []  # found by its name: no look-up by id


# --- renamed patients ---------------------------------------------------------------------


def rename_in_4d(patient: Any) -> None:
    """The patient's name changes in 4D (marriage): the template gives other initials."""
    before = display_name(patient)
    patient.first_name, patient.middle_name, patient.last_name = "Quinn", "Xavier", "Zeller"
    assert display_name(patient) != before


def test_a_patient_whose_initials_changed_keeps_their_customer(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    number, patient, customer = first_run_and_a_patient(sandbox, sync)
    old_name = display_name(patient)
    rename_in_4d(patient)
    sandbox.clock.advance(60)
    sandbox.practice.edit_quote(number)  # the existing invoice is updated
    added = new_quote_for(sandbox, patient.id)  # and a new one is created
    sandbox.clear_requests()
    code, report = sync()
    assert code == 0, report["quotes"]
    assert outcome(report, number)["action"] == "updated"
    assert outcome(report, added)["action"] == "created"
    assert report["customers"] == {"created": 0, "reactivated": 0}
    assert customers_of(sandbox, patient.id) == {customer["Id"]}
    kept = sandbox.company.customer(customer["Id"])
    assert kept is not None and kept["DisplayName"] == old_name  # not renamed
    for doc in (number, added):
        (invoice,) = sandbox.company.invoices_by_doc(doc)
        assert invoice["CustomerRef"]["value"] == customer["Id"]
    assert not any(r.path.endswith("customer") for r in qbo_writes(sandbox))
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged


# --- several customers of one patient -------------------------------------------------------


@pytest.mark.parametrize("second_active", [True, False], ids=["two-active", "plus-deleted"])
def test_two_customers_of_one_patient_stop_the_patients_writes(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun, second_active: bool
) -> None:
    number, patient, customer = first_run_and_a_patient(sandbox, sync)
    # A second customer of the patient (made by hand, or by an older tool), active or
    # inactive; and no customer has the name the template gives today, so both are found
    # by the patient id and neither wins by name.
    other = sandbox.company.insert(
        "Customer", {"DisplayName": f"{patient.id}.AB", "Active": second_active}
    )
    rename_in_4d(patient)
    sandbox.clock.advance(60)
    sandbox.practice.edit_quote(number)
    added = new_quote_for(sandbox, patient.id)
    before = sandbox.company.invoices_by_doc(number)
    sandbox.clear_requests()
    code, report = sync()
    assert code == 1  # new: a person must choose
    for doc in (number, added):
        item = outcome(report, doc)
        assert item["action"] == "conflict" and item["kind"] == "customer_ambiguous"
        assert customer["Id"] in item["reason"] and other["Id"] in item["reason"]
    assert sandbox.company.invoices_by_doc(number) == before
    assert sandbox.company.invoices_by_doc(added) == []
    assert qbo_writes(sandbox) == []
    assert sandbox.company.customer(other["Id"])["Active"] is second_active
    listed = CliRunner().invoke(app, ["sync", "conflicts", "--json"], env=env)
    kinds = {i["quote"]: i["kind"] for i in json.loads(listed.stdout)["items"]}
    assert kinds[number] == kinds[added] == "customer_ambiguous"
    # The next run knows of them already: quiet, still nothing written.
    code, report = sync()
    assert code == 0 and report["attention"]["new"] == 0
    assert sandbox.company.invoices_by_doc(added) == []
    assert qbo_writes(sandbox) == []


def test_an_exact_name_wins_over_other_customers_of_the_patient(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    _number, patient, customer = first_run_and_a_patient(sandbox, sync)
    sandbox.company.insert("Customer", {"DisplayName": f"{patient.id}.AB"})
    added = new_quote_for(sandbox, patient.id)
    code, report = sync()
    assert code == 0 and outcome(report, added)["action"] == "created"
    (invoice,) = sandbox.company.invoices_by_doc(added)
    assert invoice["CustomerRef"]["value"] == customer["Id"]


def test_making_one_of_two_customers_inactive_leaves_the_choice_open_a_name_settles_it(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    """Decided: an inactive customer of the patient is still the patient's (alone, it would
    be reactivated), so making the unwanted one inactive does not choose; giving the right
    one the name the template gives today (or renaming the other out of the template's
    shape, as QBO's merge does) does. The inactive one is never touched."""
    _number, patient, customer = first_run_and_a_patient(sandbox, sync)
    other = sandbox.company.insert("Customer", {"DisplayName": f"{patient.id}.AB"})
    rename_in_4d(patient)
    added = new_quote_for(sandbox, patient.id)
    code, report = sync()
    assert code == 1 and outcome(report, added)["kind"] == "customer_ambiguous"
    sandbox.company.deactivate_customer(other["Id"])
    code, report = sync()
    assert outcome(report, added)["kind"] == "customer_ambiguous"
    assert sandbox.company.invoices_by_doc(added) == []
    sandbox.company.rename_customer(customer["Id"], display_name(patient))
    code, report = sync()
    assert code == 0, report["quotes"]
    assert outcome(report, added)["action"] == "created"
    (invoice,) = sandbox.company.invoices_by_doc(added)
    assert invoice["CustomerRef"]["value"] == customer["Id"]
    left = sandbox.company.customer(other["Id"])
    assert left is not None and left["Active"] is False  # what the person did stays
    listed = CliRunner().invoke(app, ["sync", "conflicts", "--json"], env=env)
    assert added not in {i["quote"] for i in json.loads(listed.stdout)["items"]}
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged


# --- the template rule ----------------------------------------------------------------------


@pytest.mark.parametrize("template", ["{patient_id}{initials}", "{initials}{patient_id}"])
def test_a_template_without_a_literal_next_to_the_id_is_exit_2_naming_the_variable(
    sandbox: Sandbox, env: dict[str, str], template: str
) -> None:
    sandbox.clear_requests()
    result = CliRunner().invoke(
        app, ["sync", "run"], env={**env, "CUSTOMER_NAME_TEMPLATE": template}
    )
    assert result.exit_code == 2
    assert "CUSTOMER_NAME_TEMPLATE" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert sandbox.requests == []


def test_a_template_with_a_literal_on_one_side_is_accepted(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    env = {**env, "CUSTOMER_NAME_TEMPLATE": "P{patient_id}{initials}"}
    code, report = runner_for(env)()
    assert code == 1 and report["counts"]["failed"] == 0  # the seed's paid conflict only
    assert report["counts"]["created"] >= 1


# --- throttles in QBO's XML, 429 and the legacy 403 -----------------------------------------


def throttled(sandbox: Sandbox) -> list[RequestRecord]:
    return [r for r in sandbox.requests_to("qbo") if r.outcome == "throttled"]


@pytest.mark.parametrize("status", [429, 403])
def test_injected_throttles_are_waited_out_and_the_run_converges(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun, status: int
) -> None:
    sandbox.knobs.qbo.throttle_status = status
    sandbox.inject("qbo", "429", times=2)  # the next two QBO requests, reads or writes
    sandbox.inject("qbo", "429", times=1, writes_only=True)
    code, report = sync()
    assert code == 1, report  # the seed's paid conflict, nothing else
    assert report["counts"]["failed"] == 0 and report["counts"]["created"] >= 1
    answers = throttled(sandbox)
    assert len(answers) == 3 and {r.status for r in answers} == {status}
    assert any(r.method == "POST" for r in answers)  # a batch was refused and sent again
    # A throttle is never taken for a refused token, whatever its status.
    assert sandbox.oauth.token_grants("refresh_token") == 0
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged


@pytest.mark.parametrize("status", [429, 403])
def test_limits_tighter_than_the_settings_say_cost_waits_not_failures(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun, status: int
) -> None:
    sandbox.knobs.qbo.throttle_status = status
    # This company allows one batch a second and 30 requests; the settings say far more.
    sandbox.set_limits(
        QboLimits(requests_per_window=30, batches_per_window=1, in_flight=1, window_seconds=1)
    )
    fast = {"QBO_RATE_WINDOW_SECONDS": "1"}  # and we pace to 500 requests a second
    code, report = sync(**fast)
    assert report["counts"]["failed"] == 0, report["quotes"]
    assert code == 1
    assert sandbox.throttled_count > 0
    assert {r.status for r in throttled(sandbox)} == {status}
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged
    sandbox.clear_requests()
    code, report = sync(**fast)
    assert code == 0 and qbo_writes(sandbox) == []


# --- an expired access token and the fragment its 401 quotes --------------------------------


def stored_state(env: dict[str, str], redis_url: str, state_prefix: str) -> str:
    """Everything the state backend holds for this test, as one text."""
    if env.get("STATE_BACKEND") == "file":
        data = Path(env["DATA_DIR"])
        token_file = Path(env["QBO_TOKEN_FILE"])
        return "\n".join(
            p.read_text(errors="replace")
            for p in data.rglob("*")
            if p.is_file() and not p.name.startswith(token_file.name)
        )
    return redis_dump(redis_url, state_prefix)


@pytest.mark.parametrize("backend", ["redis", "file"])
def test_an_expired_token_is_refreshed_once_and_no_fragment_of_it_is_kept(
    sandbox: Sandbox,
    env: dict[str, str],
    redis_url: str,
    state_prefix: str,
    tmp_path: Path,
    backend: str,
) -> None:
    env = {**env, "STATE_BACKEND": backend}
    token = json.loads(Path(env["QBO_TOKEN_FILE"]).read_text())["access_token"]
    fragment = token[:TOKEN_ECHO]
    sandbox.clock.advance(3601)  # QBO now says the access token expired; our file does not
    run = subprocess.run(
        [sys.executable, "-m", "fourdqbo", "--verbose", "sync", "run", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr  # the seed's paid conflict
    report = json.loads(run.stdout)
    assert report["counts"]["failed"] == 0 and report["counts"]["created"] >= 1
    refused = [r for r in sandbox.requests_to("qbo") if r.status == 401]
    assert len(refused) == 1  # the first call; every later one has the new token
    assert sandbox.oauth.token_grants("refresh_token", ok=True) == 1
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged
    # The 401 quoted the start of the token (as QBO does): it must be nowhere we write.
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log*"))
    assert "refreshing the token once" in logs  # the refusal was logged...
    stored = stored_state(env, redis_url, state_prefix)
    assert "run_id" in stored
    for place, text in (
        ("log", logs),
        ("stdout", run.stdout),
        ("stderr", run.stderr),
        ("state", stored),
    ):
        assert fragment not in text, place  # ...without what it quoted
    history = CliRunner().invoke(app, ["sync", "status", "--json"], env=env)
    assert history.exit_code in (0, 1) and fragment not in history.stdout


def test_a_token_refused_after_its_refresh_is_exit_3_quoting_neither_token(
    sandbox: Sandbox, env: dict[str, str], redis_url: str, state_prefix: str, tmp_path: Path
) -> None:
    token_file = Path(env["QBO_TOKEN_FILE"])
    first = json.loads(token_file.read_text())["access_token"]
    sandbox.knobs.qbo.unauthorized = True  # every answer: the 401 quoting the token sent
    run = subprocess.run(
        [sys.executable, "-m", "fourdqbo", "--verbose", "sync", "run"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 3
    assert "auth login" in run.stderr and "Traceback" not in run.stderr
    second = json.loads(token_file.read_text())["access_token"]
    assert second != first  # refreshed once, refused again
    assert sandbox.oauth.token_grants("refresh_token", ok=True) == 1
    assert len([r for r in sandbox.requests_to("qbo") if r.status == 401]) == 2
    assert qbo_writes(sandbox) == []
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log*"))
    stored = stored_state(env, redis_url, state_prefix)
    assert "aborted" in stored  # the run history says why, ...
    for fragment in (first[:TOKEN_ECHO], second[:TOKEN_ECHO]):
        for place, text in (("log", logs), ("stderr", run.stderr), ("state", stored)):
            assert fragment not in text, place  # ... without the token


# --- reads: bounded by patients, not by quotes or customers ---------------------------------


def like_batches(sandbox: Sandbox) -> list[list[str]]:
    """The statements of each QBO batch request made of LIKE look-ups."""
    found = []
    for record in sandbox.requests_to("qbo"):
        if not record.path.endswith("/batch") or record.is_write or record.status != 200:
            continue
        queries = [i["Query"] for i in record.body["BatchItemRequest"]]
        if any(" LIKE " in q for q in queries):
            found.append(queries)
    return found


def test_reads_one_like_look_up_per_new_patient_30_a_batch_and_none_once_known(
    tmp_path: Path, redis_url: str, state_prefix: str
) -> None:
    patients = 35
    with Sandbox(seed=11, quotes=40, patients=patients, completed=40, preexisting=False) as box:
        env = {**_redis_env(box, tmp_path, redis_url, state_prefix), "SYNC_CHUNK_SIZE": "100"}
        sync = runner_for(env)
        code, report = sync()
        assert code == 0, report["quotes"]
        assert report["counts"]["created"] == 40
        assert report["customers"]["created"] == patients
        batches = like_batches(box)
        # One look-up per patient, at most 30 a request (the run's first chunk is smaller,
        # so the patients fall into more than the fewest possible batches).
        assert sum(len(b) for b in batches) == patients
        assert all(len(b) <= 30 for b in batches) and len(batches) <= 3
        patterns = {re.search(r"LIKE '([^']*)'", q).group(1) for b in batches for q in b}
        assert patterns == {f"{pid}.%" for pid in box.practice.patients}
        assert all("Active IN (true, false)" in q for b in batches for q in b)
        reads_first = report["requests"]["qbo_read"]
        # A later run over every quote, with every patient's customer known by its name.
        box.clock.advance(60)
        for number in box.practice.completed_numbers():
            box.practice.edit_quote(number)
        box.clear_requests()
        code, report = sync()
        assert code == 0 and report["counts"]["updated"] == 40
        assert like_batches(box) == []
        assert not any(
            " LIKE " in (r.query.get("query") or [""])[0] for r in box.requests_to("qbo")
        )
        # CDC, invoices by DocNumber, customers by name, the four items: a handful of
        # reads whatever the number of quotes, and fewer than the first run's.
        reads = [r for r in box.requests_to("qbo") if not r.is_write]
        # Per chunk (13, 26 and 1 quotes here: the first is smaller, the next doubles)
        # invoices and customers by name, the items once, the CDC read once.
        chunks = len(list(chunked(box.practice.completed_numbers(), 100)))
        assert chunks == 3
        assert len(reads) == report["requests"]["qbo_read"] <= 2 * chunks + 2
        assert report["requests"]["qbo_read"] < reads_first


def test_a_patient_in_several_chunks_is_looked_up_by_pattern_once_a_run(
    tmp_path: Path, redis_url: str, state_prefix: str
) -> None:
    # 15 patients with a quote in each of three chunks of 10 (patient i: quotes i, i+15, i+30).
    with Sandbox(seed=5, quotes=40, patients=15, completed=40, preexisting=False) as box:
        env = {**_redis_env(box, tmp_path, redis_url, state_prefix), "SYNC_CHUNK_SIZE": "10"}
        code, report = runner_for(env)()
        assert code == 0, report["quotes"]
        assert report["customers"]["created"] == 15
        patterns = Counter(
            re.search(r"LIKE '([^']*)'", q).group(1) for b in like_batches(box) for q in b
        )
        assert patterns == Counter({f"{pid}.%": 1 for pid in box.practice.patients})
        assert audit(box, load_settings(env, dotenv_path=None)).converged


# --- what counts as a void -------------------------------------------------------------------


def sales_lines(invoice: dict[str, Any]) -> dict[int, int]:
    return {
        line["LineNum"]: 0
        for line in invoice["Line"]
        if line.get("DetailType") == "SalesItemLineDetail"
    }


@pytest.mark.parametrize("by_person", ["zeroed", "voided"])
def test_only_a_voided_invoice_counts_as_voided_not_one_a_person_zeroed(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun, by_person: str
) -> None:
    sync(SYNC_REOPENED_ACTION="void")
    number = plain_quote(sandbox)
    (invoice,) = sandbox.company.invoices_by_doc(number)
    if by_person == "zeroed":
        sandbox.company.edit_invoice(invoice["Id"], line_amounts=sales_lines(invoice))
    else:
        sandbox.company.void_invoice(invoice["Id"])
    (touched,) = sandbox.company.invoices_by_doc(number)
    assert touched["TotalAmt"] == 0 and touched["Balance"] == 0
    sandbox.clock.advance(60)
    sandbox.practice.set_status(number, 1)  # the quote is re-opened in 4D
    sandbox.clear_requests()
    code, report = sync(SYNC_REOPENED_ACTION="void")
    assert code == 0, report["quotes"]
    (after,) = sandbox.company.invoices_by_doc(number)
    assert after["PrivateNote"].startswith("Voided")
    if by_person == "zeroed":
        assert outcome(report, number)["action"] == "voided"
        voids = [r for r in qbo_writes(sandbox) if r.query.get("operation") == ["void"]]
        assert len(voids) == 1
    else:
        assert outcome(report, number)["action"] == "unchanged"
        assert qbo_writes(sandbox) == []
    assert audit(sandbox, load_settings(env, dotenv_path=None)).converged


def test_a_zeroed_invoice_of_a_completed_quote_is_an_edit_not_a_deletion(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    sync(SYNC_REOPENED_ACTION="void")
    number = plain_quote(sandbox)
    (invoice,) = sandbox.company.invoices_by_doc(number)
    sandbox.company.edit_invoice(invoice["Id"], line_amounts=sales_lines(invoice))
    sandbox.clear_requests()
    code, report = sync(SYNC_REOPENED_ACTION="void")
    assert code == 1
    item = outcome(report, number)
    assert item["action"] == "conflict" and item["kind"] == "edited_in_qbo"
    assert qbo_writes(sandbox) == []
