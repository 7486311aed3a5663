"""The filter and order language of `mreg list`, evaluated over three hand-made version rows."""

from __future__ import annotations

import heapq
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mreg.errors import InvalidInputError
from mreg.records._filter import FAMILIES, MAX_DEPTH, MAX_FILTER, VersionRow, parse_filter, parse_order

ONE = VersionRow(
    version=1,
    created=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    metrics={"acc": 0.81, "loss": 0.5},
    params={"lr": "0.1", "optimizer": "adam"},
    tags={"team": "vision", "stage": "exp"},
    aliases=frozenset(),
    yanked=False,
    packages={"scikit-learn": "1.9.2", "numpy": "1.26.4", "torch": "2.1.0"},
)
TWO = VersionRow(
    version=2,
    created=datetime(2026, 12, 1, tzinfo=UTC),
    metrics={"acc": 0.9, "loss": 0.3},
    params={"lr": "0.01", "optimizer": "sgd"},
    tags={"team": "vision"},
    aliases=frozenset({"staging"}),
    yanked=True,
    packages={"scikit-learn": "1.10.0", "numpy": "2.0.0"},
)
THREE = VersionRow(
    version=3,
    created=datetime(2026, 12, 15, 8, 30, tzinfo=UTC),
    metrics={"acc": 0.95},
    params={},
    tags={"team": "nlp", "note": "50% off_peak"},
    aliases=frozenset({"prod", "stable"}),
    yanked=False,
    packages={"scikit-learn": "1.10.1", "numpy": "2.1.0", "legacy": "not a version"},
)
ROWS = (ONE, TWO, THREE)


def matching(text: str) -> set[int]:
    parsed = parse_filter(text)
    return {row.version for row in ROWS if parsed.matches(row)}


