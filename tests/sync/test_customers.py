"""Customers by patient id: the LIKE pattern, its exact filter, and the resolution."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fourdqbo.config import template_id_problem
from fourdqbo.qbo.records import Customer
from fourdqbo.sync.customers import (
    AmbiguousPatient,
    CustomerToCreate,
    PatientCustomerWant,
    needs_pattern_lookup,
    patient_pattern,
    resolve_customers,
    strip_deleted_suffix,
)
from fourdqbo.sync.mapping import customer_display_name

TEMPLATE = "{patient_id}.{initials}"


def customer(ident: str, name: str, *, active: bool = True) -> Customer:
    return Customer.parse({"Id": ident, "SyncToken": "2", "DisplayName": name, "Active": active})


def want(patient_id: str = "1003", initials: str = "JD") -> PatientCustomerWant:
    return PatientCustomerWant(patient_id, f"{patient_id}.{initials}")


def like_matches(like: str, name: str) -> bool:
    """QBO's LIKE with `%` only, case-insensitive, as the sandbox implements it."""
    regex = ".*".join(re.escape(part) for part in like.split("%"))
    return re.fullmatch(regex, name, re.IGNORECASE | re.DOTALL) is not None


# --- strip_deleted_suffix -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("1003.JD (deleted)", "1003.JD"),
        ("1003.JD (Deleted)", "1003.JD"),
        ("1003.JD (DELETED)", "1003.JD"),
        ("1003.JD", "1003.JD"),
        ("(deleted) 1003.JD", "(deleted) 1003.JD"),
        ("1003.JD (deleted) x", "1003.JD (deleted) x"),
        ("1003.JD (deleted) (deleted)", "1003.JD (deleted)"),
    ],
)
def test_only_a_trailing_deleted_suffix_is_stripped(name: str, plain: str) -> None:
    assert strip_deleted_suffix(name) == plain


# --- patient_pattern ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "like"),
    [
        ("{patient_id}.{initials}", "1003.%"),
        ("{initials}-{patient_id}", "%-1003%"),
        ("P{patient_id}", "P1003%"),
        ("Pt {patient_id} ({initials})", "Pt 1003 (%)%"),
        ("{initials} {patient_id}.x", "%1003.x%"),
        ("{patient_id}.{initials}.{initials}", "1003.%.%"),
    ],
)
def test_the_like_value_fills_the_id_and_wildcards_the_rest(template: str, like: str) -> None:
    assert patient_pattern(template, "1003").like == like


@pytest.mark.parametrize(
    ("name", "matches"),
    [
        ("1003.JD", True),
        ("1003.jd", True),
        ("1003.", True),
        ("1003.ABCDEF", True),
        ("1003.JD (deleted)", True),
        ("1003.ab (Deleted)", True),
        ("1003.ÉL", True),
        ("10034.JD", False),
        ("1003.J2", False),
        ("1003.J D", False),
        ("1003.JD.", False),
        ("x1003.JD", False),
        ("1003.²", False),
        ("1003", False),
    ],
)
def test_the_exact_filter_of_the_default_template(name: str, matches: bool) -> None:
    assert patient_pattern(TEMPLATE, "1003").matches(name) is matches


def test_repeated_initials_must_be_the_same_letters() -> None:
    pattern = patient_pattern("{patient_id}.{initials}.{initials}", "7")
    assert pattern.matches("7.AB.AB") and pattern.matches("7.AB.ab")
    assert not pattern.matches("7.AB.CD")


def test_a_template_without_initials_matches_its_exact_name_only() -> None:
    pattern = patient_pattern("Patient {patient_id}", "7")
    assert pattern.matches("patient 7") and pattern.matches("Patient 7 (deleted)")
    assert not pattern.matches("Patient 70")


def test_empty_initials_and_trimming_are_what_the_mapping_produces() -> None:
    template = "{initials} {patient_id}.x"
    pattern = patient_pattern(template, "55")
    for name in ("", "Jane Doe"):
        assert pattern.matches(customer_display_name("55", name, template))
    assert not pattern.matches(customer_display_name("155", "Jane Doe", template))


def test_a_format_spec_on_initials_still_takes_no_digit() -> None:
    pattern = patient_pattern("{patient_id}.{initials:>4}", "12")
    assert pattern.matches("12.  JD")
    assert not pattern.matches("123.  JD") and not pattern.matches("12. 3JD")


