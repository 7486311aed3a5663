"""Property-based rendering: no value the spec accepts can add, remove or split a Dockerfile instruction.

Specs are generated from the grammar the pydantic models accept (model names, PEP 508 requirements with
hostile marker literals, Debian package names, label keys and arbitrary printable label values and
commands), validated with `Spec.model_validate` and rendered with a made-up lock. The Dockerfile is parsed
with BuildKit's own parser (the `dockerfile` package) and checked against what was put in.

Only printable text is generated: control, format and line-separator characters are refused by `load_spec`
(`_unprintable`), not by the models themselves.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import dockerfile
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import ValidationError

from mreg._inventory import INVENTORY_SCRIPT
from mreg.lock import UV_VERSION, Lock
from mreg.render import LABEL_PREFIX, OCI_PREFIX, render, stage_labels, template_variables
from mreg.spec import GROUPS, RESERVED_LABEL_PREFIXES, STAGES, Spec
from tests.support import make_lock

MREG_LABELS = {
    f"{OCI_PREFIX}title",
    f"{OCI_PREFIX}description",
    f"{OCI_PREFIX}base.name",
    f"{LABEL_PREFIX}model",
    f"{LABEL_PREFIX}stage",
    f"{LABEL_PREFIX}python",
    f"{LABEL_PREFIX}packages",
}
STAGE_OF_GROUP = {"shared": "base", "train": "train", "serve": "serve"}
# 2,500 examples in about 45 s: generating whole specs is what takes the time
SETTINGS = settings()  # the profile's (tests/conftest.py): thorough under CI, quick elsewhere

# --- strategies --------------------------------------------------------------------------------------------

# What load_spec lets through: anything but control (Cc), format (Cf), surrogate (Cs) and line/paragraph
# separator (Zl, Zp) characters. Private-use and unassigned code points and every kind of space stay in.
PRINTABLE = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp"))
FRAGMENTS = (
    '"', "'", "\\", "$", "`", ";", "#", "&&", "|", "=", " ", "\u00a0", "\u3000", "\u2003", "[", "]", "{", "}",
    "${X}", "$HOME", "$(id)", "`id`", '\\"', "\\$", "\\\\", "\\n", "\\", '"]', '", "', "' \"", "FROM scratch",
    "RUN id", "LABEL x=y", " \\", "--mount=type=bind", "é", "😀", "\U0010fffd",
)  # fmt: skip


def hostile_text(
    *, min_size: int = 0, max_size: int = 60, alphabet: st.SearchStrategy[str] = PRINTABLE
) -> st.SearchStrategy[str]:
    """Printable text made of shell and Dockerfile metacharacters, escapes and arbitrary characters."""
    pieces = st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet, min_size=1, max_size=8))
    texts = st.lists(pieces, min_size=1 if min_size else 0, max_size=8).map("".join)
    return texts.filter(lambda text: min_size <= len(text) <= max_size)


LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
ALNUM = LOWER + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def word(first: str, rest: str, *, max_size: int, min_size: int = 0, last: str | None = None) -> Any:
    """A first character from `first`, then up to `max_size` more from `rest` (the last one from `last`)."""
    body = st.text(rest, min_size=min_size, max_size=max_size)
    if last is None:
        return st.builds(str.__add__, st.sampled_from(first), body)
    tail = st.none() | st.builds(str.__add__, body, st.sampled_from(last))
    return st.builds(lambda head, more: head + (more or ""), st.sampled_from(first), tail)


def joined(parts: st.SearchStrategy[str], separators: st.SearchStrategy[str], *, max_size: int) -> Any:
    """parts[0] sep parts[1] sep ...: one to `max_size` parts."""
    pairs = st.lists(st.tuples(separators, parts), max_size=max_size - 1)
    return st.builds(lambda head, more: head + "".join(sep + part for sep, part in more), parts, pairs)


# The grammar of each field, as the models state it (spec.py and refs.py), built from cheap primitives
MODEL_NAMES = word(LOWER, LOWER + "._-", max_size=63).filter(lambda name: ".." not in name)
PYTHON_VERSIONS = st.integers(0, 99).map(lambda minor: f"3.{minor}")
PLATFORMS = st.builds("{}-manylinux_2_{}".format, st.sampled_from(["x86_64", "aarch64"]), st.integers(0, 99))
DOMAINS = st.sampled_from(["localhost:5000", "registry.example.com", "ghcr.io", "Docker.IO", "127.0.0.1:5000"])
PATH_COMPONENTS = joined(
    st.text(LOWER, min_size=1, max_size=8), st.sampled_from([".", "_", "__", "-", "---"]), max_size=3
)
PATHS = st.lists(PATH_COMPONENTS, min_size=1, max_size=3).map("/".join)
REPOSITORIES = st.builds(lambda domain, path: f"{domain}/{path}" if domain else path, st.none() | DOMAINS, PATHS)
TAGS = word(ALNUM + "_", ALNUM + "_.-", max_size=20)
DIGESTS = st.binary(min_size=32, max_size=32).map(lambda raw: f"sha256:{raw.hex()}")
BASE_IMAGES = st.builds(
    lambda repository, tag, digest: repository + (f":{tag}" if tag else "") + (f"@{digest}" if digest else ""),
    REPOSITORIES,
    st.none() | TAGS,
    st.none() | DIGESTS,
)
DEBIAN_NAMES = word(LOWER, LOWER + "+.-", min_size=1, max_size=30)
LABEL_KEYS = (
    joined(st.text(LOWER, min_size=1, max_size=6), st.sampled_from(".-_"), max_size=5)
    | st.sampled_from(["io.mreg", "io.mregx.a", "org.opencontainers", "org.opencontainers.imagex", "a-b_c.d"])
).filter(lambda key: not key.startswith(RESERVED_LABEL_PREFIXES))
LABEL_VALUES = hostile_text(max_size=200)
ARGUMENTS = hostile_text(min_size=1, max_size=80)
COMMANDS = st.none() | st.lists(ARGUMENTS, min_size=1, max_size=4)
VERSIONS = st.lists(st.integers(0, 999), min_size=1, max_size=4).map(lambda parts: ".".join(map(str, parts)))
PINS = st.sampled_from(["1.0", "1.26.4", "2.31.0", "0.13.9", "3.0.0rc1", "2024.1", "1.0.post1", "4.2.1.dev3"])

DISTRIBUTION_NAMES = word(ALNUM, ALNUM + "._-", max_size=12, last=ALNUM)
EXTRAS = st.lists(word(LOWER[:26], LOWER + "_-", max_size=5, last=LOWER), max_size=2)
OPERATORS = st.sampled_from(["==", "!=", ">=", "<=", ">", "<", "~="])
MARKER_VARIABLES = st.sampled_from(
    ["os_name", "sys_platform", "platform_release", "platform_version", "platform_machine", "implementation_name"]
)


@st.composite
def specifiers(draw: st.DrawFn) -> str:
    """A version specifier set, arbitrary equality (`===`, any non-space text) included."""
    if draw(st.integers(0, 5)) == 0:
        token = draw(st.text(st.sampled_from("abc019.+-_$`'\"{}(!&|<>*=@%"), min_size=1, max_size=10))
        return f"==={token}"
    clauses = []
    for _ in range(draw(st.integers(0, 2))):
        operator = draw(OPERATORS)
        version = draw(VERSIONS)
        if operator == "~=" and "." not in version:
            version += ".0"
        if operator in ("==", "!=") and draw(st.booleans()):
            version += ".*"
        clauses.append(f"{operator}{version}")
    return ",".join(clauses)


@st.composite
def markers(draw: st.DrawFn) -> str:
    """`var op 'literal'` clauses joined with and/or; the literal holds shell metacharacters."""
    clauses = []
    for _ in range(draw(st.integers(1, 3))):
        quote = draw(st.sampled_from(["'", '"']))
        # packaging decodes Python escapes in marker literals: keep backslashes out of them
        literal = draw(hostile_text(max_size=30)).replace(quote, "").replace("\\", "")
        variable = draw(MARKER_VARIABLES)
        operator = draw(st.sampled_from(["==", "!=", "in", "not in"]))
        clause = f"{variable} {operator} {quote}{literal}{quote}"
        if draw(st.booleans()):
            clause = f"{quote}{literal}{quote} {operator} {variable}"
        clauses.append(clause)
    joiner = draw(st.sampled_from([" and ", " or "]))
    return joiner.join(clauses)


@st.composite
def requirements(draw: st.DrawFn) -> tuple[str, str]:
    """(distribution name, requirement text)."""
    name = draw(DISTRIBUTION_NAMES)
    text = name
    extras = draw(EXTRAS)
    if extras:
        text += f"[{','.join(extras)}]"
    space = draw(st.sampled_from(["", " "]))
    text += space + draw(specifiers())
    if draw(st.booleans()):
        text += f"{space};{space or draw(st.sampled_from(['', ' ']))}{draw(markers())}"
    return name, text


def in_groups(draw: st.DrawFn, items: list[str]) -> dict[str, list[str]]:
    """Each item in one group (shared, train or serve), drawn."""
    chosen = draw(st.lists(st.sampled_from(GROUPS), min_size=len(items), max_size=len(items)))
    return {group: [item for item, its in zip(items, chosen, strict=True) if its == group] for group in GROUPS}


@st.composite
def spec_data(draw: st.DrawFn) -> dict[str, Any]:
    """A registry.toml as a dict, from the grammar the models accept."""
    reqs = draw(st.lists(requirements(), max_size=5, unique_by=lambda pair: canonicalize_name(pair[0])))
    apt = draw(st.lists(DEBIAN_NAMES, max_size=5, unique=True))
    python: dict[str, str] = {"version": draw(PYTHON_VERSIONS), "platform": draw(PLATFORMS)}
    base_image = draw(st.none() | BASE_IMAGES)
    if base_image is not None:
        python["base_image"] = base_image
    images: dict[str, Any] = {"labels": draw(st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=4))}
    repository = draw(st.none() | REPOSITORIES)
    if repository is not None:
        images["repository"] = repository
    stages: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        command = draw(COMMANDS)
        stages[stage] = {} if command is None else {"command": command}
    return {
        "model": {"name": draw(MODEL_NAMES)},
        "python": python,
        "packages": in_groups(draw, [text for _, text in reqs]),
        "system_packages": in_groups(draw, apt),
        "images": images,
        "stages": stages,
    }


# --- helpers -----------------------------------------------------------------------------------------------


def validated(data: dict[str, Any]) -> Spec:
    """The spec the models make of `data`; examples the models refuse are skipped."""
    try:
        return Spec.model_validate(data)
    except ValidationError:
        assume(False)
        raise  # unreachable: assume(False) raises


def lock_for(spec: Spec, pin: Callable[[str], str] = lambda requirement: "1.0") -> Lock:
    """A lock pinning each declared distribution; base is shared, each image adds its own group."""

    def pins(group: str) -> dict[str, str]:
        return {str(canonicalize_name(Requirement(r).name)): pin(r) for r in getattr(spec.packages, group)}

    shared = pins("shared")
    sets = {
        "base": shared,
        "train": {**shared, **pins("train")},
        "serve": {**shared, **pins("serve")},
        "tools": {"uv": UV_VERSION},
    }
    return make_lock(spec, sets)


def structure(spec: Spec) -> tuple[tuple[bool, ...], tuple[bool, ...], tuple[bool, ...]]:
    """What decides the Dockerfile's instructions: which groups and stages have anything."""
    return (
        tuple(bool(getattr(spec.packages, group)) for group in GROUPS),
        tuple(bool(getattr(spec.system_packages, group)) for group in GROUPS),
        tuple(spec.stages_for(stage).command is not None for stage in STAGES),
    )


