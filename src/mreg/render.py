"""Spec -> Dockerfile text and build context. Pure and deterministic: the same spec gives the same bytes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from mreg._inventory import INVENTORY_FILE, INVENTORY_SCRIPT, inventory_stage
from mreg.errors import SpecError
from mreg.indexes import SECRETS
from mreg.lock import SETS, Lock, SetName
from mreg.spec import GROUPS, STAGES, Spec

TEMPLATE_NAME = "Dockerfile.j2"
BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
BYTECODE_SCRIPT = "mreg/bytecode.py"
"""The build context's copy of templates/bytecode.py, which the BuildKit install steps run."""
APP_DIR = "/app"
IGNORED_NAMES = frozenset({"__pycache__", ".git", ".mreg", ".venv"})

LABEL_PREFIX = "io.mreg."
OCI_PREFIX = "org.opencontainers.image."


@dataclass(frozen=True)
class BuildContext:
    """A rendered Dockerfile, the files it copies (context path -> source file) and generated files."""

    dockerfile: str
    files: dict[str, Path] = field(default_factory=dict)
    generated: dict[str, str] = field(default_factory=dict)

    def digest(self, stage: str | None = None) -> str:
        """SHA-256 over the Dockerfile and every file's path, mode and bytes; for a `stage`, only over what
        that stage's image is built from: its Dockerfile stages and their files (so that a serve-only
        change leaves the train image's tag, and the image, as they were)."""
        sha = hashlib.sha256()
        for name, content, executable in self._entries():
            data = content
            if stage is not None:
                if name == "Dockerfile":
                    data = "".join(_stage_texts(self.dockerfile, stage)).encode()
                elif not _feeds(name, stage):
                    continue
            sha.update(f"{len(name)}:{name}:{int(executable)}:{len(data)}:".encode())
            sha.update(data)
        return sha.hexdigest()

    def stages(self) -> list[str]:
        """The names of the Dockerfile's stages, in order."""
        return [
            match["name"] for line in self.dockerfile.splitlines() if (match := _FROM_RE.match(line)) and match["name"]
        ]

    def tag(self, stage: str) -> str:
        """The image tag of `stage`: the stage's name and a prefix of its digest."""
        return f"{stage}-{self.digest(stage)[:16]}"

    def write(self, directory: Path) -> None:
        """Write the complete context: `docker buildx build DIR` then reproduces mreg's build."""
        for name, data, executable in self._entries():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o755 if executable else 0o644)

    def _entries(self) -> list[tuple[str, bytes, bool]]:
        entries = [("Dockerfile", self.dockerfile.encode(), False)]
        entries += [(name, self.generated[name].encode(), False) for name in sorted(self.generated)]
        for name in sorted(self.files):
            source = self.files[name]
            entries.append((name, source.read_bytes(), os.access(source, os.X_OK)))
        return entries


def render(spec: Spec, lock: Lock, *, buildkit: bool = True, index_secrets: Collection[str] = ()) -> BuildContext:
    """Render the spec's Dockerfile (BuildKit features on or off) and collect the files it copies.

    `index_secrets` are the ids of the private-index secrets this build has (see `mreg.indexes`); only
    those are mounted. A secret mount costs BuildKit a second or more before the step runs, even when the
    secret is absent, so builds without a private index mount none.
    """
    generated = {f"requirements/{name}.txt": lock.requirements(name) for name in SETS if lock.requirements(name)}
    if buildkit:
        generated[BYTECODE_SCRIPT] = (BUILTIN_TEMPLATES / "bytecode.py").read_text(encoding="utf-8")
    files: dict[str, Path] = {}
    copies: dict[str, list[tuple[str, str]]] = {}
    for stage in STAGES:
        copies[stage] = []
        for relative in sorted(spec.stages_for(stage).copy_):
            source = spec.resolve_path(relative)
            name = PurePosixPath(relative).name
            context_path = f"stages/{stage}/{name}"
            files.update(_collect(source, context_path))
            copies[stage].append((context_path, f"{APP_DIR}/{name}"))
    variables = template_variables(spec, lock, buildkit=buildkit, index_secrets=index_secrets)
    variables["files"] = copies
    template_dir = spec.resolve_path(spec.render.template_dir) if spec.render.template_dir else None
    try:
        text = _environment(template_dir).get_template(TEMPLATE_NAME).render(variables)
    except jinja2.TemplateError as exc:
        where = f"{template_dir}/{TEMPLATE_NAME}" if template_dir else f"built-in {TEMPLATE_NAME}"
        raise SpecError(f"{where}: cannot be rendered: {exc}.") from exc
    return BuildContext(dockerfile=_tidy(text), files=files, generated=generated)


def template_variables(
    spec: Spec, lock: Lock, *, buildkit: bool, index_secrets: Collection[str] = ()
) -> dict[str, Any]:
    """What a template receives (documented in the README). Lists are sorted for stable output."""
    return {
        "model_name": spec.model.name,
        "python_version": spec.python.version,
        "python_check": _python_check(spec.python.version),
        "base_image": spec.python.image,
        "platform": spec.python.docker_platform,
        "buildkit": buildkit,
        "requirements": _requirement_files(lock),
        # serve containers start often: their Python files are compiled at build time; train's are not
        "compile_bytecode": ["base", "serve"],
        "bytecode_script": BYTECODE_SCRIPT,  # BuildKit only: compiles what earlier builds have not (cached)
        "index_secrets": [
            (secret, uv_variable) for secret, (_, uv_variable) in sorted(SECRETS.items()) if secret in index_secrets
        ],
        "system_packages": {group: sorted(getattr(spec.system_packages, group)) for group in GROUPS},
        "commands": {stage: spec.stages_for(stage).command for stage in STAGES},
        "stage_labels": {stage: sorted(stage_labels(spec, lock, stage).items()) for stage in ("train", "serve")},
        "inventory_stages": {stage: inventory_stage(stage) for stage in ("train", "serve")},
        "inventory_script": INVENTORY_SCRIPT,
        "inventory_file": INVENTORY_FILE,
    }