@pytest.mark.parametrize(
    ("text", "versions"),
    [
        ("version = 2", {2}),
        ("version != 2", {1, 3}),
        ("version > 1", {2, 3}),
        ("version >= 2 and version <= 2", {2}),
        ("version < -1", set()),
        ("version in (1, 3)", {1, 3}),
        ("version not in (1, 3)", {2}),
        ("version=2", {2}),
        ("((version = 1))", {1}),
        # created: a date is midnight UTC, a timestamp without an offset is UTC
        ("created >= '2026-12-01'", {2, 3}),
        ("created < '2026-12-01'", {1}),
        ("created > '2026-12-01T00:00:00Z'", {3}),
        ("created = '2026-12-01T01:00:00+01:00'", {2}),
        ("created <= '2026-12-15T08:30:00'", {1, 2, 3}),
        ("created < '2026-12-15T08:29:59.999+00:00'", {1, 2}),
        ("created in ('2026-12-01', '2026-11-30T13:00+01:00')", {1, 2}),
        # metrics are numbers; a missing one makes every comparison false, != included
        ("metrics.acc > 0.85", {2, 3}),
        ("metrics.acc >= 0.9", {2, 3}),
        ("metrics.loss < 0.4", {2}),
        ("metrics.loss != 0.3", {1}),
        ("not metrics.loss = 0.3", {1, 3}),
        ("metrics.acc in (0.9, 0.95)", {2, 3}),
        ("metrics.acc not in (0.9, 0.95)", {1}),
        ("metrics.acc = 1", set()),
        ("metrics.acc > 8.1e-1", {2, 3}),
        ("metrics.f1 > 0 or metrics.f1 <= 0", set()),
        ("metrics.loss not in (0.3)", {1}),
        # params and tags are text; a number literal is its source text
        ("params.lr = '0.1'", {1}),
        ("params.lr = 0.1", {1}),
        ("params.lr = 0.10", set()),
        ("params.optimizer in ('adam', \"sgd\")", {1, 2}),
        ("params.optimizer != 'adam'", {2}),
        ("params.optimizer > 'b'", {2}),
        ("tags.team = 'vision'", {1, 2}),
        ("tags.team like 'vis%'", {1, 2}),
        ("tags.team like 'VIS%'", set()),
        ("tags.team like '_lp'", {3}),
        ("tags.team like 'n%p'", {3}),
        ("tags.team like 'isi%'", set()),
        ("tags.team like '%isi'", set()),
        ("tags.team like '%'", {1, 2, 3}),
        ("tags.team not like 'vis%'", {3}),
        ("tags.stage not like '%'", set()),
        ("tags.note like '50\\% off\\_peak'", {3}),
        ("tags.note like '50\\%'", set()),
        ("tags.note like '%\\_%'", {3}),
        ("tags.note like '%o%f%'", {3}),
        ("tags.note like '%f_p%k'", {3}),
        ("tags.note like '%k%k'", set()),
        # alias: any alias for =, like, in; none for !=, not like, not in
        ("alias = 'prod'", {3}),
        ("alias != 'prod'", {1, 2}),
        ("alias like 'sta%'", {2, 3}),
        ("alias not like 'sta%'", {1}),
        ("alias in ('prod', 'staging')", {2, 3}),
        ("alias not in ('prod', 'staging')", {1}),
        # yanked
        ("yanked", {2}),
        ("not yanked", {1, 3}),
        ("not not yanked", {2}),
        ("yanked = false", {1, 3}),
        ("yanked != true", {1, 3}),
        # packages compare as PEP 440 versions; like on their text
        ("package.scikit-learn >= '1.10'", {2, 3}),
        ("package.Scikit_Learn < '1.10'", {1}),
        ("package.scikit.learn = '1.10'", {2}),
        ("package.numpy >= 2", {2, 3}),
        ("package.numpy in ('1.26.4', '2.1')", {1, 3}),
        ("package.numpy not in ('1.26.4', '2.1')", {2}),
        ("package.numpy like '2.%'", {2, 3}),
        ("package.torch != '2.1.0'", set()),
        ("package.legacy like 'not%'", {3}),
        ("package.legacy > '0'", set()),
        # precedence: not > and > or
        ("yanked or version = 1 and version = 3", {2}),
        ("(yanked or version = 1) and version = 3", set()),
        ("version = 3 and yanked or version = 1", {1}),
        ("version = 3 and (yanked or version = 1)", set()),
        ("not version = 1 and version = 2", {2}),
        ("not (version = 1 and version = 2)", {1, 2, 3}),
        ("not version = 1 or version = 1", {1, 2, 3}),
        ("version = 1 or version = 2 or version = 3 and yanked", {1, 2}),
        # keywords and field families are case-insensitive
        ("NOT Yanked AND Version IN (1, 2) Or ALIAS LIKE 'p%'", {1, 3}),
        ("Metrics.acc > 0.9 aNd TAGS.team Not Like 'v%'", {3}),
        ("yanked = TRUE", {2}),
    ],
)
def test_evaluation(text: str, versions: set[int]) -> None:
    assert matching(text) == versions


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        (
            "",
            1,
            "expected a field (version, created, metrics.KEY, params.KEY, tags.KEY, alias, yanked or package.NAME), found end of input",
        ),
        ("metrics.acc >=", 15, "expected a value after '>=', found end of input"),
        ("tags.team = 'vision", 13, "unterminated string: the ' opened here is never closed"),
        ("tags.team = \"vision'", 13, 'unterminated string: the " opened here is never closed'),
        ("tags.team = 'vision\\", 13, "unterminated string"),
        ("version = 1 version", 13, "expected 'and', 'or' or end of input, found 'version'"),
        ("version = 1)", 12, "expected 'and', 'or' or end of input, found ')'"),
        ("version = 1 & version = 2", 13, "expected 'and', 'or' or end of input, found '&'"),
        ("color = 'red'", 1, "unknown field 'color'"),
        ("version.major = 1", 1, "unknown field 'version.major'"),
        ("metrics.Acc > 1", 9, "bad key 'Acc': a key is 1-128 lower-case letters"),
        ("metrics. > 1", 9, "'metrics' needs a key, as in 'metrics.KEY'"),
        ("tags > 'a'", 5, "'tags' needs a key, as in 'tags.KEY'"),
        ("tags." + "a" * 129 + " = 'x'", 6, "bad key"),
        ("package.-bad = '1'", 9, "'-bad' is not a distribution name"),
        ("tags.x = 'a\\q'", 12, "unknown escape '\\q'"),
        ("version in ()", 13, "expected a value in 'in (...)', found ')'"),
        ("version in (1, 2", 17, "expected ',' or ')' to close the '(' at column 12, found end of input"),
        ("version in (1,)", 15, "expected a value after ',', found ')'"),
        ("version in 1", 12, "expected '(' after 'in', found '1'"),
        ("(version = 1", 13, "expected ')' to close the '(' at column 1, found end of input"),
        ("version = 1.5", 11, "'version' is a whole number, not '1.5'"),
        ("version = '1'", 11, "'version' is a whole number, not the string '1'"),
        ("version == 1", 10, "expected a value after '=', found '='"),
        ("version ! 1", 9, "unexpected character '!'"),
        ("version = -x", 11, "malformed number '-x'"),
        ("metrics.acc = 'high'", 15, "'metrics.acc' is a number, not the string 'high'"),
        ("metrics.acc > 1e999", 15, "the number 1e999 is out of range"),
        (
            "metrics.acc like '1%'",
            13,
            "'metrics.acc' cannot be compared with 'like'; it takes =, !=, <, <=, >, >= or in",
        ),
        ("created > 'yesterday'", 11, "the string 'yesterday' is not an ISO 8601 date or timestamp"),
        ("created > '2026-13-01'", 11, "the string '2026-13-01' is not an ISO 8601 date or timestamp"),
        ("created > 2026", 11, "'created' takes a quoted ISO 8601 date or timestamp, not '2026'"),
        ("package.numpy >= 'banana'", 18, "'package.numpy' is a PEP 440 version, and 'banana' is not one"),
        ("package.numpy >= 1.26.0", 18, "malformed number '1.26.0' (quote versions and other text: '1.26.0')"),
        ("alias < 'prod'", 7, "'alias' cannot be compared with '<'; it takes =, !=, like or in"),
        ("yanked like 'x'", 8, "'yanked' cannot be compared with 'like'; it takes = or !="),
        ("yanked in (true)", 8, "'yanked' cannot be compared with 'in'"),
        ("yanked = 'yes'", 10, "'yanked' is true or false, not the string 'yes'"),
        ("tags.team = true", 13, "'tags.team' is text, not true or false; quote it: 'true'"),
        (
            "tags.team 'vision'",
            11,
            "expected an operator (=, !=, <, <=, >, >=, like, in) after 'tags.team', found the string 'vision'",
        ),
        ("tags.team not = 'x'", 15, "expected 'like' or 'in' after 'tags.team not', found '='"),
        ("yanked not", 11, "expected 'like' or 'in' after 'yanked not', found end of input"),
        ("tags.x like 5", 13, "expected a quoted pattern after 'like', found '5'"),
        ("version = 1 and", 16, "expected a field"),
        ("version = 1 or", 15, "expected a field"),
        ("and = 1", 1, "expected a field"),
        ("not", 4, "expected a field"),
        (
            "(" * (MAX_DEPTH + 1) + "version = 1" + ")" * (MAX_DEPTH + 1),
            MAX_DEPTH + 1,
            "parentheses and 'not' nest deeper than 64 levels",
        ),
        ("not " * (MAX_DEPTH + 1) + "yanked", 4 * MAX_DEPTH + 1, "parentheses and 'not' nest deeper than 64 levels"),
        (
            "version = 1 or " * 300 + "yanked",
            MAX_FILTER + 1,
            "the text is 4506 characters long; at most 4096 are allowed",
        ),
    ],
)
def test_errors_name_the_column(text: str, column: int, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_filter(text)
    error = str(caught.value)
    assert error.startswith(f"filter: column {column}: {message}")
    assert error.endswith(".")
    assert "\n" not in error


def test_an_error_shows_a_control_character_escaped_on_one_line() -> None:
    message = r"^filter: column 13: expected 'and', 'or' or end of input, found the string 'a\\nb'\.$"
    with pytest.raises(InvalidInputError, match=message):
        parse_filter("version = 1 'a\nb'")


def test_nesting_up_to_the_limit_is_accepted() -> None:
    deep = "(" * MAX_DEPTH + "version = 1" + ")" * MAX_DEPTH
    assert matching(deep) == {1}
    assert matching("not " * MAX_DEPTH + "yanked") == {2}


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("(" * 10_000 + "version = 1" + ")" * 10_000, MAX_FILTER + 1),
        ("(" * 2_000 + "version = 1" + ")" * 2_000, MAX_DEPTH + 1),
        ("not " * 1_000 + "yanked", 4 * MAX_DEPTH + 1),
    ],
)
def test_hostile_nesting_is_refused_cleanly(text: str, column: int) -> None:
    with pytest.raises(InvalidInputError, match=rf"^filter: column {column}: "):
        parse_filter(text)


