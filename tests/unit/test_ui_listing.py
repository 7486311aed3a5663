"""The versions listing's pages: paging through any order, a page at a time, lists exactly what one
`Registry.find` over everything lists, in the same order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from mreg.errors import InvalidInputError
from mreg.records import BuiltImage, ModelFile, Record, open_record_store
from mreg.registry import Registry
from mreg.ui.listing import Query, list_versions

NAME = "iris-rf"
START = datetime(2026, 11, 1, 9, 0, 0, 123456, tzinfo=UTC)
# Ties, missing values, quotes and backslashes, negative and tiny numbers, versions equal under PEP 440 and
# one that is not PEP 440 at all.
SCORES = [0.5, 0.7, None, 0.5, 0.9, 0.7, None, 0.5, 1e-05, -0.5, 0.9, None, 3.0, 0.5]
LEARNING_RATES = ["0.1", "0.01", None, "a'b", "0.1", "a\\b", None, "0.1", "", "z", "0.01", None, "'", "0.1"]
SKLEARN = ["1.10", "1.9", "1.10.0", None, "weird", "1.9", "1.10", "2.0rc1", "1.9", None, "1.10", "0.24", "1.9", "2.0"]
STAGES = {2: "prod", 3: "it's", 5: "prod", 8: "back\\slash", 9: "dev", 11: "prod", 14: "dev"}
CREATED_HOURS = [0, 1, 1, 2, 3, 3, 3, 4, 5, 6, 6, 7, 8, 8]
ORDERS = [
    f"{field} {direction}"
    for field in ("version", "created", "metrics.score", "params.lr", "tags.stage", "package.Scikit_Learn")
    for direction in ("asc", "desc")
]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = Registry(open_record_store("file://registry", tmp_path_factory.mktemp("listing")))
    for index in range(len(SCORES)):
        registry.create(NAME, partial(_record, index=index))
    for version, stage in STAGES.items():
        registry.tag(f"{NAME}:{version}", set={"stage": stage})
    registry.yank(f"{NAME}:4", "a yanked version is listed too")
    return registry


def _record(version: int, index: int) -> Record:
    score, rate, sklearn = SCORES[index], LEARNING_RATES[index], SKLEARN[index]
    image = BuiltImage.pushed(f"r.example/ml/iris:serve-{version}", "sha256:" + "b" * 64)
    return Record(
        name=NAME,
        version=version,
        model=ModelFile(uri=f"file:///m/{version}", sha256="0" * 64, size=1, filename="m"),
        images={"train": image, "serve": image},
        packages={"shared": [f"scikit-learn=={sklearn}"] if sklearn else [], "train": [], "serve": []},
        python="3.11.2",
        spec_sha256="c" * 64,
        created_at=START + timedelta(hours=CREATED_HOURS[index]),
        git=None,
        metrics={} if score is None else {"score": score},
        params={} if rate is None else {"lr": rate},
    )


def paged(registry: Registry, query: Query, size: int) -> list[int]:
    """Every version the query lists, following each page's next link (a cursor that never ends fails)."""
    seen: list[int] = []
    for _ in range(len(SCORES) + 1):
        listing = list_versions(registry, NAME, query, size)
        assert len(listing.versions) <= size
        seen += [info.record.version for info in listing.versions]
        if listing.next is None:
            return seen
        query = Query.from_params(listing.next)
    raise AssertionError(f"more pages than versions: {seen}")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("size", [1, 2, 5])
def test_paging_through_an_order_lists_what_one_find_lists(registry: Registry, order: str, size: int) -> None:
    everything = [info.record.version for info in registry.find(NAME, None, order, limit=100, include_yanked=True)]
    assert sorted(everything) == list(range(1, len(SCORES) + 1))
    assert paged(registry, Query(order=order), size) == everything


@pytest.mark.parametrize("order", ["metrics.score desc", "tags.stage asc", "package.scikit-learn desc"])
def test_paging_keeps_the_filter(registry: Registry, order: str) -> None:
    text = "version > 2 and not (tags.stage = 'dev')"
    expected = [info.record.version for info in registry.find(NAME, text, order, limit=100, include_yanked=True)]
    assert 0 < len(expected) < len(SCORES)
    assert paged(registry, Query(filter=text, order=order), 2) == expected


def test_newest_first_pages_with_before(registry: Registry) -> None:
    first = list_versions(registry, NAME, Query(filter="version != 7"), 5)
    assert [info.record.version for info in first.versions] == [14, 13, 12, 11, 10]
    assert first.next == {"filter": "version != 7", "before": "10"}
    assert paged(registry, Query(filter="version != 7"), 5) == [v for v in range(14, 0, -1) if v != 7]


def test_a_page_that_is_exactly_full_has_no_next(registry: Registry) -> None:
    listing = list_versions(registry, NAME, Query(), len(SCORES))
    assert len(listing.versions) == len(SCORES)
    assert listing.next is None


def test_the_parsers_errors_pass_through(registry: Registry) -> None:
    with pytest.raises(InvalidInputError, match=r"^filter: column 1: unknown field 'score'"):
        list_versions(registry, NAME, Query(filter="score >= 1"), 5)
    with pytest.raises(InvalidInputError, match=r"^order-by: column 1: cannot order by 'yanked'"):
        list_versions(registry, NAME, Query(order="yanked"), 5)


def test_a_filter_too_long_to_page_through_is_refused_with_a_reason(registry: Registry) -> None:
    long = " or ".join(f"version = {n}" for n in range(1, 246))
    assert 4000 < len(long) <= 4096
    with pytest.raises(InvalidInputError, match=r"too long to page through in the order 'metrics.score desc'"):
        list_versions(registry, NAME, Query(filter=long, order="metrics.score", after=5), 5)


def test_query_parameters_are_checked() -> None:
    assert Query.from_params({"filter": " tags.a = 'b' ", "after": "3", "order": "version"}) == Query(
        "tags.a = 'b'", "version", None, 3
    )
    for params in ({"before": "-1"}, {"before": "²"}, {"after": "1"}, {"before": "2", "order": "version"}):
        with pytest.raises(InvalidInputError):
            Query.from_params(params)


def test_an_unknown_model_or_boundary_is_not_found(tmp_path: Path, registry: Registry) -> None:
    from mreg.errors import NotFoundError

    with pytest.raises(NotFoundError):
        list_versions(registry, NAME, Query(order="version", after=99), 5)
    with pytest.raises(NotFoundError):
        list_versions(Registry(open_record_store("file://empty", tmp_path)), NAME, Query(), 5)
