"""Reproducible seed data for the sandbox: a practice in 4D and its QBO company.

Everything comes from one `random.Random(seed)` and the clock's "now", so the same seed
gives the same patients, quotes and company (times move with the clock). The default
scenario covers what a sync meets in real life:

- patient names with accents, apostrophes, hyphens, middle initials and digits;
- quotes in statuses 0, 1, 4 and one unknown id (7), across several weeks, with
  `PriceQuoteNo` as numbers and as strings, `PriceQuoteDate` with and without fractional
  seconds, null discounts, hidden supplies, anesthesia with and without a group, facility
  fees, null amounts and missing or null lists;
- QBO Items named as DESIGN.md's defaults, a few unrelated customers, an INACTIVE customer
  whose DisplayName is what fourdqbo computes for a completed quote's patient plus the
  " (deleted)" QBO appends on deactivation, a partly
  paid invoice that differs from its (completed) quote — a conflict — and an unpaid invoice
  of a quote that went back to active — to be deleted.

`SeedSpec(quotes=N, completed=N, patients=M, preexisting=False)` gives a benchmark's
"N completed quotes for M new patients, nothing in QBO yet".
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from fourdqbo.money import cents
from fourdqbo.sandbox.base import SimClock
from fourdqbo.sandbox.fourd import PatientRecord, Practice, QuoteRecord
from fourdqbo.sandbox.qbo import Company

FIRST_QUOTE_NUMBER = 10001
FIRST_PATIENT_ID = 1001
ITEM_NAMES = (
    "Services",  # QBO's default item, Id 1
    "Procedure",
    "Supplies Charge",
    "Anesthesia Fee",
    "OR Facility Fee",
    "Consultation",
    "Gift Card",
)
# The special patients every default seed starts with (first, middle, last, suffix).
NOTABLE_PATIENTS = (
    ("Jane", "Q", "Doe", None),
    ("Zoë", None, "Ångström", None),
    ("Siobhán", None, "O'Brien", None),
    ("Robert", "E", "Lee", "3rd"),
    ("Mary-Kate", None, "D'Angelo", None),
    ("José", "María", "Nuñez-García", None),
)
FIRST_NAMES = (
    "Olivia", "Liam", "Amara", "Noah", "Chen", "Fatima", "Søren", "Émile", "Aaliyah",
    "Mateo", "Priya", "Kwame", "Ingrid", "Yusuf", "Hana", "Björn", "Chloé", "Declan",
    "Imani", "Nikolai", "Renée", "Tomás", "Ava", "Ethan", "Grace", "Jae-won",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "García", "Nguyễn", "Müller", "Kowalski", "Okafor", "Lefèvre", "Johansson",
    "Patel", "Tanaka", "O'Connor", "Hernández", "Brown", "Schäfer", "McAllister",
    "Dubois", "Ivanova", "Cohen", "Rossi", "St. Clair", "Al-Hassan", "Björklund",
)  # fmt: skip
MIDDLE_INITIALS = ("A", "B", "J", "K", "M", "R.", "T")
STAFF = (
    {"Id": 11, "Name": "Dana K Whitfield"},
    {"Id": 12, "Name": "Luis Ortega"},
    {"Id": 13, "Name": "Renée Castañeda"},
    {"Id": 14, "Name": "Front Desk 2"},
)
PROVIDERS = (
    {"Id": 21, "Name": "Dr. Alan Shore"},
    {"Id": 22, "Name": "Dr. Miriam Okonkwo"},
    {"Id": 23, "Name": "Dr. Hélène Marchand"},
)
PROCEDURES = (
    ("Rhinoplasty", "8500.00"),
    ("Blepharoplasty - Upper", "3200.00"),
    ("Breast Augmentation", "7250.00"),
    ("Liposuction - Abdomen", "5400.00"),
    ("Abdominoplasty", "9800.00"),
    ("Facelift", "12500.00"),
    ("Botox - 20 units", "300.00"),
    ("Chemical Peel", "450.50"),
    ("Otoplasty", "4100.00"),
    ("Scar Revision", "1375.25"),
)
SUPPLIES = (
    ("Compression Garment", "89.99", True),
    ("Surgical Drain Kit", "45.50", True),
    ("Silicone Scar Gel", "34.25", True),
    ("Sterile Gauze Pack", "1.15", False),
    ("Post-op Ice Pack", "2.375", True),  # a unit cost below a cent: Amount rounds half-up
    ("Suture Kit", "18.00", False),
    ("Arnica Tablets", "12.49", True),
)
ANESTHESIA_GROUPS = (
    {"Id": 3, "Name": "General Anesthesia"},
    {"Id": 4, "Name": "IV Sedation"},
    {"Id": 5, "Name": "Local with MAC"},
)
APPOINTMENT_TYPES = ("Consultation", "Pre-op", "Surgery", "Post-op", "Follow-up")
GENERIC_CUSTOMERS = (
    ("Amy's Bird Sanctuary", True),
    ("Cool Cars", True),
    ("Walk-in Patient", True),
    ("Old Insurance Co", False),
)


@dataclass(frozen=True)
class SeedSpec:
    """What to seed. Defaults: the varied demo scenario with a few dozen quotes."""

    quotes: int = 40
    patients: int | None = None  # default: about three quotes for every two patients
    completed: int | None = None  # exactly this many completed (the rest active/inactive)
    preexisting: bool = True  # patient customers (one inactive) and invoices (one paid)
    weeks: int = 6  # quotes spread over this many past weeks


@dataclass
class SeedFacts:
    """What the seed arranged on purpose, for tests that need to find it again."""

    inactive_customer_quote: str | None = None  # completed quote whose customer is inactive
    inactive_customer_id: str | None = None
    conflict_quote: str | None = None  # completed quote with a partly paid, different invoice
    conflict_invoice_id: str | None = None
    reopened_quote: str | None = None  # active quote whose unpaid invoice should go
    reopened_invoice_id: str | None = None
    unknown_status_quote: str | None = None
    customers_by_patient: dict[int, str] = field(default_factory=dict)


def initials(name: str) -> str:
    """fourdqbo's rule: first letter of each word without a digit, upper-cased."""
    return "".join(word[0] for word in name.split() if not any(c.isdigit() for c in word)).upper()


