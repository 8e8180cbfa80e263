"""Which quotes a run re-checks after QBO's change data capture (pure part)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from fourdqbo.qbo.records import Invoice
from fourdqbo.state.items import LedgerEntry
from fourdqbo.sync.cdc import CDC_REACH, quotes_to_recheck, read_changes

AT = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)


def invoice(ident: str, token: str, doc: str | None, version_field: str | None = "3") -> Invoice:
    return Invoice(
        id=ident,
        sync_token=token,
        doc_number=doc,
        txn_date=None,
        customer_id="7",
        customer_name=None,
        lines=(),
        custom_fields={} if version_field is None else {"1": version_field},
        total=Decimal("10.00"),
        balance=Decimal("10.00"),
        created_at=None,
        updated_at=None,
    )


def entry(quote: str, ident: str, token: str | None, action: str = "created") -> LedgerEntry:
    return LedgerEntry(quote, ident, 3, token, "run1", AT, "tid", action)


def test_our_own_untouched_write_is_not_rechecked() -> None:
    quotes, ours = quotes_to_recheck(
        [invoice("145", "2", "10023")], [], {"145": entry("10023", "145", "2")}, "1"
    )
    assert (quotes, ours) == ([], 1)


def test_an_invoice_touched_after_our_write_is_rechecked_by_its_ledger_quote() -> None:
    # The DocNumber may have been changed by the person too: the ledger's quote counts.
    quotes, ours = quotes_to_recheck(
        [invoice("145", "3", "99999")], [], {"145": entry("10023", "145", "2")}, "1"
    )
    assert (quotes, ours) == (["10023"], 0)


def test_without_ledger_the_quote_version_field_ties_the_invoice_to_its_quote() -> None:
    quotes, _ = quotes_to_recheck([invoice("145", "3", " 10023 ")], [], {}, "1")
    assert quotes == ["10023"]


def test_an_invoice_without_ledger_or_quote_version_field_is_not_ours() -> None:
    assert quotes_to_recheck([invoice("9", "0", "A-17", None)], [], {}, "1") == ([], 0)
    # The field turned off in settings: only the ledger ties invoices to quotes.
    assert quotes_to_recheck([invoice("9", "0", "10023")], [], {}, "") == ([], 0)


def test_deleted_invoices_are_tied_by_the_ledger_only_and_our_deletes_are_ours() -> None:
    ledger = {
        "145": entry("10023", "145", "2"),
        "146": entry("10024", "146", None, action="deleted"),
    }
    quotes, ours = quotes_to_recheck([], ["145", "146", "999"], ledger, "1")
    assert (quotes, ours) == (["10023"], 1)


def test_a_quote_touched_twice_is_rechecked_once() -> None:
    ledger = {"145": entry("10023", "145", "2"), "150": entry("10023", "150", "1")}
    quotes, _ = quotes_to_recheck([invoice("145", "5", "10023")], ["150"], ledger, "1")
    assert quotes == ["10023"]


@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 3), st.booleans()), max_size=30))
def test_every_rechecked_quote_comes_from_a_change_that_is_not_our_own(
    changes: list[tuple[int, int, bool]],
) -> None:
    ledger = {str(n): entry(f"Q{n}", str(n), "1") for n in range(1, 41, 2)}  # odd ids ours
    invoices = [
        invoice(str(n), str(token), f"Q{n}", "3" if field else None) for n, token, field in changes
    ]
    quotes, ours = quotes_to_recheck(invoices, [], ledger, "1")
    expected = []
    for n, token, field in changes:
        known = ledger.get(str(n))
        if known is not None and str(token) == "1":
            continue
        if known is None and not field:
            continue
        expected.append(f"Q{n}")
    assert quotes == list(dict.fromkeys(expected))
    assert ours == sum(1 for n, t, _ in changes if str(n) in ledger and str(t) == "1")


class _Feed:
    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.asked: list[datetime] = []

    def cdc(self, entities: object, changed_since: datetime) -> object:
        self.asked.append(changed_since)
        return self.answer


class _Ledger:
    def __init__(self, cursor: datetime | None) -> None:
        self.cursor = cursor

    def cdc_cursor(self) -> datetime | None:
        return self.cursor

    def ledger_for_invoices(self, ids: object) -> dict[str, LedgerEntry]:
        return {}


class _Answer:
    invoices = (invoice("5", "1", "10023"),)
    deleted_invoice_ids = ()
    server_time = AT - timedelta(seconds=3)


def test_the_first_run_only_sets_the_cursor() -> None:
    feed = _Feed(_Answer())
    changes = read_changes(feed, _Ledger(None), AT, "1")
    assert feed.asked == [] and not changes.read and changes.next_cursor == AT


def test_a_cursor_past_cdc_reach_is_a_gap_to_audit_and_moves_to_now() -> None:
    feed = _Feed(_Answer())
    old = AT - CDC_REACH - timedelta(seconds=1)
    changes = read_changes(feed, _Ledger(old), AT, "1")
    assert feed.asked == [] and changes.gap_since == old and changes.next_cursor == AT


def test_a_read_asks_a_little_before_the_cursor_and_keeps_qbo_time_as_next_cursor() -> None:
    feed = _Feed(_Answer())
    cursor = AT - timedelta(minutes=5)
    changes = read_changes(feed, _Ledger(cursor), AT, "1")
    assert len(feed.asked) == 1 and feed.asked[0] < cursor
    assert changes.read and changes.recheck == ("10023",)
    assert changes.next_cursor == _Answer.server_time