@lru_cache(maxsize=256)
def benign_instructions(shape: tuple[tuple[bool, ...], ...], buildkit: bool) -> list[str]:
    """The instructions of a plain spec with the same shape."""
    packages, apt, commands = shape
    data = {
        "model": {"name": "m"},
        "packages": {g: [f"pkg-{g}"] for g, on in zip(GROUPS, packages, strict=True) if on},
        "system_packages": {g: [f"apt-{g}"] for g, on in zip(GROUPS, apt, strict=True) if on},
        "stages": {s: {"command": ["run"]} for s, on in zip(STAGES, commands, strict=True) if on},
    }
    spec = Spec.model_validate(data)
    return instructions(render(spec, lock_for(spec), buildkit=buildkit).dockerfile)


def instructions(text: str) -> list[str]:
    return [command.cmd for command in dockerfile.parse_string(text)]


def by_stage(text: str) -> dict[str, list[Any]]:
    """The parsed instructions of each stage (`FROM ... AS name`), FROM included."""
    stages: dict[str, list[Any]] = {}
    current: list[Any] = []
    for command in dockerfile.parse_string(text):
        if command.cmd == "FROM":
            assert len(command.value) == 3, command
            assert command.value[1].upper() == "AS", command
            current = stages.setdefault(command.value[2], [])
            assert not current, f"stage {command.value[2]} declared twice"
        current.append(command)
    return stages


