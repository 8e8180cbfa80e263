"""The simulated QBO query language: the subset of API-NOTES.md and nothing more."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourdqbo.sandbox import qbo_query
from fourdqbo.sandbox.qbo_query import QueryError, parse
from fourdqbo.sandbox.server import Sandbox
from fourdqbo.timefmt import iso_z, parse_instant
from tests.sandbox.conftest import QboCaller, fault_codes


def test_parse_reads_every_clause_of_the_subset() -> None:
    query = parse(
        "select * from Invoice where DocNumber IN ('1', '2') AND TotalAmt >= 10.5 "
        "orderby MetaData.LastUpdatedTime desc startposition 3 maxresults 20"
    )
    assert query.entity == "Invoice"
    assert not query.count
    assert [(c.field, c.op, c.values) for c in query.conditions] == [
        ("DocNumber", "IN", ("1", "2")),
        ("TotalAmt", ">=", (Decimal("10.5"),)),
    ]
    assert query.order == (qbo_query.Ordering("MetaData.LastUpdatedTime", descending=True),)
    assert (query.start_position, query.max_results) == (3, 20)


def test_backslash_escapes_a_quote_and_a_backslash() -> None:
    query = parse(r"SELECT * FROM Customer WHERE DisplayName = 'O\'Brien \\ Sons'")
    assert query.conditions[0].values == ("O'Brien \\ Sons",)


def test_default_max_results_is_100() -> None:
    assert parse("SELECT * FROM Item").max_results == 100


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM Invoice WHERE DocNumber = '1' OR DocNumber = '2'",
        "SELECT Id, DocNumber FROM Invoice",
        'SELECT * FROM Invoice WHERE DocNumber = "1"',
        "SELECT * FROM Invoice WHERE DocNumber = 'unterminated",
        "SELECT * FROM Invoice WHERE (DocNumber = '1')",
        "SELECT * FROM Invoice ORDER BY Id",
        "SELECT * FROM Invoice WHERE DocNumber IN ()",
        "SELECT * FROM Invoice WHERE DocNumber <> '1'",
        "SELECT * FROM Invoice;",
        "SELECT * FROM Payment",
        "SELECT * FROM Invoice JOIN Customer",
        "SELECT * FROM Invoice STARTPOSITION 0",
        "SELECT * FROM Invoice MAXRESULTS 1001",
        "SELECT * FROM Invoice WHERE NoSuchField = '1'",
        "",
    ],
)
def test_statements_outside_the_subset_are_refused(statement: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse(statement)
    assert caught.value.code in ("4000", "4001")


def seeded_customer(qbo: QboCaller, name: str) -> dict:
    response = qbo.post("customer", {"DisplayName": name})
    assert response.status_code == 200, response.text
    return qbo.json(response)["Customer"]


def test_escaped_apostrophe_finds_the_customer(sandbox: Sandbox, qbo: QboCaller) -> None:
    rows = qbo.rows(r"SELECT * FROM Customer WHERE DisplayName = 'Amy\'s Bird Sanctuary'")
    assert [r["DisplayName"] for r in rows] == ["Amy's Bird Sanctuary"]


def test_unescaped_apostrophe_is_a_400_parse_fault(qbo: QboCaller) -> None:
    response = qbo.query("SELECT * FROM Customer WHERE DisplayName = 'Amy's Bird Sanctuary'")
    assert response.status_code == 400
    body = qbo.json(response)
    assert body["Fault"]["type"] == "ValidationFault"
    assert body["Fault"]["Error"][0]["Message"] == "Error parsing query"
    assert fault_codes(body) == ["4000"]


def test_or_is_refused_with_the_parse_fault(qbo: QboCaller) -> None:
    response = qbo.query("SELECT * FROM Invoice WHERE DocNumber = '1' OR DocNumber = '2'")
    assert response.status_code == 400
    assert fault_codes(qbo.json(response)) == ["4000"]


def test_customer_query_hides_inactive_unless_active_is_constrained(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    inactive = [c["DisplayName"] for c in sandbox.company.customers() if not c["Active"]]
    assert inactive, "the seed has inactive customers"
    names = ", ".join("'" + n.replace("'", "\\'") + "'" for n in inactive)
    assert qbo.rows(f"SELECT * FROM Customer WHERE DisplayName IN ({names})") == []
    found = qbo.rows(
        f"SELECT * FROM Customer WHERE DisplayName IN ({names}) AND Active IN (true, false)"
    )
    assert sorted(r["DisplayName"] for r in found) == sorted(inactive)
    only_inactive = qbo.rows("SELECT * FROM Customer WHERE Active = false")
    assert {r["DisplayName"] for r in only_inactive} == set(inactive)


def test_in_matches_any_listed_value_case_insensitively(qbo: QboCaller) -> None:
    rows = qbo.rows("SELECT * FROM Item WHERE Name IN ('procedure', 'OR Facility Fee', 'nope')")
    assert sorted(r["Name"] for r in rows) == ["OR Facility Fee", "Procedure"]


def test_like_supports_percent_only(qbo: QboCaller) -> None:
    rows = qbo.rows("SELECT * FROM Item WHERE Name LIKE '%Fee'")
    assert sorted(r["Name"] for r in rows) == ["Anesthesia Fee", "OR Facility Fee"]
    assert qbo.rows("SELECT * FROM Item WHERE Name LIKE 'Proc_dure'") == []


def test_paging_with_startposition_and_maxresults(qbo: QboCaller) -> None:
    for number in range(7):
        seeded_customer(qbo, f"Paging {number}")
    everything = qbo.rows("SELECT * FROM Customer WHERE DisplayName LIKE 'Paging%' ORDERBY Id")
    assert len(everything) == 7
    response = qbo.query(
        "SELECT * FROM Customer WHERE DisplayName LIKE 'Paging%' ORDERBY Id "
        "STARTPOSITION 4 MAXRESULTS 3"
    )
    answer = qbo.json(response)["QueryResponse"]
    assert answer["startPosition"] == 4
    assert answer["maxResults"] == 3
    assert [c["Id"] for c in answer["Customer"]] == [c["Id"] for c in everything[3:6]]
    beyond = qbo.json(
        qbo.query("SELECT * FROM Customer WHERE DisplayName LIKE 'Paging%' STARTPOSITION 8")
    )
    assert beyond["QueryResponse"] == {}


def test_count_star_returns_total_count(sandbox: Sandbox, qbo: QboCaller) -> None:
    response = qbo.query("SELECT COUNT(*) FROM Invoice")
    assert qbo.json(response)["QueryResponse"] == {"totalCount": len(sandbox.company.invoices())}


def test_no_match_gives_an_empty_query_response(qbo: QboCaller) -> None:
    body = qbo.json(qbo.query("SELECT * FROM Invoice WHERE DocNumber = 'no-such-doc'"))
    assert body["QueryResponse"] == {}
    assert "time" in body


def test_maxresults_over_1000_is_a_fault(qbo: QboCaller) -> None:
    response = qbo.query("SELECT * FROM Invoice MAXRESULTS 1001")
    assert response.status_code == 400
    assert "Fault" in qbo.json(response)


def test_last_updated_time_compares_instants_across_offsets(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = sandbox.company.invoices()[0]
    stamp = invoice["MetaData"]["LastUpdatedTime"]  # company local, e.g. -08:00
    as_utc = iso_z(parse_instant(stamp))
    ids = {
        r["Id"]
        for r in qbo.rows(f"SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '{as_utc}'")
    }
    assert invoice["Id"] in ids
    later = {
        r["Id"]
        for r in qbo.rows(f"SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > '{as_utc}'")
    }
    assert invoice["Id"] not in later


def test_orderby_desc_sorts_and_keywords_are_case_insensitive(qbo: QboCaller) -> None:
    rows = qbo.rows("select * from Item where Active = true orderby Name desc", "Item")
    names = [r["Name"] for r in rows]
    assert names == sorted(names, key=str.casefold, reverse=True)
    assert "Old Supplies" not in names  # inactive item


def test_customerref_compares_on_the_reference_value(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = sandbox.company.invoices()[0]
    customer_id = invoice["CustomerRef"]["value"]
    rows = qbo.rows(f"SELECT * FROM Invoice WHERE CustomerRef = '{customer_id}'")
    assert rows and all(r["CustomerRef"]["value"] == customer_id for r in rows)


# --- LIKE, decided by the cheaper regex call ---------------------------------------------


def _like_by_definition(like: str, value: str) -> bool:
    """LIKE as QBO defines it: `%` is any run of characters, case ignored, whole value."""
    parts = re.split("(%)", like)
    body = "".join(".*" if part == "%" else re.escape(part) for part in parts)
    return re.fullmatch(body, value, re.IGNORECASE | re.DOTALL) is not None


@given(
    like=st.text(alphabet="ab%(.)\n", max_size=7),
    value=st.text(alphabet="abAB(.)\n", max_size=8),
)
def test_like_matcher_decides_like_as_its_definition_does(like: str, value: str) -> None:
    found = qbo_query._like_matcher(like)(value) is not None
    assert found == _like_by_definition(like, value)


def test_like_matcher_anchors_a_value_without_percent_signs_at_both_ends() -> None:
    assert qbo_query._like_matcher("(12)")("(12)")
    assert not qbo_query._like_matcher("(12)")("x(12)")
    assert not qbo_query._like_matcher("(12)")("(12)x")
    assert qbo_query._like_matcher("%(12)")("Ann Lee (12)")
    assert not qbo_query._like_matcher("%(12)")("Ann Lee (12) (deleted)")
    assert qbo_query._like_matcher("%(12)%")("Ann Lee (12) (deleted)")