def test_like_cannot_be_made_to_backtrack() -> None:
    row = VersionRow(1, ONE.created, {}, {}, {"x": "a" * 3_000}, frozenset(), False, {})
    patterns = ["%a" * 1_000 + "b%", "%" + "a" * 2_000 + "b", "_%" * 1_000 + "b"]
    started = time.perf_counter()
    assert not any(parse_filter(f"tags.x like '{pattern}'").matches(row) for pattern in patterns)
    assert parse_filter("tags.x like '" + "%a" * 1_000 + "%'").matches(row)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("NOT (Version = 1 OR yanked)", "not (version = 1 or yanked = true)"),
        ("tags.x = \"it's\" and tags.y = 'a\\\\b'", "tags.x = 'it\\'s' and tags.y = 'a\\\\b'"),
        ('tags.x like "50\\%_%"', "tags.x like '50\\%_%'"),
        ("tags.x like '%%a%%%'", "tags.x like '%a%'"),
        ("params.lr in (0.10,1)", "params.lr in ('0.10', '1')"),
        (
            "package.Scikit_Learn>=2 OR (alias = 'x' AND alias != 'y')",
            "package.scikit-learn >= '2' or alias = 'x' and alias != 'y'",
        ),
        ("(version = 1 or version = 2) and not version = 2", "(version = 1 or version = 2) and not version = 2"),
        ("not (yanked and version = 1)", "not (yanked = true and version = 1)"),
        ("metrics.acc   >=\t.5", "metrics.acc >= .5"),
        ('created > "2026-12-01"', "created > '2026-12-01'"),
    ],
)
def test_text_is_the_normalised_source(text: str, normalised: str) -> None:
    parsed = parse_filter(text)
    assert parsed.text == normalised
    assert parse_filter(parsed.text).text == normalised


