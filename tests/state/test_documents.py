"""The stored form of the 0.2 records (pure helpers of `state.base`): every record comes
back exactly through JSON, and 0.1 conflicts map to the kinds 0.2 shows."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourdqbo import jsonio
from fourdqbo.errors import StateStoreError
from fourdqbo.state.base import (
    ConflictEntry,
    acceptance_document,
    acceptance_entry,
    attention_document,
    attention_entry,
    ledger_document,
    ledger_entry,
    legacy_attention,
    unique,
)
from fourdqbo.state.items import Acceptance, AttentionItem, AttentionKind, Difference, LedgerEntry

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
ids = st.text("0123456789", min_size=1, max_size=8)
words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
# A reason as the store keeps it: already one line (runs of whitespace made single spaces).
reasons = words.map(lambda text: " ".join(text.split()))
ledger_entries = st.builds(
    LedgerEntry,
    quote=ids,
    invoice_id=st.none() | ids,
    version=st.integers(0, 10_000),
    sync_token=st.none() | ids,
    run_id=words,
    written_at=instants,
    intuit_tid=st.none() | words,
    action=st.sampled_from(["created", "updated", "deleted", "voided", "adopted"]),
)


def through_json(document: object) -> object:
    return jsonio.loads(jsonio.dumps(document))


@given(ledger_entries)
def test_ledger_entries_come_back_exactly(entry: LedgerEntry) -> None:
    assert ledger_entry(entry.quote, through_json(ledger_document(entry))) == entry


@given(
    st.builds(
        AttentionItem,
        quote=ids,
        kind=st.sampled_from(AttentionKind),
        version=st.none() | st.integers(0, 10_000),
        invoice_id=st.none() | ids,
        reason=reasons,
        detected_at=instants,
        differences=st.lists(
            st.builds(Difference, field=words, qbo=st.none() | words, quote=st.none() | words),
            max_size=4,
        ).map(tuple),
        ledger=st.none() | ledger_entries,
    )
)
def test_attention_items_come_back_exactly(item: AttentionItem) -> None:
    if item.ledger is not None:  # an item's ledger entry is its own quote's
        item = replace(item, ledger=replace(item.ledger, quote=item.quote))
    assert attention_entry(item.quote, through_json(attention_document(item))) == item


@given(
    st.builds(
        Acceptance,
        quote=ids,
        version=st.integers(0, 10_000),
        accepted_at=instants,
        kind=st.none() | st.sampled_from(AttentionKind),
    )
)
def test_acceptances_come_back_exactly(acceptance: Acceptance) -> None:
    document = through_json(acceptance_document(acceptance))
    assert acceptance_entry(acceptance.quote, document) == acceptance


def test_stored_times_are_fixed_width_utc() -> None:
    entry = LedgerEntry("1", "2", 3, "0", "r", T0 + timedelta(microseconds=7))
    assert ledger_document(entry)["written_at"] == "2025-03-01T08:00:00.000007Z"


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("2 QBO invoices share DocNumber 10005 (Ids 145, 146)", AttentionKind.DUPLICATE_INVOICES),
        ("two invoices share the docnumber 10005", AttentionKind.DUPLICATE_INVOICES),
        ("invoice has a payment applied", AttentionKind.PAID),
        ("quote re-opened but its invoice is paid", AttentionKind.PAID),
    ],
)
def test_legacy_conflicts_become_items_of_the_kind_their_reason_says(
    reason: str, kind: AttentionKind
) -> None:
    item = legacy_attention(ConflictEntry("10005", "145", reason, T0))
    assert item == AttentionItem("10005", kind, None, "145", reason, T0)


@pytest.mark.parametrize(
    ("reader", "document"),
    [
        (ledger_entry, {"version": "three", "run_id": "r", "written_at": "2025-03-01T08:00Z"}),
        (ledger_entry, {"version": 3, "run_id": "r", "written_at": "yesterday"}),
        (ledger_entry, {"version": True, "run_id": "r", "written_at": "2025-03-01T08:00Z"}),
        (attention_entry, {"kind": "lost_in_space", "reason": "x", "detected_at": "2025-03-01Z"}),
        (attention_entry, {"kind": "paid", "reason": "x"}),
        (attention_entry, ["not", "a", "document"]),
        (acceptance_entry, {"version": 1}),
        (acceptance_entry, None),
    ],
)
def test_unreadable_documents_are_state_store_errors_naming_the_quote(
    reader: object, document: object
) -> None:
    with pytest.raises(StateStoreError, match=r"for quote 10023$"):
        reader("10023", document)  # type: ignore[operator]


def test_unique_keeps_order_and_refuses_a_lone_string() -> None:
    assert unique(["3", "1", "3", "2"]) == ["3", "1", "2"]
    with pytest.raises(TypeError):
        unique("10023")
