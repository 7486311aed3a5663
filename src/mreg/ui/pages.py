"""The UI's pages as data: each function reads the registry (through `Registry` only) and returns a `Page`,
which `Renderer` turns into HTML with one autoescaping Jinja environment.

Links are written relative to the page they are on, so the same HTML works served by `mreg ui` and as a
static site under any prefix (`mreg ui --export`, where directory links also name their `index.html`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from mreg.errors import InvalidInputError
from mreg.ui.chart import Plotted, metric_charts
from mreg.ui.listing import Query, list_versions

if TYPE_CHECKING:
    import jinja2

    from mreg.engine import Engine
    from mreg.records import Alias, Record
    from mreg.records._annotations import Annotations
    from mreg.registry import Registry

PAGE_SIZE = 50
"""Versions per page of a model's versions."""
KEY_METRICS = 3
"""Metrics shown in a row of the versions table (the one ordered by first, then by name)."""
IMAGE_STAGES: tuple[Literal["train", "serve"], ...] = ("train", "serve")


@dataclass(frozen=True)
class Page:
    """One page: its own URL path (a directory path, ending in `/`), its template, what it shows, and the
    HTTP status it is served with."""

    path: str
    template: str
    title: str
    context: dict[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass(frozen=True)
class Standing:
    """Where an alias points now, since when, who put it there, and the version it pointed to before
    (None when it pointed nowhere)."""

    alias: str
    version: int
    since: datetime
    by: str
    previous: int | None


@dataclass(frozen=True)
class Listed:
    """A row of the versions table."""

    record: Record
    annotations: Annotations
    aliases: tuple[str, ...]
    key_metrics: list[tuple[str, float]]
    more_metrics: int


def models_page(registry: Registry) -> Page:
    """Every model with its latest usable version, where each alias points since when, and its last change."""
    rows = []
    for name in registry.models():
        newest = registry.versions(name, limit=1)[0]
        usable = registry.find(name, limit=1)
        aliases = registry.aliases(name)
        moves = [event.at for alias in aliases for event in alias.history]
        rows.append(
            {
                "name": name,
                "latest": usable[0].record if usable else None,
                "standings": [found for alias in aliases if (found := standing(alias))],
                "changed": max([newest.created_at, *moves]),
            }
        )
    return Page("/", "models.html.j2", "Models", {"models": rows, "where": registry.where})


def versions_page(registry: Registry, name: str, query: Query | None = None, *, here: str | None = None) -> Page:
    """A page of `name`'s versions (those `query` selects, in its order) with their aliases, key metrics,
    tags and yank state, and a chart of their metrics. A bad filter or order is shown on the page (400).
    `here` is the page's own path when it is not the model's (a static export's `before/N/` pages)."""
    query = query or Query()
    aliases = registry.aliases(name)
    context: dict[str, Any] = {
        "name": name,
        "query": query,
        "aliases": aliases,
        "standings": {found.alias: found for alias in aliases if (found := standing(alias))},
        "paged": query.before is not None or query.after is not None,
        "rows": [],
        "next": None,
        "charts": [],
        "uncharted": [],
        "error": None,
    }
    path = here or f"/models/{name}/"
    try:
        listing = list_versions(registry, name, query, PAGE_SIZE)
    except InvalidInputError as exc:
        return Page(path, "versions.html.j2", f"{name}: versions", {**context, "error": str(exc)}, status=400)
    first = _ordered_metric(query.order)
    rows = [_listed(info.record, info.annotations, info.aliases, first) for info in listing.versions]
    plotted = [Plotted(row.record.version, row.record.metrics, row.annotations.yanked is not None) for row in rows]
    charts, uncharted = metric_charts(plotted, first)
    context |= {"rows": rows, "next": listing.next, "charts": charts, "uncharted": uncharted}
    return Page(path, "versions.html.j2", f"{name}: versions", context)


def version_page(registry: Registry, name: str, version: int) -> Page:
    """One version: its record and annotations (description, tags, yank), metrics, params, packages per
    image, pinned images, lineage (datasets, run, commit, the version before) and how to fetch it."""
    record = registry.get(f"{name}:{version}")
    annotations = registry.annotations(record)
    standings = [found for alias in registry.aliases(name) if (found := standing(alias)) and found.version == version]
    context = {
        "record": record,
        "annotations": annotations,
        "standings": standings,
        "history": list(reversed(annotations.history)),
        "images": {stage: _image_packages(record, stage) for stage in IMAGE_STAGES},
        "where": registry.where,
        "signature": registry.signatures(record, registry.trusted_keys),
        "checked": bool(registry.trusted_keys),
    }
    return Page(f"/models/{name}/versions/{version}/", "version.html.j2", f"{name}:{version}", context)


def diff_page(registry: Registry, name: str, old: int, new: int) -> Page:
    """What changed from version `old` to version `new`: packages per image, metrics, params, digests,
    model and lineage."""
    before, after = registry.get(f"{name}:{old}"), registry.get(f"{name}:{new}")
    changes = registry.diff(f"{name}:{old}", f"{name}:{new}").packages
    fields = [
        ("model sha256", before.model.sha256, after.model.sha256),
        ("model file", before.model.filename, after.model.filename),
        ("model size", str(before.model.size), str(after.model.size)),
        *[(f"{stage} image", before.images[stage].image, after.images[stage].image) for stage in IMAGE_STAGES],
        ("base image", before.base_image or "", after.base_image or ""),
        ("python", before.python, after.python),
        ("spec sha256", before.spec_sha256, after.spec_sha256),
        ("git commit", _commit(before), _commit(after)),
        ("datasets", _datasets(before), _datasets(after)),
        ("run URL", before.run_url or "", after.run_url or ""),
        ("record digest", before.digest or "", after.digest or ""),
    ]
    metrics = [
        (key, before.metrics.get(key), after.metrics.get(key))
        for key in sorted(before.metrics.keys() | after.metrics.keys())
    ]
    params = [
        (key, before.params.get(key), after.params.get(key))
        for key in sorted(before.params.keys() | after.params.keys())
    ]
    context = {
        "name": name,
        "old": before,
        "new": after,
        "changes": changes,
        "fields": fields,
        "metrics": metrics,
        "params": params,
    }
    return Page(f"/models/{name}/diff/{old}/{new}/", "diff.html.j2", f"{name}: {old} → {new}", context)


def alias_page(registry: Registry, name: str, alias: str) -> Page:
    """An alias's timeline: where it points since when, and every move, newest first, with who made it,
    when, from and to, and a link to what changed."""
    document = registry.alias_history(name, alias)
    context = {"alias": document, "standing": standing(document), "events": list(reversed(document.history))}
    return Page(f"/models/{name}/aliases/{alias}/", "alias.html.j2", f"{name}@{alias}", context)


def verify_page(registry: Registry, name: str, version: int, engine: Callable[[], Engine]) -> Page:
    """Run `Registry.verify` on one version now (an engine that cannot be opened fails the image checks, and
    the record and model checks still show)."""
    record = registry.get(f"{name}:{version}")
    checks = registry.verify(record, engine)
    context = {"record": record, "checks": checks, "ok": all(check.ok for check in checks)}
    return Page(f"/models/{name}/versions/{version}/verify/", "verify.html.j2", f"verify {name}:{version}", context)


def standing(alias: Alias) -> Standing | None:
    """Where `alias` points and since which move (moves to the version it already pointed to do not count);
    None for a deleted alias."""
    history = alias.history
    if alias.version is None or not history:
        return None
    start = len(history) - 1
    while start > 0 and history[start - 1].version == alias.version:
        start -= 1
    move = history[start]
    return Standing(alias.alias, alias.version, move.at, move.by, move.previous)


def _listed(record: Record, annotations: Annotations, aliases: tuple[str, ...], first: str | None) -> Listed:
    keys = sorted(record.metrics, key=lambda key: (key != first, key))
    shown = [(key, record.metrics[key]) for key in keys[:KEY_METRICS]]
    return Listed(record, annotations, aliases, shown, len(keys) - len(shown))


def _ordered_metric(order: str) -> str | None:
    """The metric a versions page is ordered by, if it is ordered by one."""
    family, _, key = (order.split() or [""])[0].partition(".")
    return key if family.lower() == "metrics" and key else None


def _image_packages(record: Record, stage: str) -> list[str]:
    return sorted([*record.packages.get("shared", []), *record.packages.get(stage, [])])  # type: ignore[call-overload]


def _commit(record: Record) -> str:
    if record.git is None:
        return ""
    return record.git.commit + (" (dirty)" if record.git.dirty else "")


def _datasets(record: Record) -> str:
    return " ".join(f"{data.uri}@sha256:{data.sha256}" if data.sha256 else data.uri for data in record.datasets)


class Renderer:
    """Turns pages into HTML: one cached, autoescaping Jinja environment with `StrictUndefined`.

    With `static`, links to directories name their `index.html` (a static site read from disk), and what
    only a server can answer (verify, filters, a diff of any two versions) is left out of the pages.
    """

    def __init__(self, *, static: bool = False) -> None:
        self.static = static

    @cached_property
    def environment(self) -> jinja2.Environment:
        import jinja2

        environment = jinja2.Environment(
            loader=jinja2.PackageLoader("mreg.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        environment.filters["short"] = short_digest
        environment.filters["when"] = _when
        environment.filters["number"] = _number
        environment.filters["delta"] = _delta
        return environment

    def render(self, page: Page) -> str:
        """The page's HTML; its links are relative to `page.path`."""
        template = self.environment.get_template(page.template)
        return template.render(
            page.context, title=page.title, url=lambda target: self.link(page.path, target), static=self.static
        )

    def link(self, here: str, target: str) -> str:
        """`target` (an absolute path) as a link relative to the page at `here`."""
        relative = posixpath.relpath(target, here)
        if target.endswith("/"):
            relative = "" if relative == "." else relative + "/"
            return relative + "index.html" if self.static else relative or "./"
        return relative


def short_digest(digest: str, length: int = 12) -> str:
    """`sha256:0123456789ab` of a digest (or the first characters of a bare hex hash)."""
    algorithm, _, value = digest.rpartition(":")
    return f"{algorithm}:{value[:length]}" if algorithm else value[:length]


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _number(value: float) -> str:
    """A metric as `mreg list` prints it: up to 6 significant digits."""
    return f"{value:g}"


def _delta(pair: tuple[float | None, float | None]) -> str:
    """The change from the first metric value to the second, signed; empty when either is missing."""
    old, new = pair
    return "" if old is None or new is None else f"{new - old:+g}"
