"""People in QBO: a bookkeeper edits, deletes, voids, pays, emails and annotates invoices
between runs, under faults and a run killed among its writes.

Reported (the default): every edit is an open `edited_in_qbo` item and every delete or
void a `deleted_in_qbo` item, with the invoice left exactly as the person left it; a
payment, an email or a note needs nobody. With SYNC_QBO_EDITS=revert and
SYNC_QBO_DELETES=recreate every one is repaired. Never a duplicate, never an item nothing
explains (the audit is told what the bookkeeper did, not what the sync decided).
"""

from __future__ import annotations

from types import ModuleType

import pytest

pytestmark = pytest.mark.integration

QUOTES = 60
HAND_CHANGES = 8  # one of each kind the bookkeeper does (bench/chaos/people.py HAND_KINDS)


@pytest.mark.parametrize("repair", [False, True], ids=["reported", "reverted-and-recreated"])
def test_every_hand_change_is_reported_or_repaired_under_faults_and_a_kill(
    chaos: ModuleType, redis_url: str, world_options: dict[str, object], repair: bool
) -> None:
    result = chaos.people_in_qbo(
        redis_url=redis_url,
        seed=31,
        quotes=QUOTES,
        rounds=1,
        per_round=HAND_CHANGES,
        repair=repair,
        **world_options,
    )
    assert result.problems == [], result.line()
    audit = result.audit
    assert audit is not None and audit.converged, audit.summary()
    hand = result.hand
    assert sum(hand.values()) == HAND_CHANGES and set(hand) == set(chaos.HAND_KINDS)
    assert result.kills == 1 and result.writes_before_kills[0] >= 1
    assert sum(result.faults.values()) > 0
    to_report = hand["edited"] + hand["deleted"] + hand["voided"]
    needing_nobody = hand["paid"] + hand["emailed"] + hand["noted"]
    assert len(audit.quiet) == needing_nobody
    assert audit.duplicates == [] and audit.undone == [] and audit.unexplained == []
    if repair:
        assert len(audit.repaired) == to_report and audit.reported == []
        assert set(result.open_items) <= {"paid"}  # only the seed's paid conflict
    else:
        assert len(audit.reported) == to_report and audit.unreported == []
        assert result.open_items["edited_in_qbo"] == hand["edited"]
        assert result.open_items["deleted_in_qbo"] == hand["deleted"] + hand["voided"]
