"""The QBO query language subset, parsed strictly and evaluated over the simulated company.

Grammar (keywords case-insensitive, as QBO accepts them):

    SELECT * | SELECT COUNT(*) FROM Entity
      [WHERE field op value [AND field op value ...]]
      [ORDERBY field [ASC|DESC] [, field [ASC|DESC] ...]]
      [STARTPOSITION n] [MAXRESULTS m]

`op` is one of `=, <, >, <=, >=, IN (v, ...), LIKE 'pattern'` (`%` is the only wildcard).
Strings are in single quotes with `\\'` and `\\\\` as escapes; other values are numbers and
`true`/`false`. There is no `OR`, no parentheses around conditions, no projection and no
join: anything outside the subset is a `QueryError` (QBO's 400 "Error parsing query"), never
a guess. Properties that QBO does not let you filter on are rejected the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from fourdqbo.timefmt import parse_instant

MAX_RESULTS_LIMIT = 1000
DEFAULT_MAX_RESULTS = 100

# Property kinds decide how a literal is read and how values compare.
STRING, NUMBER, BOOL, DATE, DATETIME, REF, ID = (
    "string",
    "number",
    "bool",
    "date",
    "datetime",
    "ref",
    "id",
)

_META = {"MetaData.CreateTime": DATETIME, "MetaData.LastUpdatedTime": DATETIME}
_TRANSACTION = {
    "Id": ID,
    "DocNumber": STRING,
    "TxnDate": DATE,
    "DueDate": DATE,
    "CustomerRef": REF,
    "TotalAmt": NUMBER,
    **_META,
}
# What each entity lets a query filter and sort on (QBO refuses other properties).
QUERYABLE: dict[str, dict[str, str]] = {
    "Invoice": {**_TRANSACTION, "Balance": NUMBER},
    "Estimate": {**_TRANSACTION, "TxnStatus": STRING},
    "Customer": {
        "Id": ID,
        "DisplayName": STRING,
        "GivenName": STRING,
        "FamilyName": STRING,
        "CompanyName": STRING,
        "PrimaryEmailAddr": STRING,
        "Active": BOOL,
        "Balance": NUMBER,
        **_META,
    },
    "Item": {"Id": ID, "Name": STRING, "Active": BOOL, "Type": STRING, "Sku": STRING, **_META},
    "CompanyInfo": {"Id": ID, **_META},
}
# Name-list entities: a query returns only active ones unless it constrains Active.
ACTIVE_FILTERED = frozenset({"Customer", "Item"})
_KEYWORDS = frozenset(
    {
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDERBY",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "STARTPOSITION",
        "MAXRESULTS",
        "COUNT",
    }
)


class QueryError(ValueError):
    """A statement QBO would refuse: carries QBO's fault code, message and detail."""

    def __init__(self, detail: str, *, code: str = "4000", message: str = "Error parsing query"):
        super().__init__(detail)
        self.code = code
        self.message = message
        self.detail = detail


@dataclass(frozen=True)
class Condition:
    field: str  # canonical property name, e.g. "MetaData.LastUpdatedTime"
    op: str  # "=", "<", ">", "<=", ">=", "IN", "LIKE"
    values: tuple[Any, ...]  # literals as parsed (str, Decimal, int, bool)


@dataclass(frozen=True)
class Ordering:
    field: str
    descending: bool = False


@dataclass(frozen=True)
class Query:
    entity: str
    count: bool
    conditions: tuple[Condition, ...] = ()
    order: tuple[Ordering, ...] = ()
    start_position: int = 1
    max_results: int = DEFAULT_MAX_RESULTS


@dataclass
class _Token:
    kind: str  # "word", "string", "number", "op", "punct"
    text: str
    value: Any
    column: int


@dataclass
class QueryResult:
    """What `evaluate` found: the page of objects, or the count for COUNT(*)."""

    entity: str
    items: list[dict[str, Any]] = field(default_factory=list)
    total_count: int | None = None
    start_position: int = 1

    def response(self) -> dict[str, Any]:
        """The `QueryResponse` object as QBO writes it."""
        if self.total_count is not None:
            return {"totalCount": self.total_count}
        if not self.items:
            return {}
        return {
            self.entity: self.items,
            "startPosition": self.start_position,
            "maxResults": len(self.items),
        }