@pytest.mark.parametrize("template", ["{patient_id}{initials}", "{initials}{patient_id}"])
def test_a_template_the_config_refuses_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="patient_id"):
        patient_pattern(template, "1")


def test_other_placeholders_are_refused() -> None:
    with pytest.raises(ValueError, match="only"):
        patient_pattern("{patient_id}.{name}", "1")


_LITERAL = st.text(alphabet="ABC.- ()#_x4", min_size=1, max_size=3)
_PLACEHOLDER = st.sampled_from(["{initials}", "{patient_id}"])


@st.composite
def templates(draw: st.DrawFn) -> str:
    """Templates the config accepts, built from literals and both placeholders."""
    pieces = draw(st.lists(st.one_of(_LITERAL, _PLACEHOLDER), min_size=1, max_size=6))
    template = "".join(pieces)
    assume("{patient_id}" in template)
    assume(template_id_problem(template) is None)
    return template


_IDS = st.integers(min_value=1, max_value=10**7).map(str)
_NAMES = st.one_of(
    st.just(""),
    st.lists(st.text(alphabet="abcdeJQxyzÉñ'", min_size=1, max_size=6), min_size=1, max_size=3).map(
        " ".join
    ),
)


@given(templates(), _IDS, _IDS, _NAMES, st.booleans())
def test_a_pattern_never_accepts_another_patients_names(
    template: str, patient: str, other: str, name: str, deleted: bool
) -> None:
    assume(patient != other)
    try:
        theirs = customer_display_name(other, name, template)
    except ValueError:
        assume(False)
    pattern = patient_pattern(template, patient)
    assert not pattern.matches(theirs + (" (deleted)" if deleted else ""))


@given(templates(), _IDS, _NAMES, st.booleans())
def test_a_pattern_finds_every_name_of_its_patient(
    template: str, patient: str, name: str, deleted: bool
) -> None:
    try:
        mine = customer_display_name(patient, name, template) + (" (deleted)" if deleted else "")
    except ValueError:
        assume(False)
    pattern = patient_pattern(template, patient)
    assert like_matches(pattern.like, mine)
    assert pattern.matches(mine)


@given(st.text(alphabet="ABCDEFGHIJ", max_size=4), st.integers(1, 9))
def test_the_default_pattern_rejects_the_names_of_longer_ids(initials: str, digit: int) -> None:
    pattern = patient_pattern(TEMPLATE, "1003")
    assert not pattern.matches(f"1003{digit}.{initials}")
    assert not like_matches(pattern.like, f"1003{digit}.{initials}")


# --- needs_pattern_lookup -----------------------------------------------------------------


def test_only_patients_without_an_exact_match_need_the_pattern_look_up() -> None:
    wants = [want("1"), want("2"), want("1"), want("3")]
    exact = [customer("10", "1.jd"), customer("30", "3.JD (deleted)")]
    assert needs_pattern_lookup(wants, exact, TEMPLATE) == ["2"]


# --- resolve_customers --------------------------------------------------------------------


def test_no_customer_is_created_once_per_patient() -> None:
    resolution = resolve_customers([want("1"), want("1", "XY"), want("2")], [], [], TEMPLATE)
    assert resolution.to_create == (
        CustomerToCreate("1.JD", "1"),
        CustomerToCreate("2.JD", "2"),
    )
    assert resolution.customer_ids == {"1": None, "2": None}


def test_an_exact_active_customer_is_used() -> None:
    resolution = resolve_customers([want()], [customer("58", "1003.JD")], [], TEMPLATE)
    assert resolution.customer_ids == {"1003": "58"}
    assert not resolution.to_create and not resolution.to_reactivate


def test_a_patient_whose_initials_changed_keeps_their_customer() -> None:
    resolution = resolve_customers([want(initials="JS")], [], [customer("58", "1003.JD")], TEMPLATE)
    assert resolution.customer_ids == {"1003": "58"}
    assert not resolution.to_create and not resolution.to_reactivate


def test_a_deleted_customer_is_reactivated_under_its_plain_name() -> None:
    old = customer("58", "1003.JD (deleted)", active=False)
    resolution = resolve_customers([want()], [], [old], TEMPLATE)
    assert resolution.customer_ids == {"1003": "58"}
    (reactivation,) = resolution.to_reactivate
    assert reactivation.customer == old and reactivation.restore_name == "1003.JD"
    assert reactivation.note is None