def unquote_label(token: str) -> str:
    """Undo a double-quoted Dockerfile string: only \\", \\\\ and \\$ may be escaped, no bare quote inside."""
    assert len(token) >= 2, token
    assert token[0] == token[-1] == '"', token
    inner = token[1:-1]
    out: list[str] = []
    index = 0
    while index < len(inner):
        char = inner[index]
        if char == "\\":
            assert index + 1 < len(inner), f"dangling backslash in {token!r}"
            escaped = inner[index + 1]
            assert escaped in '"\\$', f"unexpected escape \\{escaped} in {token!r}"
            out.append(escaped)
            index += 2
            continue
        assert char != '"', f"unescaped quote in {token!r}"
        assert char != "$", f"unescaped $ in {token!r}"
        out.append(char)
        index += 1
    return "".join(out)


def installed_by_apt(command: Any, *, buildkit: bool) -> list[str]:
    """The package words of an `apt-get install` RUN line, split as the shell splits them."""
    words = shlex.split(command.value[0])
    assert "apt-get" in words, command
    rest = words[words.index("--no-install-recommends") + 1 :]
    if buildkit:
        assert "&&" not in rest, words  # the names are the line's tail
        return rest
    assert rest[-4:] == ["&&", "rm", "-rf", "/var/lib/apt/lists/*"], words
    return rest[:-4]


