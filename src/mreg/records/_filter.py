"""The filter and ordering language of `mreg list`: parsed once, then evaluated against many version rows.

A filter is conditions combined with `not`, `and`, `or` (binding in that order) and parentheses; keywords
are case-insensitive. A condition is `FIELD OP VALUE` with OP one of `= != < <= > >=`, `FIELD [not] like
'PATTERN'` (`%` any run, `_` one character, case-sensitive) or `FIELD [not] in (VALUE, ...)`:

- `version` (a whole number), `created` (a quoted ISO 8601 date or timestamp; a date means midnight UTC and
  a timestamp without an offset is UTC), `metrics.KEY` (a number);
- `params.KEY`, `tags.KEY`: text, compared as text (a number literal stands for its source text, so
  `params.lr = 0.10` is `params.lr = '0.10'`);
- `package.NAME` (NAME as PEP 503 normalises it): compared as a PEP 440 version (`1.10 > 1.9`, and
  `'1.10' = '1.10.0'`); `like` matches the version's text; a version the row holds that is not PEP 440
  counts as missing except for `like`;
- `alias`: `=`, `like`, `in` hold when any alias of the version does; `!=`, `not like`, `not in` when none;
- `yanked` (`true` or `false`); bare `yanked` means `yanked = true`.

Strings are single- or double-quoted; a backslash escapes `\\`, `'`, `"`, and `%`, `_` (literal in a
`like` pattern). A condition on a metric, param, tag or package the version does not have is false, `!=`,
`not in` and `not like` included (SQL's NULL); only `not (...)` turns it true.

An order is `FIELD [asc|desc]` (default `desc`) over the fields above but `alias` and `yanked`; rows that
lack the field come last in either direction, and ties go newest version first.

Every error is an `InvalidInputError` naming the 1-based column. The input is bounded (`MAX_FILTER`
characters, `MAX_DEPTH` nested parentheses and `not`s), and a `like` pattern is matched run by run between
its `%`s without backtracking, so no filter can exhaust the stack or the processor.
"""

from __future__ import annotations

import math
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from mreg._grammar import KEY_RE, KEY_RULE
from mreg.errors import InvalidInputError

MAX_FILTER = 4096
"""The longest filter or order text accepted, in characters."""
MAX_DEPTH = 64
"""How deep parentheses and `not` may nest."""
FAMILIES = frozenset({"version", "created", "metrics", "params", "tags", "alias", "yanked", "package"})
"""What `Filter.fields()` and `Order.fields()` may return: the part of a field name before the dot."""

_PACKAGE_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?", re.IGNORECASE)
_SIMPLE = frozenset({"version", "created", "alias", "yanked"})
_KEYED = frozenset({"metrics", "params", "tags", "package"})
_ORDERABLE = frozenset({"version", "created", "metrics", "params", "tags", "package"})
_ORDERABLE_RULE = "version, created, metrics.KEY, params.KEY, tags.KEY or package.NAME"
_KEYWORDS = frozenset({"and", "or", "not", "in", "like", "true", "false"})
_FIELDS_RULE = "version, created, metrics.KEY, params.KEY, tags.KEY, alias, yanked or package.NAME"

_COMPARED = ("=", "!=", "<", "<=", ">", ">=", "in")
_OPERATIONS: Mapping[str, tuple[str, ...]] = {
    "version": _COMPARED,
    "created": _COMPARED,
    "metrics": _COMPARED,
    "params": (*_COMPARED, "like"),
    "tags": (*_COMPARED, "like"),
    "package": (*_COMPARED, "like"),
    "alias": ("=", "!=", "like", "in"),
    "yanked": ("=", "!="),
}
_ORDERINGS: Mapping[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

_SPACE = re.compile(r"\s+")
_OPERATOR = re.compile(r"<=|>=|!=|=|<|>")
_CHUNK = re.compile(r"[^\s()=!<>,'\"]+")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"-?\d+")
_ESCAPABLE = frozenset("\\'\"%_")


@dataclass(frozen=True)
class VersionRow:
    """What a filter or an order reads of one version: its record's fields and its current annotations.

    `packages` maps each distribution's canonical name (`packaging.utils.canonicalize_name`) to its version,
    over both images.
    """

    version: int
    created: datetime
    metrics: Mapping[str, float]
    params: Mapping[str, str]
    tags: Mapping[str, str]
    aliases: frozenset[str]
    yanked: bool
    packages: Mapping[str, str]

    def __post_init__(self) -> None:
        if self.created.tzinfo is None:
            raise ValueError(f"VersionRow.created must be timezone-aware, got {self.created.isoformat()}")


