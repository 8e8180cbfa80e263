"""QBO faults in every shape recorded answers show (JSON, the 401's lower case, XML), and
which answers are throttling."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourdqbo import jsonio
from fourdqbo.log import REDACTED
from fourdqbo.qbo.faults import (
    MAX_XML_BYTES,
    document_fault,
    fault_from,
    is_throttle,
    response_fault,
    xml_fault,
)

THROTTLE_XML = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3"'
    b' time="2020-09-29T06:11:22.106-07:00">'
    b'<Fault type="SERVICE"><Error code="3001">'
    b"<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
    b"<Detail>The request limit was reached.  Try again later</Detail>"
    b"</Error></Fault></IntuitResponse>"
)
TOKEN = "AB01cdEFghIJklMNopQRstUVwxYZ0123456789"
LOWER_401 = {
    "warnings": None,
    "fault": {
        "error": [
            {
                "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "detail": f"Token expired: {TOKEN[:4]}…",
                "code": "3200",
                "element": None,
            }
        ],
        "type": "AUTHENTICATION",
    },
    "time": 1601391072830,
}


def xml_response(status: int, content: bytes = THROTTLE_XML) -> httpx.Response:
    return httpx.Response(status, content=content, headers={"intuit_tid": "tid-x"})


def test_xml_throttle_fault_decodes_like_a_json_one() -> None:
    fault = xml_fault(THROTTLE_XML, status=429, intuit_tid="tid-x")
    assert fault is not None
    assert fault.code == "3001"
    assert fault.fault_type == "SERVICE"
    assert "ThrottleExceeded" in str(fault)
    assert fault.detail == "The request limit was reached.  Try again later"
    assert fault.status == 429 and fault.intuit_tid == "tid-x" and "tid-x" in str(fault)


def test_xml_without_namespace_and_with_several_errors() -> None:
    body = (
        b"<IntuitResponse><Fault type='ValidationFault'>"
        b"<Error code='6240' element='DisplayName'><Message>Duplicate Name Exists Error"
        b"</Message><Detail>The name supplied already exists.</Detail></Error>"
        b"<Error code='2020'><Message>Required param missing</Message></Error>"
        b"</Fault></IntuitResponse>"
    )
    fault = xml_fault(body, status=400)
    assert fault is not None
    assert (fault.code, fault.element, fault.fault_type) == (
        "6240",
        "DisplayName",
        "ValidationFault",
    )
    assert "(+1 more)" in str(fault)


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Bad gateway</body></html>",  # XML-ish, no Fault
        b"<IntuitResponse><Fault",  # cut short
        b"not xml at all",
        b"",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Fault>&a;</Fault>',
        b"<Fault>" + b"x" * MAX_XML_BYTES + b"</Fault>",  # too large to be a fault
    ],
    ids=["html", "truncated", "text", "empty", "dtd", "huge"],
)
def test_unreadable_xml_is_no_fault(body: bytes) -> None:
    assert xml_fault(body, status=502) is None


def test_fault_without_error_elements_is_still_a_fault() -> None:
    fault = xml_fault(b"<IntuitResponse><Fault type='SystemFault'/></IntuitResponse>")
    assert fault is not None
    assert fault.code == "" and fault.fault_type == "SystemFault"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_xml_decoding_never_crashes(body: bytes) -> None:
    fault = xml_fault(b"<" + body, status=400)
    assert fault is None or fault.status == 400


def test_lower_case_401_body_decodes_and_its_detail_is_scrubbed() -> None:
    fault = fault_from(document_fault(LOWER_401), status=401, secrets=[TOKEN])
    assert fault.code == "3200"
    assert fault.fault_type == "AUTHENTICATION"
    assert TOKEN[:4] not in fault.detail and TOKEN[:4] not in str(fault)
    assert fault.detail == f"Token expired: {REDACTED}"


def test_a_token_fragment_in_any_detail_is_scrubbed_with_the_secrets_given() -> None:
    doc = {"Fault": {"Error": [{"code": "3200", "Detail": f"bad token {TOKEN[:8]}…"}]}}
    fault = fault_from(document_fault(doc), secrets=[TOKEN])
    assert TOKEN[:8] not in str(fault) and TOKEN[:8] not in fault.detail


def test_json_fault_shapes() -> None:
    usual = {"Fault": {"Error": [{"Message": "Stale", "code": "5010"}], "type": "ValidationFault"}}
    assert fault_from(document_fault(usual)).code == "5010"
    lone = {"Fault": {"Error": {"Message": "One", "code": "610"}}}  # an object, not a list
    assert fault_from(document_fault(lone)).code == "610"
    assert fault_from("?").code == "" and "unknown shape" in str(fault_from("?"))
    assert fault_from({"Error": "?"}).code == ""
    assert document_fault({"QueryResponse": {}}) is None
    assert document_fault([1]) is None


def test_response_fault_prefers_json_then_xml() -> None:
    json_answer = httpx.Response(
        400, content=jsonio.dumps({"Fault": {"Error": [{"code": "6000"}]}})
    )
    assert response_fault(json_answer, jsonio.loads(json_answer.content)).code == "6000"
    assert response_fault(xml_response(429)).code == "3001"
    assert response_fault(httpx.Response(404, content=b"nope")) is None


@pytest.mark.parametrize(
    ("response", "throttled"),
    [
        (xml_response(429), True),
        (httpx.Response(429), True),
        (xml_response(403), True),  # the legacy form
        (
            httpx.Response(
                403,
                content=jsonio.dumps(
                    {"Fault": {"Error": [{"code": "3001", "Message": "x"}], "type": "SERVICE"}}
                ),
            ),
            True,
        ),
        (
            httpx.Response(
                403,
                content=jsonio.dumps(
                    {"Fault": {"Error": [{"code": "", "Message": "message=ThrottleExceeded"}]}}
                ),
            ),
            True,
        ),
        (
            httpx.Response(
                403,
                content=jsonio.dumps({"Fault": {"Error": [{"code": "3100", "Message": "no"}]}}),
            ),
            False,
        ),
        (httpx.Response(403, content=b"forbidden"), False),
        (httpx.Response(403, content=b"<html>forbidden</html>"), False),
        (xml_response(400), False),  # a 3001 fault with another status is not ours to judge
        (httpx.Response(200), False),
    ],
    ids=[
        "429-xml",
        "429-bare",
        "403-xml",
        "403-json-3001",
        "403-json-text",
        "403-json-other",
        "403-text",
        "403-html",
        "400-xml",
        "200",
    ],
)
def test_what_is_throttling(response: httpx.Response, throttled: bool) -> None:
    assert is_throttle(response) is throttled
