"""Change data capture, the pure part: reading answers, merging pages, paging past full ones."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourdqbo.errors import CdcCannotAdvance, MalformedPayload, QBOFault, UpstreamError
from fourdqbo.qbo.cdc import MAX_CDC_OBJECTS, CdcChanges, collect, next_since, parse_answer

SINCE = datetime(2025, 3, 1, 17, tzinfo=UTC)
PACIFIC = "-08:00"


def stamp(seconds: int) -> str:
    """SINCE plus `seconds`, written as QBO writes it: the company's local offset."""
    local = SINCE + timedelta(seconds=seconds) - timedelta(hours=8)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + PACIFIC


def invoice(n: int, seconds: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "Id": str(n),
        "SyncToken": "1",
        "DocNumber": str(10000 + n),
        "TotalAmt": 10,
        "Balance": 10,
        "MetaData": {"LastUpdatedTime": stamp(seconds)},
        **extra,
    }


def customer(n: int, seconds: int = 0) -> dict[str, Any]:
    return {
        "Id": str(n),
        "SyncToken": "0",
        "DisplayName": f"{n}.AB",
        "MetaData": {"LastUpdatedTime": stamp(seconds)},
    }


def deleted(n: int, seconds: int = 0) -> dict[str, Any]:
    return {
        "domain": "QBO",
        "status": "Deleted",
        "Id": str(n),
        "MetaData": {"LastUpdatedTime": stamp(seconds)},
    }


def cdc_answer(time: str | None = "2025-03-05T10:00:00.300-08:00", **lists: Any) -> dict:
    parts = [
        {name: rows, "startPosition": 1, "maxResults": len(rows)} if rows else {}
        for name, rows in lists.items()
    ]
    document: dict[str, Any] = {"CDCResponse": [{"QueryResponse": parts}]}
    if time is not None:
        document["time"] = time
    return document


