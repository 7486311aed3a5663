"""Spec -> exact pins per image (`registry.lock`), resolved with uv for the image's Python and platform.

All groups are resolved together first, so a distribution that ends up in both images has one version,
transitive ones included; then each image's set is resolved under those pins. The lock file holds every
distribution once, with its version, its hashes and the sets it belongs to: `base` (shared packages and
what they need), `train` and `serve` (everything installed in that image).

A relock keeps the previous pins where it can, and the sets no change reaches as they were. It answers
from uv's cache first and asks the index only about what changed (`_Resolution.union_from_cache`): an
index that sends no caching headers (some proxies strip them) would otherwise cost a request for every
page and metadata file of the whole graph, one dependency level after the other.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

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
_REFRESH_ROUNDS = 3
"""How often a resolution from uv's cache may fetch the pages of what moved before it gives way to an online one."""


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
    previous = _previous_lock(spec)
    with tempfile.TemporaryDirectory(prefix="mreg-lock-") as scratch, ThreadPoolExecutor(len(SETS)) as pool:
        resolution = _Resolution(spec, Path(scratch), inputs, indexes)
        # the build's own tools are not under the joint pins
        tools = pool.submit(resolution.image_set, "tools", previous.kept("tools", spec, inputs, None))
        if not resolution.union_from_cache(previous):
            resolution.union_online(previous)
        union = {name: version for name, version, _ in _parse_requirements(resolution.union_file.read_text())}
        images = [name for name in SETS if name != "tools"]
        kept = [previous.kept(name, spec, inputs, union) for name in images]
        resolved = dict(zip(images, pool.map(resolution.image_set, images, kept), strict=True))
        sets = {name: tools.result() if name == "tools" else resolved[name] for name in SETS}
    return Lock(
        python=spec.python.version,
        platform=spec.python.platform,
        inputs=inputs,
        packages=_merge(sets),
    )