_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def tokenize(statement: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(statement)
    while i < n:
        ch = statement[i]
        if ch.isspace():
            i += 1
            continue
        column = i + 1
        if ch == "'":
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise QueryError(
                        f"QueryParserError: Lexical error at line 1, column {column}: "
                        "unterminated string"
                    )
                c = statement[i]
                if c == "\\" and i + 1 < n and statement[i + 1] in "'\\":
                    chars.append(statement[i + 1])
                    i += 2
                    continue
                if c == "'":
                    i += 1
                    break
                chars.append(c)
                i += 1
            text = "".join(chars)
            tokens.append(_Token("string", statement[column - 1 : i], text, column))
            continue
        if ch in "<>":
            if i + 1 < n and statement[i + 1] == "=":
                tokens.append(_Token("op", ch + "=", ch + "=", column))
                i += 2
            elif ch == "<" and i + 1 < n and statement[i + 1] == ">":
                raise _encountered("<>", column)
            else:
                tokens.append(_Token("op", ch, ch, column))
                i += 1
            continue
        if ch == "=":
            tokens.append(_Token("op", "=", "=", column))
            i += 1
            continue
        if ch in "(),*":
            tokens.append(_Token("punct", ch, ch, column))
            i += 1
            continue
        number = _NUMBER.match(statement, i)
        if number and (ch != "-" or number.end() > i + 1):
            text = number.group(0)
            value: Any = Decimal(text) if number.group(1) else int(text)
            tokens.append(_Token("number", text, value, column))
            i = number.end()
            continue
        word = _WORD.match(statement, i)
        if word:
            text = word.group(0)
            tokens.append(_Token("word", text, text, column))
            i = word.end()
            continue
        raise _encountered(ch, column)
    return tokens


def parse(statement: str) -> Query:
    """Parse one statement of the subset, or raise QueryError."""
    if not isinstance(statement, str) or not statement.strip():
        raise _encountered("<EOF>", 1)
    return _Parser(tokenize(statement), len(statement)).parse()


class _Parser:
    def __init__(self, tokens: list[_Token], length: int) -> None:
        self.tokens = tokens
        self.position = 0
        self.length = length

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def next(self) -> _Token:
        token = self.peek()
        if token is None:
            raise _encountered("<EOF>", self.length + 1)
        self.position += 1
        return token

    def is_keyword(self, keyword: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.text.upper() == keyword

    def is_punct(self, punct: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "punct" and token.text == punct

    def expect_keyword(self, keyword: str) -> None:
        token = self.next()
        if token.kind != "word" or token.text.upper() != keyword:
            raise _encountered(token.text, token.column)

    def expect_punct(self, punct: str) -> None:
        token = self.next()
        if token.kind != "punct" or token.text != punct:
            raise _encountered(token.text, token.column)

    def parse(self) -> Query:
        self.expect_keyword("SELECT")
        count = False
        token = self.next()
        if token.kind == "punct" and token.text == "*":
            pass
        elif token.kind == "word" and token.text.upper() == "COUNT":
            self.expect_punct("(")
            self.expect_punct("*")
            self.expect_punct(")")
            count = True
        else:
            # Projections (SELECT Id, DocNumber ...) are outside the subset.
            raise _encountered(token.text, token.column)
        self.expect_keyword("FROM")
        entity_token = self.next()
        if entity_token.kind != "word" or entity_token.text.upper() in _KEYWORDS:
            raise _encountered(entity_token.text, entity_token.column)
        entity = _entity_name(entity_token.text)
        properties = QUERYABLE[entity]
        conditions: list[Condition] = []
        order: list[Ordering] = []
        start_position = 1
        max_results = DEFAULT_MAX_RESULTS
        if self.is_keyword("WHERE"):
            self.next()
            conditions.append(self.condition(properties))
            while self.is_keyword("AND"):
                self.next()
                conditions.append(self.condition(properties))
        if self.is_keyword("ORDERBY"):
            self.next()
            order.append(self.ordering(properties))
            while (
                (token := self.peek()) is not None and token.kind == "punct" and token.text == ","
            ):
                self.next()
                order.append(self.ordering(properties))
        if self.is_keyword("STARTPOSITION"):
            self.next()
            start_position = self.positive_int("STARTPOSITION")
        if self.is_keyword("MAXRESULTS"):
            self.next()
            max_results = self.positive_int("MAXRESULTS")
            if max_results > MAX_RESULTS_LIMIT:
                # Refused, never capped (recorded answers).
                raise QueryError(
                    f"QueryValidationError: value {max_results} is too large. Max allowed "
                    f"value is {MAX_RESULTS_LIMIT}",
                    code="4001",
                    message="Invalid query",
                )
        token = self.peek()
        if token is not None:
            raise _encountered(token.text, token.column)
        return Query(
            entity=entity,
            count=count,
            conditions=tuple(conditions),
            order=tuple(order),
            start_position=start_position,
            max_results=max_results,
        )

    def property_name(self, properties: Mapping[str, str]) -> str:
        token = self.next()
        if token.kind != "word" or token.text.upper() in _KEYWORDS | {"TRUE", "FALSE"}:
            raise _encountered(token.text, token.column)
        for name in properties:
            if name.lower() == token.text.lower():
                return name
        raise QueryError(
            f"QueryValidationError: property '{token.text}' is not queryable",
            code="4001",
            message="Invalid query",
        )

    def condition(self, properties: Mapping[str, str]) -> Condition:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == "(":
            raise _encountered("(", token.column)
        name = self.property_name(properties)
        token = self.next()
        if token.kind == "op":
            return Condition(name, token.text, (self.literal(),))
        if token.kind == "word" and token.text.upper() == "IN":
            self.expect_punct("(")
            values = [self.literal()]
            while (sep := self.next()).kind == "punct" and sep.text == ",":
                values.append(self.literal())
            if not (sep.kind == "punct" and sep.text == ")"):
                raise _encountered(sep.text, sep.column)
            return Condition(name, "IN", tuple(values))
        if token.kind == "word" and token.text.upper() == "LIKE":
            value = self.next()
            if value.kind != "string":
                raise _encountered(value.text, value.column)
            if properties[name] != STRING:
                raise QueryError(
                    f"QueryValidationError: LIKE is not supported on property '{name}'",
                    code="4001",
                    message="Invalid query",
                )
            return Condition(name, "LIKE", (value.value,))
        raise _encountered(token.text, token.column)

    def literal(self) -> Any:
        token = self.next()
        if token.kind in ("string", "number"):
            return token.value
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        raise _encountered(token.text, token.column)

    def ordering(self, properties: Mapping[str, str]) -> Ordering:
        name = self.property_name(properties)
        descending = False
        if self.is_keyword("ASC"):
            self.next()
        elif self.is_keyword("DESC"):
            self.next()
            descending = True
        return Ordering(name, descending)

    def positive_int(self, keyword: str) -> int:
        token = self.next()
        if token.kind != "number" or not isinstance(token.value, int):
            raise _encountered(token.text, token.column)
        if token.value < 1:
            raise QueryError(
                f"QueryValidationError: {keyword} must be at least 1",
                code="4001",
                message="Invalid query",
            )
        return token.value


def _entity_name(text: str) -> str:
    for name in QUERYABLE:
        if name.lower() == text.lower():
            return name
    raise QueryError(
        f"QueryParserError: Invalid context declaration: {text}",
        code="4000",
    )


def _encountered(text: str, column: int) -> QueryError:
    return QueryError(f'QueryParserError: Encountered " {text} " at line 1, column {column}.')


# --- evaluation -------------------------------------------------------------------------


def raw_value(obj: Mapping[str, Any], name: str) -> Any:
    """The value of a (possibly dotted) property; a Ref compares on its `value`."""
    value: Any = obj
    for part in name.split("."):
        # Stored entities are plain dicts (a cheap check: queries scan every entity).
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, dict):
        if "value" in value:
            value = value["value"]
        elif "Address" in value:  # PrimaryEmailAddr
            value = value["Address"]
    return value


def _value_getter(name: str) -> Callable[[Mapping[str, Any]], Any]:
    """`raw_value` for one property, with a fast path for a top-level one (most are)."""
    if "." in name:
        return lambda obj: raw_value(obj, name)

    def top_level(obj: Mapping[str, Any]) -> Any:
        value = obj.get(name)
        if isinstance(value, dict):
            if "value" in value:
                return value["value"]
            if "Address" in value:
                return value["Address"]
        return value

    return top_level


def evaluate(query: Query, objects: Sequence[Mapping[str, Any]], zone: tzinfo) -> QueryResult:
    """Filter, order and page `objects` (all the entity's live objects) as QBO would."""
    kinds = QUERYABLE[query.entity]
    predicates = [_predicate(c, kinds[c.field], zone) for c in query.conditions]
    if query.entity in ACTIVE_FILTERED and not any(c.field == "Active" for c in query.conditions):
        predicates.append(lambda obj: raw_value(obj, "Active") is not False)
    matching = list(objects)
    for predicate in predicates:  # one pass each: the cheapest way through thousands
        matching = [obj for obj in matching if predicate(obj)]
    if query.count:
        return QueryResult(query.entity, total_count=len(matching))
    # QBO's order without ORDERBY is by Id; a stable multi-key sort applies ORDERBY.
    matching.sort(key=lambda obj: _sort_key(raw_value(obj, "Id"), ID, zone))
    for ordering in reversed(query.order):
        kind = kinds[ordering.field]
        present = [o for o in matching if raw_value(o, ordering.field) is not None]
        absent = [o for o in matching if raw_value(o, ordering.field) is None]
        present.sort(
            key=lambda o, f=ordering.field, k=kind: _sort_key(raw_value(o, f), k, zone),
            reverse=ordering.descending,
        )
        matching = present + absent
    start = query.start_position - 1
    page = [dict(obj) for obj in matching[start : start + query.max_results]]
    return QueryResult(query.entity, items=page, start_position=query.start_position)


def _like_matcher(like: str) -> Callable[[str], re.Match[str] | None]:
    """A LIKE value (`%` any run of characters, case ignored) as the regex call that decides
    it: fullmatch of `.*a.*` is the same as search of `a`, only slower, and LIKE is what
    finds each new patient's customers among thousands."""
    parts = re.split("(%)", like)
    leading = bool(parts) and parts[0] == "" and len(parts) > 1 and parts[1] == "%"
    trailing = len(parts) > 1 and parts[-1] == "" and parts[-2] == "%"
    if leading:
        parts = parts[2:]
    if trailing and parts:
        parts = parts[:-2]
    body = "".join(".*" if part == "%" else re.escape(part) for part in parts)
    pattern = re.compile(body if trailing else body + r"\Z", re.IGNORECASE | re.DOTALL)
    return pattern.search if leading else pattern.match


def _predicate(
    condition: Condition, kind: str, zone: tzinfo
) -> Callable[[Mapping[str, Any]], bool]:
    literals = [_coerce(value, kind, condition.field, zone) for value in condition.values]
    name = condition.field
    value_of = _value_getter(name)
    if condition.op == "LIKE":
        find = _like_matcher(literals[0])

        def like(obj: Mapping[str, Any]) -> bool:
            value = value_of(obj)
            return isinstance(value, str) and find(value) is not None

        return like

    wanted = set(literals)

    def compare(obj: Mapping[str, Any]) -> bool:
        raw = value_of(obj)
        if raw is None:
            return False
        value = _coerce_stored(raw, kind, zone)
        if value is None:
            return False
        if condition.op in ("=", "IN"):
            return value in wanted
        literal = literals[0]
        try:
            if condition.op == "<":
                return bool(value < literal)
            if condition.op == ">":
                return bool(value > literal)
            if condition.op == "<=":
                return bool(value <= literal)
            return bool(value >= literal)
        except TypeError:
            return False

    return compare


def _invalid_value(field_name: str, value: Any) -> QueryError:
    return QueryError(
        f"QueryValidationError: value {value!r} is not valid for property '{field_name}'",
        code="4001",
        message="Invalid query",
    )


def _coerce(value: Any, kind: str, field_name: str, zone: tzinfo) -> Any:
    """A literal of the statement, in the comparable form of the property's kind."""
    if kind in (STRING, REF):
        if isinstance(value, bool):
            raise _invalid_value(field_name, value)
        text = str(value)
        return text.casefold() if kind == STRING else text
    if kind == ID:
        if isinstance(value, bool):
            raise _invalid_value(field_name, value)
        text = str(value).strip()
        return int(text) if text.isdigit() else text
    if kind == NUMBER:
        if isinstance(value, bool):
            raise _invalid_value(field_name, value)
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise _invalid_value(field_name, value) from None
    if kind == BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _invalid_value(field_name, value)
    if kind == DATE:
        if not isinstance(value, str):
            raise _invalid_value(field_name, value)
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            raise _invalid_value(field_name, value) from None
    if kind == DATETIME:
        if not isinstance(value, str):
            raise _invalid_value(field_name, value)
        try:
            return _instant(value, zone)
        except ValueError:
            raise _invalid_value(field_name, value) from None
    raise _invalid_value(field_name, value)


def _coerce_stored(raw: Any, kind: str, zone: tzinfo) -> Any:
    try:
        return _coerce(raw, kind, "", zone)
    except QueryError:
        return None


def _instant(text: str, zone: tzinfo) -> datetime:
    """A date-time literal: with a zone it is that instant; without, company local time."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return datetime.combine(date.fromisoformat(text), time(), zone)
    try:
        return parse_instant(text)
    except ValueError:
        parsed = datetime.fromisoformat(text)  # naive: company time, as QBO reads it
        return parsed.replace(tzinfo=zone)


def _sort_key(raw: Any, kind: str, zone: tzinfo) -> tuple[int, Any]:
    value = _coerce_stored(raw, kind, zone) if raw is not None else None
    if value is None:
        return (2, "")
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, bool):
        return (0, int(value))
    return (1, value)
