"""Finding a patient's QBO customer by patient id, not by the whole DisplayName (pure).

DESIGN.md "Customers are patients, not names": the customer of a patient is first looked up
by the DisplayName CUSTOMER_NAME_TEMPLATE gives today; patients without such a customer are
looked up again by the template with `{patient_id}` filled in and every other placeholder
matched by LIKE, then filtered exactly here. So a patient whose initials changed keeps their
customer, an inactive customer QBO renamed to "<name> (deleted)" is reactivated (and named
back), and several customers that are the same patient are reported instead of written to.

No I/O: the shell runs the look-ups, `resolve_customers` decides. Notes name customer ids,
never DisplayNames (they hold a patient's initials).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from string import Formatter

from fourdqbo.config import template_id_problem
from fourdqbo.qbo.records import Customer

# QBO appends this to the DisplayName of a customer made inactive; older answers spell it
# with a capital D (API-NOTES.md "Inactive name-list entities are renamed").
_DELETED_SUFFIX = re.compile(r"\s*\(deleted\)\s*$", re.IGNORECASE)
# One letter as `initials()` produces them: a word character that is no digit and no "_";
# the group is checked with str.isalpha() afterwards, which also refuses numerals such as
# "²" or "Ⅻ" that \w admits.
_LETTERS = r"[^\W\d_]"
_INITIALS = "initials"
_PATIENT_ID = "patient_id"


def customer_key(display_name: str) -> str:
    """How DisplayNames are compared: QBO holds them unique regardless of case (and trims
    them), so "123.jd" and "123.JD " name the same customer."""
    return display_name.strip().casefold()


def strip_deleted_suffix(name: str) -> str:
    """The DisplayName without the trailing " (deleted)" QBO gives an inactive customer
    (any case); a "(deleted)" anywhere but at the end is part of the name."""
    return _DELETED_SUFFIX.sub("", name)


@dataclass(frozen=True)
class PatientCustomerWant:
    """A patient whose quotes need a customer, and the DisplayName the template gives today."""

    patient_id: str
    display_name: str


@dataclass(frozen=True)
class CustomerToCreate:
    display_name: str
    patient_id: str


@dataclass(frozen=True)
class CustomerToReactivate:
    """An inactive customer to make active again (a sparse update with Active true).

    `restore_name` is the DisplayName to set back (the name without " (deleted)"), or None
    to leave the DisplayName as it is: it had no suffix, or its plain name is now held by
    another customer, which `note` then says (for the run report).
    """

    customer: Customer
    restore_name: str | None
    note: str | None = None


@dataclass(frozen=True)
class AmbiguousPatient:
    """Several QBO customers are this patient: their quotes become `customer_ambiguous`."""

    patient_id: str
    candidate_ids: tuple[str, ...]


@dataclass(frozen=True)
class CustomerResolution:
    """Which customer each patient's invoices go to, and what must be written first.

    `customer_ids` maps every resolved patient id to the existing customer's Id, or to None
    when the customer is to be created (it is then in `to_create`, once per patient).
    Ambiguous patients are absent from `customer_ids` and listed in `ambiguous`. `notes`
    holds, per patient id, what the report should say about their customer (no names).
    """

    customer_ids: Mapping[str, str | None] = field(default_factory=dict)
    to_create: tuple[CustomerToCreate, ...] = ()
    to_reactivate: tuple[CustomerToReactivate, ...] = ()
    ambiguous: tuple[AmbiguousPatient, ...] = ()
    notes: Mapping[str, str] = field(default_factory=dict)

    def ambiguous_ids(self) -> dict[str, tuple[str, ...]]:
        """Patient id -> the Ids of the customers that all look like that patient."""
        return {item.patient_id: item.candidate_ids for item in self.ambiguous}

    def reactivation_of(self, customer_id: str) -> CustomerToReactivate | None:
        return next((r for r in self.to_reactivate if r.customer.id == customer_id), None)


@dataclass(frozen=True)
class CustomerPattern:
    """How one patient's customers are found whatever their initials are now.

    `like` is the value for `DisplayName LIKE '…'` (unescaped: the query layer escapes it);
    it always ends in `%` so that the " (deleted)" of an inactive customer is found too.
    `matches` is the exact filter of the LIKE answer: the name (without " (deleted)") is one
    the template can produce for this patient id with some initials.
    """

    like: str
    exact_when_no_initials: str  # the name with empty initials, casefolded
    regex: re.Pattern[str] | None  # with initials of at least one letter; None: no placeholder

    def matches(self, display_name: str) -> bool:
        name = strip_deleted_suffix(display_name).strip()
        if customer_key(name) == self.exact_when_no_initials:
            return True
        if self.regex is None:
            return False
        found = self.regex.fullmatch(name)
        if found is None:
            return False
        # Every group holds a placeholder's letters; \w lets numerals other than digits
        # through, which initials() never produces.
        return all(group.isalpha() for group in found.groups() if group)


def patient_pattern(template: str, patient_id: str) -> CustomerPattern:
    """The LIKE value and exact filter that find `patient_id`'s customers (see module doc).

    `{patient_id}.{initials}` gives `1003.%`, and matches "1003.JD", "1003." or
    "1003.ab (Deleted)", never "10034.JD". Raises ValueError for a template that
    `config.template_id_problem` refuses or that uses other placeholders.
    """
    _check_template(template)
    pieces = _pieces(template, patient_id)
    return CustomerPattern(
        like=_like(pieces),
        exact_when_no_initials=customer_key(_render(pieces, "")),
        regex=_regex(pieces),
    )


def needs_pattern_lookup(
    patients: Sequence[PatientCustomerWant], exact: Sequence[Customer], template: str
) -> list[str]:
    """The patient ids (once each, in order) that the exact-name look-up found no customer
    for: the shell makes one LIKE look-up per patient for these (batched)."""
    _check_template(template)
    found = {customer_key(strip_deleted_suffix(c.display_name)) for c in exact}
    return [
        want.patient_id
        for want in _unique_patients(patients)
        if customer_key(want.display_name) not in found
    ]


def resolve_customers(
    patients: Sequence[PatientCustomerWant],
    exact: Sequence[Customer],
    by_pattern: Sequence[Customer],
    template: str,
) -> CustomerResolution:
    """Decide each patient's customer from the two look-ups' answers.

    A patient's candidates are the exact-name answers whose name (without " (deleted)") is
    the wanted name, and the pattern answers the patient's `CustomerPattern` matches, counted
    once per Id. None: create under the wanted name. One: use it, reactivating it first when
    inactive. Several: ambiguous, nothing is written for the patient. The first want of a
    patient id gives the name to create (several quotes of one patient share the customer).
    """
    seen = _unique_customers([*exact, *by_pattern])
    exact_by_name: dict[str, list[Customer]] = {}
    for customer in exact:
        name = customer_key(strip_deleted_suffix(customer.display_name))
        exact_by_name.setdefault(name, []).append(customer)
    customer_ids: dict[str, str | None] = {}
    to_create: list[CustomerToCreate] = []
    to_reactivate: dict[str, CustomerToReactivate] = {}
    ambiguous: list[AmbiguousPatient] = []
    notes: dict[str, str] = {}
    for want in _unique_patients(patients):
        wanted = customer_key(want.display_name)
        pattern = patient_pattern(template, want.patient_id)
        candidates = _unique_customers(
            [
                *exact_by_name.get(wanted, ()),
                *(c for c in by_pattern if pattern.matches(c.display_name)),
            ]
        )
        if not candidates:
            customer_ids[want.patient_id] = None
            to_create.append(CustomerToCreate(want.display_name, want.patient_id))
            continue
        if len(candidates) > 1:
            ambiguous.append(AmbiguousPatient(want.patient_id, tuple(c.id for c in candidates)))
            continue
        (chosen,) = candidates
        customer_ids[want.patient_id] = chosen.id
        if chosen.active or chosen.id in to_reactivate:
            continue
        reactivation = _reactivation(chosen, seen)
        to_reactivate[chosen.id] = reactivation
        if reactivation.note:
            notes[want.patient_id] = reactivation.note
    return CustomerResolution(
        customer_ids=customer_ids,
        to_create=tuple(to_create),
        to_reactivate=tuple(to_reactivate.values()),
        ambiguous=tuple(ambiguous),
        notes=notes,
    )


def _reactivation(customer: Customer, seen: Sequence[Customer]) -> CustomerToReactivate:
    plain = strip_deleted_suffix(customer.display_name).strip()
    if customer_key(plain) == customer_key(customer.display_name):
        return CustomerToReactivate(customer, None)
    holder = next(
        (
            other
            for other in seen
            if other.id != customer.id and customer_key(other.display_name) == customer_key(plain)
        ),
        None,
    )
    if holder is None:
        return CustomerToReactivate(customer, plain)
    note = (
        f"customer {customer.id} reactivated under its current DisplayName: "
        f'the name without "(deleted)" is held by customer {holder.id}'
    )
    return CustomerToReactivate(customer, None, note)


# --- the template, taken apart ----------------------------------------------------------
# A piece is ("text", s) for literal text and the rendered patient id, or
# ("initials", s) for an initials placeholder where s is its "!conversion:spec" suffix
# ("" for a plain {initials}).


def _check_template(template: str) -> None:
    problem = template_id_problem(template)
    if problem:
        raise ValueError(f"customer name template {problem}")


def _pieces(template: str, patient_id: str) -> list[tuple[str, str]]:
    pieces: list[tuple[str, str]] = []
    for literal, name, spec, conversion in Formatter().parse(template):
        if literal:
            pieces.append(("text", literal))
        if name is None:
            continue
        suffix = (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        if name == _PATIENT_ID:
            pieces.append(("text", ("{" + name + suffix + "}").format(patient_id=patient_id)))
        elif name == _INITIALS:
            pieces.append((_INITIALS, suffix))
        else:
            raise ValueError("customer name template may use only {patient_id} and {initials}")
    return pieces


def _render(pieces: Iterable[tuple[str, str]], initials: str) -> str:
    return "".join(
        value if kind == "text" else ("{i" + value + "}").format(i=initials)
        for kind, value in pieces
    )


def _like(pieces: Sequence[tuple[str, str]]) -> str:
    # Whitespace next to a placeholder may vanish when the initials are empty and the name
    # is trimmed, so it joins the wildcard; the exact filter decides anyway.
    like = "".join(value if kind == "text" else "%" for kind, value in pieces) + "%"
    like = re.sub(r"\s*%(?:\s*%)*\s*", "%", like)
    return like.strip()


def _regex(pieces: Sequence[tuple[str, str]]) -> re.Pattern[str] | None:
    """The names the pieces give with initials of one letter or more, trimmed."""
    if not any(kind == _INITIALS for kind, _ in pieces):
        return None
    parts: list[str] = []
    plain_seen = False
    last = len(pieces) - 1
    for index, (kind, value) in enumerate(pieces):
        if kind == "text":
            text = value.lstrip() if index == 0 else value
            text = text.rstrip() if index == last else text
            parts.append(re.escape(text))
        elif value:
            # A conversion or format spec ({initials!r}, {initials:>4}) may add quotes,
            # padding or cut letters: accept letters framed by non-word characters, which
            # still never take a digit of another patient's id.
            parts.append(rf"\W*({_LETTERS}*)\W*")
        elif plain_seen:
            parts.append("(?P=initials)")  # every {initials} holds the same letters
        else:
            parts.append(rf"(?P<initials>{_LETTERS}+)")
            plain_seen = True
    return re.compile("".join(parts), re.IGNORECASE)


def _unique_patients(patients: Iterable[PatientCustomerWant]) -> list[PatientCustomerWant]:
    chosen: dict[str, PatientCustomerWant] = {}
    for want in patients:
        chosen.setdefault(want.patient_id, want)
    return list(chosen.values())


def _unique_customers(customers: Iterable[Customer]) -> list[Customer]:
    chosen: dict[str, Customer] = {}
    for customer in customers:
        chosen.setdefault(customer.id, customer)
    return list(chosen.values())


__all__ = [
    "AmbiguousPatient",
    "CustomerPattern",
    "CustomerResolution",
    "CustomerToCreate",
    "CustomerToReactivate",
    "PatientCustomerWant",
    "customer_key",
    "needs_pattern_lookup",
    "patient_pattern",
    "resolve_customers",
    "strip_deleted_suffix",
]