# Lexing


@dataclass(frozen=True)
class _Token:
    kind: str
    """`word`, `number`, `string`, `op`, `(`, `)`, `,` or `end`."""
    text: str
    """The source text (a string's with its quotes)."""
    column: int
    value: str = ""
    """A string's content, unescaped."""

    def shown(self) -> str:
        if self.kind == "end":
            return "end of input"
        return f"the string {_printable(self.text)}" if self.kind == "string" else f"'{_printable(self.text)}'"

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words


def _printable(text: str) -> str:
    text = text if len(text) <= 40 else text[:37] + "..."
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _listed(items: Iterable[str]) -> str:
    *rest, last = items
    return f"{', '.join(rest)} or {last}" if rest else last


def _error(what: str, column: int, message: str) -> InvalidInputError:
    return InvalidInputError(f"{what}: column {column}: {message}.")


def _tokens(what: str, text: str) -> list[_Token]:
    if len(text) > MAX_FILTER:
        raise _error(what, MAX_FILTER + 1, f"the text is {len(text)} characters long; at most {MAX_FILTER} are allowed")
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if space := _SPACE.match(text, pos):
            pos = space.end()
        elif char in "(),":
            tokens.append(_Token(char, char, pos + 1))
            pos += 1
        elif char in "'\"":
            token = _string(what, text, pos)
            tokens.append(token)
            pos += len(token.text)
        elif op := _OPERATOR.match(text, pos):
            tokens.append(_Token("op", op.group(), pos + 1))
            pos = op.end()
        elif chunk := _CHUNK.match(text, pos):
            tokens.append(_chunk(what, chunk.group(), pos + 1))
            pos = chunk.end()
        else:
            raise _error(what, pos + 1, f"unexpected character '{_printable(char)}'")
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _chunk(what: str, text: str, column: int) -> _Token:
    if text[0] not in "-.0123456789":
        return _Token("word", text, column)
    if _NUMBER.fullmatch(text):
        return _Token("number", text, column)
    raise _error(what, column, f"malformed number '{text}' (quote versions and other text: '{text}')")


def _string(what: str, text: str, start: int) -> _Token:
    quote = text[start]
    parts: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == quote:
            return _Token("string", text[start : pos + 1], start + 1, "".join(parts))
        if char == "\\" and pos + 1 < len(text):
            escaped = text[pos + 1]
            if escaped not in _ESCAPABLE:
                raise _error(what, pos + 1, f"unknown escape '\\{escaped}' (only \\\\ \\' \\\" \\% \\_ are escapes)")
            parts.append(escaped)
            pos += 2
        else:
            parts.append(char)
            pos += 1
    raise _error(what, start + 1, f"unterminated string: the {quote} opened here is never closed")


# Values and patterns


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@lru_cache(maxsize=4096)
def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True)
class _Literal:
    value: Any
    text: str
    """How the value is written in the normalised filter."""


class _Wild(Enum):
    ONE = "_"
    RUN = "%"


@dataclass(frozen=True)
class _Pattern:
    items: tuple[str | _Wild, ...]
    segments: tuple[tuple[re.Pattern[str], int], ...]
    """The runs between `%`s, each a regular expression of literals and `.` and its (fixed) length."""

    @classmethod
    def parse(cls, quoted: str) -> _Pattern:
        """The pattern of a string token's source text; its escapes are already checked."""
        items: list[str | _Wild] = []
        chars = iter(quoted[1:-1])
        for char in chars:
            if char == "\\":
                items.append(next(chars))
            elif char == "%":
                if not items or items[-1] is not _Wild.RUN:
                    items.append(_Wild.RUN)
            elif char == "_":
                items.append(_Wild.ONE)
            else:
                items.append(char)
        segments: list[list[str]] = [[]]
        for item in items:
            if item is _Wild.RUN:
                segments.append([])
            else:
                segments[-1].append("." if item is _Wild.ONE else re.escape(item))
        compiled = tuple((re.compile("".join(parts), re.DOTALL), len(parts)) for parts in segments)
        return cls(tuple(items), compiled)

    @property
    def text(self) -> str:
        body = "".join(item.value if isinstance(item, _Wild) else _escape_literal(item) for item in self.items)
        return f"'{body}'"

    def matches(self, text: str) -> bool:
        """Whether the whole of `text` matches: the first run at the start, the last at the end, and each run
        between them leftmost after the one before (fixed-length runs, so no backtracking)."""
        if len(self.segments) == 1:
            return self.segments[0][0].fullmatch(text) is not None
        (first, start), *middle, (last, last_length) = self.segments
        end = len(text) - last_length
        if end < start or first.match(text) is None or last.fullmatch(text, end) is None:
            return False
        for segment, _ in middle:
            found = segment.search(text, start, end)
            if found is None:
                return False
            start = found.end()
        return True


