"""JSON in and out with money kept as Decimal.

Numbers with a fraction are parsed to `Decimal` (never float), and `Decimal` values are
written back as JSON numbers with their exact digits. Used by both clients and the sandbox.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any


def loads(data: str | bytes) -> Any:
    """Parse JSON; non-integers become Decimal.

    `NaN`, `Infinity` and `-Infinity` (which Python's json accepts but JSON does not) are
    refused with a JSONDecodeError: an amount must never arrive as a float NaN.
    """
    return json.loads(data, parse_float=Decimal, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Serialise to JSON, writing Decimal as a plain number literal (no float round trip)."""
    if indent is None:
        text = _dumps_compact(value)
        if text is not None:
            return text
    parts: list[str] = []
    _encode(value, parts, indent, 0)
    return "".join(parts)


# A Decimal goes through the C encoder as the string MARK + its digits; the quotes and the
# mark (escaped by the encoder as \u0000) are then taken off again.
_MARK = "\x00"
_ESCAPED_MARK = "\\u0000"
_MARKED_NUMBER = re.compile(r'"\\u0000(-?[0-9]+(?:\.[0-9]+)?)"')


def _dumps_compact(value: Any) -> str | None:
    """`dumps` without indent through the C encoder (every request body and answer: the
    pure-Python walk cost a batch of 25 invoices 20 ms of CPU, held from the other threads).

    None when the text cannot be trusted to be the same as the walk's: a string of the
    value itself holds the mark (or a value is refused: the walk then says why)."""
    decimals = 0

    def number(obj: Any) -> str:
        nonlocal decimals
        if isinstance(obj, Decimal) and obj.is_finite():
            decimals += 1
            return _MARK + format(obj, "f")
        if isinstance(obj, datetime | date):
            return obj.isoformat()
        raise TypeError  # the walk says what cannot be written

    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=number)
    except (TypeError, ValueError):
        return None
    if text.count(_ESCAPED_MARK) != decimals:
        return None
    return _MARKED_NUMBER.sub(r"\1", text) if decimals else text


def _encode(value: Any, out: list[str], indent: int | None, level: int) -> None:
    if value is None or isinstance(value, bool | int | str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot write {value} as JSON")
        text = format(value, "f")
        out.append(text)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value} as JSON")
        out.append(repr(value))
    elif isinstance(value, datetime | date):
        out.append(json.dumps(value.isoformat()))
    elif isinstance(value, dict):
        _encode_items(
            [(json.dumps(str(k), ensure_ascii=False) + ": ", v) for k, v in value.items()],
            "{",
            "}",
            out,
            indent,
            level,
        )
    elif isinstance(value, list | tuple):
        _encode_items([("", v) for v in value], "[", "]", out, indent, level)
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _encode_items(
    items: list[tuple[str, Any]],
    opening: str,
    closing: str,
    out: list[str],
    indent: int | None,
    level: int,
) -> None:
    if not items:
        out.append(opening + closing)
        return
    out.append(opening)
    inner = "\n" + " " * (indent * (level + 1)) if indent is not None else ""
    separator = "," if indent is not None else ", "
    for position, (prefix, item) in enumerate(items):
        if position:
            out.append(separator)
        out.append(inner + prefix)
        _encode(item, out, indent, level + 1)
    if indent is not None:
        out.append("\n" + " " * (indent * level))
    out.append(closing)
