"""Spec -> exact pins per image (`registry.lock`), resolved with uv for the image's Python and platform.

All groups are resolved together first, so a distribution that ends up in both images has one version,
transitive ones included; then each image's set is resolved under those pins. The lock file holds every
distribution once, with its version, its hashes and the sets it belongs to: `base` (shared packages and
what they need), `train` and `serve` (everything installed in that image).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from mreg._fileio import incoming, write_durably
from mreg.errors import InvalidInputError, LockError, MregError
from mreg.indexes import PackageIndexes
from mreg.spec import GROUPS, Spec

LOCK_NAME = "registry.lock"
UV_VERSION = "0.13.9"
"""The uv that installs packages inside the images; it is locked (and hash-checked) like them."""
SetName = Literal["base", "train", "serve", "tools"]
SETS: tuple[SetName, ...] = ("base", "train", "serve", "tools")
LockMode = Literal["auto", "locked", "frozen"]
"""How a build treats the lock: write it when missing or stale, refuse it then, or take it as it is."""
_SET_GROUPS: dict[SetName, tuple[str, ...]] = {
    "base": ("shared",),
    "train": ("shared", "train"),
    "serve": ("shared", "serve"),
    "tools": ("tools",),
}
_PIN_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")
_HASH_RE = re.compile(r"--hash=(?P<hash>sha256:[0-9a-f]{64})")


def _version(value: str) -> str:
    try:
        Version(value)
    except InvalidVersion as exc:
        raise ValueError("is not a PEP 440 version") from exc
    return value


class LockedPackage(BaseModel):
    """One distribution: its only version, its hashes and the sets (images) that install it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
    version: Annotated[str, AfterValidator(_version)]
    sets: list[SetName] = Field(min_length=1)
    hashes: list[Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]] = Field(min_length=1)


class Lock(BaseModel):
    """`registry.lock`: the exact distributions of each image, for one Python version and platform."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    python: str
    platform: str
    inputs: dict[str, list[str]]
    packages: list[LockedPackage] = []

    def pins(self, name: SetName) -> dict[str, str]:
        """Distribution -> version of one set."""
        return {package.name: package.version for package in self.packages if name in package.sets}

    def requirements(self, name: SetName) -> str:
        """The set as a hash-pinned requirements file (`--require-hashes`, nothing left to resolve)."""
        lines = []
        for package in self.packages:
            if name in package.sets:
                hashes = " ".join(f"--hash={digest}" for digest in package.hashes)
                lines.append(f"{package.name}=={package.version} {hashes}")
        return "\n".join(lines) + "\n" if lines else ""

    def stale_groups(self, spec: Spec) -> list[str]:
        """What changed since the lock was written: spec keys that no longer match (empty when current)."""
        current = lock_inputs(spec)
        changed = [f"packages.{group}" for group in GROUPS if self.inputs.get(group) != current[group]]
        if self.inputs.get("tools") != current["tools"]:
            changed.append("mreg's uv version")
        if self.python != spec.python.version:
            changed.append("python.version")
        if self.platform != spec.python.platform:
            changed.append("python.platform")
        return changed

    def to_toml(self) -> str:
        """The lock file's text (deterministic)."""
        import tomli_w

        header = "# Written by `mreg lock` from registry.toml. Commit it; do not edit it.\n"
        return header + tomli_w.dumps(self.model_dump(mode="json"), multiline_strings=False, indent=4)


def lock_inputs(spec: Spec) -> dict[str, list[str]]:
    """The parts of the spec a lock depends on, in a canonical order, and the tools the build uses."""
    inputs = {group: sorted(getattr(spec.packages, group)) for group in GROUPS}
    inputs["tools"] = [f"uv=={UV_VERSION}"]
    return inputs


def lock_path(spec: Spec) -> Path:
    """`registry.lock` beside the spec."""
    return spec.root / LOCK_NAME


def read_lock(spec: Spec) -> Lock:
    """The spec's lock file as it is (not compared to the spec), refused when missing or damaged."""
    lock = _read_lock(spec)
    if lock is None:
        raise InvalidInputError(f"{lock_path(spec)}: no lock file; run `mreg lock`.")
    return lock


def load_lock(spec: Spec) -> Lock:
    """The spec's lock, refused when missing, damaged or written for other packages."""
    lock = read_lock(spec)
    changed = lock.stale_groups(spec)
    if changed:
        raise InvalidInputError(
            f"{lock_path(spec)}: out of date: {', '.join(changed)} changed in {spec.source.name} since it was "
            "written; run `mreg lock`."
        )
    return lock


