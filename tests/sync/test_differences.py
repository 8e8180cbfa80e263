"""What differs between a QBO invoice and a quote's draft, field by field, with both values."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourdqbo.emr.records import Quote
from fourdqbo.state.items import Difference
from fourdqbo.sync.differences import invoice_differences, money_text
from fourdqbo.sync.mapping import InvoiceDraft, draft_differences, map_quote
from tests.sync.test_mapping import (
    ITEM_IDS,
    PROPERTY_SETTINGS,
    RULES,
    draft_of,
    has_lines,
    qbo_answer,
    quotes,
)


def differences(
    draft: InvoiceDraft,
    edit: Callable[[dict[str, Any]], None] | None = None,
    *,
    customer_id: str | None = "58",
    version_field: str | None = "1",
    **answer: Any,
) -> tuple[Difference, ...]:
    invoice = qbo_answer(draft, edit=edit, **answer)
    return invoice_differences(
        draft, customer_id, ITEM_IDS, invoice, quote_version_field=version_field
    )


def test_the_invoice_qbo_answers_for_the_draft_differs_in_nothing() -> None:
    assert differences(draft_of()) == ()


def test_payments_sync_tokens_and_other_custom_fields_are_not_differences() -> None:
    assert differences(draft_of(), sync_token="7", balance=Decimal("0")) == ()


def test_header_fields_carry_both_values() -> None:
    draft = draft_of()

    def edit(body: dict[str, Any]) -> None:
        body["DocNumber"] = "10024"
        body["TxnDate"] = "2025-03-06"
        body["CustomerRef"]["value"] = "59"

    assert differences(draft, edit) == (
        Difference("DocNumber", "10024", "10023"),
        Difference("TxnDate", "2025-03-06", "2025-03-05"),
        Difference("CustomerRef", "59", "58"),
    )


def test_a_customer_still_to_create_differs_with_no_quote_side() -> None:
    assert differences(draft_of(), customer_id=None) == (Difference("CustomerRef", "58", None),)


def test_a_changed_amount_names_the_line_and_the_total_to_the_cent() -> None:
    draft = draft_of()

    def edit(body: dict[str, Any]) -> None:
        body["Line"][0]["Amount"] = Decimal("4750.01")

    assert differences(draft, edit) == (
        Difference("TotalAmt", "6841.01", "6841.00"),
        Difference("Line 1 Amount", "4750.01", "4750.00"),
    )


def test_numbers_compare_by_value_and_print_with_two_places() -> None:
    draft = draft_of()

    def edit(body: dict[str, Any]) -> None:
        body["Line"][0]["Amount"] = 4750
        body["Line"][1]["SalesItemLineDetail"]["Qty"] = Decimal("2.000")
        body["Line"][1]["SalesItemLineDetail"]["UnitPrice"] = Decimal("45.5")

    assert differences(draft, edit) == ()
    assert money_text(Decimal("1250")) == "1250.00"
    assert money_text(Decimal("2.375")) == "2.375"  # finer digits are kept, never hidden


def test_every_part_of_a_line_is_its_own_difference() -> None:
    draft = draft_of()

    def edit(body: dict[str, Any]) -> None:
        line = body["Line"][1]
        line["Description"] = "Splint (large)"
        line["SalesItemLineDetail"]["Qty"] = Decimal("3")
        line["SalesItemLineDetail"]["UnitPrice"] = Decimal("30.33")
        line["SalesItemLineDetail"]["ItemRef"]["value"] = "99"

    assert differences(draft, edit) == (
        Difference("Line 2 Description", "Splint (large)", "Splint"),
        Difference("Line 2 Qty", "3", "2"),
        Difference("Line 2 UnitPrice", "30.33", "45.50"),
        Difference("Line 2 Item", "99", "12"),
    )


def test_qty_on_a_line_sent_without_one_differs_unless_it_is_qbo_s_own_fill_in() -> None:
    draft = draft_of()

    def filled(body: dict[str, Any]) -> None:
        detail = body["Line"][0]["SalesItemLineDetail"]
        detail["Qty"], detail["UnitPrice"] = 1, body["Line"][0]["Amount"]

    def doubled(body: dict[str, Any]) -> None:
        detail = body["Line"][0]["SalesItemLineDetail"]
        detail["Qty"], detail["UnitPrice"] = 2, Decimal("2375")

    assert differences(draft, filled) == ()
    assert differences(draft, doubled) == (
        Difference("Line 1 Qty", "2", None),
        Difference("Line 1 UnitPrice", "2375.00", None),
    )


def test_a_missing_line_is_one_difference_with_the_whole_line_on_the_quote_side() -> None:
    draft = draft_of()

    def drop_last(body: dict[str, Any]) -> None:
        body["Line"].pop()

    assert differences(draft, drop_last) == (
        Difference("TotalAmt", "5641.00", "6841.00"),
        Difference("Line 4", None, "Facility Fee 1200.00"),
    )


def test_an_extra_line_is_one_difference_with_the_whole_line_on_the_qbo_side() -> None:
    draft = draft_of()

    def add(body: dict[str, Any]) -> None:
        body["Line"].append(
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": Decimal("250"),
                "Description": "Follow-up visit",
                "SalesItemLineDetail": {"ItemRef": {"value": "11"}},
            }
        )

    assert differences(draft, add) == (
        Difference("TotalAmt", "7091.00", "6841.00"),
        Difference("Line 5", "Follow-up visit 250.00", None),
    )


def test_line_order_matters() -> None:
    draft = draft_of()

    def swap(body: dict[str, Any]) -> None:
        body["Line"][2], body["Line"][3] = body["Line"][3], body["Line"][2]

    found = differences(draft, swap)
    assert {d.field for d in found} == {
        "Line 3 Description",
        "Line 3 Amount",
        "Line 3 Item",
        "Line 4 Description",
        "Line 4 Amount",
        "Line 4 Item",
    }
    assert Difference("Line 3 Amount", "1200.00", "800.00") in found


def test_custom_fields_are_named_by_their_name() -> None:
    draft = draft_of()

    def edit(body: dict[str, Any]) -> None:
        body["CustomField"][0]["StringValue"] = "2"
        body["CustomField"][1]["StringValue"] = "XX"

    assert differences(draft, edit) == (
        Difference("CustomField Quote Version", "2", "3"),
        Difference("CustomField Quoted By", "XX", "MAS"),
    )


def test_a_custom_field_qbo_leaves_out_is_empty() -> None:
    empty_author = draft_of(CreatedBy=None)
    draft = draft_of()

    def dropped(body: dict[str, Any]) -> None:
        body["CustomField"] = [f for f in body["CustomField"] if f["DefinitionId"] != "2"]

    assert differences(empty_author, dropped) == ()
    assert differences(draft, dropped) == (Difference("CustomField Quoted By", "", "MAS"),)


def test_without_a_version_field_the_version_is_not_compared() -> None:
    draft = draft_of()

    def edit(body: dict[str, Any]) -> None:
        body["CustomField"][0]["StringValue"] = "2"

    assert differences(draft, edit, version_field=None) == ()


def test_a_missing_item_id_is_a_lookup_error() -> None:
    draft = draft_of()
    invoice = qbo_answer(draft)
    with pytest.raises(LookupError):
        invoice_differences(draft, "58", {}, invoice, quote_version_field="1")


# --- properties ---------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(quotes())
def test_empty_exactly_when_qbo_holds_the_draft_s_own_payload(data: dict[str, Any]) -> None:
    if not has_lines(data):
        return
    draft = map_quote(Quote.parse(data), RULES)
    assert differences(draft) == ()


@PROPERTY_SETTINGS
@given(quotes(), st.data())
def test_a_cent_on_any_line_is_that_line_s_amount_and_the_total(
    data: dict[str, Any], pick: st.DataObject
) -> None:
    if not has_lines(data):
        return
    draft = map_quote(Quote.parse(data), RULES)
    index = pick.draw(st.integers(0, len(draft.lines) - 1), label="line")
    cent = pick.draw(st.sampled_from([Decimal("0.01"), Decimal("-0.01")]), label="cent")
    line = draft.lines[index]
    if line.amount + cent < 0:
        return

    def edit(body: dict[str, Any]) -> None:
        body["Line"][index]["Amount"] = line.amount + cent
        detail = body["Line"][index]["SalesItemLineDetail"]
        detail.pop("Qty", None)
        detail.pop("UnitPrice", None)

    found = {d.field: d for d in differences(draft, edit)}
    assert found["TotalAmt"] == Difference(
        "TotalAmt", money_text(draft.total + cent), money_text(draft.total)
    )
    assert found[f"Line {index + 1} Amount"] == Difference(
        f"Line {index + 1} Amount", money_text(line.amount + cent), money_text(line.amount)
    )


@PROPERTY_SETTINGS
@given(quotes(), st.data())
def test_dropping_lines_names_each_missing_line_once(
    data: dict[str, Any], pick: st.DataObject
) -> None:
    if not has_lines(data):
        return
    draft = map_quote(Quote.parse(data), RULES)
    keep = pick.draw(st.integers(0, len(draft.lines) - 1), label="keep")

    def edit(body: dict[str, Any]) -> None:
        del body["Line"][keep:]

    fields = [d.field for d in differences(draft, edit)]
    missing = [f"Line {n}" for n in range(keep + 1, len(draft.lines) + 1)]
    assert [f for f in fields if f.startswith("Line")] == missing
    assert all(
        d.qbo is None and d.quote is not None
        for d in differences(draft, edit)
        if d.field.startswith("Line")
    )


@PROPERTY_SETTINGS
@given(quotes())
def test_reversing_lines_differs_unless_they_read_the_same(data: dict[str, Any]) -> None:
    if not has_lines(data):
        return
    draft = map_quote(Quote.parse(data), RULES)

    def reverse(body: dict[str, Any]) -> None:
        body["Line"] = copy.deepcopy(body["Line"][::-1])

    found = differences(draft, reverse)
    assert (found == ()) == (tuple(reversed(draft.lines)) == draft.lines)


def test_field_names_for_the_planner_fold_lines_and_name_a_lone_total() -> None:
    draft = draft_of()
    discounted = replace(qbo_answer(draft), total=Decimal("6800.00"))  # a discount line in QBO
    assert draft_differences(draft, "58", ITEM_IDS, discounted) == ["TotalAmt"]

    def edit(body: dict[str, Any]) -> None:
        body["Line"][0]["Amount"] = Decimal("1.00")
        body["Line"][1]["Description"] = "x"
        body["DocNumber"] = "1"

    changed = qbo_answer(draft, edit=edit)
    assert draft_differences(draft, "58", ITEM_IDS, changed) == ["DocNumber", "Line"]
