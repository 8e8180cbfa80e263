"""A total that differs only by QBO's sales tax: in step, never written again and again.

`mapping.draft_differences` names "TotalAmt" when the lines agree but the total does not.
When QBO's own sales tax (`TxnTaxDetail.TotalTax`) is exactly the gap, an update would
send the same lines and QBO would add the same tax again: the planner would write the
invoice every run, forever. So the planner and reconcile count it as in step; a total
that differs for any other reason (a discount line a person added) still differs.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fourdqbo import jsonio
from fourdqbo.cli.app import app
from fourdqbo.emr.records import STATUS_COMPLETED
from fourdqbo.qbo.records import Customer, Invoice
from fourdqbo.sandbox import Sandbox
from fourdqbo.state.items import LedgerEntry
from fourdqbo.sync.differences import differs_only_by_tax, sales_tax
from fourdqbo.sync.planning import Action, QuoteInput, plan_sync
from fourdqbo.sync.reconcile import FindingKind, reconcile_findings
from tests.sync.test_mapping import ITEM_IDS, draft_of, qbo_answer
from tests.sync.test_reconcile import SINCE, TEMPLATE

TAX = Decimal("8.25")


def taxed(invoice: Invoice, tax: Decimal = TAX, extra: Decimal = Decimal(0)) -> Invoice:
    """The invoice as a company with automated sales tax holds it (plus `extra` on top)."""
    raw = json.loads(jsonio.dumps(dict(invoice.raw)))
    total = Decimal(str(raw["TotalAmt"])) + tax + extra
    raw.update(TotalAmt=str(total), Balance=str(total), TxnTaxDetail={"TotalTax": str(tax)})
    return Invoice.parse(jsonio.loads(json.dumps(raw)))


def quote_and_invoice(
    tax: Decimal = TAX, extra: Decimal = Decimal(0)
) -> tuple[QuoteInput, Invoice]:
    draft = draft_of(Patient={"Id": 77, "Name": "Jane Q Doe"})
    quote = QuoteInput(draft.doc_number, draft.version, STATUS_COMPLETED, "77", draft)
    return quote, taxed(qbo_answer(draft, "58"), tax, extra)


CUSTOMERS = [Customer("58", "0", "77.JQD", True)]


def test_a_total_that_is_the_quote_plus_qbo_s_tax_differs_only_by_tax() -> None:
    quote, invoice = quote_and_invoice()
    assert quote.draft is not None
    assert sales_tax(invoice) == TAX
    assert differs_only_by_tax(quote.draft, invoice, ["TotalAmt"])
    # Another gap, another field, or no tax at all: not the tax's doing.
    _, more = quote_and_invoice(extra=Decimal("1.00"))
    assert not differs_only_by_tax(quote.draft, more, ["TotalAmt"])
    assert not differs_only_by_tax(quote.draft, invoice, ["TotalAmt", "Line"])
    _, untaxed = quote_and_invoice(tax=Decimal(0), extra=TAX)
    assert not differs_only_by_tax(quote.draft, untaxed, ["TotalAmt"])


@pytest.mark.parametrize("with_ledger", [False, True])
def test_the_planner_leaves_a_taxed_invoice_alone(with_ledger: bool) -> None:
    quote, invoice = quote_and_invoice()
    ledger = (
        {quote.number: LedgerEntry(quote.number, invoice.id, quote.version, "0", "r", SINCE)}
        if with_ledger
        else None
    )
    plan = plan_sync(
        [quote],
        [invoice],
        CUSTOMERS,
        ITEM_IDS,
        ledger=ledger,
        edits="revert",
        quote_version_field="1",
    )
    (only,) = plan.quotes
    assert only.action is Action.UNCHANGED, only.reason
    assert "sales tax" in only.reason and "8.25" in only.reason


def test_a_total_gap_the_tax_does_not_explain_is_still_a_person_s_edit() -> None:
    quote, invoice = quote_and_invoice(extra=Decimal("5.00"))
    ledger = {quote.number: LedgerEntry(quote.number, invoice.id, quote.version, "0", "r", SINCE)}
    plan = plan_sync([quote], [invoice], CUSTOMERS, ITEM_IDS, ledger=ledger)
    (only,) = plan.quotes
    assert only.action is Action.CONFLICT and "TotalAmt" in only.reason


def test_reconcile_calls_a_taxed_invoice_ok_and_its_totals_show_the_tax() -> None:
    quote, invoice = quote_and_invoice()
    result = reconcile_findings([quote], [invoice], CUSTOMERS, ITEM_IDS, {}, TEMPLATE, SINCE)
    (finding,) = result.findings
    assert finding.finding is FindingKind.OK and "sales tax" in finding.reason
    assert finding.differences == ()
    assert result.difference == -TAX
    _, more = quote_and_invoice(extra=Decimal("5.00"))
    (other,) = reconcile_findings(
        [quote], [more], CUSTOMERS, ITEM_IDS, {}, TEMPLATE, SINCE
    ).findings
    assert other.finding is FindingKind.DIFFERS


@pytest.mark.integration
def test_a_company_with_sales_tax_is_not_written_every_run(
    sandbox: Sandbox, sandbox_redis_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**sandbox_redis_env, "HTTP_TIMEOUT_SECONDS": "2"}

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(app, [*args, "--json"], env=env)
        return result.exit_code, json.loads(result.stdout)

    run("sync", "run")
    number = next(
        n
        for n in sandbox.practice.completed_numbers()
        if n != sandbox.facts.conflict_quote and len(sandbox.company.invoices_by_doc(n)) == 1
    )
    # QBO's automated sales tax, as a read shows it (the sandbox computes no tax itself).
    with sandbox.company.lock:
        (stored,) = [
            i for i in sandbox.company._store["Invoice"].values() if i["DocNumber"] == number
        ]
        stored["TxnTaxDetail"] = {"TotalTax": TAX}
        stored["TotalAmt"] = stored["TotalAmt"] + TAX
        stored["Balance"] = stored["Balance"] + TAX
    for _ in range(2):
        sandbox.clear_requests()
        # --since from the start: every quote is re-checked, this one included.
        _, report = run("sync", "run", "--since", env["SYNC_INITIAL_FROM"])
        outcome = next(q for q in report["quotes"] if q["quote"] == number)
        assert outcome["action"] == "unchanged", outcome
        assert not [
            r
            for r in sandbox.requests_to("qbo")
            if r.is_write and number in json.dumps(r.body, default=str)
        ]
    _, audit = run("reconcile")
    finding = next(f for f in audit["findings"] if f["quote"] == number)
    assert finding["finding"] == "ok" and "sales tax" in finding["reason"]
