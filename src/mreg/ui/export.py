"""`mreg ui --export DIR`: the UI's pages written as a static site (HTML, CSS, the copy-button script).

A static site cannot run a query, so it holds the pages of the plain listing: the models, each model's
versions newest first (yanked ones included, 50 a page, with their metrics charts), every version, every
alias's timeline, and the diffs those pages link to (each version with the one before it, and each alias
move). Verify, filters, orders and diffs of other pairs need `mreg ui`; the versions pages say so. Links are
relative and name `index.html`, so the site works from a bucket under any prefix and from disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mreg.errors import StorageError
from mreg.ui import pages
from mreg.ui.app import STATIC
from mreg.ui.listing import Query
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
    """Every exportable page: models, then per model its versions pages, version pages, the diffs they and
    the alias timelines link to, and the alias timelines."""
    yield pages.models_page(registry)
    for name in registry.models():
        diffs: set[tuple[int, int]] = set()
        query = Query()
        here: str | None = None
        while True:
            listing = pages.versions_page(registry, name, query, here=here)
            yield listing
            for row in listing.context["rows"]:
                version = row.record.version
                yield pages.version_page(registry, name, version)
                if version > 1:
                    diffs.add((version - 1, version))
            following = listing.context["next"]
            if following is None:
                break
            before = int(following["before"])
            query, here = Query(before=before), f"/models/{name}/before/{before}/"
        aliases = registry.aliases(name)
        for alias in aliases:
            diffs |= {
                (move.previous, move.version)
                for move in alias.history
                if move.previous is not None and move.version is not None and move.previous != move.version
            }
        for old, new in sorted(diffs):
            yield pages.diff_page(registry, name, old, new)
        for alias in aliases:
            yield pages.alias_page(registry, name, alias.alias)