class _Resolution:
    """The uv runs of one lock: the joint resolution of every group (`union`), then each image's set under
    its pins. The previous lock's pins are uv's preferences, so that a relock moves only what must move."""

    def __init__(self, spec: Spec, work: Path, inputs: dict[str, list[str]], indexes: PackageIndexes) -> None:
        self.spec = spec
        self.work = work
        self.inputs = inputs
        self.indexes = indexes
        self.union_file = work / "union.txt"

    def union_from_cache(self, previous: _PreviousLock) -> bool:
        """Resolve all groups from uv's cache, asking the index only about what changed; True when done.

        Every distribution that keeps its previous version is one an online resolution keeps too (a
        preference that still fits is kept), so its index page and metadata are not asked for again.
        When the cache lacks something (a release new to it), what the requirements added since the
        previous lock need is first fetched online (`_warm`). The distributions that moved or are new
        then have their index pages fetched again (one request each, concurrently), and the resolution
        is repeated until it holds no move that was not checked against the index. False without a
        previous lock, or when the cache still cannot answer or the moves do not settle: the caller then
        resolves online.
        """
        if not previous.pins:
            return False
        refreshed: set[str] = set()
        warmed = False
        for _ in range(_REFRESH_ROUNDS + 1):
            union = self._union(previous.pins, offline=True)
            if union.returncode != 0:
                if warmed or not (fetched := self._warm(previous)):
                    return False
                warmed = True
                refreshed.update(fetched)
                continue
            pins = {name: version for name, version, _ in _parse_requirements(union.stdout)}
            stale = {
                name: version
                for name, version in pins.items()
                if previous.pins.get(name) != version and name not in refreshed
            }
            if not stale:
                return True
            if not self._refresh(stale):
                return False
            refreshed.update(stale)
        return False

    def union_online(self, previous: _PreviousLock) -> None:
        """Resolve all groups against the index; a failure is explained as a conflict."""
        union = self._union(previous.pins, offline=False)
        if union.returncode != 0:
            raise _conflict(self.spec, self.work, self.inputs, union.stderr, self.indexes)

    def image_set(self, name: SetName, kept: str | None = None) -> str:
        """One set's pins and hashes: `kept` (the previous lock's, when a resolution would give it again),
        else from uv's cache (the union's resolution has just read every page an image set needs; the
        tools' come from earlier locks), else from the index."""
        if kept is not None:
            return kept
        requirements = [r for group in _SET_GROUPS[name] for r in self.inputs[group]]
        constraints = None if name == "tools" else self.union_file
        compile_set = partial(self._compile, name, requirements, constraints=constraints)
        result = compile_set(offline=True)
        if result.returncode != 0:
            result = compile_set(offline=False)
        if result.returncode != 0:
            raise LockError(f"uv could not resolve the {name} set under the joint pins:\n{result.stderr.strip()}")
        return result.stdout

    def _union(self, previous: dict[str, str], *, offline: bool) -> subprocess.CompletedProcess[str]:
        self.union_file.write_text("".join(f"{name}=={version}\n" for name, version in previous.items()))
        everything = [requirement for group in GROUPS for requirement in self.inputs[group]]
        return self._compile("all", everything, constraints=None, output=self.union_file, offline=offline)

    def _warm(self, previous: _PreviousLock) -> set[str]:
        """Fetch online what the requirements added since the previous lock need, with its pins as
        preferences; the distributions fetched (empty when nothing was added, or uv failed).

        The distributions only the changed images held are asked for beside them, by name: uv then
        fetches their pages and metadata all at once, rather than one dependency level after another.
        """
        changed = {group for group in GROUPS if self.inputs[group] != previous.inputs.get(group)}
        added = [r for group in changed for r in self.inputs[group] if r not in previous.inputs.get(group, [])]
        if not added:
            return set()
        beside = previous.only_in(changed)
        preferences = self.work / "added.txt"
        preferences.write_text("".join(f"{name}=={version}\n" for name, version in previous.pins.items()))
        result = self._compile("added", [*added, *beside], constraints=None, output=preferences)
        if result.returncode != 0:
            return set()
        return {name for name, _, _ in _parse_requirements(result.stdout)}

    def _refresh(self, pins: dict[str, str]) -> bool:
        """Fetch the index pages of `pins` again into uv's cache (no dependencies, so all at once)."""
        requirements = [f"{name}=={version}" for name, version in sorted(pins.items())]
        return self._compile("refresh", requirements, constraints=None, no_deps=True).returncode == 0

    def _compile(
        self,
        name: str,
        requirements: list[str],
        *,
        constraints: Path | None,
        output: Path | None = None,
        offline: bool = False,
        no_deps: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        return _compile(
            self.spec,
            self.work,
            name,
            requirements,
            constraints=constraints,
            indexes=self.indexes,
            output=output,
            offline=offline,
            no_deps=no_deps,
        )


@dataclass(frozen=True)
class _PreviousLock:
    """The lock a relock replaces (stale or not); None without one, or with one mreg cannot read."""

    lock: Lock | None = None

    @property
    def pins(self) -> dict[str, str]:
        return {package.name: package.version for package in self.lock.packages} if self.lock else {}

    @property
    def inputs(self) -> dict[str, list[str]]:
        return self.lock.inputs if self.lock else {}

    def only_in(self, groups: set[str]) -> list[str]:
        """The distributions that only sets made from (among others) one of `groups` install."""
        touched = {name for name, members in _SET_GROUPS.items() if groups & set(members)}
        packages = self.lock.packages if self.lock else []
        return [package.name for package in packages if set(package.sets) <= touched]

    def kept(self, name: SetName, spec: Spec, inputs: dict[str, list[str]], union: dict[str, str] | None) -> str | None:
        """The set `name` of this lock (as requirements), when resolving it again would give it back: the
        same Python, platform and requirements, and (for an image set) every distribution in it still at
        its version in the `union` of all groups. Else None."""
        lock = self.lock
        if lock is None or (lock.python, lock.platform) != (spec.python.version, spec.python.platform):
            return None
        if any(lock.inputs.get(group) != inputs[group] for group in _SET_GROUPS[name]):
            return None
        if union is not None and any(union.get(pin) != version for pin, version in lock.pins(name).items()):
            return None
        return lock.requirements(name)


def _previous_lock(spec: Spec) -> _PreviousLock:
    try:
        return _PreviousLock(_read_lock(spec))
    except InvalidInputError:
        return _PreviousLock()


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
    no_deps: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`uv pip compile` of `requirements`; with `output`, uv reads that file's pins as preferences, writes
    the result there, and the result is also returned as stdout. `offline` answers from uv's cache only;
    `no_deps` resolves the requirements alone (their index pages, nothing else)."""
    if not requirements:
        return subprocess.CompletedProcess([], 0, "", "")
    source = work / f"{name}.in"
    source.write_text("\n".join(requirements) + "\n")
    argv = [_uv(), "pip", "compile", str(source), "--quiet", "--no-header", "--no-annotate", "--generate-hashes"]
    argv += ["--python-version", spec.python.version, "--python-platform", spec.python.platform]
    if f"{sys.version_info.major}.{sys.version_info.minor}" == spec.python.version:
        argv += ["--python", sys.executable]  # spares uv its interpreter search (a pyenv shim costs 0.15 s)
    if constraints is not None:
        argv += ["--constraint", str(constraints)]
    if output is not None:
        argv += ["--output-file", str(output)]
    if offline:
        argv.append("--offline")
    if no_deps:
        argv.append("--no-deps")
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
    from packaging.requirements import Requirement

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