def _escape_literal(char: str) -> str:
    return "\\" + char if char in "\\'%_" else char


# Fields


@dataclass(frozen=True)
class _Field:
    family: str
    key: str = ""

    @property
    def text(self) -> str:
        return f"{self.family}.{self.key}" if self.key else self.family

    def values(self, row: VersionRow, *, text: bool = False) -> Collection[Any] | None:
        """The row's values of this field (all its aliases, else one), or None when the row lacks it.

        A package's value is its `Version` (None when it has none), or its text when `text` is set.
        """
        family = self.family
        if family == "alias":
            return row.aliases
        value: Any
        if family == "version":
            value = row.version
        elif family == "created":
            value = row.created
        elif family == "yanked":
            value = row.yanked
        elif family == "package":
            value = row.packages.get(self.key)
            if value is not None and not text:
                value = _version(value)
        else:
            value = getattr(row, family).get(self.key)
        return None if value is None else (value,)


def _field(what: str, token: _Token) -> _Field:
    if token.kind != "word" or token.text.lower() in _KEYWORDS:
        raise _error(what, token.column, f"expected a field ({_FIELDS_RULE}), found {token.shown()}")
    family, dot, key = token.text.partition(".")
    family = family.lower()
    key_column = token.column + len(token.text) - len(key)
    if family in _SIMPLE and not dot:
        return _Field(family)
    if family not in _KEYED:
        raise _error(what, token.column, f"unknown field {token.shown()}; the fields are {_FIELDS_RULE}")
    if not key:
        raise _error(what, key_column, f"'{family}' needs a key, as in '{family}.KEY'")
    if family == "package":
        if not _PACKAGE_RE.fullmatch(key):
            raise _error(what, key_column, f"'{key}' is not a distribution name")
        return _Field(family, canonicalize_name(key))
    if not KEY_RE.fullmatch(key):
        raise _error(what, key_column, f"bad key '{key}': a key is {KEY_RULE}")
    return _Field(family, key)


# Expressions