def _read_lock(spec: Spec) -> Lock | None:
    """The lock file, or None when there is none; a damaged one is refused."""
    path = lock_path(spec)
    try:
        return Lock.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise InvalidInputError(
            f"{path}: not a lock file mreg can read ({_first_line(exc)}); run `mreg lock`."
        ) from exc


def resolve(spec: Spec, indexes: PackageIndexes | None = None) -> Lock:
    """Resolve the spec's packages with uv into a lock (not written). Private `indexes` reach uv through
    its environment; their URLs appear in no lock and no message."""
    indexes = indexes or PackageIndexes()
    try:
        return _resolve(spec, indexes)
    except LockError as exc:
        raise LockError(indexes.mask(str(exc))) from exc


def _resolve(spec: Spec, indexes: PackageIndexes) -> Lock:
    inputs = lock_inputs(spec)
    with tempfile.TemporaryDirectory(prefix="mreg-lock-") as scratch, ThreadPoolExecutor(len(SETS)) as pool:
        work = Path(scratch)
        union_file = work / "union.txt"

        def resolve_set(name: SetName) -> str:
            requirements = [r for group in _SET_GROUPS[name] for r in inputs[group]]
            constraints = None if name == "tools" else union_file
            # the joint resolution has just fetched every index page the image sets need (the tools' come from
            # earlier locks): uv's cache answers offline, and the network is only asked when it cannot (no
            # cache, or an index that forbids caching)
            compile_set = partial(_compile, spec, work, name, requirements, constraints=constraints, indexes=indexes)
            result = compile_set(offline=True)
            if result.returncode != 0:
                result = compile_set(offline=False)
            if result.returncode != 0:
                raise LockError(f"uv could not resolve the {name} set under the joint pins:\n{result.stderr.strip()}")
            return result.stdout

        tools = pool.submit(resolve_set, "tools")  # the build's own tools are not under the joint pins
        union_file.write_text(_previous_pins(spec))  # uv keeps these versions where it can: a relock moves little
        everything = [requirement for group in GROUPS for requirement in inputs[group]]
        union = _compile(spec, work, "all", everything, constraints=None, indexes=indexes, output=union_file)
        if union.returncode != 0:
            raise _conflict(spec, work, inputs, union.stderr, indexes)
        images = [name for name in SETS if name != "tools"]
        resolved = dict(zip(images, pool.map(resolve_set, images), strict=True))
        sets = {name: tools.result() if name == "tools" else resolved[name] for name in SETS}
    return Lock(
        python=spec.python.version,
        platform=spec.python.platform,
        inputs=inputs,
        packages=_merge(sets),
    )


def _previous_pins(spec: Spec) -> str:
    """The pins of the lock being replaced (stale or not), as uv preferences; empty without one."""
    try:
        data = tomllib.loads(lock_path(spec).read_text(encoding="utf-8"))
        return "".join(f"{package['name']}=={package['version']}\n" for package in data.get("packages", []))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, TypeError, KeyError):
        return ""


def write_lock(spec: Spec, lock: Lock) -> Path:
    """Write the lock beside the spec, atomically."""
    path = lock_path(spec)
    with incoming(path.parent) as (handle, temporary):
        write_durably(handle, lock.to_toml().encode())
        handle.close()
        temporary.chmod(0o644)
        temporary.replace(path)
    return path


def ensure_lock(
    spec: Spec,
    *,
    mode: LockMode = "auto",
    indexes: PackageIndexes | None = None,
    relocking: Callable[[str], AbstractContextManager[object]] = lambda reason: nullcontext(),
) -> Lock:
    """The lock a build uses, the way uv and cargo treat theirs.

    `auto`: the current lock; a missing or stale one is resolved and written first, inside
    `relocking(reason)` (e.g. "no registry.lock"), so that the caller can say so. A damaged lock is refused,
    never overwritten. `locked`: the current lock, else InvalidInputError. `frozen`: the lock file as it
    is, not compared to the spec.
    """
    if mode == "locked":
        return load_lock(spec)
    if mode == "frozen":
        return read_lock(spec)
    current = _read_lock(spec)
    changed = current.stale_groups(spec) if current is not None else []
    if current is not None and not changed:
        return current
    reason = f"{LOCK_NAME} is out of date ({', '.join(changed)} changed)" if current else f"no {LOCK_NAME}"
    with relocking(reason):
        lock = resolve(spec, indexes)
        write_lock(spec, lock)
    return lock


