"""Building QBO query-language statements: literals, conditions, SELECT, chunked IN lists.

Pure functions, no I/O. Every value that reaches a statement goes through
`quote_literal`, so a customer name such as `O'Brien` (or one ending in a backslash)
can neither break the statement nor inject a condition of its own.

Length budget: a query travels in the URL (`GET …/query?query=…`). Servers and
proxies in front of QBO commonly accept 8 KB of request line, some less, and an
IN list of a thousand names is far longer than that. `chunk_in` therefore splits
IN lists so that each statement stays under `MAX_STATEMENT_CHARS` characters
*once URL-encoded* (an accented letter costs up to 6 encoded characters, an
apostrophe 3), which with the host, path and `minorversion` keeps the whole URL
under about 3.3 KB: comfortably inside every limit we know of. QBO also caps a
page at 1000 rows, so an IN list never holds more than `MAX_IN_VALUES` values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

MAX_RESULTS = 1000  # QBO's largest MAXRESULTS
MAX_IN_VALUES = 1000
MAX_STATEMENT_CHARS = 3000  # URL-encoded characters of one statement (see module docstring)

_ENTITY = re.compile(r"[A-Z][A-Za-z]*")
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*")
_ORDER_BY = re.compile(_FIELD.pattern + r"(\s+(ASC|DESC))?", re.IGNORECASE)
_OPERATORS = frozenset({"=", "<", ">", "<=", ">=", "LIKE"})


def quote_literal(value: str) -> str:
    """A QBO string literal: backslash and single quote escaped with a backslash.

    `O'Brien` -> `'O\\'Brien'`. The backslash is escaped first so that a value ending
    in a backslash cannot swallow the closing quote.
    """
    if not isinstance(value, str):
        raise TypeError(f"a QBO literal must be a string, not {type(value).__name__}")
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def datetime_literal(moment: datetime) -> str:
    """A literal for MetaData.CreateTime / LastUpdatedTime comparisons, in UTC.

    Written with an explicit `+00:00` offset, the form QBO documents for these fields
    (it echoes times with the company's offset, e.g. `-08:00`). Naive times are refused:
    we never guess a zone.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime_literal needs a timezone-aware datetime")
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"'{text}+00:00'"


def instant_param(moment: datetime) -> str:
    """An aware moment as ISO 8601 with an offset, in UTC, whole seconds: CDC's
    `changedSince` (`2025-03-01T17:00:00+00:00`). A fraction is dropped, which can only
    ask for more changes, never fewer. Naive times are refused: we never guess a zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("instant_param needs a timezone-aware datetime")
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def field_name(name: str) -> str:
    """Check a field name (`DocNumber`, `MetaData.LastUpdatedTime`): names are never quoted."""
    if not _FIELD.fullmatch(name):
        raise ValueError(f"not a QBO field name: {name!r}")
    return name


def entity_name(name: str) -> str:
    """Check an entity name (`Invoice`, `Customer`)."""
    if not _ENTITY.fullmatch(name):
        raise ValueError(f"not a QBO entity name: {name!r}")
    return name


def compare(field: str, operator: str, value: str) -> str:
    """`field op 'value'` with the value quoted, e.g. `compare("DocNumber", "=", "1001")`."""
    op = operator.upper()
    if op not in _OPERATORS:
        raise ValueError(f"unsupported QBO operator {operator!r}")
    return f"{field_name(field)} {op} {quote_literal(value)}"


def condition_eq(field: str, value: str) -> str:
    return compare(field, "=", value)


def condition_like(field: str, pattern: str) -> str:
    """`field LIKE 'pattern'`: `%` is QBO's only wildcard and passes through; quotes and
    backslashes in the pattern are escaped like any value."""
    return compare(field, "LIKE", pattern)


def condition_in(field: str, values: Iterable[str]) -> str:
    """`field IN ('a', 'b')`. An empty list is refused: QBO rejects `IN ()`."""
    literals = [quote_literal(v) for v in values]
    if not literals:
        raise ValueError("an IN condition needs at least one value")
    return f"{field_name(field)} IN ({', '.join(literals)})"


def select(
    entity: str,
    where: Sequence[str] = (),
    order_by: str | None = None,
    start: int | None = None,
    max_results: int | None = None,
) -> str:
    """`SELECT * FROM entity [WHERE c1 AND c2…] [ORDERBY f] [STARTPOSITION n] [MAXRESULTS m]`.

    `where` holds conditions built by this module (QBO has no OR: they are ANDed).
    """
    parts = [f"SELECT * FROM {entity_name(entity)}"]
    conditions = [c for c in where if c]
    if conditions:
        parts.append("WHERE " + " AND ".join(conditions))
    if order_by is not None:
        if not _ORDER_BY.fullmatch(order_by.strip()):
            raise ValueError(f"not a QBO ORDERBY clause: {order_by!r}")
        parts.append("ORDERBY " + " ".join(order_by.split()))
    if start is not None:
        if start < 1:
            raise ValueError("STARTPOSITION is 1-based")
        parts.append(f"STARTPOSITION {start}")
    if max_results is not None:
        if not 1 <= max_results <= MAX_RESULTS:
            raise ValueError(f"MAXRESULTS must be between 1 and {MAX_RESULTS}")
        parts.append(f"MAXRESULTS {max_results}")
    return " ".join(parts)


def encoded_length(statement: str) -> int:
    """Characters the statement takes in a URL query string (worst case: every space as %20)."""
    return len(quote(statement, safe=""))


def chunk_in(
    field: str,
    values: Iterable[str],
    *,
    max_statement_chars: int = MAX_STATEMENT_CHARS,
    reserve: int = 0,
    max_values: int = MAX_IN_VALUES,
) -> list[str]:
    """Split `field IN (…)` over `values` into conditions that each fit a statement.

    `reserve` is the encoded length of the rest of the statement the condition goes
    into (use `statement_reserve`); each returned condition is at most
    `max_statement_chars - reserve` encoded characters and holds at most `max_values`
    values. Values are deduplicated, first occurrence kept, order otherwise preserved.
    A single value too long to fit on its own still gets a condition of its own (a
    lookup that is slightly long beats a lookup that is silently skipped).
    """
    if max_values < 1:
        raise ValueError("max_values must be at least 1")
    budget = max_statement_chars - reserve
    prefix = encoded_length(f"{field_name(field)} IN (")
    closing = encoded_length(")")
    separator = encoded_length(", ")
    if budget < prefix + closing + encoded_length("''"):
        raise ValueError("max_statement_chars leaves no room for an IN condition")
    conditions: list[str] = []
    chunk: list[str] = []
    used = prefix + closing
    for value in dict.fromkeys(values):
        cost = encoded_length(quote_literal(value))
        extra = cost + (separator if chunk else 0)
        if chunk and (used + extra > budget or len(chunk) >= max_values):
            conditions.append(condition_in(field, chunk))
            chunk, used = [], prefix + closing
            extra = cost
        chunk.append(value)
        used += extra
    if chunk:
        conditions.append(condition_in(field, chunk))
    return conditions


def statement_reserve(
    entity: str,
    where: Sequence[str] = (),
    order_by: str | None = None,
    *,
    paged: bool = True,
) -> int:
    """Encoded length a statement takes besides one extra condition: what `chunk_in` reserves.

    With `paged`, room for the largest STARTPOSITION/MAXRESULTS suffix is included.
    """
    skeleton = select(
        entity,
        [*where, "X"],
        order_by,
        start=10**9 if paged else None,
        max_results=MAX_RESULTS if paged else None,
    )
    return encoded_length(skeleton) - encoded_length("X")