def test_an_inactive_customer_without_suffix_is_reactivated_without_renaming() -> None:
    old = customer("58", "1003.JD", active=False)
    resolution = resolve_customers([want()], [old], [], TEMPLATE)
    (reactivation,) = resolution.to_reactivate
    assert reactivation.restore_name is None and reactivation.note is None


def test_a_taken_plain_name_is_left_and_said_in_a_note() -> None:
    # Customer 92 holds the plain name of the patient's deleted customer 58. (A holder the
    # pattern look-up also returned would be a second candidate; here it came only from the
    # exact look-up, as when it is another patient's under an older template.)
    old = customer("58", "1003.JS (deleted)", active=False)
    held = customer("92", "1003.JS")
    resolution = resolve_customers([want(initials="JD")], [held], [old], TEMPLATE)
    assert resolution.customer_ids == {"1003": "58"}
    (reactivation,) = resolution.to_reactivate
    assert reactivation.customer == old and reactivation.restore_name is None
    assert reactivation.note is not None and "92" in reactivation.note and "58" in reactivation.note
    assert "JS" not in reactivation.note  # ids only, never a name
    assert resolution.notes == {"1003": reactivation.note}


def test_a_holder_that_is_also_the_patient_makes_it_ambiguous() -> None:
    old = customer("58", "1003.JS (deleted)", active=False)
    held = customer("92", "1003.JS")
    resolution = resolve_customers([want(initials="JD")], [], [held, old], TEMPLATE)
    assert resolution.ambiguous == (AmbiguousPatient("1003", ("92", "58")),)


def test_several_customers_of_one_patient_are_ambiguous() -> None:
    resolution = resolve_customers(
        [want(), want("2")],
        [customer("58", "1003.JD")],
        [customer("58", "1003.JD"), customer("59", "1003.JDX (deleted)", active=False)],
        TEMPLATE,
    )
    assert resolution.ambiguous == (AmbiguousPatient("1003", ("58", "59")),)
    assert "1003" not in resolution.customer_ids
    assert resolution.customer_ids == {"2": None}
    assert not resolution.to_reactivate


def test_pattern_answers_of_other_patients_are_ignored() -> None:
    resolution = resolve_customers(
        [want()], [], [customer("70", "10034.JD"), customer("71", "1003.J4")], TEMPLATE
    )
    assert resolution.customer_ids == {"1003": None}
    assert resolution.to_create == (CustomerToCreate("1003.JD", "1003"),)


def test_an_exact_answer_compares_without_the_suffix_and_case() -> None:
    resolution = resolve_customers(
        [want()], [customer("58", "1003.jd (Deleted)", active=False)], [], TEMPLATE
    )
    assert resolution.to_reactivate[0].restore_name == "1003.jd"


@given(
    st.lists(st.tuples(st.sampled_from(["1", "2", "3"]), st.sampled_from(["A", "B"]))),
    st.lists(
        st.tuples(
            st.sampled_from(["1", "2", "3", "12"]),
            st.sampled_from(["A", "B", "C"]),
            st.booleans(),
        ),
        max_size=5,
    ),
)
def test_every_patient_gets_exactly_one_outcome(
    wants: list[tuple[str, str]], existing: list[tuple[str, str, bool]]
) -> None:
    customers = [
        customer(str(100 + n), f"{pid}.{ini}" + ("" if active else " (deleted)"), active=active)
        for n, (pid, ini, active) in enumerate(existing)
    ]
    resolution = resolve_customers([want(p, i) for p, i in wants], [], customers, TEMPLATE)
    patients = {p for p, _ in wants}
    ambiguous = {a.patient_id for a in resolution.ambiguous}
    assert set(resolution.customer_ids) | ambiguous == patients
    assert not set(resolution.customer_ids) & ambiguous
    created = [c.patient_id for c in resolution.to_create]
    assert len(created) == len(set(created))
    assert set(created) == {p for p, cid in resolution.customer_ids.items() if cid is None}
    for patient, customer_id in resolution.customer_ids.items():
        if customer_id is not None:
            assert any(
                c.id == customer_id and c.display_name.startswith(f"{patient}.") for c in customers
            )
