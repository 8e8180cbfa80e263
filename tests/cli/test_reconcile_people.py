"""`fourdqbo reconcile` after people worked in QBO: what the ledger says, and `--fix`.

Hand edits, deletes and voids made with the sandbox's person knobs (as in QBO's screens)
are findings that name the sync's last write; `--fix` brings them back to the quotes (4D
wins: the edit reverted, the deleted invoice re-created, the voided one updated in place)
and closes the items the sync had opened for them. State in real Redis and in the file
backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.sandbox import Sandbox
from fourdqbo.state import StateStore, open_state_store

pytestmark = pytest.mark.integration


@pytest.fixture
def env(sandbox_state_env: dict[str, str]) -> dict[str, str]:
    return sandbox_state_env


@pytest.fixture
def store(env: dict[str, str], sandbox: Sandbox) -> Iterator[StateStore]:
    opened = open_state_store(load_settings(env, dotenv_path=None), sandbox.realm_id)
    yield opened
    opened.close()


def cli(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, [*args, "--json"], env=env)
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout)


def by_quote(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["quote"]: f for f in document["findings"]}


def test_hand_changes_are_findings_with_their_ledger_and_fix_brings_4d_back(
    sandbox: Sandbox, env: dict[str, str], store: StateStore
) -> None:
    code, first = cli(env, "sync", "run")
    assert code == 1  # the seed's partly paid invoice
    company = sandbox.company
    edited, deleted, voided = [
        n
        for n in sandbox.practice.completed_numbers()
        if n != sandbox.facts.conflict_quote and len(company.invoices_by_doc(n)) == 1
    ][:3]
    ids = {n: company.invoices_by_doc(n)[0]["Id"] for n in (edited, deleted, voided)}
    company.edit_invoice(ids[edited], line_amounts={1: "1.00"})
    company.delete_invoice(ids[deleted])
    company.void_invoice(ids[voided])
    code, run = cli(env, "sync", "run")  # the sync reports them and writes nothing
    kinds = {q["quote"]: q.get("kind") for q in run["quotes"] if q["action"] == "conflict"}
    assert {kinds[edited], kinds[deleted], kinds[voided]} == {"edited_in_qbo", "deleted_in_qbo"}

    code, audit = cli(env, "reconcile")

    assert code == 1
    found = by_quote(audit)
    assert (found[edited]["finding"], found[deleted]["finding"]) == ("differs", "missing")
    assert found[voided]["finding"] == "missing" and found[voided]["invoice_id"] == ids[voided]
    assert f"changed in QBO after run {first['run_id']}" in found[edited]["reason"]
    for number in (deleted, voided):
        assert "was deleted or voided in QBO" in found[number]["reason"]
    assert found[edited]["ledger"]["run_id"] == first["run_id"]
    assert found[edited]["ledger"]["invoice_id"] == ids[edited]
    assert found[edited]["ledger"]["intuit_tid"]

    sandbox.clear_requests()
    code, fixed = cli(env, "reconcile", "--fix")

    actions = {q["quote"]: q["action"] for q in fixed["fix"]["quotes"]}
    assert actions == {edited: "updated", deleted: "created", voided: "updated"}
    after = by_quote(fixed)
    assert {after[n]["finding"] for n in (edited, deleted, voided)} == {"ok"}
    assert company.invoices_by_doc(edited)[0]["Id"] == ids[edited]
    (back,) = company.invoices_by_doc(voided)  # updated in place, never a second one
    assert back["Id"] == ids[voided]
    assert len(company.invoices_by_doc(deleted)) == 1
    for number in (edited, deleted, voided):
        assert store.attention_item(number) is None
        assert store.ledger([number])[number].run_id == fixed["fix"]["run_id"]
    # Only the seed's paid conflict is left, which is a person's call.
    assert {q: f["finding"] for q, f in after.items() if f["finding"] != "ok"} == {
        sandbox.facts.conflict_quote: "paid_differs",
        sandbox.facts.unknown_status_quote: "unknown_status",
    }
