"""`mreg ui`: browse the registry read-only in a web browser, or export the same pages as a static site."""

from __future__ import annotations

from pathlib import Path

import click

from mreg.cli._app import cli, registry_of, say
from mreg.errors import MregError


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the pages as a static site into this directory instead of serving them.",
)
@click.pass_context
def ui(ctx: click.Context, host: str, port: int, export_dir: Path | None) -> None:
    """Browse the registry in a web browser (read-only).

    Models and where their aliases point, versions (filtered and ordered as `mreg list` does, with their
    metrics charted), each version, diffs, alias histories and verify, at http://127.0.0.1:8765/ by default
    (needs `mreg[ui]`); nothing on it changes the registry. `--export DIR` writes the plain listing and
    every page it links to as static files (no filters, no verify). Example: `mreg ui --export site/`.
    """
    registry = registry_of(ctx)
    if export_dir is not None:
        from mreg.ui.export import export_site

        count = export_site(registry, export_dir)
        say(f"wrote {count} pages of {registry.where} into {export_dir}")
        return
    try:
        import uvicorn

        from mreg.ui.app import create_app

        app = create_app(registry)
    except ImportError as exc:
        raise MregError(f"mreg ui needs the ui extra ({exc.name} is missing): pip install 'mreg[ui]'.") from exc
    say(f"mreg: browsing {registry.where} at http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