def display_name(patient: PatientRecord) -> str:
    """The DisplayName fourdqbo's default template gives a patient: `{patient_id}.{initials}`."""
    return f"{patient.id}.{initials(patient.name)}"


class QuoteFactory:
    """Makes realistic quotes from a seeded RNG; also used for quotes added during a test."""

    def __init__(self, practice: Practice, rng: random.Random) -> None:
        self.practice = practice
        self.rng = rng

    def next_number(self) -> str:
        numbers = [int(n) for n in self.practice.quotes_by_number]
        return str(max(numbers, default=FIRST_QUOTE_NUMBER - 1) + 1)

    def __call__(self, **overrides: Any) -> QuoteRecord:
        now = self.practice.clock.now()
        patient_id = overrides.pop("patient_id", None)
        if patient_id is None:
            patient_id = self.rng.choice(sorted(self.practice.patients))
        quote = self.make(
            self.next_number(),
            patient_id=int(patient_id),
            status_id=overrides.pop("status_id", 4),
            quote_date=overrides.pop("quote_date", now),
            modified_at=overrides.pop("modified_at", now),
        )
        for name, value in overrides.items():
            if not hasattr(quote, name):
                raise TypeError(f"QuoteRecord has no field {name!r}")
            setattr(quote, name, value)
        return quote

    def make(
        self,
        number: str,
        *,
        patient_id: int,
        status_id: int,
        quote_date: datetime,
        modified_at: datetime,
    ) -> QuoteRecord:
        rng = self.rng
        procedures = []
        for name, amount in rng.sample(PROCEDURES, rng.choice((1, 1, 1, 2, 2, 3))):
            roll = rng.random()
            discount: Decimal | None
            if roll < 0.3:
                discount = None
            elif roll < 0.5:
                discount = Decimal("0")
            elif roll < 0.8:
                discount = cents(Decimal(amount) * Decimal(rng.choice((5, 10, 15))) / 100)
            else:
                discount = Decimal(rng.choice(("100.00", "250.00", "37.50")))
            procedures.append(
                {"ProcedureName": name, "Amount": Decimal(amount), "DiscountAmount": discount}
            )
        supplies = []
        for title, unit_cost, shown in rng.sample(SUPPLIES, rng.choice((0, 1, 2, 3))):
            quantity = Decimal(rng.choice((1, 1, 2, 3, 10)))
            supplies.append(
                {
                    "ItemTitle": title,
                    "Quantity": quantity,
                    "UnitCost": Decimal(unit_cost),
                    "ShowOnQuote": shown if rng.random() < 0.85 else not shown,
                }
            )
        anesth = rng.choice((None, Decimal("0"), Decimal("650.00"), Decimal("1200.00"),
                             Decimal("975.50")))  # fmt: skip
        group = rng.choice((None, *ANESTHESIA_GROUPS)) if anesth else rng.choice((None, None))
        facility = rng.choice((None, Decimal("0"), Decimal("1500.00"), Decimal("2250.00")))
        omitted: set[str] = set()
        supplies_value: list[dict[str, Any]] | None = supplies
        roll = rng.random()
        if not supplies and roll < 0.4:
            omitted.add("Supplies")  # the key is simply missing
        elif not supplies and roll < 0.7:
            supplies_value = None
        return QuoteRecord(
            number=number,
            version=rng.choice((1, 1, 1, 2, 2, 3, 4)),
            status_id=status_id,
            patient_id=patient_id,
            quote_date=quote_date,
            modified_at=modified_at,
            created_by=dict(rng.choice(STAFF)),
            provider=dict(rng.choice(PROVIDERS)),
            procedures=procedures,
            supplies=supplies_value,
            anesth_amt=anesth,
            anesthesia_group=dict(group) if group else None,
            facility_amt=facility,
            number_is_text=int(number) % 3 == 0,
            date_fraction_digits=rng.choice((0, 0, 3, 7)),
            omitted=frozenset(omitted),
            external_id=None if rng.random() < 0.5 else f"EXT-{rng.randint(100000, 999999)}",
        )