def test_escaped_quotes_and_backslashes_reach_the_value() -> None:
    row = VersionRow(1, ONE.created, {}, {}, {"q": 'it\'s "x" \\ 100%'}, frozenset(), False, {})
    assert parse_filter("tags.q = 'it\\'s \"x\" \\\\ 100%'").matches(row)
    assert parse_filter('tags.q = "it\'s \\"x\\" \\\\ 100\\%"').matches(row)
    assert parse_filter("tags.q like 'it\\'s \"_\" \\\\ 100\\%'").matches(row)
    assert not parse_filter("tags.q like 'it\\'s \"_\" \\\\ 1000\\%'").matches(row)


@pytest.mark.parametrize(
    ("text", "families"),
    [
        ("tags.team = 'x' and metrics.acc > 1", {"tags", "metrics"}),
        ("not yanked", {"yanked"}),
        ("package.numpy > '1' or (alias = 'prod' and created > '2026-01-01')", {"package", "alias", "created"}),
        ("params.a = 'b' or version = 1", {"params", "version"}),
    ],
)
def test_fields_are_the_families_read(text: str, families: set[str]) -> None:
    assert parse_filter(text).fields() == families
    assert families <= FAMILIES


@pytest.mark.parametrize(
    ("text", "normalised", "versions"),
    [
        ("version", "version desc", [3, 2, 1]),
        ("VERSION ASC", "version asc", [1, 2, 3]),
        ("created asc", "created asc", [1, 2, 3]),
        ("metrics.acc", "metrics.acc desc", [3, 2, 1]),
        ("metrics.acc asc", "metrics.acc asc", [1, 2, 3]),
        ("metrics.loss desc", "metrics.loss desc", [1, 2, 3]),
        ("metrics.loss asc", "metrics.loss asc", [2, 1, 3]),
        ("package.scikit_learn asc", "package.scikit-learn asc", [1, 2, 3]),
        ("package.numpy desc", "package.numpy desc", [3, 2, 1]),
        ("package.legacy", "package.legacy desc", [3, 2, 1]),
        ("package.torch asc", "package.torch asc", [1, 3, 2]),
        ("tags.team asc", "tags.team asc", [3, 2, 1]),
        ("tags.team desc", "tags.team desc", [2, 1, 3]),
        ("params.optimizer desc", "params.optimizer desc", [2, 1, 3]),
        ("params.optimizer asc", "params.optimizer asc", [1, 2, 3]),
    ],
)
def test_order(text: str, normalised: str, versions: list[int]) -> None:
    order = parse_order(text)
    assert order.text == normalised
    assert order.descending is normalised.endswith("desc")
    assert [row.version for row in order.sort([TWO, ONE, THREE])] == versions
    assert [row.version for row in heapq.nsmallest(2, ROWS, key=order.key)] == versions[:2]


