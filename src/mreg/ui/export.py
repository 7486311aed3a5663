"""`mreg ui --export DIR`: the UI's pages written as a static site (HTML, CSS, the copy-button script).

It holds every page a server would show except the ones only a server can answer: verify, and diffs of
arbitrary pairs (each version's diff with the one before it is exported). Links are relative and name
`index.html`, so the site works from a bucket under any prefix and from disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mreg.errors import StorageError
from mreg.ui import pages
from mreg.ui.app import STATIC
from mreg.ui.pages import Page, Renderer

if TYPE_CHECKING:
    from mreg.registry import Registry


def export_site(registry: Registry, destination: Path) -> int:
    """Write every page of `registry` under `destination` (created if missing); returns how many."""
    renderer = Renderer(static=True)
    count = 0
    try:
        (destination / "static").mkdir(parents=True, exist_ok=True)
        for source in sorted(STATIC.iterdir()):
            shutil.copyfile(source, destination / "static" / source.name)
        for page in site_pages(registry):
            target = destination / page.path.strip("/") / "index.html"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(renderer.render(page), encoding="utf-8")
            count += 1
    except OSError as exc:
        raise StorageError(f"cannot write the static site into {destination}: {exc.strerror or exc}.") from exc
    return count


def site_pages(registry: Registry) -> Iterator[Page]:
    """Every exportable page: models, each model's version pages, versions, consecutive diffs and aliases."""
    yield pages.models_page(registry)
    for name in registry.models():
        before: int | None = None
        while True:
            listing = pages.versions_page(registry, name, before=before)
            yield listing
            for record in listing.context["records"]:
                yield pages.version_page(registry, name, record.version)
                if record.version > 1:
                    yield pages.diff_page(registry, name, record.version - 1, record.version)
            before = listing.context["older"]
            if before is None:
                break
        for alias in registry.aliases(name):
            yield pages.alias_page(registry, name, alias.alias)
