"""Mapping a 4D quote to an invoice draft and QBO JSON: every rule of DESIGN.md point 5."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourdqbo import jsonio
from fourdqbo.emr.records import Procedure, Quote, Supply
from fourdqbo.money import cents
from fourdqbo.qbo.records import Invoice
from fourdqbo.sync.mapping import (
    CustomFieldValue,
    DraftLine,
    InvoiceDraft,
    LineKind,
    MappingError,
    MappingRules,
    customer_display_name,
    draft_differences,
    draft_matches,
    initials,
    invoice_payload,
    map_quote,
    update_payload,
)

ITEM_IDS = {
    LineKind.PROCEDURE: "11",
    LineKind.SUPPLIES: "12",
    LineKind.ANESTHESIA: "13",
    LineKind.FACILITY: "14",
}
RULES = MappingRules()
PATIENT_NAME = "Jane Q Doe"


def quote_json(**overrides: Any) -> dict[str, Any]:
    """A full 4D quote as `quotes?quoteNumber=` returns it (completed, one of each line)."""
    data: dict[str, Any] = {
        "PriceQuoteNo": 10023,
        "Version": 3,
        "PriceQuoteDate": "2025-03-05T15:30:00Z",
        "CreatedBy": {"Id": 5, "Name": "Mary Ann Smith"},
        "Patient": {"Id": 77, "Name": PATIENT_NAME},
        "Provider": {"Id": 9, "Name": "Dr Who"},
        "PriceQuoteStatus": {"Id": 4, "Name": "Completed"},
        "Procedures": [
            {"ProcedureName": "Rhinoplasty", "Amount": "5000.00", "DiscountAmount": "250.00"}
        ],
        "Supplies": [
            {"ItemTitle": "Splint", "Quantity": 2, "UnitCost": "45.50", "ShowOnQuote": True},
            {"ItemTitle": "Gauze", "Quantity": 10, "UnitCost": "1.00", "ShowOnQuote": False},
        ],
        "AnesthAmt": "800.00",
        "AnesthesiaGroup": {"Id": 2, "Name": "Bay Anesthesia"},
        "FacilityAmt": "1200.00",
        "TotalAmt": "6841.00",
    }
    data.update(overrides)
    return data


def quote_of(**overrides: Any) -> Quote:
    return Quote.parse(quote_json(**overrides))


def draft_of(rules: MappingRules = RULES, **overrides: Any) -> InvoiceDraft:
    return map_quote(quote_of(**overrides), rules)


def qbo_answer(
    draft: InvoiceDraft,
    customer_id: str = "58",
    *,
    invoice_id: str = "145",
    sync_token: str = "0",
    balance: Decimal | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Invoice:
    """What QBO answers after creating the draft's invoice: our body plus its own additions
    (Id, SyncToken, TotalAmt, Balance, a SubTotal line, MetaData, other custom fields),
    sent through JSON text as the client would read it. `edit` changes the body first."""
    body = copy.deepcopy(invoice_payload(draft, customer_id, ITEM_IDS))
    if edit is not None:
        edit(body)
    total = sum((line["Amount"] for line in body["Line"]), Decimal(0))
    body["Line"].append(
        {"Amount": total, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}
    )
    for number, line in enumerate(body["Line"], start=1):
        line["LineNum"] = number
        line["Id"] = str(number)
    body["CustomField"] = [
        *body.get("CustomField", []),
        {"DefinitionId": "3", "Name": "Other", "Type": "StringType", "StringValue": "x"},
    ]
    body.update(
        Id=invoice_id,
        SyncToken=sync_token,
        TotalAmt=total,
        Balance=total if balance is None else balance,
        MetaData={
            "CreateTime": "2025-03-05T10:21:33-08:00",
            "LastUpdatedTime": "2025-03-05T10:21:33-08:00",
        },
    )
    body["CustomerRef"]["name"] = draft.customer_name
    return Invoice.parse(jsonio.loads(jsonio.dumps(body)))


# --- the draft's header ---------------------------------------------------------------


def test_draft_header_comes_from_the_quote() -> None:
    draft = draft_of()
    assert draft.doc_number == "10023"
    assert draft.version == 3
    assert draft.txn_date == date(2025, 3, 5)
    assert draft.patient_id == "77"
    assert draft.customer_name == "77.JQD"


def test_customer_name_follows_the_template() -> None:
    rules = MappingRules(customer_name_template="P{patient_id} {initials}")
    assert draft_of(rules).customer_name == "P77 JQD"


@pytest.mark.parametrize(
    ("stamp", "zone", "expected"),
    [
        ("2025-03-05T03:30:00Z", "America/New_York", date(2025, 3, 4)),  # EST, UTC-5
        ("2025-03-05T05:00:00Z", "America/New_York", date(2025, 3, 5)),
        ("2025-07-01T03:30:00Z", "America/New_York", date(2025, 6, 30)),  # EDT, UTC-4
        ("2025-07-01T04:30:00Z", "America/New_York", date(2025, 7, 1)),
        # 04:30Z is the previous evening under EST but already past midnight under EDT:
        # DST began 2025-03-09 07:00Z and ended 2025-11-02 06:00Z.
        ("2025-03-08T04:30:00Z", "America/New_York", date(2025, 3, 7)),  # 23:30 EST
        ("2025-03-10T04:30:00Z", "America/New_York", date(2025, 3, 10)),  # 00:30 EDT
        ("2025-11-02T04:30:00Z", "America/New_York", date(2025, 11, 2)),  # 00:30 EDT
        ("2025-11-03T04:30:00Z", "America/New_York", date(2025, 11, 2)),  # 23:30 EST
        ("2025-03-05T11:00:00.1234567Z", "Pacific/Auckland", date(2025, 3, 6)),
        ("2025-03-05T23:59:59Z", "UTC", date(2025, 3, 5)),
    ],
)
def test_txn_date_is_the_quote_date_in_the_practice_time_zone(
    stamp: str, zone: str, expected: date
) -> None:
    assert draft_of(MappingRules(timezone=zone), PriceQuoteDate=stamp).txn_date == expected


def test_custom_fields_carry_version_and_author_initials() -> None:
    assert draft_of().custom_fields == (
        CustomFieldValue("1", "Quote Version", "3"),
        CustomFieldValue("2", "Quoted By", "MAS"),
    )


def test_custom_fields_use_the_configured_definition_ids_and_empty_turns_them_off() -> None:
    assert draft_of(MappingRules(quote_version_field="7", quoted_by_field="")).custom_fields == (
        CustomFieldValue("7", "Quote Version", "3"),
    )
    assert draft_of(MappingRules(quote_version_field="", quoted_by_field="")).custom_fields == ()
    body = invoice_payload(
        draft_of(MappingRules(quote_version_field="", quoted_by_field="")), "58", ITEM_IDS
    )
    assert "CustomField" not in body


def test_quoted_by_is_empty_without_an_author() -> None:
    fields = draft_of(CreatedBy=None).custom_fields
    assert fields[1] == CustomFieldValue("2", "Quoted By", "")


# --- lines ------------------------------------------------------------------------------


def test_lines_come_in_order_procedures_supplies_anesthesia_facility() -> None:
    draft = draft_of(
        Procedures=[
            {"ProcedureName": "A", "Amount": 100, "DiscountAmount": None},
            {"ProcedureName": "B", "Amount": 200, "DiscountAmount": 50},
        ],
        Supplies=[
            {"ItemTitle": "S1", "Quantity": 1, "UnitCost": 5, "ShowOnQuote": True},
            {"ItemTitle": "hidden", "Quantity": 1, "UnitCost": 5, "ShowOnQuote": False},
            {"ItemTitle": "S2", "Quantity": 3, "UnitCost": "2.25", "ShowOnQuote": True},
        ],
    )
    assert [(line.kind, line.description) for line in draft.lines] == [
        (LineKind.PROCEDURE, "A"),
        (LineKind.PROCEDURE, "B"),
        (LineKind.SUPPLIES, "S1"),
        (LineKind.SUPPLIES, "S2"),
        (LineKind.ANESTHESIA, "Bay Anesthesia Fee"),
        (LineKind.FACILITY, "Facility Fee"),
    ]
    assert [line.amount for line in draft.lines] == [
        Decimal("100.00"),
        Decimal("150.00"),
        Decimal("5.00"),
        Decimal("6.75"),
        Decimal("800.00"),
        Decimal("1200.00"),
    ]
    assert draft.total == Decimal("2261.75")


def test_procedure_line_is_amount_less_discount_without_qty_or_price() -> None:
    (line,) = draft_of(
        Procedures=[{"ProcedureName": "Septoplasty", "Amount": "1999.99", "DiscountAmount": 0.99}],
        Supplies=[],
        AnesthAmt=0,
        FacilityAmt=None,
    ).lines
    assert line == DraftLine(LineKind.PROCEDURE, "Septoplasty", Decimal("1999.00"))


def test_procedure_amount_is_rounded_half_up_to_cents() -> None:
    draft = draft_of(
        Procedures=[{"ProcedureName": "A", "Amount": "100.005", "DiscountAmount": None}],
        Supplies=None,
        AnesthAmt=None,
        FacilityAmt=None,
    )
    assert [line.amount for line in draft.lines] == [Decimal("100.01")]


def test_zero_amount_procedure_lines_are_kept() -> None:
    draft = draft_of(
        Procedures=[
            {"ProcedureName": "Consultation", "Amount": 0},
            {"ProcedureName": "Free follow-up", "Amount": 300, "DiscountAmount": 300},
        ]
    )
    assert [(line.description, line.amount) for line in draft.lines[:2]] == [
        ("Consultation", Decimal("0.00")),
        ("Free follow-up", Decimal("0.00")),
    ]


def test_discount_above_the_amount_is_a_mapping_error_naming_quote_and_field() -> None:
    with pytest.raises(MappingError) as caught:
        draft_of(Procedures=[{"ProcedureName": "A", "Amount": 100, "DiscountAmount": "100.01"}])
    message = str(caught.value)
    assert "10023" in message and "Procedures[0].DiscountAmount" in message
    assert "Jane" not in message and "Doe" not in message


def test_hidden_supplies_are_not_billed() -> None:
    draft = draft_of(
        Supplies=[{"ItemTitle": "Gauze", "Quantity": 10, "UnitCost": 1, "ShowOnQuote": False}]
    )
    assert LineKind.SUPPLIES not in {line.kind for line in draft.lines}


def supply_line(quantity: Any, unit_cost: Any) -> DraftLine:
    draft = draft_of(
        Procedures=[],
        Supplies=[
            {"ItemTitle": " Splint ", "Quantity": quantity, "UnitCost": unit_cost, "ShowOnQuote": 1}
        ],
        AnesthAmt=0,
        FacilityAmt=0,
    )
    (line,) = draft.lines
    return line


@pytest.mark.parametrize(
    ("quantity", "unit_cost", "qty", "unit_price", "amount"),
    [
        # Product exact at cents: Qty and UnitPrice as on the quote.
        (2, "45.50", "2", "45.50", "91.00"),
        ("2.5", "4.00", "2.5", "4.00", "10.00"),
        ("0.25", "0.04", "0.25", "0.04", "0.01"),
        (0, "12.00", "0", "12.00", "0.00"),
        (3, 0, "3", "0.00", "0.00"),
        # More than two decimals in the product: Qty 1, UnitPrice = the rounded amount.
        ("1.5", "0.33", "1", "0.50", "0.50"),
        ("3", "0.333", "1", "1.00", "1.00"),
        # A unit cost in fractions of a cent is never sent, even when the product is exact.
        ("8", "0.125", "1", "1.00", "1.00"),
        # A Qty with more decimals than QBO keeps is never sent.
        ("0.000125", "80.00", "1", "0.01", "0.01"),
    ],
)
def test_supply_line_amount_is_exactly_qty_times_unit_price(
    quantity: Any, unit_cost: Any, qty: str, unit_price: str, amount: str
) -> None:
    line = supply_line(quantity, unit_cost)
    assert line.kind is LineKind.SUPPLIES and line.description == "Splint"
    assert (line.qty, line.unit_price, line.amount) == (
        Decimal(qty),
        Decimal(unit_price),
        Decimal(amount),
    )
    assert line.qty is not None and line.unit_price is not None
    assert line.qty * line.unit_price == line.amount  # QBO's check, exactly


def test_rounding_cents_go_where_the_quote_total_needs_them() -> None:
    # Two lines of 0.495: half-up on each would bill 1.00 for a quote worth 0.99.
    draft = draft_of(
        Procedures=[],
        Supplies=[
            {"ItemTitle": "A", "Quantity": "1.5", "UnitCost": "0.33", "ShowOnQuote": True},
            {"ItemTitle": "B", "Quantity": "1.5", "UnitCost": "0.33", "ShowOnQuote": True},
        ],
        AnesthAmt=0,
        FacilityAmt=0,
    )
    assert [line.amount for line in draft.lines] == [Decimal("0.50"), Decimal("0.49")]
    assert draft.total == Decimal("0.99")
    for line in draft.lines:
        assert (line.qty, line.unit_price) == (Decimal(1), line.amount)


def test_anesthesia_line_is_named_after_its_group() -> None:
    assert draft_of().lines[-2] == DraftLine(
        LineKind.ANESTHESIA, "Bay Anesthesia Fee", Decimal("800.00")
    )


@pytest.mark.parametrize("group", [None, {"Id": 2, "Name": None}, {"Id": 2, "Name": "  "}])
def test_anesthesia_line_without_a_group_name_is_anesthesia_fee(group: Any) -> None:
    assert draft_of(AnesthesiaGroup=group).lines[-2].description == "Anesthesia Fee"


@pytest.mark.parametrize("amount", [0, None, "0.00"])
def test_no_anesthesia_or_facility_line_without_an_amount(amount: Any) -> None:
    kinds = {line.kind for line in draft_of(AnesthAmt=amount, FacilityAmt=amount).lines}
    assert kinds == {LineKind.PROCEDURE, LineKind.SUPPLIES}


def test_facility_line_uses_the_configured_description() -> None:
    rules = MappingRules(facility_fee_description="OR time")
    assert draft_of(rules).lines[-1] == DraftLine(LineKind.FACILITY, "OR time", Decimal("1200.00"))


def test_descriptions_are_trimmed_and_cut_at_qbo_limit() -> None:
    long_name = "  " + "x" * 4100
    draft = draft_of(Procedures=[{"ProcedureName": long_name, "Amount": 1}])
    assert draft.lines[0].description == "x" * 4000


# --- refused quotes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"PriceQuoteDate": None}, "PriceQuoteDate"),
        ({"Patient": None}, "Patient.Id"),
        ({"Patient": {"Id": " ", "Name": PATIENT_NAME}}, "Patient.Id"),
        (
            {"Procedures": [], "Supplies": [], "AnesthAmt": 0, "FacilityAmt": 0},
            "no billable lines",
        ),
        (
            {
                "Procedures": None,
                "Supplies": [{"ItemTitle": "x", "Quantity": 1, "UnitCost": 1}],  # hidden
                "AnesthAmt": None,
                "FacilityAmt": None,
            },
            "no billable lines",
        ),
    ],
)
def test_unusable_quotes_raise_mapping_error_naming_quote_and_field(
    overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(MappingError) as caught:
        draft_of(**overrides)
    message = str(caught.value)
    assert "quote 10023" in message and field in message
    assert "Jane" not in message


def built_quote(**changes: Any) -> Quote:
    """A Quote built directly (as tests of other modules might), bypassing parse checks."""
    base = quote_of()
    values = {name: getattr(base, name) for name in base.__dataclass_fields__}
    values.update(changes)
    return Quote(**values)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"procedures": (Procedure("A", Decimal(-1), Decimal(0)),)}, "Procedures[0].Amount"),
        (
            {"procedures": (Procedure("A", Decimal(5), Decimal(-1)),)},
            "Procedures[0].DiscountAmount",
        ),
        (
            {"supplies": (Supply("S", Decimal(-2), Decimal(1), True),)},
            "Supplies[0].Quantity",
        ),
        ({"supplies": (Supply("S", Decimal(2), Decimal(-1), True),)}, "Supplies[0].UnitCost"),
        ({"anesthesia_amount": Decimal("-5")}, "AnesthAmt"),
        ({"facility_amount": Decimal("-5")}, "FacilityAmt"),
        ({"date": datetime(2025, 3, 5, 12, 0)}, "PriceQuoteDate"),
        (
            {"procedures": (Procedure("A", Decimal("1E-90"), Decimal(0)),)},
            "too many decimal places",
        ),
    ],
)
def test_negative_or_unusable_values_are_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(MappingError, match=re.escape(field)):
        map_quote(built_quote(**changes), RULES)


def test_hidden_supplies_are_not_checked() -> None:
    quote = built_quote(supplies=(Supply("S", Decimal(-2), Decimal(1), False),))
    assert LineKind.SUPPLIES not in {line.kind for line in map_quote(quote, RULES).lines}


# --- initials and display names ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Jane Q Doe", "JQD"),
        ("jane doe", "JD"),
        ("Jane Doe 3rd", "JD"),
        ("Room 12 Smith", "RS"),
        ("Patrick O'Brien", "PO"),
        ("O'Brien", "O"),
        ("Zoë Ångström", "ZÅ"),
        ("Zoe\u0308 A\u030angstro\u0308m", "ZÅ"),  # decomposed accents
        ("  Jane   Q\tDoe  ", "JQD"),
        ("Mary-Jane Watson", "MW"),
        ("(Jim) Beam", "JB"),
        ("é", "É"),
        ("- & -", ""),
        ("", ""),
        ("   ", ""),
        (None, ""),
    ],
)
def test_initials(name: str | None, expected: str) -> None:
    assert initials(name) == expected


def test_customer_display_name_fills_the_template() -> None:
    assert customer_display_name("77", "Jane Q Doe", "{patient_id}.{initials}") == "77.JQD"
    assert customer_display_name("77", None, "{patient_id}.{initials}") == "77."
    assert customer_display_name("77", "Jane", " {initials}-{patient_id} ") == "J-77"


@pytest.mark.parametrize(
    ("patient_id", "template"),
    [("7:7", "{patient_id}"), ("", "{patient_id}"), ("7\n7", "{patient_id}")],
)
def test_customer_display_name_refuses_what_qbo_refuses(patient_id: str, template: str) -> None:
    with pytest.raises(MappingError):
        customer_display_name(patient_id, "Jane", template)


def test_customer_display_name_is_cut_at_qbo_limit() -> None:
    assert len(customer_display_name("9" * 600, None, "{patient_id}")) == 500


# --- rules ------------------------------------------------------------------------------


def test_rules_come_from_settings(make_settings: Callable[..., Any]) -> None:
    settings = make_settings(
        SYNC_TIMEZONE="America/Chicago",
        CUSTOMER_NAME_TEMPLATE="{initials}/{patient_id}",
        FACILITY_FEE_DESCRIPTION="OR Fee",
        QBO_CUSTOM_FIELD_QUOTE_VERSION="",
        QBO_CUSTOM_FIELD_QUOTED_BY="3",
    )
    assert MappingRules.from_settings(settings) == MappingRules(
        timezone="America/Chicago",
        customer_name_template="{initials}/{patient_id}",
        facility_fee_description="OR Fee",
        quote_version_field="",
        quoted_by_field="3",
    )


@pytest.mark.parametrize(
    "changes", [{"timezone": "Mars/Olympus"}, {"customer_name_template": "{name}"}]
)
def test_rules_refuse_a_bad_zone_or_template(changes: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        MappingRules(**changes)


# --- QBO bodies ---------------------------------------------------------------------------


def test_invoice_payload_is_the_qbo_create_body() -> None:
    draft = draft_of(
        Supplies=[{"ItemTitle": "Splint", "Quantity": 2, "UnitCost": "45.5", "ShowOnQuote": True}]
    )
    assert invoice_payload(draft, "58", ITEM_IDS) == {
        "DocNumber": "10023",
        "TxnDate": "2025-03-05",
        "CustomerRef": {"value": "58"},
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": Decimal("4750.00"),
                "Description": "Rhinoplasty",
                "SalesItemLineDetail": {"ItemRef": {"value": "11"}},
            },
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": Decimal("91.00"),
                "Description": "Splint",
                "SalesItemLineDetail": {
                    "ItemRef": {"value": "12"},
                    "Qty": Decimal("2"),
                    "UnitPrice": Decimal("45.50"),
                },
            },
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": Decimal("800.00"),
                "Description": "Bay Anesthesia Fee",
                "SalesItemLineDetail": {"ItemRef": {"value": "13"}},
            },
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": Decimal("1200.00"),
                "Description": "Facility Fee",
                "SalesItemLineDetail": {"ItemRef": {"value": "14"}},
            },
        ],
        "CustomField": [
            {
                "DefinitionId": "1",
                "Name": "Quote Version",
                "Type": "StringType",
                "StringValue": "3",
            },
            {"DefinitionId": "2", "Name": "Quoted By", "Type": "StringType", "StringValue": "MAS"},
        ],
    }
    text = jsonio.dumps(invoice_payload(draft, "58", ITEM_IDS))
    assert '"Amount": 4750.00' in text and '"UnitPrice": 45.50' in text


def test_invoice_payload_leaves_out_an_empty_description() -> None:
    draft = draft_of(Procedures=[{"ProcedureName": None, "Amount": 10}])
    assert "Description" not in invoice_payload(draft, "58", ITEM_IDS)["Line"][0]


def test_update_payload_is_sparse_with_id_synctoken_and_owned_fields_only() -> None:
    draft = draft_of()
    existing = qbo_answer(draft, invoice_id="145", sync_token="4")
    body = update_payload(draft, "59", ITEM_IDS, existing)
    assert body == {
        "Id": "145",
        "SyncToken": "4",
        "sparse": True,
        **invoice_payload(draft, "59", ITEM_IDS),
    }
    assert set(body) == {
        "Id",
        "SyncToken",
        "sparse",
        "DocNumber",
        "TxnDate",
        "CustomerRef",
        "Line",
        "CustomField",
    }


def test_a_missing_item_id_is_a_lookup_error() -> None:
    items = {kind: ident for kind, ident in ITEM_IDS.items() if kind is not LineKind.FACILITY}
    draft = draft_of()
    with pytest.raises(LookupError, match="facility"):
        invoice_payload(draft, "58", items)
    with pytest.raises(LookupError, match="facility"):
        draft_matches(draft, "58", items, qbo_answer(draft))


# --- equality with what QBO holds ---------------------------------------------------------


def test_the_invoice_qbo_answers_matches_its_draft() -> None:
    draft = draft_of()
    assert draft_matches(draft, "58", ITEM_IDS, qbo_answer(draft))


def test_matching_ignores_what_qbo_adds_and_paid_state() -> None:
    draft = draft_of()
    assert draft_matches(
        draft, "58", ITEM_IDS, qbo_answer(draft, sync_token="9", balance=Decimal("0"))
    )


def test_numbers_compare_by_value() -> None:
    draft = draft_of()

    def plain_numbers(body: dict[str, Any]) -> None:
        body["Line"][0]["Amount"] = 4750  # QBO may answer 4750 for 4750.00
        body["Line"][1]["SalesItemLineDetail"]["Qty"] = Decimal("2.000")
        body["Line"][1]["SalesItemLineDetail"]["UnitPrice"] = Decimal("45.5")

    assert draft_matches(draft, "58", ITEM_IDS, qbo_answer(draft, edit=plain_numbers))


def test_qbo_filling_in_qty_one_on_a_line_we_sent_without_is_still_equal() -> None:
    draft = draft_of()

    def filled(body: dict[str, Any]) -> None:
        detail = body["Line"][0]["SalesItemLineDetail"]
        detail["Qty"] = 1
        detail["UnitPrice"] = body["Line"][0]["Amount"]

    assert draft_matches(draft, "58", ITEM_IDS, qbo_answer(draft, edit=filled))


def test_an_empty_custom_field_qbo_leaves_out_is_still_equal() -> None:
    draft = draft_of(CreatedBy=None)

    def dropped(body: dict[str, Any]) -> None:
        body["CustomField"] = [f for f in body["CustomField"] if f["DefinitionId"] != "2"]

    assert draft_matches(draft, "58", ITEM_IDS, qbo_answer(draft, edit=dropped))


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _drop_last_line(body: dict[str, Any]) -> None:
    body["Line"].pop()


def _add_line(body: dict[str, Any]) -> None:
    body["Line"].append(copy.deepcopy(body["Line"][0]))


def _swap_lines(body: dict[str, Any]) -> None:
    body["Line"][2], body["Line"][3] = body["Line"][3], body["Line"][2]


OWNED_FIELD_CHANGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "doc number": (_set(("DocNumber",), "10024"), "DocNumber"),
    "txn date": (_set(("TxnDate",), "2025-03-06"), "TxnDate"),
    "customer": (_set(("CustomerRef", "value"), "59"), "CustomerRef"),
    "amount": (_set(("Line", 0, "Amount"), Decimal("4750.01")), "Line"),
    "description": (_set(("Line", 0, "Description"), "Rhinoplasty "), "Line"),
    "item": (_set(("Line", 0, "SalesItemLineDetail", "ItemRef", "value"), "12"), "Line"),
    "qty": (_set(("Line", 1, "SalesItemLineDetail", "Qty"), 3), "Line"),
    "unit price": (_set(("Line", 1, "SalesItemLineDetail", "UnitPrice"), 45), "Line"),
    "qty on a line sent without": (_set(("Line", 0, "SalesItemLineDetail", "Qty"), 2), "Line"),
    "fewer lines": (_drop_last_line, "Line"),
    "more lines": (_add_line, "Line"),
    "line order": (_swap_lines, "Line"),
    "quote version": (_set(("CustomField", 0, "StringValue"), "2"), "CustomField"),
    "quoted by": (_set(("CustomField", 1, "StringValue"), "XX"), "CustomField"),
}


@pytest.mark.parametrize("change", sorted(OWNED_FIELD_CHANGES))
def test_a_change_in_any_owned_field_is_a_difference(change: str) -> None:
    edit, field = OWNED_FIELD_CHANGES[change]
    draft = draft_of()
    existing = qbo_answer(draft, edit=edit)
    assert not draft_matches(draft, "58", ITEM_IDS, existing)
    assert draft_differences(draft, "58", ITEM_IDS, existing) == [field]


def test_a_customer_not_created_yet_is_a_difference() -> None:
    draft = draft_of()
    assert draft_differences(draft, None, ITEM_IDS, qbo_answer(draft)) == ["CustomerRef"]


# --- properties ---------------------------------------------------------------------------


def _decimal(max_units: int, places: int) -> st.SearchStrategy[Decimal]:
    return st.integers(0, max_units).map(lambda n: Decimal(n).scaleb(-places))


money_places = st.integers(0, 3)
amounts = money_places.flatmap(lambda p: _decimal(10**6 * 10**p, p))


@st.composite
def procedures(draw: st.DrawFn) -> dict[str, Any]:
    places = draw(money_places)
    units = draw(st.integers(0, 10**5 * 10**places))
    discount = draw(st.one_of(st.none(), st.integers(0, units)))
    return {
        "ProcedureName": draw(st.text(max_size=20)),
        "Amount": Decimal(units).scaleb(-places),
        "DiscountAmount": None if discount is None else Decimal(discount).scaleb(-places),
    }


@st.composite
def supplies(draw: st.DrawFn) -> dict[str, Any]:
    qty_places = draw(st.integers(0, 3))
    cost_places = draw(st.sampled_from([0, 2, 2, 2, 3, 4]))
    return {
        "ItemTitle": draw(st.text(max_size=20)),
        "Quantity": draw(_decimal(500 * 10**qty_places, qty_places)),
        "UnitCost": draw(_decimal(10**4 * 10**cost_places, cost_places)),
        "ShowOnQuote": draw(st.booleans()),
    }


@st.composite
def quotes(draw: st.DrawFn) -> dict[str, Any]:
    return quote_json(
        Procedures=draw(st.lists(procedures(), max_size=4)),
        Supplies=draw(st.lists(supplies(), max_size=5)),
        AnesthAmt=draw(st.one_of(st.none(), amounts)),
        FacilityAmt=draw(st.one_of(st.none(), amounts)),
        AnesthesiaGroup=draw(
            st.one_of(st.none(), st.builds(lambda n: {"Id": 1, "Name": n}, st.text(max_size=10)))
        ),
    )


def computed_total(data: dict[str, Any]) -> Decimal:
    """The quote's total worked out independently: exact, then half-up cents once."""
    with localcontext() as exact:
        exact.prec = 100
        total = Decimal(0)
        for procedure in data["Procedures"]:
            total += procedure["Amount"] - (procedure["DiscountAmount"] or 0)
        for supply in data["Supplies"]:
            if supply["ShowOnQuote"]:
                total += supply["Quantity"] * supply["UnitCost"]
        total += (data["AnesthAmt"] or 0) + (data["FacilityAmt"] or 0)
    return cents(total)