# --- properties --------------------------------------------------------------------------------------------


def check_rendering(spec: Spec, data: dict[str, Any], lock: Lock, *, buildkit: bool) -> None:
    text = render(spec, lock, buildkit=buildkit).dockerfile

    # (a) the same instructions as a benign spec of the same shape
    assert instructions(text) == benign_instructions(structure(spec), buildkit)
    stages = by_stage(text)
    inventories = ["train-inventory-run", "train-inventory", "serve-inventory-run", "serve-inventory"]
    assert list(stages) == (["uv"] if buildkit else []) + ["base", "train", "serve"] + (inventories if buildkit else [])
    for stage in ("train", "serve") if buildkit else ():  # the skew guard's inventory: nothing from the spec
        run = stages[f"{stage}-inventory-run"]
        assert [(c.cmd, c.value) for c in run] == [
            ("FROM", (stage, "AS", f"{stage}-inventory-run")),
            ("RUN", ("python", "-c", INVENTORY_SCRIPT, "/tmp/inventory.json")),
        ]

    for name in ("uv", "base") if buildkit else ("base",):
        assert stages[name][0].value[0] == spec.python.image
        assert stages[name][0].flags == (f"--platform={spec.python.docker_platform}",)

    # (b) labels: exactly the expected keys, every value as it was put in
    for stage in STAGES:
        labels = [command for command in stages[stage] if command.cmd == "LABEL"]
        assert len(labels) == 1
        tokens = labels[0].value
        assert len(tokens) % 2 == 0, tokens
        pairs = [(unquote_label(tokens[i]), unquote_label(tokens[i + 1])) for i in range(0, len(tokens), 2)]
        decoded = dict(pairs)
        assert len(decoded) == len(pairs), "a label key appears twice"
        assert set(decoded) == MREG_LABELS | set(data["images"]["labels"])
        for key, value in data["images"]["labels"].items():
            assert decoded[key] == value
        assert decoded == stage_labels(spec, lock, stage)
        assert json.loads(decoded[f"{LABEL_PREFIX}packages"]) == [f"{n}=={v}" for n, v in lock.pins(stage).items()]

    # (c) the apt-get lines hold exactly the sorted system packages, each a whole word
    for group in GROUPS:
        runs = [c for c in stages[STAGE_OF_GROUP[group]] if c.cmd == "RUN" and "apt-get install" in c.value[0]]
        names = sorted(getattr(spec.system_packages, group))
        assert [installed_by_apt(run, buildkit=buildkit) for run in runs] == ([names] if names else [])
        if names and buildkit:
            assert shlex.split(runs[0].value[0])[-len(names) :] == names
    check = next(c for c in stages["base"] if c.cmd == "RUN" and c.value[0].startswith("python3 -c "))
    variables = template_variables(spec, lock, buildkit=buildkit)
    assert shlex.split(check.value[0])[:3] == ["python3", "-c", variables["python_check"]]

    # (d) CMD is the JSON form of the command, argument for argument
    for stage in STAGES:
        cmds = [command for command in stages[stage] if command.cmd == "CMD"]
        command = data["stages"][stage].get("command")
        if command is None:
            assert cmds == []
        else:
            assert len(cmds) == 1
            assert cmds[0].json
            assert list(cmds[0].value) == command


