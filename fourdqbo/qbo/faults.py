"""QBO's fault answers, in every shape real QBO sends them, as one `QBOFault`; and which
answers are throttling.

Shapes met (API-NOTES.md, "QBO as recorded answers show it"):

- JSON `{"Fault": {"Error": [{"Message", "Detail", "code", "element"}], "type": …}}`, in
  single answers and per batch item;
- the 401's JSON with lower-case keys: `{"fault": {"error": [{"message", "detail",
  "code"}], "type": "AUTHENTICATION"}, "time": <epoch ms>}`;
- XML `<IntuitResponse><Fault type="SERVICE"><Error code="3001"><Message>…</Message>
  <Detail>…</Detail></Error></Fault></IntuitResponse>` with any status, even when JSON
  was asked for: the 429 throttle, and the same fault with HTTP 403 from older answers.

Throttling is a 429, or a 403 whose fault is code 3001 / ThrottleExceeded: never an
authorisation failure. Every fault's message and detail are scrubbed
(`fourdqbo.log.redact`) before they reach a `QBOFault`: the 401 detail quotes the start of
the access token ("Token expired: AB01…").

XML is read with the standard library, defensively: bodies over `MAX_XML_BYTES` or with a
DTD are not parsed, namespaces are ignored, and anything unreadable is no fault at all
(the caller then decides from the status).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from fourdqbo import jsonio
from fourdqbo.errors import QBOFault
from fourdqbo.log import redact

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

THROTTLE_CODE = "3001"
AUTH_CODE = "3200"
MAX_XML_BYTES = 64 * 1024  # a fault is a few hundred bytes; more is not a fault
_DETAIL_CHARS = 300  # of a detail quoted in an exception message
_THROTTLE_TEXT = re.compile(r"ThrottleExceeded|errorCode=0*3001\b", re.IGNORECASE)


def fault_from(
    fault: Any,
    *,
    status: int | None = None,
    intuit_tid: str | None = None,
    secrets: Iterable[str] = (),
) -> QBOFault:
    """A QBOFault from a JSON fault object, `{"Error": [{Message, Detail, code, element}],
    "type": …}` or its lower-case form. `secrets` are scrubbed from it as well."""
    if not isinstance(fault, Mapping):
        return _fault(status=status, intuit_tid=intuit_tid, summary="QBO fault of unknown shape")
    raw_errors = _get(fault, "Error")
    if isinstance(raw_errors, Mapping):
        raw_errors = [raw_errors]
    errors = (
        [e for e in raw_errors if isinstance(e, Mapping)] if isinstance(raw_errors, list) else []
    )
    first: Mapping[str, Any] = errors[0] if errors else {}
    return _fault(
        code=_text(_get(first, "code")),
        message=_text(_get(first, "Message")),
        detail=_text(_get(first, "Detail")),
        element=_text(_get(first, "element")),
        fault_type=_text(_get(fault, "type")),
        more=max(len(errors) - 1, 0),
        status=status,
        intuit_tid=intuit_tid,
        secrets=secrets,
    )


def document_fault(document: Any) -> Any:
    """The fault object of a parsed JSON answer (`Fault` or the 401's `fault`), or None."""
    if not isinstance(document, Mapping):
        return None
    found = document.get("Fault")
    if found is None:
        found = document.get("fault")
    return found


def xml_fault(
    content: bytes,
    *,
    status: int | None = None,
    intuit_tid: str | None = None,
    secrets: Iterable[str] = (),
) -> QBOFault | None:
    """The QBOFault an XML body holds, or None when it is no readable XML fault."""
    root = _parse_xml(content)
    if root is None:
        return None
    fault = next((e for e in root.iter() if _local(e.tag) == "Fault"), None)
    if fault is None:
        return None
    errors = [e for e in fault if _local(e.tag) == "Error"]
    first = errors[0] if errors else None

    def child_text(name: str) -> str:
        if first is None:
            return ""
        found = next((c for c in first if _local(c.tag) == name), None)
        return "" if found is None else "".join(found.itertext()).strip()

    return _fault(
        code=_text(first.get("code")) if first is not None else "",
        message=child_text("Message"),
        detail=child_text("Detail"),
        element=_text(first.get("element")) if first is not None else "",
        fault_type=_text(fault.get("type")),
        more=max(len(errors) - 1, 0),
        status=status,
        intuit_tid=intuit_tid,
        secrets=secrets,
    )


def response_fault(
    response: httpx.Response, document: Any = None, *, secrets: Iterable[str] = ()
) -> QBOFault | None:
    """The fault a response carries, JSON (`document`, already parsed) or XML; else None."""
    status = response.status_code
    tid = response.headers.get("intuit_tid")
    found = document_fault(document)
    if found is not None:
        return fault_from(found, status=status, intuit_tid=tid, secrets=secrets)
    if looks_like_xml(response.content):
        return xml_fault(response.content, status=status, intuit_tid=tid, secrets=secrets)
    return None


def is_throttle(response: httpx.Response) -> bool:
    """A 429, or a 403 whose fault is ThrottleExceeded (code 3001): QBO's throttle."""
    if response.status_code == 429:
        return True
    if response.status_code != 403:
        return False
    fault = response_fault(response, _json_or_none(response.content))
    if fault is None:
        return False
    return fault.code.lstrip("0") == THROTTLE_CODE or bool(_THROTTLE_TEXT.search(fault.message))


def looks_like_xml(content: bytes) -> bool:
    return content.lstrip()[:1] == b"<"


def _json_or_none(content: bytes) -> Any:
    try:
        return jsonio.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def _parse_xml(content: bytes) -> Element | None:
    if len(content) > MAX_XML_BYTES or not looks_like_xml(content):
        return None
    # Imported here: only a fault answer needs it, and every run starts faster without.
    import xml.etree.ElementTree as ET

    # A DTD is the way to entity-expansion tricks; QBO's faults never carry one.
    if b"<!DOCTYPE" in content.upper() or b"<!ENTITY" in content.upper():
        return None
    try:
        return ET.fromstring(content)
    except (ET.ParseError, ValueError):
        return None


def _local(tag: Any) -> str:
    """An element's name without its namespace (`{http://…/v3}Fault` -> `Fault`)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _get(obj: Mapping[str, Any], key: str) -> Any:
    """`key` as QBO spells it in the usual answers, or in the 401's lower case."""
    value = obj.get(key)
    return obj.get(key.lower()) if value is None else value


def _text(value: Any) -> str:
    return "" if value is None or isinstance(value, Mapping | list) else str(value).strip()


def _fault(
    *,
    code: str = "",
    message: str = "",
    detail: str = "",
    element: str = "",
    fault_type: str = "",
    more: int = 0,
    status: int | None,
    intuit_tid: str | None,
    secrets: Iterable[str] = (),
    summary: str = "",
) -> QBOFault:
    secrets = tuple(secrets)
    message = redact(message, secrets=secrets)
    detail = redact(detail, secrets=secrets)
    text = summary or f"QBO fault {code or '?'}"
    if fault_type:
        text += f" ({fault_type})"
    if not summary:
        text += f": {message or 'fault'}"
    if detail and detail != message:
        text += f": {detail[:_DETAIL_CHARS]}"
    if more:
        text += f" (+{more} more)"
    return QBOFault(
        with_tid(text, intuit_tid),
        code=code,
        detail=detail,
        element=element,
        fault_type=fault_type,
        status=status,
        intuit_tid=intuit_tid,
    )


def with_tid(message: str, tid: str | None) -> str:
    return f"{message} (intuit_tid={tid})" if tid else message
