"""JSON in and out with money kept as Decimal.

Numbers with a fraction are parsed to `Decimal` (never float), and `Decimal` values are
written back as JSON numbers with their exact digits. Used by both clients and the sandbox.
"""

from __future__ import annotations

import json
import math
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
    parts: list[str] = []
    _encode(value, parts, indent, 0)
    return "".join(parts)


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
