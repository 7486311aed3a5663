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

if TYPE_CHECKING:
    import jinja2

    from mreg.engine import Engine
    from mreg.records import Alias, Record
    from mreg.registry import Registry

PAGE_SIZE = 50
"""Versions per page of a model's versions."""
IMAGE_STAGES: tuple[Literal["train", "serve"], ...] = ("train", "serve")


@dataclass(frozen=True)
class Page:
    """One page: its own URL path (a directory path, ending in `/`), its template and what it shows."""

    path: str
    template: str
    title: str
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PackageChange:
    """One distribution that differs between two versions' images (None: absent on that side)."""

    name: str
    old: str | None
    new: str | None


def models_page(registry: Registry) -> Page:
    """Every model with its latest version, current aliases and when it last changed."""
    rows = []
    for name in registry.models():
        latest = registry.get(name)
        aliases = registry.aliases(name)
        moves = [event.at for alias in aliases for event in alias.history]
        rows.append(
            {
                "name": name,
                "latest": latest,
                "aliases": [alias for alias in aliases if alias.version is not None],
                "changed": max([latest.created_at, *moves]),
            }
        )
    return Page("/", "models.html.j2", "Models", {"models": rows, "where": registry.where})


def versions_page(registry: Registry, name: str, *, before: int | None = None) -> Page:
    """A page of `name`'s versions, newest first, with the aliases on each; `before` pages back."""
    records = registry.versions(name, limit=PAGE_SIZE, before=before)
    aliases = registry.aliases(name)
    path = f"/models/{name}/" if before is None else f"/models/{name}/before/{before}/"
    older = records[-1].version if records and records[-1].version > 1 else None
    context = {
        "name": name,
        "records": records,
        "aliases_of": _aliases_by_version(aliases),
        "aliases": aliases,
        "older": older,
        "newer": before is not None,
    }
    return Page(path, "versions.html.j2", f"{name}: versions", context)


def version_page(registry: Registry, name: str, version: int) -> Page:
    """One version: its record, packages per image, pinned images, lineage and how to fetch it."""
    record = registry.get(f"{name}:{version}")
    aliases = _aliases_by_version(registry.aliases(name)).get(version, [])
    context = {
        "record": record,
        "aliases": aliases,
        "images": {stage: _image_packages(record, stage) for stage in IMAGE_STAGES},
        "where": registry.where,
    }
    return Page(f"/models/{name}/versions/{version}/", "version.html.j2", f"{name}:{version}", context)


def diff_page(registry: Registry, name: str, old: int, new: int) -> Page:
    """What changed from version `old` to version `new`: packages per image, digests, model and lineage."""
    before, after = registry.get(f"{name}:{old}"), registry.get(f"{name}:{new}")
    changes = {stage: package_changes(before, after, stage) for stage in IMAGE_STAGES}
    fields = [
        ("model sha256", before.model.sha256, after.model.sha256),
        ("model file", before.model.filename, after.model.filename),
        ("model size", str(before.model.size), str(after.model.size)),
        *[(f"{stage} image", before.images[stage].image, after.images[stage].image) for stage in IMAGE_STAGES],
        ("python", before.python, after.python),
        ("spec sha256", before.spec_sha256, after.spec_sha256),
        ("git commit", _commit(before), _commit(after)),
        ("record digest", before.digest or "", after.digest or ""),
    ]
    context = {"name": name, "old": before, "new": after, "changes": changes, "fields": fields}
    return Page(f"/models/{name}/diff/{old}/{new}/", "diff.html.j2", f"{name}: {old} → {new}", context)


def alias_page(registry: Registry, name: str, alias: str) -> Page:
    """An alias's timeline: every move, newest first, with who made it, when, from and to."""
    document = registry.alias_history(name, alias)
    context = {"alias": document, "events": list(reversed(document.history))}
    return Page(f"/models/{name}/aliases/{alias}/", "alias.html.j2", f"{name}@{alias}", context)


def verify_page(registry: Registry, name: str, version: int, engine: Callable[[], Engine]) -> Page:
    """Run `Registry.verify` on one version now (an engine that cannot be opened fails the image checks, and
    the record and model checks still show)."""
    record = registry.get(f"{name}:{version}")
    checks = registry.verify(record, engine)
    context = {"record": record, "checks": checks, "ok": all(check.ok for check in checks)}
    return Page(f"/models/{name}/versions/{version}/verify/", "verify.html.j2", f"verify {name}:{version}", context)


def package_changes(old: Record, new: Record, stage: str) -> list[PackageChange]:
    """Distributions added, removed or at another version in `stage`'s image, by name."""
    before, after = _pins(old, stage), _pins(new, stage)
    return [
        PackageChange(package, before.get(package), after.get(package))
        for package in sorted(before.keys() | after.keys())
        if before.get(package) != after.get(package)
    ]


def _pins(record: Record, stage: str) -> dict[str, str]:
    """`name -> version` of everything installed in one image (the shared set and the stage's own)."""
    pins = {}
    for requirement in _image_packages(record, stage):
        package, _, version = requirement.partition("==")
        pins[package] = version
    return pins


def _image_packages(record: Record, stage: str) -> list[str]:
    return sorted([*record.packages.get("shared", []), *record.packages.get(stage, [])])  # type: ignore[call-overload]


def _aliases_by_version(aliases: list[Alias]) -> dict[int, list[str]]:
    by_version: dict[int, list[str]] = {}
    for alias in aliases:
        if alias.version is not None:
            by_version.setdefault(alias.version, []).append(alias.alias)
    return by_version


def _commit(record: Record) -> str:
    if record.git is None:
        return ""
    return record.git.commit + (" (dirty)" if record.git.dirty else "")


class Renderer:
    """Turns pages into HTML: one cached, autoescaping Jinja environment with `StrictUndefined`.

    With `static`, links to directories name their `index.html` (a static site read from disk) and the
    pages that only a server can answer (verify, a diff of any two versions) are left out.
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