def _compile(
    spec: Spec,
    work: Path,
    name: str,
    requirements: list[str],
    *,
    constraints: Path | None,
    indexes: PackageIndexes,
    output: Path | None = None,
    offline: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`uv pip compile` of `requirements`; with `output`, uv reads that file's pins as preferences, writes
    the result there, and the result is also returned as stdout. `offline` answers from uv's cache only."""
    if not requirements:
        return subprocess.CompletedProcess([], 0, "", "")
    source = work / f"{name}.in"
    source.write_text("\n".join(requirements) + "\n")
    argv = [_uv(), "pip", "compile", str(source), "--quiet", "--no-header", "--no-annotate", "--generate-hashes"]
    argv += ["--python-version", spec.python.version, "--python-platform", spec.python.platform]
    if constraints is not None:
        argv += ["--constraint", str(constraints)]
    if output is not None:
        argv += ["--output-file", str(output)]
    if offline:
        argv.append("--offline")
    try:
        environment = {**os.environ, **indexes.uv_environment()}
        result = subprocess.run(argv, capture_output=True, text=True, check=False, env=environment)
    except OSError as exc:
        raise MregError(f"cannot run uv ({argv[0]}): {exc.strerror}.") from exc
    if output is not None and result.returncode == 0:
        result.stdout = output.read_text()
    return result


def _uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def _merge(sets: dict[SetName, str]) -> list[LockedPackage]:
    found: dict[str, tuple[str, list[str], list[SetName]]] = {}
    for name, text in sets.items():
        for pin, version, hashes in _parse_requirements(text):
            previous = found.setdefault(pin, (version, hashes, []))
            if previous[0] != version:  # cannot happen under the joint constraints; refuse rather than guess
                raise LockError(f"uv picked {pin} {previous[0]} and {version} for different sets.")
            previous[2].append(name)
    return [
        LockedPackage(name=pin, version=version, sets=members, hashes=sorted(hashes))
        for pin, (version, hashes, members) in sorted(found.items())
    ]


def _parse_requirements(text: str) -> Iterable[tuple[str, str, list[str]]]:
    """(name, version, hashes) of each `name==version --hash=...` entry of uv's output."""
    for entry in re.sub(r"\\\n\s*", " ", text).splitlines():
        entry = entry.split("#", 1)[0].strip()  # noqa: PLW2901 - comments are dropped in place
        if not entry:
            continue
        match = _PIN_RE.match(entry)
        if match is None:
            raise LockError(f"cannot read uv's output line {entry!r}.")
        yield canonicalize_name(match["name"]), match["version"], _HASH_RE.findall(entry)


def _conflict(
    spec: Spec, work: Path, inputs: dict[str, list[str]], explanation: str, indexes: PackageIndexes
) -> LockError:
    """Explain a failed joint resolution: which sets clash, over which distribution, from which keys."""
    alone: dict[str, dict[str, str] | None] = {}
    for name in ("train", "serve"):
        requirements = [r for group in _SET_GROUPS[name] for r in inputs[group]]
        result = _compile(spec, work, f"{name}-alone", requirements, constraints=None, indexes=indexes)
        pins = {pin: version for pin, version, _ in _parse_requirements(result.stdout)}
        alone[name] = pins if result.returncode == 0 else None
    lines = [f"{spec.source}: the packages cannot be locked."]
    train, serve = alone["train"], alone["serve"]
    if train is not None and serve is not None:
        common = [pin for pin in sorted(set(train) & set(serve)) if _mentions(explanation, pin)]
        clashing = [pin for pin in common if train[pin] != serve[pin]] or common
        what = f"of {', '.join(clashing)} " if clashing else ""
        lines.append(
            f"Each image resolves alone, but the train and serve images need different versions {what}and "
            "a distribution in both images must have one version."
        )
    else:
        broken = [name for name, pins in alone.items() if pins is None]
        lines.append(f"The {' and '.join(broken)} set cannot be resolved on its own.")
    involved = [
        f"  packages.{group}[{index}] = {requirement}"
        for group in GROUPS
        for index, requirement in enumerate(getattr(spec.packages, group))
        if _mentions(explanation, Requirement(requirement).name)
    ]
    if involved:
        lines += ["Requirements involved:", *involved]
    lines += ["uv says:", *(f"  {line}" for line in explanation.strip().splitlines())]
    return LockError("\n".join(lines))


def _mentions(text: str, distribution: str) -> bool:
    """Whether uv's explanation names `distribution` (in any of its spellings)."""
    pattern = r"[-_.]+".join(re.escape(part) for part in re.split(r"[-_.]+", canonicalize_name(distribution)))
    return re.search(rf"(?<![\w.-]){pattern}(?![\w-])", text, re.IGNORECASE) is not None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