class _Expr(ABC):
    @abstractmethod
    def matches(self, row: VersionRow) -> bool: ...

    @abstractmethod
    def render(self) -> str: ...

    @abstractmethod
    def families(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class _Condition(_Expr):
    """`field op literal`, `field in (...)` or `field like pattern`; `negated` for `!=`, `not in`, `not like`."""

    field: _Field
    op: str
    operand: _Literal | tuple[_Literal, ...] | _Pattern
    negated: bool = False

    def matches(self, row: VersionRow) -> bool:
        values = self.field.values(row, text=self.op == "like")
        if values is None:
            return False
        return any(self._test(value) for value in values) != self.negated

    def _test(self, value: Any) -> bool:
        operand = self.operand
        if isinstance(operand, _Pattern):
            return operand.matches(value)
        if isinstance(operand, tuple):
            return any(value == literal.value for literal in operand)
        return _ORDERINGS[self.op](value, operand.value)

    def render(self) -> str:
        operand = self.operand
        if isinstance(operand, tuple):
            rendered = "(" + ", ".join(literal.text for literal in operand) + ")"
        else:
            rendered = operand.text
        op = {"=": "!=", "in": "not in", "like": "not like"}[self.op] if self.negated else self.op
        return f"{self.field.text} {op} {rendered}"

    def families(self) -> frozenset[str]:
        return frozenset({self.field.family})


@dataclass(frozen=True)
class _Not(_Expr):
    child: _Expr

    def matches(self, row: VersionRow) -> bool:
        return not self.child.matches(row)

    def render(self) -> str:
        text = self.child.render()
        return f"not ({text})" if isinstance(self.child, _And | _Or) else f"not {text}"

    def families(self) -> frozenset[str]:
        return self.child.families()


@dataclass(frozen=True)
class _And(_Expr):
    children: tuple[_Expr, ...]

    def matches(self, row: VersionRow) -> bool:
        return all(child.matches(row) for child in self.children)

    def render(self) -> str:
        return " and ".join(
            f"({child.render()})" if isinstance(child, _Or) else child.render() for child in self.children
        )

    def families(self) -> frozenset[str]:
        return frozenset[str]().union(*(child.families() for child in self.children))


@dataclass(frozen=True)
class _Or(_Expr):
    children: tuple[_Expr, ...]

    def matches(self, row: VersionRow) -> bool:
        return any(child.matches(row) for child in self.children)

    def render(self) -> str:
        return " or ".join(child.render() for child in self.children)

    def families(self) -> frozenset[str]:
        return frozenset[str]().union(*(child.families() for child in self.children))


# Parsing


class _Parser:
    def __init__(self, what: str, text: str) -> None:
        self.what = what
        self.tokens = _tokens(what, text)
        self.pos = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "end":
            self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        if self.peek().is_word(word):
            self.pos += 1
            return True
        return False

    def error(self, token: _Token, message: str) -> InvalidInputError:
        return _error(self.what, token.column, message)

    def expected(self, what: str, token: _Token) -> InvalidInputError:
        return self.error(token, f"expected {what}, found {token.shown()}")

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(token, f"parentheses and 'not' nest deeper than {MAX_DEPTH} levels")

    def disjunction(self) -> _Expr:
        children = [self.conjunction()]
        while self.keyword("or"):
            children.append(self.conjunction())
        return children[0] if len(children) == 1 else _Or(tuple(children))

    def conjunction(self) -> _Expr:
        children = [self.negation()]
        while self.keyword("and"):
            children.append(self.negation())
        return children[0] if len(children) == 1 else _And(tuple(children))

    def negation(self) -> _Expr:
        token = self.peek()
        if not self.keyword("not"):
            return self.primary()
        self.nest(token)
        expr = _Not(self.negation())
        self.depth -= 1
        return expr

    def primary(self) -> _Expr:
        token = self.peek()
        if token.kind != "(":
            return self.condition()
        self.take()
        self.nest(token)
        expr = self.disjunction()
        self.depth -= 1
        if self.peek().kind != ")":
            raise self.expected(f"')' to close the '(' at column {token.column}", self.peek())
        self.take()
        return expr

    def condition(self) -> _Expr:
        field_token = self.take()
        field = _field(self.what, field_token)
        token = self.peek()
        if token.kind == "op":
            self.take()
            self.check_operation(field, token.text, token)
            literal = self.literal(field, self.take(), f"a value after '{token.text}'")
            if token.text == "!=":
                return _Condition(field, "=", literal, negated=True)
            return _Condition(field, token.text, literal)
        negated = self.keyword("not")
        op_token = self.peek()
        if self.keyword("like"):
            self.check_operation(field, "like", op_token)
            pattern = self.take()
            if pattern.kind == "string":
                return _Condition(field, "like", _Pattern.parse(pattern.text), negated)
            raise self.expected("a quoted pattern after 'like'", pattern)
        if self.keyword("in"):
            self.check_operation(field, "in", op_token)
            return _Condition(field, "in", self.members(field), negated)
        if field.family == "yanked" and not negated:
            return _Condition(field, "=", _Literal(value=True, text="true"))
        after = "'like' or 'in'" if negated else "an operator (=, !=, <, <=, >, >=, like, in)"
        raise self.expected(f"{after} after '{field_token.text}{' not' if negated else ''}'", op_token)

    def check_operation(self, field: _Field, op: str, token: _Token) -> None:
        allowed = _OPERATIONS[field.family]
        if op not in allowed:
            raise self.error(token, f"'{field.text}' cannot be compared with '{op}'; it takes {_listed(allowed)}")

    def members(self, field: _Field) -> tuple[_Literal, ...]:
        opening = self.take()
        if opening.kind != "(":
            raise self.expected("'(' after 'in'", opening)
        literals = [self.literal(field, self.take(), "a value in 'in (...)'")]
        while self.peek().kind == ",":
            self.take()
            literals.append(self.literal(field, self.take(), "a value after ','"))
        if self.peek().kind != ")":
            raise self.expected(f"',' or ')' to close the '(' at column {opening.column}", self.peek())
        self.take()
        return tuple(literals)

    def literal(self, field: _Field, token: _Token, expected: str) -> _Literal:
        boolean = token.is_word("true", "false")
        if token.kind not in ("number", "string") and not boolean:
            raise self.expected(expected, token)
        family = field.family
        if family in ("version", "metrics", "yanked"):
            return self.scalar(field, token)
        if boolean:
            raise self.error(token, f"'{field.text}' is text, not true or false; quote it: '{token.text}'")
        text = token.value if token.kind == "string" else token.text
        if family == "created":
            if token.kind != "string":
                raise self.error(token, f"'created' takes a quoted ISO 8601 date or timestamp, not {token.shown()}")
            return _Literal(self.timestamp(token), _quote(text))
        if family == "package":
            version = _version(text)
            if version is None:
                raise self.error(token, f"'{field.text}' is a PEP 440 version, and {_quote(text)} is not one")
            return _Literal(version, _quote(text))
        return _Literal(text, _quote(text))

    def scalar(self, field: _Field, token: _Token) -> _Literal:
        """A literal for `version`, `metrics.KEY` or `yanked`."""
        if field.family == "version":
            if token.kind == "number" and _INTEGER.fullmatch(token.text):
                return _Literal(int(token.text), token.text)
            raise self.error(token, f"'version' is a whole number, not {token.shown()}")
        if field.family == "metrics":
            if token.kind != "number":
                raise self.error(token, f"'{field.text}' is a number, not {token.shown()}")
            number = float(token.text)
            if not math.isfinite(number):
                raise self.error(token, f"the number {token.text} is out of range")
            return _Literal(number, token.text)
        if not token.is_word("true", "false"):
            raise self.error(token, f"'yanked' is true or false, not {token.shown()}")
        return _Literal(token.text.lower() == "true", token.text.lower())

    def timestamp(self, token: _Token) -> datetime:
        try:
            moment = datetime.fromisoformat(token.value)
        except ValueError as exc:
            raise self.error(token, f"{token.shown()} is not an ISO 8601 date or timestamp") from exc
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    def end(self, what: str) -> None:
        if self.peek().kind != "end":
            raise self.expected(what, self.peek())


# The public API


class Filter:
    """A parsed filter; `text` is its normalised source (lower-case keywords, single quotes, minimal parentheses)."""

    def __init__(self, root: _Expr) -> None:
        self._root = root
        self._text = root.render()

    @property
    def text(self) -> str:
        return self._text

    def matches(self, row: VersionRow) -> bool:
        """Whether the version described by `row` passes the filter."""
        return self._root.matches(row)

    def fields(self) -> frozenset[str]:
        """The field families (see `FAMILIES`) the filter reads, e.g. {"tags", "metrics"}."""
        return self._root.families()

    def __repr__(self) -> str:
        return f"Filter({self._text!r})"


def parse_filter(text: str) -> Filter:
    """Parse a filter (the language is in this module's docstring); raise InvalidInputError at the column."""
    parser = _Parser("filter", text)
    root = parser.disjunction()
    parser.end("'and', 'or' or end of input")
    return Filter(root)


@dataclass(frozen=True)
class _SortKey:
    value: Any
    """None when the row lacks the field."""
    version: int
    descending: bool

    def __lt__(self, other: _SortKey) -> bool:
        if (self.value is None) != (other.value is None):
            return other.value is None
        if self.value is not None and self.value != other.value:
            return bool(self.value > other.value if self.descending else self.value < other.value)
        return self.version > other.version


class Order:
    """A parsed `FIELD [asc|desc]`: rows lacking the field sort last either way, ties newest version first."""

    def __init__(self, field: _Field, *, descending: bool) -> None:
        self._field = field
        self._descending = descending

    @property
    def descending(self) -> bool:
        return self._descending

    @property
    def text(self) -> str:
        return f"{self._field.text} {'desc' if self._descending else 'asc'}"

    def fields(self) -> frozenset[str]:
        """The one field family (see `FAMILIES`) the order reads."""
        return frozenset({self._field.family})

    def key(self, row: VersionRow) -> _SortKey:
        """A key for `sorted`, `min` or `heapq` that puts rows in this order."""
        values = self._field.values(row)
        return _SortKey(next(iter(values)) if values else None, row.version, self._descending)

    def sort(self, rows: Iterable[VersionRow]) -> list[VersionRow]:
        """The rows in this order."""
        return sorted(rows, key=self.key)

    def __repr__(self) -> str:
        return f"Order({self.text!r})"


def parse_order(text: str) -> Order:
    """Parse `FIELD [asc|desc]` (default `desc`); raise InvalidInputError at the column."""
    parser = _Parser("order-by", text)
    token = parser.peek()
    if token.kind == "end":
        raise parser.expected("a field to order by", token)
    field = _field("order-by", parser.take())
    if field.family not in _ORDERABLE:
        raise parser.error(token, f"cannot order by '{field.family}'; order by {_ORDERABLE_RULE}")
    descending = not parser.keyword("asc")
    if descending:
        parser.keyword("desc")
    parser.end(f"'asc', 'desc' or end of input after '{token.text}'")
    return Order(field, descending=descending)
