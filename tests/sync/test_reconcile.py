"""Reconcile's pure core: one finding per quote, the invoices not from 4D, counts, totals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.emr.client import NotFound
from fourdqbo.emr.records import (
    STATUS_ACTIVE,
    STATUS_COMPLETED,
    STATUS_INACTIVE,
    Quote,
    QuoteSummary,
)
from fourdqbo.errors import FourdqboError
from fourdqbo.qbo.records import Customer, Invoice
from fourdqbo.state.items import Acceptance, Difference
from fourdqbo.sync.planning import QuoteInput
from fourdqbo.sync.reconcile import (
    FindingKind,
    Reconciler,
    ReconcileResult,
    acceptances_of,
    fix_quotes,
    patient_customer_ids,
    reconcile_findings,
)
from tests.sync.test_mapping import ITEM_IDS, PROPERTY_SETTINGS, draft_of, qbo_answer, quote_of

TEMPLATE = "{patient_id}.{initials}"
SINCE = datetime(2025, 3, 1, 5, 0, tzinfo=UTC)  # 2025-03-01 00:00 in New York
ACCEPTED_AT = datetime(2025, 3, 10, tzinfo=UTC)


def completed(number: str, patient: int = 77, **overrides: Any) -> QuoteInput:
    draft = draft_of(PriceQuoteNo=int(number), Patient={"Id": patient, "Name": "Jane Q Doe"},
                     **overrides)  # fmt: skip
    return QuoteInput(number, draft.version, STATUS_COMPLETED, str(patient), draft)


def reopened(number: str, status: int = STATUS_ACTIVE, version: int = 2) -> QuoteInput:
    return QuoteInput(number, version, status, "77", None)


def invoice_of(
    quote: QuoteInput,
    invoice_id: str = "145",
    customer_id: str = "58",
    edit: Callable[[dict[str, Any]], None] | None = None,
    balance: Decimal | None = None,
) -> Invoice:
    assert quote.draft is not None
    return qbo_answer(quote.draft, customer_id, invoice_id=invoice_id, edit=edit, balance=balance)


def foreign_invoice(
    invoice_id: str, doc_number: str, txn_date: str, total: str = "45.00"
) -> Invoice:
    return Invoice.parse(
        jsonio.loads(
            jsonio.dumps(
                {
                    "Id": invoice_id,
                    "SyncToken": "0",
                    "DocNumber": doc_number,
                    "TxnDate": txn_date,
                    "CustomerRef": {"value": "60"},
                    "TotalAmt": Decimal(total),
                    "Balance": Decimal(total),
                    "Line": [],
                }
            )
        )
    )


def voided(invoice: Invoice) -> Invoice:
    raw = dict(invoice.raw)
    raw.update(TotalAmt=0, Balance=0, PrivateNote="Voided", SyncToken="3")
    raw["Line"] = [{**line, "Amount": 0} for line in raw["Line"]]
    return Invoice.parse(jsonio.loads(jsonio.dumps(raw)))


CUSTOMERS = [Customer("58", "0", "77.JQD", True), Customer("60", "0", "Walk-in Patient", True)]


def reconcile(
    quotes: list[QuoteInput],
    invoices: list[Invoice],
    customers: list[Customer] | None = None,
    accepted: dict[str, Acceptance] | None = None,
    **extra: Any,
) -> ReconcileResult:
    return reconcile_findings(
        quotes,
        invoices,
        CUSTOMERS if customers is None else customers,
        ITEM_IDS,
        accepted or {},
        TEMPLATE,
        SINCE,
        **extra,
    )


def only(result: ReconcileResult) -> Any:
    assert len(result.findings) == 1
    return result.findings[0]


def _amount(value: str) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        body["Line"][0]["Amount"] = Decimal(value)

    return edit


def _describe(body: dict[str, Any]) -> None:
    body["Line"][0]["Description"] = "changed in QBO"


# --- a case per finding -------------------------------------------------------------------


def test_an_invoice_equal_to_the_quote_is_ok() -> None:
    quote = completed("10023")
    finding = only(reconcile([quote], [invoice_of(quote)]))
    assert finding.finding is FindingKind.OK
    assert (finding.invoice_id, finding.quote_total, finding.invoice_total) == (
        "145",
        Decimal("6841.00"),
        Decimal("6841.00"),
    )
    assert finding.differences == ()


def test_a_completed_quote_without_an_invoice_is_missing() -> None:
    finding = only(reconcile([completed("10023")], []))
    assert finding.finding is FindingKind.MISSING
    assert finding.invoice_id is None and finding.invoice_total is None


def test_a_voided_invoice_of_a_completed_quote_counts_as_missing() -> None:
    quote = completed("10023")
    finding = only(reconcile([quote], [voided(invoice_of(quote))]))
    assert finding.finding is FindingKind.MISSING
    assert "voided" in finding.reason and finding.invoice_id == "145"
    assert finding.invoice_total is None  # a voided invoice bills nothing


def test_an_unpaid_invoice_that_differs_says_what_differs() -> None:
    quote = completed("10023")
    finding = only(reconcile([quote], [invoice_of(quote, edit=_amount("4700.00"))]))
    assert finding.finding is FindingKind.DIFFERS
    assert Difference("Line 1 Amount", "4700.00", "4750.00") in finding.differences
    assert Difference("TotalAmt", "6791.00", "6841.00") in finding.differences


def test_a_paid_invoice_that_differs_is_paid_differs() -> None:
    quote = completed("10023")
    invoice = invoice_of(quote, edit=_amount("4700.00"), balance=Decimal("100.00"))
    finding = only(reconcile([quote], [invoice]))
    assert finding.finding is FindingKind.PAID_DIFFERS
    assert finding.paid


def test_a_paid_invoice_equal_to_the_quote_is_ok() -> None:
    quote = completed("10023")
    finding = only(reconcile([quote], [invoice_of(quote, balance=Decimal("0"))]))
    assert finding.finding is FindingKind.OK


def test_a_reopened_quote_with_an_unpaid_invoice_is_an_orphan() -> None:
    invoice = invoice_of(completed("10023"))
    for status in (STATUS_ACTIVE, STATUS_INACTIVE):
        finding = only(reconcile([reopened("10023", status)], [invoice]))
        assert finding.finding is FindingKind.ORPHAN
        assert finding.status in ("active", "inactive")
        assert finding.invoice_id == "145" and finding.quote_total is None


def test_a_reopened_quote_with_a_paid_invoice_is_a_paid_orphan() -> None:
    invoice = invoice_of(completed("10023"), balance=Decimal("1.00"))
    finding = only(reconcile([reopened("10023")], [invoice]))
    assert finding.finding is FindingKind.PAID_ORPHAN


def test_a_reopened_quote_without_an_invoice_or_with_a_voided_one_is_ok() -> None:
    invoice = voided(invoice_of(completed("10023")))
    assert only(reconcile([reopened("10023")], [])).finding is FindingKind.OK
    assert only(reconcile([reopened("10023")], [invoice])).finding is FindingKind.OK


def test_two_live_invoices_with_the_doc_number_are_a_duplicate() -> None:
    quote = completed("10023")
    finding = only(reconcile([quote], [invoice_of(quote), invoice_of(quote, invoice_id="150")]))
    assert finding.finding is FindingKind.DUPLICATE
    assert finding.invoice_id == "145, 150"
    assert finding.invoice_total == Decimal("13682.00")


def test_a_voided_invoice_next_to_a_live_one_is_no_duplicate() -> None:
    quote = completed("10023")
    invoices = [voided(invoice_of(quote)), invoice_of(quote, invoice_id="150")]
    finding = only(reconcile([quote], invoices))
    assert finding.finding is FindingKind.OK and finding.invoice_id == "150"


def test_an_invoice_of_another_customer_is_a_customer_mismatch() -> None:
    quote = completed("10023")
    finding = only(reconcile([quote], [invoice_of(quote, customer_id="60")]))
    assert finding.finding is FindingKind.CUSTOMER_MISMATCH
    assert Difference("CustomerRef", "60", "58") in finding.differences


def test_a_patient_without_any_customer_is_a_customer_mismatch() -> None:
    quote = completed("10023")
    finding = only(reconcile([quote], [invoice_of(quote)], customers=[]))
    assert finding.finding is FindingKind.CUSTOMER_MISMATCH
    assert Difference("CustomerRef", "58", None) in finding.differences


def test_the_patient_s_customer_is_found_by_patient_id_despite_new_initials() -> None:
    quote = completed("10023")
    renamed = [Customer("58", "0", "77.JD", True)]  # the patient's initials changed
    assert only(reconcile([quote], [invoice_of(quote)], renamed)).finding is FindingKind.OK


def test_a_deleted_suffix_customer_is_still_the_patient_s() -> None:
    quote = completed("10023")
    for name in ("77.JQD (deleted)", "77.JQD (Deleted)"):
        customers = [Customer("58", "0", name, False)]
        assert only(reconcile([quote], [invoice_of(quote)], customers)).finding is FindingKind.OK


def test_another_patient_s_id_is_not_this_patient() -> None:
    customers = [
        Customer("58", "0", "177.JQD", True),
        Customer("59", "0", "77.JQD.x", True),
        Customer("61", "0", "770.JQD", True),
        Customer("62", "0", "77.AB", True),
    ]
    # The sync's own matcher: initials are letters, so "77.JQD.x" is no name the template
    # gives patient 77 (reconcile and the sync agree on who a patient's customers are).
    assert patient_customer_ids(customers, TEMPLATE, "77", "77.JQD") == ("62",)
    assert patient_customer_ids(customers, "Patient {patient_id}", "77", "Patient 77") == ()


def test_an_accepted_version_is_accepted_and_another_version_is_not() -> None:
    quote = completed("10023")
    invoice = invoice_of(quote, edit=_amount("4700.00"), balance=Decimal("100.00"))
    current = {"10023": Acceptance("10023", quote.version, ACCEPTED_AT)}
    older = {"10023": Acceptance("10023", quote.version - 1, ACCEPTED_AT)}
    finding = only(reconcile([quote], [invoice], accepted=current))
    assert finding.finding is FindingKind.ACCEPTED
    assert finding.differences  # still shows what differs
    assert only(reconcile([quote], [invoice], accepted=older)).finding is FindingKind.PAID_DIFFERS


def test_an_accepted_quote_that_is_ok_stays_ok() -> None:
    quote = completed("10023")
    accepted = {"10023": Acceptance("10023", quote.version, ACCEPTED_AT)}
    finding = only(reconcile([quote], [invoice_of(quote)], accepted=accepted))
    assert finding.finding is FindingKind.OK


def test_an_unknown_status_is_reported_as_such() -> None:
    finding = only(reconcile([QuoteInput("10030", 1, 7, "77", None)], []))
    assert finding.finding is FindingKind.UNKNOWN_STATUS
    assert finding.status == "unknown(7)"


def test_a_quote_4d_could_not_give_is_failed() -> None:
    finding = only(reconcile([QuoteInput("10031", 1, 4, "77", None, error="boom")], []))
    assert finding.finding is FindingKind.FAILED and finding.reason == "boom"


def test_a_quote_given_twice_is_judged_once_by_its_highest_version() -> None:
    old, new = reopened("10023", version=1), completed("10023")
    result = reconcile([new, old], [])
    assert only(result).finding is FindingKind.MISSING


# --- not from 4D ----------------------------------------------------------------------------


def test_invoices_of_the_period_without_a_quote_are_not_from_4d() -> None:
    quote = completed("10023")
    invoices = [
        invoice_of(quote),
        foreign_invoice("200", "A-1001", "2025-03-01"),  # the first day, in New York
        foreign_invoice("201", "A-1002", "2025-02-28"),  # before the period
        foreign_invoice("202", "9999", "2025-03-04"),
        foreign_invoice("203", "10001", "2025-03-01"),  # 4D knows it, from before DT
    ]
    result = reconcile([quote], invoices, known_elsewhere=["10001"])
    assert [i.invoice_id for i in result.not_from_4d] == ["200", "202"]
    assert result.as_dict()["not_from_4d"][0] == {
        "invoice_id": "200",
        "doc_number": "A-1001",
        "txn_date": "2025-03-01",
        "customer_id": "60",
        "total": "45.00",
    }


# --- counts, totals, exit, fix --------------------------------------------------------------


def test_totals_are_the_completed_quotes_and_their_invoices_to_the_cent() -> None:
    ok, differs, missing = completed("10023"), completed("10024"), completed("10025")
    orphan = invoice_of(completed("10026"), invoice_id="160")
    invoices = [
        invoice_of(ok),
        invoice_of(differs, invoice_id="150", edit=_amount("4749.99")),
        orphan,
    ]
    result = reconcile([ok, differs, missing, reopened("10026")], invoices)
    assert result.quotes_total == Decimal("20523.00")
    assert result.invoices_total == Decimal("13681.99")
    totals = result.as_dict()["totals"]
    assert totals == {"quotes": "20523.00", "invoices": "13681.99", "difference": "6841.01"}


def test_the_json_document_has_the_documented_shape() -> None:
    quote = completed("10023")
    document = reconcile([quote], [invoice_of(quote, edit=_amount("1.00"))]).as_dict()
    assert set(document) == {"since", "findings", "not_from_4d", "counts", "totals", "requests"}
    assert document["since"] == "2025-03-01T05:00:00Z"
    finding = document["findings"][0]
    assert {k: finding[k] for k in ("quote", "version", "status", "finding", "invoice_id")} == {
        "quote": "10023",
        "version": 3,
        "status": "completed",
        "finding": "differs",
        "invoice_id": "145",
    }
    assert (finding["quote_total"], finding["invoice_total"]) == ("6841.00", "2092.00")
    assert {"field": "Line 1 Amount", "qbo": "1.00", "quote": "4750.00"} in finding["differences"]
    assert document["counts"]["differs"] == 1 and document["counts"]["ok"] == 0
    assert document["requests"] == {"fourd": 0, "qbo": 0}


def test_exit_is_zero_only_when_everything_is_ok_or_accepted() -> None:
    quote = completed("10023")
    invoice = invoice_of(quote, edit=_amount("1.00"))
    accepted = {"10023": Acceptance("10023", quote.version, ACCEPTED_AT)}
    assert reconcile([quote], [invoice_of(quote)]).exit_code == 0
    assert reconcile([quote], [invoice], accepted=accepted).exit_code == 0
    assert reconcile([quote], [invoice]).exit_code == 1
    assert reconcile([reopened("10023")], [invoice]).exit_code == 1


def test_fix_takes_unpaid_writable_findings_only() -> None:
    quotes = [completed(str(n)) for n in range(10023, 10029)]
    invoices = [
        invoice_of(quotes[1], "151", edit=_amount("1.00")),  # differs
        invoice_of(quotes[2], "152", edit=_amount("1.00"), balance=Decimal("0")),  # paid
        invoice_of(quotes[3], "153", customer_id="60"),  # customer mismatch, unpaid
        invoice_of(quotes[4], "154"),
        invoice_of(quotes[4], "155"),  # duplicate
        invoice_of(quotes[5], "156", edit=_amount("1.00")),  # accepted
        invoice_of(completed("10040"), "157"),  # orphan
        invoice_of(completed("10041"), "158", balance=Decimal("0")),  # paid orphan
    ]
    accepted = {"10028": Acceptance("10028", 3, ACCEPTED_AT)}
    result = reconcile([*quotes, reopened("10040"), reopened("10041")], invoices, accepted=accepted)
    kinds = [f.finding.value for f in result.findings]
    assert kinds == [
        "missing",
        "differs",
        "paid_differs",
        "customer_mismatch",
        "duplicate",
        "accepted",
        "orphan",
        "paid_orphan",
    ]
    assert fix_quotes(result) == ("10023", "10024", "10026", "10040")


# --- properties ---------------------------------------------------------------------------

KINDS = ("ok", "missing", "differs", "paid", "orphan", "paid_orphan", "dup", "other", "unknown")


@st.composite
def companies(draw: st.DrawFn) -> tuple[list[QuoteInput], list[Invoice], list[str]]:
    """Quotes, each given one situation, and the invoices that make it."""
    picks = draw(st.lists(st.sampled_from(KINDS), max_size=12))
    quotes: list[QuoteInput] = []
    invoices: list[Invoice] = []
    for index, kind in enumerate(picks):
        number = str(20000 + index)
        cents = draw(st.integers(1, 10**6))
        quote = completed(number, Procedures=[{"ProcedureName": "P", "Amount": Decimal(cents) / 100,
                                               "DiscountAmount": None}])  # fmt: skip
        invoice_id = str(500 + 2 * index)
        if kind == "ok":
            invoices.append(invoice_of(quote, invoice_id))
        elif kind in ("differs", "paid"):
            paid = Decimal("0") if kind == "paid" else None
            invoices.append(invoice_of(quote, invoice_id, edit=_describe, balance=paid))
        elif kind in ("orphan", "paid_orphan"):
            paid = Decimal("0") if kind == "paid_orphan" else None
            invoices.append(invoice_of(quote, invoice_id, balance=paid))
            quote = reopened(number)
        elif kind == "dup":
            invoices += [invoice_of(quote, invoice_id), invoice_of(quote, invoice_id + "1")]
        elif kind == "other":
            invoices.append(invoice_of(quote, invoice_id, customer_id="60"))
        elif kind == "unknown":
            quote = QuoteInput(number, 1, 9, "77", None)
        quotes.append(quote)
    return quotes, invoices, picks


@PROPERTY_SETTINGS
@given(companies())
def test_every_quote_gets_exactly_one_finding_and_counts_add_up(
    company: tuple[list[QuoteInput], list[Invoice], list[str]],
) -> None:
    quotes, invoices, _ = company
    result = reconcile(quotes, invoices)
    assert [f.quote for f in result.findings] == [q.number for q in quotes]
    counts = result.counts()
    assert sum(counts.values()) == len(quotes)
    for kind, count in counts.items():
        assert count == sum(1 for f in result.findings if f.finding.value == kind)


@PROPERTY_SETTINGS
@given(companies())
def test_difference_is_quotes_minus_invoices(
    company: tuple[list[QuoteInput], list[Invoice], list[str]],
) -> None:
    quotes, invoices, _ = company
    result = reconcile(quotes, invoices)
    document = result.as_dict()["totals"]
    completed_totals = sum(
        (q.draft.total for q in quotes if q.status_id == STATUS_COMPLETED and q.draft), Decimal(0)
    )
    numbers = {q.number for q in quotes if q.status_id == STATUS_COMPLETED}
    invoice_totals = sum((i.total for i in invoices if i.doc_number in numbers), Decimal(0))
    assert result.quotes_total == completed_totals
    assert result.invoices_total == invoice_totals
    assert Decimal(document["difference"]) == completed_totals - invoice_totals
    assert Decimal(document["quotes"]) - Decimal(document["invoices"]) == Decimal(
        document["difference"]
    )


@PROPERTY_SETTINGS
@given(companies())
def test_each_situation_gives_its_finding(
    company: tuple[list[QuoteInput], list[Invoice], list[str]],
) -> None:
    quotes, invoices, picks = company
    expected = {
        "ok": "ok",
        "missing": "missing",
        "differs": "differs",
        "paid": "paid_differs",
        "orphan": "orphan",
        "paid_orphan": "paid_orphan",
        "dup": "duplicate",
        "other": "customer_mismatch",
        "unknown": "unknown_status",
    }
    result = reconcile(quotes, invoices)
    assert [f.finding.value for f in result.findings] == [expected[p] for p in picks]


# --- the shell's reads, against fakes -----------------------------------------------------


class FakeFourD:
    def __init__(self, summaries: list[QuoteSummary], quotes: dict[str, Quote]) -> None:
        self.summaries, self.quotes = summaries, quotes
        self.fetched: list[list[str]] = []
        self.request_count = 0

    def list_quotes(self, since: datetime) -> list[QuoteSummary]:
        self.request_count += 1
        return self.summaries

    def get_quotes(self, numbers: Any) -> dict[str, Quote | FourdqboError]:
        wanted = list(numbers)
        self.fetched.append(wanted)
        self.request_count += len(wanted)
        return {
            n: self.quotes.get(n) or NotFound(f"4D has no quote {n}", service="fourd", status=404)
            for n in wanted
        }


class FakeQBO:
    def __init__(self, invoices: list[Invoice], customers: list[Customer]) -> None:
        self.invoices, self.customers = invoices, customers
        self.statements: list[tuple[str, list[str]]] = []
        self.by_doc: list[list[str]] = []
        self.request_count = 0

    def invoices_dated_since(self, day: Any) -> list[Invoice]:
        self.request_count += 1
        self.statements.append(("Invoice", [f"TxnDate >= '{day.isoformat()}'"]))
        assert day.isoformat() == "2025-03-01"
        return [i for i in self.invoices if i.txn_date is not None and i.txn_date >= day]

    def all_customers(self, *, include_inactive: bool = True) -> list[Customer]:
        self.request_count += 1
        self.statements.append(
            ("Customer", ["Active IN (true, false)"] if include_inactive else [])
        )
        return list(self.customers)

    def find_invoices_by_doc_numbers(self, doc_numbers: Any) -> list[Invoice]:
        self.request_count += 1
        wanted = list(doc_numbers)
        self.by_doc.append(wanted)
        return [i for i in self.invoices if i.doc_number in wanted]


def summary(number: str, status: int, version: int = 3) -> QuoteSummary:
    return QuoteSummary(number, version, status, None, "77")


def test_the_reader_fetches_completed_quotes_only_and_asks_qbo_in_bulk(
    make_settings: Callable[..., Settings],
) -> None:
    earlier = "2025-02-20T15:00:00Z"  # dated before DT, changed after it
    ok, old = quote_of(PriceQuoteNo=10023), quote_of(PriceQuoteNo=10024, PriceQuoteDate=earlier)
    old_invoice = invoice_of(completed("10024", PriceQuoteDate=earlier), "146")
    fourd = FakeFourD(
        [
            summary("10023", STATUS_COMPLETED),
            summary("10024", STATUS_COMPLETED),
            summary("10025", STATUS_ACTIVE),
        ],
        {"10023": ok, "10024": old, "10001": quote_of(PriceQuoteNo=10001)},
    )
    qbo = FakeQBO(
        [
            invoice_of(completed("10023")),
            old_invoice,
            foreign_invoice("200", "10001", "2025-03-01"),  # a quote changed before DT
            foreign_invoice("201", "10002", "2025-03-01"),  # 4D does not know it
            foreign_invoice("202", "A-7", "2025-03-01"),  # 4D does not know it either
            foreign_invoice("203", "10003", "2025-03-02"),  # after the first day: not asked
        ],
        [Customer.parse({"Id": "58", "SyncToken": "0", "DisplayName": "77.JQD"})],
    )
    reader = Reconciler(make_settings(), fourd, qbo, item_ids=lambda: ITEM_IDS)

    result = reader.run(SINCE)

    assert [f.finding.value for f in result.findings] == ["ok", "ok", "ok"]
    # Only invoices of the first day are asked about: a later TxnDate means a quote date
    # after DT, so 4D's list would have held the quote.
    assert fourd.fetched == [["10023", "10024"], ["10001", "10002", "A-7"]]
    assert qbo.by_doc == [["10024", "10025"]]  # only the quotes not among the dated
    assert [entity for entity, _ in qbo.statements] == ["Invoice", "Customer"]
    assert qbo.statements[1][1] == ["Active IN (true, false)"]
    assert [i.invoice_id for i in result.not_from_4d] == ["201", "202", "203"]
    assert result.requests == {"fourd": 6, "qbo": 3}


def test_a_quote_that_cannot_become_an_invoice_is_failed(
    make_settings: Callable[..., Settings],
) -> None:
    broken = quote_of(PriceQuoteNo=10023, Procedures=[], Supplies=[], AnesthAmt=0, FacilityAmt=0)
    fourd = FakeFourD([summary("10023", STATUS_COMPLETED)], {"10023": broken})
    reader = Reconciler(make_settings(), fourd, FakeQBO([], []), item_ids=lambda: ITEM_IDS)
    finding = only(reader.run(SINCE))
    assert finding.finding is FindingKind.FAILED and "no billable lines" in finding.reason


def test_acceptances_are_read_from_stores_that_have_them() -> None:
    acceptance = Acceptance("10023", 3, ACCEPTED_AT)

    class Old:
        pass

    class Listing:
        def acceptances(self) -> list[Acceptance]:
            return [acceptance]

    class Keyed:
        def acceptances(self) -> dict[str, Acceptance]:
            return {"10023": acceptance}

    assert acceptances_of(Old()) == {}
    assert acceptances_of(Listing()) == {"10023": acceptance}
    assert acceptances_of(Keyed()) == {"10023": acceptance}