@SETTINGS
@given(data=spec_data(), buildkit=st.booleans(), pins=st.lists(PINS, min_size=1, max_size=4))
def test_no_accepted_spec_changes_the_dockerfile_structure(
    data: dict[str, Any], buildkit: bool, pins: list[str]
) -> None:
    spec = validated(data)
    lock = lock_for(spec, lambda requirement: pins[len(requirement) % len(pins)])
    check_rendering(spec, data, lock, buildkit=buildkit)


@SETTINGS
@given(
    labels=st.dictionaries(LABEL_KEYS, hostile_text(max_size=1024), min_size=1, max_size=3),
    train=st.lists(hostile_text(min_size=1, max_size=1024), min_size=1, max_size=4),
    serve=COMMANDS,
    buildkit=st.booleans(),
)
def test_label_values_and_commands_round_trip(
    labels: dict[str, str], train: list[str], serve: list[str] | None, buildkit: bool
) -> None:
    data: dict[str, Any] = {
        "model": {"name": "m"},
        "images": {"labels": labels},
        "stages": {"train": {"command": train}, "serve": {} if serve is None else {"command": serve}},
    }
    spec = validated(data)
    check_rendering(spec, data, lock_for(spec), buildkit=buildkit)


@settings(max_examples=settings().max_examples // 2)
@given(value=st.text(PRINTABLE, min_size=1, max_size=1024))
def test_any_printable_label_value_and_argument_round_trip(value: str) -> None:
    data: dict[str, Any] = {
        "model": {"name": "m"},
        "images": {"labels": {"note": value}},
        "stages": {"train": {"command": [value]}, "serve": {"command": ["sh", "-c", value]}},
    }
    spec = validated(data)
    check_rendering(spec, data, lock_for(spec), buildkit=True)