class FakeCdc:
    """Answers like our sandbox: per entity the MAX_CDC_OBJECTS earliest changes at or
    after changedSince, ascending."""

    def __init__(self, **rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.calls: list[tuple[tuple[str, ...], datetime]] = []

    def __call__(self, entities: Sequence[str], since: datetime) -> dict[str, Any]:
        self.calls.append((tuple(entities), since))
        lists = {}
        for entity in entities:
            rows = sorted(
                (r for r in self.rows.get(entity, []) if when(r) >= since),
                key=lambda r: (when(r), int(r["Id"])),
            )
            lists[entity] = rows[:MAX_CDC_OBJECTS]
        return cdc_answer(**lists)


def when(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["MetaData"]["LastUpdatedTime"]).astimezone(UTC)


def test_answer_with_invoices_deletions_and_an_empty_customer_list() -> None:
    fetch = FakeCdc(Invoice=[invoice(1, 5), deleted(266, 7), invoice(2, 9)], Customer=[])
    changes = collect(fetch, ["Invoice", "Customer"], SINCE)
    assert [i.id for i in changes.invoices] == ["1", "2"]
    assert changes.invoices[0].doc_number == "10001"
    assert changes.deleted_invoice_ids == ("266",)
    assert changes.customers == () and changes.deleted_customer_ids == ()
    assert changes.server_time == datetime(2025, 3, 5, 18, 0, 0, 300000, tzinfo=UTC)
    assert changes.latest_change == SINCE + timedelta(seconds=9)
    assert changes.requests == 1
    assert fetch.calls == [(("Invoice", "Customer"), SINCE)]


def test_recorded_shape_with_extra_keys_and_customers() -> None:
    document = {
        "CDCResponse": [
            {
                "QueryResponse": [
                    {"Customer": [customer(58, 3), deleted(59, 4)], "startPosition": 1},
                    {},
                    {"Estimate": [{"Id": "x"}]},  # not asked for: ignored
                ],
                "surprise": True,
            }
        ],
        "time": "2025-03-05T10:00:00.300-08:00",
        "warnings": None,
    }
    rows, at = parse_answer(document, ["Customer"])
    assert [r["Id"] for r in rows["Customer"]] == ["58", "59"]
    assert at is not None
    changes = collect(lambda e, s: document, ["Customer"], SINCE)
    assert [c.display_name for c in changes.customers] == ["58.AB"]
    assert changes.deleted_customer_ids == ("59",)


@pytest.mark.parametrize(
    "document",
    [
        {"CDCResponse": []},
        {"CDCResponse": [{}]},
        {"CDCResponse": [{"QueryResponse": {}}]},  # an object, not a list of them
        {"CDCResponse": {"QueryResponse": [{"Invoice": None}]}},
        {"CDCResponse": [{"QueryResponse": None}]},
    ],
)
def test_missing_lists_mean_no_change(document: dict[str, Any]) -> None:
    changes = collect(lambda e, s: document, ["Invoice"], SINCE)
    assert changes == CdcChanges(requests=1)


@pytest.mark.parametrize(
    "document",
    [
        {"QueryResponse": {}},
        [1, 2],
        {"CDCResponse": "nothing"},
        {"CDCResponse": [["x"]]},
        {"CDCResponse": [{"QueryResponse": [["x"]]}]},
        {"CDCResponse": [{"QueryResponse": [{"Invoice": {"Id": "1"}}]}]},
        {"CDCResponse": [{"QueryResponse": [{"Invoice": ["x"]}]}]},
        {"CDCResponse": [{"QueryResponse": [{"Invoice": [{"status": "Deleted"}]}]}]},
        {"CDCResponse": [{"QueryResponse": [{"Invoice": [{"Id": "1"}]}]}]},  # no SyncToken
    ],
)
def test_shapes_that_make_no_sense_are_malformed(document: Any) -> None:
    with pytest.raises(MalformedPayload):
        collect(lambda e, s: document, ["Invoice"], SINCE)


def test_a_fault_inside_the_answer_is_raised() -> None:
    document = {"CDCResponse": [{"Fault": {"Error": [{"code": "4001", "Message": "bad"}]}}]}
    with pytest.raises(QBOFault) as caught:
        collect(lambda e, s: document, ["Invoice"], SINCE)
    assert caught.value.code == "4001"


def test_unreadable_answer_time_is_unknown_not_fatal() -> None:
    changes = collect(lambda e, s: cdc_answer(time="yesterday"), ["Invoice"], SINCE)
    assert changes.server_time is None


def test_full_answer_pages_forward_from_its_latest_change() -> None:
    rows = [invoice(n, n // 3) for n in range(1, 2501)]  # three changes a second
    fetch = FakeCdc(Invoice=rows, Customer=[customer(1, 2)])
    changes = collect(fetch, ["Invoice", "Customer"], SINCE)
    assert sorted(int(i.id) for i in changes.invoices) == list(range(1, 2501))
    assert len({i.id for i in changes.invoices}) == 2500  # overlapping pages deduplicated
    assert [c.id for c in changes.customers] == ["1"]
    # First call for both; then Invoice alone, from the latest time in each full answer.
    assert fetch.calls[0] == (("Invoice", "Customer"), SINCE)
    assert all(entities == ("Invoice",) for entities, _ in fetch.calls[1:])
    sinces = [s for _, s in fetch.calls]
    assert sinces == sorted(sinces) and len(set(sinces)) == len(sinces)
    assert fetch.calls[1][1] == when(rows[999])
    assert changes.requests == len(fetch.calls) == 3


def test_newest_state_wins_across_pages() -> None:
    # Invoice 5 changed at second 1 (in the first page) and was deleted at second 400.
    rows = [invoice(n, n // 3) for n in range(1, 1201) if n != 5]
    fetch = FakeCdc(Invoice=[invoice(5, 1), *rows, deleted(5, 400)])
    changes = collect(fetch, ["Invoice"], SINCE)
    assert "5" not in {i.id for i in changes.invoices}
    assert changes.deleted_invoice_ids == ("5",)


def test_full_answer_sharing_one_time_cannot_advance() -> None:
    fetch = FakeCdc(Invoice=[invoice(n, 10) for n in range(1, 1001)])
    with pytest.raises(CdcCannotAdvance) as caught:
        collect(fetch, ["Invoice"], SINCE)
    assert isinstance(caught.value, UpstreamError) and caught.value.exit_code == 3
    assert "1000 Invoice changes at one time" in str(caught.value)
    assert len(fetch.calls) == 1  # it did not ask again for the same page


def test_full_answer_that_would_ask_from_the_same_moment_cannot_advance() -> None:
    rows = [invoice(n, 0 if n > 1 else -5) for n in range(1, 1001)]
    with pytest.raises(CdcCannotAdvance):
        next_since(rows, SINCE, "Invoice")


def test_full_answer_without_times_cannot_advance() -> None:
    rows = [{"Id": str(n), "status": "Deleted"} for n in range(MAX_CDC_OBJECTS)]
    with pytest.raises(CdcCannotAdvance):
        next_since(rows, SINCE)


def test_answer_short_of_full_is_the_last() -> None:
    rows = [invoice(n, 0) for n in range(MAX_CDC_OBJECTS - 1)]
    assert next_since(rows, SINCE) is None


def test_entities_and_since_are_checked() -> None:
    with pytest.raises(ValueError):
        collect(FakeCdc(), ["Estimate"], SINCE)
    with pytest.raises(ValueError):
        collect(FakeCdc(), [], SINCE)
    with pytest.raises(ValueError):
        collect(FakeCdc(), ["Invoice"], datetime(2025, 3, 1))


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=2600),
    repeats=st.lists(st.integers(min_value=0, max_value=2599), max_size=50),
)
def test_paging_finds_every_change_once_with_its_newest_state(
    gaps: list[int], repeats: list[int]
) -> None:
    # Times with at most 3 changes sharing a second never block paging.
    seconds, rows, clock = [], [], 0
    for n, gap in enumerate(gaps):
        clock += gap if n % 3 else max(gap, 1)
        seconds.append(clock)
        rows.append(invoice(n, clock))
    newest = {str(n): seconds[n] for n in range(len(rows))}
    for n in repeats:
        if n < len(rows):
            clock += 1
            rows.append(invoice(n, clock, SyncToken=str(clock)))
            newest[str(n)] = clock
    changes = collect(FakeCdc(Invoice=rows), ["Invoice"], SINCE)
    got = {i.id: i.updated_at for i in changes.invoices}
    assert got == {k: SINCE + timedelta(seconds=v) for k, v in newest.items()}
