"""4D records: every field, tolerance of missing/null/extra fields, and RecordError cases."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourdqbo import jsonio
from fourdqbo.emr.records import (
    STATUS_ACTIVE,
    STATUS_COMPLETED,
    STATUS_INACTIVE,
    Appointment,
    Charge,
    Patient,
    Procedure,
    Quote,
    QuoteSummary,
    RecordError,
    Ref,
    Supply,
    quote_number,
    record_document,
    status_label,
)

FULL_QUOTE = """{
  "PriceQuoteNo": 10023,
  "Version": 3,
  "PriceQuoteDate": "2025-03-05T15:04:05.1234567Z",
  "CreatedBy": {"Id": 7, "Name": "Jane Q Doe"},
  "Patient": {"Id": 5501, "Name": "Seán O'Brien"},
  "Provider": {"Id": "P9", "Name": "Dr. Kim"},
  "PriceQuoteStatus": {"Id": 4, "Name": "Completed"},
  "Procedures": [
    {"ProcedureName": "Rhinoplasty", "Amount": 4500.10, "DiscountAmount": 500.05},
    {"ProcedureName": "Septoplasty", "Amount": 1200, "DiscountAmount": null}
  ],
  "Supplies": [
    {"ItemTitle": "Splint", "Quantity": 2, "UnitCost": 19.995, "ShowOnQuote": true},
    {"ItemTitle": "Gauze", "Quantity": 1, "UnitCost": 3.10, "ShowOnQuote": false}
  ],
  "AnesthAmt": 850.00,
  "AnesthesiaGroup": {"Id": 2, "Name": "Bay Anesthesia"},
  "FacilityAmt": 1250.5,
  "TotalAmt": 7350.65,
  "SomethingNew": {"nested": [1, 2, 3]}
}"""


def test_full_quote_parses_every_field_with_exact_decimals() -> None:
    quote = Quote.parse(jsonio.loads(FULL_QUOTE))

    assert quote.number == "10023"
    assert quote.version == 3
    assert quote.date == datetime(2025, 3, 5, 15, 4, 5, 123456, tzinfo=UTC)
    assert quote.status_id == STATUS_COMPLETED
    assert quote.status_name == "Completed"
    assert quote.status == "completed"
    assert quote.patient_id == "5501"
    assert quote.patient_name == "Seán O'Brien"
    assert quote.created_by == Ref(id="7", name="Jane Q Doe")
    assert quote.provider == Ref(id="P9", name="Dr. Kim")
    assert quote.procedures == (
        Procedure(name="Rhinoplasty", amount=Decimal("4500.10"), discount=Decimal("500.05")),
        Procedure(name="Septoplasty", amount=Decimal("1200"), discount=Decimal("0")),
    )
    assert quote.supplies == (
        Supply(
            title="Splint",
            quantity=Decimal("2"),
            unit_cost=Decimal("19.995"),
            show_on_quote=True,
        ),
        Supply(
            title="Gauze", quantity=Decimal("1"), unit_cost=Decimal("3.10"), show_on_quote=False
        ),
    )
    assert quote.anesthesia_amount == Decimal("850.00")
    assert quote.anesthesia_group == Ref(id="2", name="Bay Anesthesia")
    assert quote.facility_amount == Decimal("1250.5")
    assert quote.total_amount == Decimal("7350.65")
    assert str(quote.procedures[0].amount) == "4500.10"  # digits kept, not a float round trip


def test_repr_of_quote_and_summary_hides_patient_name() -> None:
    quote = Quote.parse(jsonio.loads(FULL_QUOTE))
    summary = QuoteSummary.parse(jsonio.loads(FULL_QUOTE))
    assert "O'Brien" not in repr(quote)
    assert "Jane" not in repr(quote)
    assert "O'Brien" not in repr(summary)


def test_quote_with_null_lists_and_amounts_means_zero_and_empty() -> None:
    quote = Quote.parse(
        {
            "PriceQuoteNo": "A-7",
            "Version": None,
            "PriceQuoteDate": None,
            "Procedures": None,
            "Supplies": None,
            "AnesthAmt": None,
            "AnesthesiaGroup": None,
            "FacilityAmt": None,
            "TotalAmt": None,
            "PriceQuoteStatus": None,
            "Patient": None,
        }
    )
    assert quote.number == "A-7"
    assert quote.version == 0
    assert quote.date is None
    assert quote.procedures == ()
    assert quote.supplies == ()
    assert quote.anesthesia_amount == Decimal("0")
    assert quote.anesthesia_group is None
    assert quote.facility_amount == Decimal("0")
    assert quote.total_amount is None
    assert quote.status_id is None
    assert quote.status == "unknown"
    assert quote.patient_id is None


def test_quote_with_missing_fields_parses_from_number_alone() -> None:
    quote = Quote.parse({"PriceQuoteNo": "77"})
    assert (quote.number, quote.version, quote.procedures, quote.supplies) == ("77", 0, (), ())
    assert quote.created_by is None and quote.provider is None


def test_line_items_with_null_fields_are_tolerated() -> None:
    quote = Quote.parse(
        {
            "PriceQuoteNo": 1,
            "Procedures": [{"ProcedureName": None, "Amount": None, "DiscountAmount": None}],
            "Supplies": [{"ItemTitle": None, "Quantity": None, "UnitCost": "4.50"}],
        }
    )
    assert quote.procedures == (Procedure(name="", amount=Decimal(0), discount=Decimal(0)),)
    assert quote.supplies == (
        Supply(title="", quantity=Decimal(0), unit_cost=Decimal("4.50"), show_on_quote=False),
    )


@pytest.mark.parametrize(
    ("raw", "shown"),
    [(True, True), (False, False), (1, True), (0, False), ("true", True), ("Yes", True),
     ("false", False), ("", False), (None, False), ({"x": 1}, False)],
)  # fmt: skip
def test_show_on_quote_flag_forms(raw: Any, shown: bool) -> None:
    quote = Quote.parse({"PriceQuoteNo": 1, "Supplies": [{"ItemTitle": "x", "ShowOnQuote": raw}]})
    assert quote.supplies[0].show_on_quote is shown


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10023, "10023"),
        ("10023", "10023"),
        (" 10023 ", "10023"),
        (Decimal("10023.0"), "10023"),
        (Decimal("1E+3"), "1000"),
        ("Q-10023", "Q-10023"),
        (10**20, str(10**20)),
    ],
)
def test_price_quote_no_is_always_a_string(value: Any, expected: str) -> None:
    assert quote_number(value) == expected
    assert QuoteSummary.parse({"PriceQuoteNo": value, "Version": 1}).number == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        "",
        "   ",
        Decimal("10.5"),
        Decimal("Infinity"),
        Decimal("NaN"),
        float("inf"),
        Decimal("1E+999999999"),
        pytest.param(10**5000, id="huge-int"),
        "x" * 22,
        "10'23",
        "10\\23",
        'a"b',
        "10\n23",
        {"Id": 1},
        [10023],
    ],
)
def test_unusable_price_quote_no_is_a_record_error(value: Any) -> None:
    with pytest.raises(RecordError):
        quote_number(value)
    with pytest.raises(RecordError):
        Quote.parse({"PriceQuoteNo": value})


def test_missing_price_quote_no_is_a_record_error_naming_the_field() -> None:
    with pytest.raises(RecordError, match="PriceQuoteNo"):
        Quote.parse({"Version": 1})
    with pytest.raises(RecordError, match="PriceQuoteNo"):
        QuoteSummary.parse({"Version": 1})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("AnesthAmt", -1),
        ("FacilityAmt", "-0.01"),
        ("TotalAmt", Decimal("-5")),
        ("AnesthAmt", "abc"),
        ("FacilityAmt", True),
        ("TotalAmt", {"x": 1}),
        ("AnesthAmt", Decimal("NaN")),
        ("FacilityAmt", Decimal("1E+30")),
    ],
)
def test_negative_or_non_numeric_amount_is_a_record_error(field: str, value: Any) -> None:
    with pytest.raises(RecordError, match=field) as raised:
        Quote.parse({"PriceQuoteNo": 1, field: value})
    assert str(value) not in str(raised.value)  # the field is named, its content never


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"Procedures": [{"Amount": -100}]}, "Procedures.Amount"),
        ({"Procedures": [{"Amount": 100, "DiscountAmount": "ten"}]}, "Procedures.DiscountAmount"),
        ({"Supplies": [{"Quantity": -1}]}, "Supplies.Quantity"),
        ({"Supplies": [{"UnitCost": "1,50"}]}, "Supplies.UnitCost"),
        ({"Procedures": "not a list"}, "Procedures"),
        ({"Supplies": [1, 2]}, "Supplies"),
    ],
)
def test_bad_line_values_are_record_errors(line: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError, match=field):
        Quote.parse({"PriceQuoteNo": 1, **line})


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2025-13-01T00:00:00Z",
        "2025-03-05T10:00:00",  # no zone: never guessed
        "0001-01-01T00:00:00+05:00",  # converts to before year 1
        "9999-12-31T23:00:00-05:00",  # converts to after year 9999
        20250305,
        ["2025-03-05T10:00:00Z"],
    ],
)
def test_unparsable_quote_date_is_a_record_error(value: Any) -> None:
    with pytest.raises(RecordError, match="PriceQuoteDate"):
        Quote.parse({"PriceQuoteNo": 1, "PriceQuoteDate": value})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-05T10:00:00Z", datetime(2025, 3, 5, 10, tzinfo=UTC)),
        ("2025-03-05T10:00:00.5Z", datetime(2025, 3, 5, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2025-03-05T05:00:00-05:00", datetime(2025, 3, 5, 10, tzinfo=UTC)),
        ("", None),
    ],
)
def test_quote_date_forms(text: str, expected: datetime | None) -> None:
    assert Quote.parse({"PriceQuoteNo": 1, "PriceQuoteDate": text}).date == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), (3, 3), ("4", 4), (Decimal("5.0"), 5), (" 6 ", 6)],
)
def test_version_forms(value: Any, expected: int) -> None:
    assert QuoteSummary.parse({"PriceQuoteNo": 1, "Version": value}).version == expected


@pytest.mark.parametrize(
    "value", [True, "three", Decimal("2.5"), -1, 10**10, Decimal("Infinity"), [1], "1e999999999"]
)
def test_bad_version_is_a_record_error(value: Any) -> None:
    with pytest.raises(RecordError, match="Version"):
        QuoteSummary.parse({"PriceQuoteNo": 1, "Version": value})


def test_quote_summary_fields_and_extra_fields_ignored() -> None:
    summary = QuoteSummary.parse(
        {
            "PriceQuoteNo": "10023",
            "Version": 2,
            "PriceQuoteStatus": {"Id": "1", "Name": "Active"},
            "Patient": {"Id": 5501, "Name": "Jane Doe"},
            "ExternalId": 998,
            "ProcedureDescription": "Rhinoplasty",
            "Unexpected": [1, {"a": None}],
        }
    )
    assert summary == QuoteSummary(
        number="10023",
        version=2,
        status_id=STATUS_ACTIVE,
        status_name="Active",
        patient_id="5501",
        patient_name="Jane Doe",
        external_id="998",
        procedure_description="Rhinoplasty",
    )
    assert summary.status == "active"


@pytest.mark.parametrize(
    ("status_id", "expected_id", "label"),
    [(0, STATUS_INACTIVE, "inactive"), (1, 1, "active"), (4, 4, "completed"),
     (2, 2, "unknown(2)"), ("x", -1, "unknown(-1)"), (Decimal("4.0"), 4, "completed")],
)  # fmt: skip
def test_status_ids_known_and_unknown(status_id: Any, expected_id: int, label: str) -> None:
    summary = QuoteSummary.parse({"PriceQuoteNo": 1, "PriceQuoteStatus": {"Id": status_id}})
    assert summary.status_id == expected_id
    assert summary.status == label
    assert status_label(None) == "unknown"


@pytest.mark.parametrize("nested", ["Patient", "PriceQuoteStatus", "CreatedBy", "AnesthesiaGroup"])
def test_nested_ref_that_is_not_an_object_is_a_record_error(nested: str) -> None:
    with pytest.raises(RecordError):
        Quote.parse({"PriceQuoteNo": 1, nested: "Jane Doe"})


def test_ref_ids_as_text_and_odd_names_dropped() -> None:
    assert Ref.parse({"Id": Decimal("12.0"), "Name": {"First": "x"}}) == Ref(id="12", name=None)
    assert Ref.parse({"Id": Decimal("1.5")}) == Ref(id="1.5")
    assert Ref.parse({}) == Ref()
    assert Ref.parse(None) is None
    with pytest.raises(RecordError):
        Ref.parse({"Id": True})
    with pytest.raises(RecordError):
        Ref.parse({"Id": 10**40})


def test_patient_fields_and_name_built_from_parts() -> None:
    patient = Patient.parse(
        {"PatientId": 42, "FirstName": "Zoë", "LastName": "O'Neil", "DOB": "1980-02-29"}
    )
    assert patient.id == "42"
    assert patient.name == "Zoë O'Neil"
    assert patient.first_name == "Zoë"
    assert patient.last_name == "O'Neil"
    assert patient.date_of_birth == "1980-02-29"
    assert patient.raw["DOB"] == "1980-02-29"
    assert "Zoë" not in repr(patient) and "1980" not in repr(patient)


def test_patient_full_name_wins_and_lower_case_keys_work() -> None:
    patient = Patient.parse({"id": "abc", "name": "Jane Q Doe", "dob": "1990-01-01"})
    assert (patient.id, patient.name, patient.date_of_birth) == ("abc", "Jane Q Doe", "1990-01-01")


def test_patient_without_id_is_a_record_error() -> None:
    with pytest.raises(RecordError, match="Id"):
        Patient.parse({"Name": "Jane Doe"})
    with pytest.raises(RecordError):
        Patient.parse(["not", "an", "object"])


def test_appointment_fields_and_flat_fallbacks() -> None:
    nested = Appointment.parse(
        {
            "Id": 9,
            "StartTime": "2025-03-05T14:00:00Z",
            "Patient": {"Id": 42, "Name": "Jane Doe"},
            "Provider": {"Id": 1, "Name": "Dr. Kim"},
            "AppointmentType": "Consult",
            "Status": {"Id": 2, "Name": "Confirmed"},
        }
    )
    assert (nested.id, nested.start, nested.patient_id, nested.patient_name) == (
        "9",
        "2025-03-05T14:00:00Z",
        "42",
        "Jane Doe",
    )
    assert (nested.provider, nested.kind, nested.status) == ("Dr. Kim", "Consult", "Confirmed")
    flat = Appointment.parse(
        {"AppointmentId": "A1", "PatientId": 43, "PatientName": "Li Wei", "Patient": "odd"}
    )
    assert (flat.id, flat.patient_id, flat.patient_name) == ("A1", "43", "Li Wei")
    assert Appointment.parse({}).id is None


def test_charge_fields_negative_amount_allowed_and_bad_amount_is_record_error() -> None:
    charge = Charge.parse(
        {
            "ChargeId": 5,
            "ServiceDate": "2025-03-01",
            "Patient": {"Id": 42, "Name": "Jane Doe"},
            "ProcedureCode": "30400",
            "Description": "Rhinoplasty",
            "Amount": -25.50,
        }
    )
    assert charge.id == "5"
    assert charge.date == "2025-03-01"
    assert (charge.patient_id, charge.patient_name) == ("42", "Jane Doe")
    assert (charge.code, charge.description) == ("30400", "Rhinoplasty")
    assert charge.amount == Decimal("-25.5")
    assert Charge.parse({"Fee": None}).amount == Decimal("0")
    with pytest.raises(RecordError, match="Amount"):
        Charge.parse({"Amount": "lots"})


def test_record_document_is_plain_json_with_exact_money_and_status_label() -> None:
    quote = Quote.parse(jsonio.loads(FULL_QUOTE))
    document = record_document(quote)
    assert document["number"] == "10023"
    assert document["date"] == "2025-03-05T15:04:05Z"
    assert document["status"] == "completed"
    assert document["created_by"] == {"id": "7", "name": "Jane Q Doe"}
    assert document["procedures"][0] == {
        "name": "Rhinoplasty",
        "amount": Decimal("4500.10"),
        "discount": Decimal("500.05"),
    }
    text = jsonio.dumps(document)
    assert '"amount": 4500.10' in text
    assert '"unit_cost": 19.995' in text
    assert jsonio.loads(text)["supplies"][1]["show_on_quote"] is False


# --- property tests: any JSON-shaped input parses or raises RecordError ---------------------

FIELD_NAMES = [
    "PriceQuoteNo", "Version", "PriceQuoteDate", "PriceQuoteStatus", "Patient", "CreatedBy",
    "Provider", "Procedures", "Supplies", "AnesthAmt", "AnesthesiaGroup", "FacilityAmt",
    "TotalAmt", "ExternalId", "ProcedureDescription", "Id", "Name", "ProcedureName", "Amount",
    "DiscountAmount", "ItemTitle", "Quantity", "UnitCost", "ShowOnQuote", "PatientId",
    "FirstName", "LastName", "DateOfBirth", "StartTime", "Status", "ChargeId", "Fee",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.integers(min_value=10**20, max_value=10**60),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("1E+999999999"), Decimal("-1E-999999999"), Decimal("4.0")]),
    st.text(max_size=30),
    st.sampled_from(["4", "2025-03-05T10:00:00Z", "0001-01-01T00:00:00+01:00", "1e9999", ""]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), children,
                        max_size=6),
    ),
    max_leaves=25,
)  # fmt: skip
records_like = st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=12)
PARSERS = [Quote.parse, QuoteSummary.parse, Patient.parse, Appointment.parse, Charge.parse]


def _money_fields_are_decimal(record: Any) -> None:
    if isinstance(record, Quote):
        amounts = [record.anesthesia_amount, record.facility_amount]
        amounts += [p.amount for p in record.procedures] + [p.discount for p in record.procedures]
        amounts += [s.quantity for s in record.supplies] + [s.unit_cost for s in record.supplies]
        if record.total_amount is not None:
            amounts.append(record.total_amount)
        assert all(type(a) is Decimal and a.is_finite() and a >= 0 for a in amounts)
        assert record.date is None or record.date.tzinfo is not None
    if isinstance(record, Charge):
        assert type(record.amount) is Decimal and record.amount.is_finite()
    if isinstance(record, Quote | QuoteSummary):
        assert isinstance(record.number, str) and 0 < len(record.number) <= 21
        assert isinstance(record.version, int)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(records_like, json_values))
def test_any_json_shaped_input_parses_or_raises_record_error(data: Any) -> None:
    for parse in PARSERS:
        try:
            record = parse(data)
        except RecordError:
            continue
        _money_fields_are_decimal(record)
        jsonio.dumps(record_document(record))  # always presentable as JSON


# What a JSON text from 4D can hold (no NaN/Infinity Decimals, exponents a body can carry).
text_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**12), max_value=10**12),
    st.sampled_from([Decimal("1E+999999999"), Decimal("1E-999999999")]),
    st.text(max_size=30),
)
text_records = st.dictionaries(
    st.sampled_from(FIELD_NAMES),
    st.recursive(
        text_scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.sampled_from(FIELD_NAMES), children, max_size=5),
        ),
        max_leaves=15,
    ),
    max_size=12,
)


def _json_text(value: Any) -> str:
    """JSON with Decimals as number literals in exponent form (jsonio.dumps would spell
    1E+999999999 out digit by digit)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=200, deadline=None)
@given(data=text_records)
def test_any_json_text_parses_or_raises_record_error(data: Any) -> None:
    text = _json_text(data)
    for parse in PARSERS:
        with contextlib.suppress(RecordError):
            _money_fields_are_decimal(parse(jsonio.loads(text)))


@pytest.mark.parametrize("raw", ["1e999999999", "-1e999999999", "1e-999999999"])
def test_extreme_exponents_from_json_text_are_record_errors_or_tiny(raw: str) -> None:
    data = jsonio.loads(f'{{"PriceQuoteNo": 1, "AnesthAmt": {raw}, "Fee": {raw}}}')
    if raw.startswith("1e-"):
        assert Quote.parse(data).anesthesia_amount < Decimal("0.01")
        assert Charge.parse(data).amount < Decimal("0.01")
        return
    with pytest.raises(RecordError, match="AnesthAmt"):
        Quote.parse(data)
    with pytest.raises(RecordError, match="Amount"):
        Charge.parse(data)
