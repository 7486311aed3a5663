"""Commands that fit mreg into editors and shells: schema, completion; and the completion of model names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem, get_completion_class

from mreg.cli._app import cli, say

if TYPE_CHECKING:
    from mreg.registry import Registry

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VARIABLE = "_MREG_COMPLETE"


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the schema here.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of registry.toml.

    For editors and `taplo check`, generated from the spec's models: the repository's registry.schema.json
    is this output. Put `#:schema ./registry.schema.json` on the spec's first line for Even Better TOML and
    taplo. Example: `mreg schema -o registry.schema.json`.
    """
    from mreg.schema import schema_text

    text = schema_text()
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    say(f"wrote {output}")


@cli.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Commands, options and, from a local (file://) registry, model names and NAME@ALIAS complete. Example:
    `mreg completion bash`; put `eval "$(mreg completion bash)"` in ~/.bashrc (zsh: the same in ~/.zshrc;
    fish: `mreg completion fish | source`).
    """
    complete = get_completion_class(shell)
    if complete is None:  # click ships all three
        raise click.UsageError(f"click has no completion for {shell}.")
    click.echo(complete(cli, {}, "mreg", COMPLETE_VARIABLE).source())


def complete_model_ref(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """NAME, then NAME@ALIAS, from the configured registry when it is a local directory (remote stores
    would cost a network round trip on every Tab); nothing when it cannot be read."""
    registry = _local_registry(ctx)
    if registry is None:
        return []
    try:
        if "@" in incomplete:
            name = incomplete.split("@", 1)[0]
            words = [f"{name}@{alias.alias}" for alias in registry.aliases(name)]
        else:
            words = registry.models()
    except Exception:  # a Tab must never print an error or a traceback
        return []
    return [CompletionItem(word) for word in sorted(words) if word.startswith(incomplete)]


def _local_registry(ctx: click.Context) -> Registry | None:
    """The registry --registry or the spec names, if it is a file:// one. Completion parses the command
    line without running the group, so its options are read from the root's parameters."""
    from mreg.errors import MregError
    from mreg.registry import Registry
    from mreg.spec import load_spec

    params = ctx.find_root().params
    try:
        if params.get("registry_uri"):
            uri = str(params["registry_uri"])
            return Registry.open(uri) if uri.startswith("file://") else None
        spec = load_spec(params.get("spec_path") or "registry.toml")
        return Registry.from_spec(spec) if spec.registry.uri.startswith("file://") else None
    except MregError:
        return None
