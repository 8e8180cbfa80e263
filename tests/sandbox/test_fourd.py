"""The simulated 4D EMR API: credentials, endpoints and quotes changing over time."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from fourdqbo import jsonio
from fourdqbo.emr.records import Quote, QuoteSummary
from fourdqbo.sandbox.server import Sandbox
from fourdqbo.timefmt import fourd_datetime
from tests.sandbox.conftest import FOURD_HEADERS

EPOCH = "2000-01-01T00:00:00"


def summaries(fourd: httpx.Client, since: str = EPOCH) -> list[dict]:
    response = fourd.get("quotes/list", params={"fromDate": since})
    assert response.status_code == 200, response.text
    return list(jsonio.loads(response.content))


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("client-id", "Missing credentials"),
        ("client-secret", "Missing credentials"),
        ("subscription-key", "missing subscription key"),
    ],
)
def test_missing_credential_header_is_401(sandbox: Sandbox, drop: str, message: str) -> None:
    headers = {k: v for k, v in FOURD_HEADERS.items() if k != drop}
    response = httpx.get(f"{sandbox.fourd_base_url}/patients/1001", headers=headers)
    assert response.status_code == 401
    assert message in response.json()["message"]


def test_wrong_secret_or_key_is_401(sandbox: Sandbox) -> None:
    url = f"{sandbox.fourd_base_url}/patients/1001"
    wrong_secret = httpx.get(url, headers={**FOURD_HEADERS, "client-secret": "nope"})
    assert wrong_secret.status_code == 401
    assert wrong_secret.json() == {"message": "Invalid client-id or client-secret"}
    wrong_key = httpx.get(url, headers={**FOURD_HEADERS, "subscription-key": "nope"})
    assert wrong_key.status_code == 401


def test_header_names_are_case_insensitive(sandbox: Sandbox) -> None:
    headers = {k.upper(): v for k, v in FOURD_HEADERS.items()}
    response = httpx.get(f"{sandbox.fourd_base_url}/patients/1001", headers=headers)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "bad",
    ["2025-03-01", "2025-03-01T00:00:00Z", "2025-03-01T00:00:00.000", "2025-03-01 00:00:00",
     "2025-03-01T00:00:00+00:00", "03/01/2025", ""],
)  # fmt: skip
def test_from_date_in_any_other_format_is_400(fourd: httpx.Client, bad: str) -> None:
    response = fourd.get("quotes/list", params={"fromDate": bad})
    assert response.status_code == 400


def test_quote_list_filters_on_last_modified_time(sandbox: Sandbox, fourd: httpx.Client) -> None:
    everything = summaries(fourd)
    assert len(everything) == len(sandbox.practice.quotes())
    target = sandbox.practice.quotes()[3]
    since = fourd_datetime(target.modified_at)
    listed = {str(s["PriceQuoteNo"]) for s in summaries(fourd, since)}
    expected = {
        q.number
        for q in sandbox.practice.quotes()
        if q.modified_at >= target.modified_at.replace(microsecond=0)
    }
    assert listed == expected and target.number in listed


def test_summaries_mix_numbers_and_strings_and_parse(fourd: httpx.Client) -> None:
    rows = summaries(fourd)
    kinds = {type(row["PriceQuoteNo"]) for row in rows}
    assert kinds == {int, str}
    parsed = [QuoteSummary.parse(row) for row in rows]
    assert {p.status_id for p in parsed} >= {0, 1, 4, 7}


def test_full_quotes_vary_the_way_api_notes_warn(sandbox: Sandbox, fourd: httpx.Client) -> None:
    bodies = [
        jsonio.loads(fourd.get("quotes", params={"quoteNumber": q.number}).content)
        for q in sandbox.practice.quotes()
    ]
    dates = [b["PriceQuoteDate"] for b in bodies]
    assert all(d.endswith("Z") for d in dates)
    assert any("." in d for d in dates) and any("." not in d for d in dates)
    discounts = [p["DiscountAmount"] for b in bodies for p in b.get("Procedures") or []]
    assert None in discounts
    assert any(b.get("AnesthesiaGroup") is None and b.get("AnesthAmt") for b in bodies)
    assert any(s["ShowOnQuote"] is False for b in bodies for s in b.get("Supplies") or [])
    assert any(b.get("Supplies", "missing") is None for b in bodies)
    for body in bodies:
        Quote.parse(body)  # the project's own record parser accepts every one


def test_unknown_quote_is_404(fourd: httpx.Client) -> None:
    assert fourd.get("quotes", params={"quoteNumber": "1"}).status_code == 404


def test_patients_by_id_and_by_search(sandbox: Sandbox, fourd: httpx.Client) -> None:
    patient = sandbox.practice.patient(1002)
    assert fourd.get("patients/1002").json()["Name"] == patient.name
    assert fourd.get("patients/999").status_code == 404
    found = fourd.get(
        "patients",
        params={"firstname": patient.first_name, "lastname": patient.last_name,
                "dob": patient.date_of_birth.isoformat()},
    ).json()  # fmt: skip
    assert found["TotalCount"] == 1 and found["Items"][0]["Id"] == 1002


def test_appointments_and_charges(sandbox: Sandbox, fourd: httpx.Client) -> None:
    everything = fourd.get("appointments").json()
    assert everything
    day = everything[0]["StartTime"][:10]
    on_day = fourd.get("appointments", params={"date": day}).json()
    assert on_day and all(a["StartTime"].startswith(day) for a in on_day)
    charges = fourd.get(
        "reports/charges", params={"beginDate": "2000-01-01", "endDate": "2100-01-01"}
    ).json()
    assert len(charges) == len(sandbox.practice.completed_numbers())
    assert fourd.get("reports/charges", params={"beginDate": "2000-01-01"}).status_code == 400


def test_status_change_moves_last_modified_but_not_version(
    sandbox: Sandbox, fourd: httpx.Client
) -> None:
    sandbox.clock.advance(3600)
    mark = fourd_datetime(sandbox.clock.now())
    assert summaries(fourd, mark) == []
    sandbox.clock.advance(60)
    number = sandbox.practice.completed_numbers()[0]
    before = sandbox.practice.quote(number).version
    sandbox.practice.set_status(number, 1)
    rows = summaries(fourd, mark)
    assert [str(r["PriceQuoteNo"]) for r in rows] == [number]
    assert rows[0]["Version"] == before and rows[0]["PriceQuoteStatus"]["Id"] == 1


def test_edit_bumps_version_and_add_quote_appears(sandbox: Sandbox, fourd: httpx.Client) -> None:
    sandbox.clock.advance(60)
    mark = fourd_datetime(sandbox.clock.now())
    sandbox.clock.advance(1)
    number = sandbox.practice.completed_numbers()[0]
    before = sandbox.practice.quote(number)
    version = before.version
    sandbox.practice.edit_quote(number, facility_amt=Decimal("999.99"))
    added = sandbox.practice.add_quote(status_id=4)
    rows = {str(r["PriceQuoteNo"]): r for r in summaries(fourd, mark)}
    assert set(rows) == {number, added.number}
    assert rows[number]["Version"] == version + 1
    full = fourd.get("quotes", params={"quoteNumber": number}).json()
    assert Decimal(str(full["FacilityAmt"])) == Decimal("999.99")
    assert added.modified_at > sandbox.clock.now() - timedelta(seconds=5)


def test_unauthorized_knob_answers_401_to_everything(sandbox: Sandbox, fourd: httpx.Client) -> None:
    sandbox.knobs.fourd.unauthorized = True
    assert fourd.get("patients/1001").status_code == 401
    sandbox.knobs.fourd.unauthorized = False
    assert fourd.get("patients/1001").status_code == 200