def _requirement_files(lock: Lock) -> dict[str, str | None]:
    """Each set's requirements file in the context, or None where a stage adds nothing to `base`."""
    base = lock.pins("base")
    files: dict[str, str | None] = {}
    for name in SETS:
        pins = lock.pins(name)
        adds = bool(pins) and (name in ("base", "tools") or pins != base)
        files[name] = f"requirements/{name}.txt" if adds else None
    return files


def stage_labels(spec: Spec, lock: Lock, stage: SetName) -> dict[str, str]:
    """OCI and mreg labels of a stage's image, plus the spec's own labels."""
    labels = dict(spec.images.labels)
    labels.update(
        {
            f"{OCI_PREFIX}title": f"{spec.model.name}-{stage}",
            f"{OCI_PREFIX}description": f"{stage} image of model {spec.model.name}, built by mreg",
            f"{OCI_PREFIX}base.name": spec.python.image,
            f"{LABEL_PREFIX}model": spec.model.name,
            f"{LABEL_PREFIX}stage": stage,
            f"{LABEL_PREFIX}python": spec.python.version,
            f"{LABEL_PREFIX}packages": json.dumps([f"{name}=={version}" for name, version in lock.pins(stage).items()]),
        }
    )
    return labels


def shell_quote(value: object) -> str:
    """A single shell word."""
    return shlex.quote(str(value))


def exec_form(values: list[str]) -> str:
    """A JSON array for exec-form and COPY instructions."""
    return json.dumps(list(values), ensure_ascii=True)


def label_quote(value: object) -> str:
    """A double-quoted Dockerfile string: no variable expansion, no line break, no escape of the quote."""
    text = str(value)
    if any(unicodedata.category(char) in {"Cc", "Zl", "Zp"} for char in text):
        raise SpecError(f"a label cannot hold a control or line-separator character: {text!r}.")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


@lru_cache(maxsize=8)
def _environment(template_dir: Path | None) -> jinja2.Environment:
    builtin = jinja2.FileSystemLoader(BUILTIN_TEMPLATES)
    loaders: list[jinja2.BaseLoader] = [builtin, jinja2.PrefixLoader({"mreg": builtin})]
    if template_dir:
        loaders.insert(0, jinja2.FileSystemLoader(template_dir))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - the output is a Dockerfile; the filters below do its quoting
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(sh=shell_quote, json=exec_form, label=label_quote)
    return env


class _TemplateCache(jinja2.FileSystemBytecodeCache):
    """Compiled templates kept between runs (keyed by the template's source), in jinja's per-user, owner-only
    cache directory: it spares every build some 25 ms of template compilation. A full or read-only
    directory only means compiling again."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().load_bytecode(bucket)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    try:
        return _TemplateCache()
    except (OSError, RuntimeError):  # RuntimeError: no safe directory (jinja refuses one another user owns)
        return None


def _python_check(version: str) -> str:
    message = f'"the base image has Python " + v + ", the spec asks for {version}"'
    return f'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "{version}" else {message})'


_FROM_RE = re.compile(r"^FROM\s+(?:--platform=\S+\s+)?(?P<image>\S+)(?:\s+AS\s+(?P<name>\S+))?", re.IGNORECASE)
_USES_RE = re.compile(r"--(?:mount=\S*?)?from=(?P<stage>[A-Za-z0-9_.-]+)")


def _stage_texts(dockerfile: str, target: str) -> list[str]:
    """The text of `target`'s Dockerfile stage and of every stage it builds on (FROM, --from, from=)."""
    stages: dict[str, tuple[str, set[str]]] = {}
    name, lines = "", list[str]()
    for line in dockerfile.splitlines(keepends=True):
        match = _FROM_RE.match(line)
        if match:
            name, lines = match["name"] or match["image"], []
            stages[name] = ("", {match["image"]})
        lines.append(line)
        if name:
            stages[name] = ("".join(lines), stages[name][1] | set(_USES_RE.findall(line)))
    needed, todo = [], [target]
    while todo:
        current = todo.pop()
        if current in stages and current not in needed:
            needed.append(current)
            todo.extend(stages[current][1])
    return [stages[current][0] for current in sorted(needed)]


def _feeds(name: str, stage: str) -> bool:
    """Whether the context file `name` goes into the image of `stage` (the Dockerfile goes into both)."""
    if name.startswith("stages/"):
        return name.startswith(f"stages/{stage}/")
    if name.startswith("requirements/"):
        return name in {f"requirements/{set_name}.txt" for set_name in ("base", "tools", stage)}
    return True


def _collect(source: Path, context_path: str) -> dict[str, Path]:
    if source.is_file():
        return {context_path: source}
    files: dict[str, Path] = {}
    for directory, subdirs, names in os.walk(source):
        subdirs[:] = sorted(d for d in subdirs if d not in IGNORED_NAMES)
        for name in sorted(names):
            path = Path(directory, name)
            if path.is_symlink() or not path.is_file() or name.endswith(".pyc"):
                continue
            files[f"{context_path}/{path.relative_to(source).as_posix()}"] = path
    return files


def _tidy(text: str) -> str:
    """Drop the blank lines the template's conditionals leave behind; one blank line before each stage."""
    lines: list[str] = []
    for line in filter(str.strip, text.split("\n")):
        if line.startswith("FROM ") and lines:
            lines.append("")
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"