@dataclass
class World:
    practice: Practice
    company: Company
    facts: SeedFacts
    factory: QuoteFactory


def build(
    clock: SimClock,
    *,
    seed: int = 1,
    spec: SeedSpec | None = None,
    realm_id: str,
    now: datetime | None = None,
) -> World:
    """Seed a practice and a company; the same seed, spec and `now` give the same data.

    Times are relative to `now` (default: the clock's now), so a fresh sandbox always has
    quotes from the last few weeks.
    """
    spec = spec or SeedSpec()
    if spec.quotes < 0 or (spec.completed is not None and spec.completed > spec.quotes):
        raise ValueError("SeedSpec: completed must be between 0 and quotes")
    rng = random.Random(seed)
    now = (now or clock.now()).replace(microsecond=rng.randint(0, 999) * 1000)
    practice = Practice(clock)
    factory = QuoteFactory(practice, rng)
    practice.factory = factory
    _seed_patients(practice, rng, spec)
    _seed_quotes(practice, factory, rng, spec, now)
    _seed_schedule(practice, rng, now)
    company = Company(clock, realm_id=realm_id)
    facts = _seed_company(company, practice, rng, spec, now)
    return World(practice=practice, company=company, facts=facts, factory=factory)


def _seed_patients(practice: Practice, rng: random.Random, spec: SeedSpec) -> None:
    count = spec.patients if spec.patients is not None else max(6, (spec.quotes * 2 + 2) // 3)
    count = max(count, 1)
    for index in range(count):
        if index < len(NOTABLE_PATIENTS) and spec.completed is None:
            first, middle, last, suffix = NOTABLE_PATIENTS[index]
        else:
            first = rng.choice(FIRST_NAMES)
            last = rng.choice(LAST_NAMES)
            middle = rng.choice(MIDDLE_INITIALS) if rng.random() < 0.3 else None
            suffix = rng.choice(("Jr", "II", "2nd")) if rng.random() < 0.05 else None
        patient_id = FIRST_PATIENT_ID + index
        born = date(1950, 1, 1) + timedelta(days=rng.randint(0, 365 * 55))
        practice.patients[patient_id] = PatientRecord(
            id=patient_id,
            first_name=first,
            middle_name=middle,
            last_name=last,
            suffix=suffix,
            date_of_birth=born,
            gender=rng.choice(("F", "M", "U")),
        )


def _seed_quotes(
    practice: Practice,
    factory: QuoteFactory,
    rng: random.Random,
    spec: SeedSpec,
    now: datetime,
) -> None:
    patient_ids = sorted(practice.patients)
    span = timedelta(weeks=max(spec.weeks, 1)).total_seconds()
    for index in range(spec.quotes):
        number = str(FIRST_QUOTE_NUMBER + index)
        if spec.completed is not None:
            status = 4 if index < spec.completed else rng.choice((0, 1, 1))
        else:
            status = _default_status(index, rng)
        # Every patient gets a quote before any gets a second one.
        patient_id = patient_ids[index % len(patient_ids)]
        created = now - timedelta(seconds=rng.uniform(3600, span))
        modified = min(created + timedelta(seconds=rng.uniform(0, 3 * 86400)), now - _MINUTE)
        quote = factory.make(
            number,
            patient_id=patient_id,
            status_id=status,
            quote_date=created,
            modified_at=modified,
        )
        if spec.completed is None:
            _make_notable(quote, index)
        practice.quotes_by_number[number] = quote


_MINUTE = timedelta(minutes=1)


def _default_status(index: int, rng: random.Random) -> int:
    # Fixed statuses for the notable first quotes; a realistic mix after them.
    fixed = {0: 4, 1: 4, 2: 4, 3: 4, 4: 1, 5: 4, 6: 7, 7: 0}
    if index in fixed:
        return fixed[index]
    roll = rng.random()
    return 4 if roll < 0.55 else 1 if roll < 0.8 else 0


def _make_notable(quote: QuoteRecord, index: int) -> None:
    """The first quotes of the default seed each carry one thing a sync must get right."""
    if index == 0:  # every line kind: discounts (one null), a hidden supply, group, facility
        quote.procedures = [
            {"ProcedureName": "Rhinoplasty", "Amount": Decimal("8500.00"),
             "DiscountAmount": Decimal("850.00")},
            {"ProcedureName": "Scar Revision", "Amount": Decimal("1375.25"),
             "DiscountAmount": None},
        ]  # fmt: skip
        quote.supplies = [
            {"ItemTitle": "Compression Garment", "Quantity": Decimal("2"),
             "UnitCost": Decimal("89.99"), "ShowOnQuote": True},
            {"ItemTitle": "Sterile Gauze Pack", "Quantity": Decimal("10"),
             "UnitCost": Decimal("1.15"), "ShowOnQuote": False},
            {"ItemTitle": "Post-op Ice Pack", "Quantity": Decimal("3"),
             "UnitCost": Decimal("2.375"), "ShowOnQuote": True},
        ]  # fmt: skip
        quote.anesth_amt = Decimal("1200.00")
        quote.anesthesia_group = {"Id": 3, "Name": "General Anesthesia"}
        quote.facility_amt = Decimal("2250.00")
        quote.date_fraction_digits = 3
        quote.omitted = frozenset()
    elif index == 1:  # anesthesia without a group, null facility, no fraction in the date
        quote.anesth_amt = Decimal("650.00")
        quote.anesthesia_group = None
        quote.facility_amt = None
        quote.date_fraction_digits = 0
    elif index == 5:  # null lists and null amounts
        quote.procedures = [
            {"ProcedureName": "Botox - 20 units", "Amount": Decimal("300.00"),
             "DiscountAmount": None},
        ]  # fmt: skip
        quote.supplies = None
        quote.anesth_amt = None
        quote.facility_amt = None
        quote.date_fraction_digits = 7


def _seed_schedule(practice: Practice, rng: random.Random, now: datetime) -> None:
    ids = sorted(practice.patients)
    today = now.date()
    for index in range(min(len(ids), 30)):
        patient = practice.patients[ids[rng.randrange(len(ids))]]
        day = today + timedelta(days=rng.randint(-7, 14))
        provider = rng.choice(PROVIDERS)
        practice.appointments.append(
            {
                "Id": 5001 + index,
                "StartTime": f"{day.isoformat()}T{rng.randint(13, 22):02d}:"
                f"{rng.choice((0, 15, 30, 45)):02d}:00Z",
                "DurationMinutes": rng.choice((15, 30, 60, 120)),
                "Patient": {"Id": patient.id, "Name": patient.name},
                "Provider": dict(provider),
                "AppointmentType": rng.choice(APPOINTMENT_TYPES),
                "Status": rng.choice(("Scheduled", "Confirmed", "Arrived", "Cancelled")),
            }
        )
    for index, quote in enumerate(q for q in practice.quotes() if q.completed):
        patient = practice.patients[quote.patient_id]
        practice.charges.append(
            {
                "Id": 9001 + index,
                "ServiceDate": quote.quote_date.date().isoformat(),
                "Patient": {"Id": patient.id, "Name": patient.name},
                "Code": rng.choice(("30400", "15822", "19325", "15877", "99213")),
                "Description": (quote.procedures or [{}])[0].get("ProcedureName"),
                "Amount": quote.total(),
            }
        )


def _seed_company(
    company: Company, practice: Practice, rng: random.Random, spec: SeedSpec, now: datetime
) -> SeedFacts:
    long_ago = now - timedelta(days=400)
    for name in ITEM_NAMES:
        company.insert("Item", {"Name": name, "Type": "Service"}, at=long_ago)
    # Made inactive long ago (so not in a fresh CDC answer); QBO renamed the customer.
    company.insert("Item", {"Name": "Old Supplies", "Type": "Service", "Active": False},
                   at=long_ago)  # fmt: skip
    for name, active in GENERIC_CUSTOMERS:
        company.insert("Customer", {"DisplayName": name, "Active": active}, at=long_ago)
    facts = SeedFacts()
    amy = company.customer_by_name("Amy's Bird Sanctuary")
    consultation = company.item_by_name("Consultation")
    assert amy is not None and consultation is not None
    for doc, amount in (("1037", "362.07"), ("1038", "108.00")):
        company.insert(
            "Estimate",
            {"DocNumber": doc, "CustomerRef": {"value": amy["Id"]},
             "Line": [{"DetailType": "SalesItemLineDetail", "Amount": Decimal(amount),
                       "Description": "Consultation package",
                       "SalesItemLineDetail": {"ItemRef": {"value": consultation["Id"]}}}]},
            at=now - timedelta(days=rng.randint(20, 60)),
        )  # fmt: skip
    if not spec.preexisting:
        return facts
    items = {item["Name"]: item["Id"] for item in company.items()}
    quotes = practice.quotes()
    completed = [q for q in quotes if q.completed]
    unknown = next((q for q in quotes if q.status_id not in (0, 1, 4)), None)
    facts.unknown_status_quote = unknown.number if unknown else None
    used_patients: set[int] = set()

    def patient_customer(quote: QuoteRecord, *, active: bool) -> str:
        patient = practice.patients[quote.patient_id]
        existing = company.customer_by_name(display_name(patient))
        if existing is not None:
            return str(existing["Id"])
        created = company.insert(
            "Customer",
            {"DisplayName": display_name(patient), "Active": active},
            at=now - timedelta(days=200),
        )
        facts.customers_by_patient[patient.id] = created["Id"]
        used_patients.add(patient.id)
        return str(created["Id"])

    # A completed quote whose patient's customer exists but is inactive (reactivate it).
    pick = next((q for q in completed[2:] if q.patient_id not in used_patients), None)
    if pick is not None:
        facts.inactive_customer_quote = pick.number
        facts.inactive_customer_id = patient_customer(pick, active=False)
    # A completed quote with a partly paid invoice that differs from it: a conflict. The
    # invoice was written from an earlier Version (its "Quote Version" field says so), so
    # it is a quote that changed after payment, not a person's edit in QBO.
    candidates = [q for q in completed[3:] if q.patient_id not in used_patients]
    pick = next((q for q in candidates if q.version >= 2), None) or next(iter(candidates), None)
    if pick is not None:
        customer_id = patient_customer(pick, active=True)
        old_total = cents(pick.total() - Decimal("200.00"))
        invoice = company.insert(
            "Invoice",
            {"DocNumber": pick.number, "TxnDate": pick.quote_date.date().isoformat(),
             "CustomerRef": {"value": customer_id},
             "CustomField": [{"DefinitionId": "1", "StringValue": str(pick.version - 1)}],
             "Line": [{"DetailType": "SalesItemLineDetail", "Amount": old_total,
                       "Description": "Procedure (earlier version of the quote)",
                       "SalesItemLineDetail": {"ItemRef": {"value": items["Procedure"]}}}]},
            at=now - timedelta(days=10),
        )  # fmt: skip
        company.apply_payment(invoice["Id"], cents(min(old_total, Decimal("500.00")) / 2))
        facts.conflict_quote = pick.number
        facts.conflict_invoice_id = invoice["Id"]
    # An active quote that still has its (unpaid) invoice from when it was completed.
    pick = next((q for q in quotes if q.status_id == 1 and q.patient_id not in used_patients),
                None)  # fmt: skip
    if pick is not None:
        customer_id = patient_customer(pick, active=True)
        invoice = company.insert(
            "Invoice",
            {"DocNumber": pick.number, "TxnDate": pick.quote_date.date().isoformat(),
             "CustomerRef": {"value": customer_id},
             "Line": [{"DetailType": "SalesItemLineDetail", "Amount": pick.total(),
                       "Description": "Procedure",
                       "SalesItemLineDetail": {"ItemRef": {"value": items["Procedure"]}}}]},
            at=now - timedelta(days=12),
        )  # fmt: skip
        facts.reopened_quote = pick.number
        facts.reopened_invoice_id = invoice["Id"]
    # An old invoice of a walk-in sale, unrelated to any quote.
    walk_in = company.customer_by_name("Walk-in Patient")
    assert walk_in is not None
    company.insert(
        "Invoice",
        {"DocNumber": "A-1001", "CustomerRef": {"value": walk_in["Id"]},
         "TxnDate": (now - timedelta(days=90)).date().isoformat(),
         "Line": [{"DetailType": "SalesItemLineDetail", "Amount": Decimal("45.00"),
                   "Description": "Arnica Tablets", "SalesItemLineDetail": {
                       "ItemRef": {"value": items["Supplies Charge"]},
                       "Qty": 3, "UnitPrice": Decimal("15.00")}}]},
        at=now - timedelta(days=90),
    )  # fmt: skip
    return facts