def has_lines(data: dict[str, Any]) -> bool:
    return bool(
        data["Procedures"]
        or any(s["ShowOnQuote"] for s in data["Supplies"])
        or (data["AnesthAmt"] or 0) > 0
        or (data["FacilityAmt"] or 0) > 0
    )


def no_floats(value: Any) -> bool:
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(no_floats(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(no_floats(v) for v in value)
    return True


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(quotes())
def test_line_amounts_add_up_to_the_quote_total_to_the_cent(data: dict[str, Any]) -> None:
    if not has_lines(data):
        with pytest.raises(MappingError, match="no billable lines"):
            map_quote(Quote.parse(data), RULES)
        return
    draft = map_quote(Quote.parse(data), RULES)
    assert draft.total == computed_total(data)
    for line in draft.lines:
        assert isinstance(line.amount, Decimal)
        assert line.amount == cents(line.amount) and line.amount >= 0
        if line.kind is LineKind.SUPPLIES:
            assert isinstance(line.qty, Decimal) and isinstance(line.unit_price, Decimal)
            assert line.unit_price == cents(line.unit_price)
            assert line.amount == cents(line.qty * line.unit_price)
            assert line.amount == line.qty * line.unit_price
        else:
            assert line.qty is None and line.unit_price is None
    assert no_floats(invoice_payload(draft, "58", ITEM_IDS))


@PROPERTY_SETTINGS
@given(quotes())
def test_every_line_is_within_a_cent_of_its_exact_value(data: dict[str, Any]) -> None:
    if not has_lines(data):
        return
    draft = map_quote(Quote.parse(data), RULES)
    exact = [p["Amount"] - (p["DiscountAmount"] or 0) for p in data["Procedures"]]
    exact += [s["Quantity"] * s["UnitCost"] for s in data["Supplies"] if s["ShowOnQuote"]]
    exact += [v for v in (data["AnesthAmt"], data["FacilityAmt"]) if v is not None and v > 0]
    assert len(exact) == len(draft.lines)
    for line, value in zip(draft.lines, exact, strict=True):
        assert abs(line.amount - value) < Decimal("0.01")


@PROPERTY_SETTINGS
@given(quotes(), st.sampled_from(sorted(OWNED_FIELD_CHANGES)), st.data())
def test_round_trip_through_qbo_matches_and_any_owned_change_does_not(
    data: dict[str, Any], change: str, pick: st.DataObject
) -> None:
    if not has_lines(data):
        return
    draft = map_quote(Quote.parse(data), RULES)
    assert draft_matches(draft, "58", ITEM_IDS, qbo_answer(draft))

    line_count = len(draft.lines)
    index = pick.draw(st.integers(0, line_count - 1), label="line")
    line = draft.lines[index]
    edits: dict[str, Callable[[dict[str, Any]], None]] = {
        "doc number": _set(("DocNumber",), draft.doc_number + "1"),
        "txn date": _set(("TxnDate",), date(2030, 1, 1).isoformat()),
        "customer": _set(("CustomerRef", "value"), "59"),
        "amount": _set(("Line", index, "Amount"), line.amount + Decimal("0.01")),
        "description": _set(("Line", index, "Description"), line.description + "x"),
        "item": _set(("Line", index, "SalesItemLineDetail", "ItemRef", "value"), "99"),
        "qty": _set(("Line", index, "SalesItemLineDetail", "Qty"), (line.qty or 1) + 1),
        "unit price": _set(
            ("Line", index, "SalesItemLineDetail", "UnitPrice"),
            (line.unit_price or line.amount) + Decimal("0.01"),
        ),
        "qty on a line sent without": _set(
            ("Line", index, "SalesItemLineDetail", "Qty"), (line.qty or 1) + 2
        ),
        "fewer lines": _drop_last_line,
        "more lines": _add_line,
        "quote version": _set(("CustomField", 0, "StringValue"), str(draft.version + 1)),
        "quoted by": _set(("CustomField", 1, "StringValue"), "ZZZZ"),
    }
    if change == "line order":
        if tuple(reversed(draft.lines)) == draft.lines:
            return  # a palindrome of lines reads the same reversed
        edits["line order"] = lambda body: body["Line"].reverse()
    changed = qbo_answer(draft, edit=edits[change])
    assert not draft_matches(draft, "58", ITEM_IDS, changed)


def test_drafts_are_frozen_values() -> None:
    first, second = draft_of(), draft_of()
    assert first == second and hash(first) == hash(second)
    with pytest.raises(AttributeError):
        first.doc_number = "1"  # type: ignore[misc]