def test_order_fields() -> None:
    assert parse_order("metrics.acc").fields() == {"metrics"}
    assert parse_order("package.numpy asc").fields() == {"package"}


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("", 1, "expected a field to order by, found end of input"),
        (
            "alias",
            1,
            "cannot order by 'alias'; order by version, created, metrics.KEY, params.KEY, tags.KEY or package.NAME",
        ),
        ("yanked desc", 1, "cannot order by 'yanked'"),
        ("metrics.acc sideways", 13, "expected 'asc', 'desc' or end of input after 'metrics.acc', found 'sideways'"),
        ("version desc desc", 14, "expected 'asc', 'desc' or end of input after 'version', found 'desc'"),
        ("metrics.ACC", 9, "bad key 'ACC'"),
        ("foo", 1, "unknown field 'foo'"),
        ("'version'", 1, "expected a field"),
    ],
)
def test_order_errors_name_the_column(text: str, column: int, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_order(text)
    assert str(caught.value).startswith(f"order-by: column {column}: {message}")


def test_a_row_needs_an_aware_timestamp() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        VersionRow(1, datetime(2026, 1, 1), {}, {}, {}, frozenset(), False, {})


# Random well-formed expressions


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cased(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.upper(), word.capitalize()])


_COMPARISONS = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
_ATOMS: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(
        ["yanked", "alias = 'prod'", "alias in ('prod', 'x')", "package.numpy >= '2'", "created > '2026-12-01'"]
    ),
    st.builds("version {} {}".format, _COMPARISONS, st.integers(-5, 5)),
    st.builds(
        "metrics.{} {} {!r}".format,
        st.sampled_from(["acc", "loss", "f1"]),
        _COMPARISONS,
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    st.builds("tags.{} {} {}".format, st.sampled_from(["team", "note", "nope"]), _COMPARISONS, _TEXT.map(_quote)),
    st.builds(
        "tags.team {}like {}".format,
        st.sampled_from(["", "not "]),
        st.lists(st.sampled_from(["%", "_", "v", "n", "\\%"]), max_size=5).map(lambda p: f"'{''.join(p)}'"),
    ),
    st.builds(
        "params.optimizer {}in ({})".format,
        st.sampled_from(["", "NOT "]),
        st.lists(_TEXT.map(_quote), min_size=1, max_size=3).map(", ".join),
    ),
)


@st.composite
def _expressions(draw: st.DrawFn, depth: int = 4) -> str:
    if depth == 0 or draw(st.booleans()):
        return draw(_ATOMS)
    shape = draw(st.sampled_from(["and", "or", "not", "parens"]))
    if shape == "not":
        return f"{draw(_cased('not'))} {draw(_expressions(depth - 1))}"
    if shape == "parens":
        return f"({draw(_expressions(depth - 1))})"
    return f"{draw(_expressions(depth - 1))} {draw(_cased(shape))} {draw(_expressions(depth - 1))}"


@given(_expressions())
def test_random_expressions_evaluate_and_not_inverts(text: str) -> None:
    parsed = parse_filter(text)
    negated = parse_filter(f"not ({text})")
    again = parse_filter(parsed.text)
    assert again.text == parsed.text
    for row in ROWS:
        result = parsed.matches(row)
        assert isinstance(result, bool)
        assert negated.matches(row) is not result
        assert again.matches(row) is result


@given(_expressions(depth=2), _expressions(depth=2))
def test_and_or_combine_their_operands(left: str, right: str) -> None:
    a, b = parse_filter(left), parse_filter(right)
    both = parse_filter(f"({left}) and ({right})")
    either = parse_filter(f"({left}) OR ({right})")
    assert both.fields() == either.fields() == a.fields() | b.fields()
    for row in ROWS:
        assert both.matches(row) is (a.matches(row) and b.matches(row))
        assert either.matches(row) is (a.matches(row) or b.matches(row))
