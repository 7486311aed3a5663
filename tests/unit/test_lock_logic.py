"""The lock's own logic: reading uv's output, merging the image sets into one entry per distribution, and
explaining a conflict. uv runs for real, offline, against a directory of small wheels built here."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import pytest

from mreg.errors import InvalidInputError, LockError
from mreg.indexes import PackageIndexes
from mreg.lock import (
    SetName,
    _conflict,
    _mentions,
    _merge,
    _parse_requirements,
    _previous_lock,
    _PreviousLock,
    _Resolution,
    lock_inputs,
    lock_path,
    read_lock,
    resolve,
    write_lock,
)
from mreg.spec import Spec, load_spec
from tests.support import make_lock

# What uv 0.13.9 printed for `uv pip compile` of joblib==1.3.2, pandas==2.1.4 and NumPy>=2 against PyPI
# (--python-version 3.11 --python-platform x86_64-manylinux_2_36), captured once by hand.
PYPI_CONFLICT = """\
error: No solution found when resolving dependencies
  cause: Because pandas==2.1.4 depends on numpy{python_full_version < '3.12'}>=1.23.2,<2 and you require \
pandas==2.1.4, we can conclude that you require numpy>=1.23.2,<2.
         And because you require numpy>=2, we can conclude that your requirements are unsatisfiable.
"""

WHEELS: list[tuple[str, str, tuple[str, ...]]] = [
    ("joblib", "1.3.2", ()),
    ("numpy", "1.26.4", ()),
    ("numpy", "2.1.0", ()),
    # three releases, so that uv words its explanation exactly as it does against PyPI
    ("pandas", "2.1.3", ("numpy>=1.23.2",)),
    ("pandas", "2.1.4", ('numpy<2,>=1.23.2; python_version < "3.12"',)),
    ("pandas", "2.2.0", ("numpy>=1.26",)),
    ("scikit-learn", "1.3.2", ("numpy>=1.17.3", "joblib>=1.1.1")),
    ("click", "8.1.7", ()),
    ("colorama", "0.4.6", ()),
    ("httptools", "0.6.1", ()),
    (
        "uvicorn",
        "0.27.0",
        (
            "click>=7.0",
            'httptools>=0.5.0; extra == "standard"',
            'colorama>=0.4; sys_platform == "win32" and extra == "standard"',
        ),
    ),
    ("uv", "0.13.9", ()),
    # a web framework whose next release moves the router it pins
    ("starlette", "0.36.3", ()),
    ("starlette", "0.37.2", ()),
    ("fastapi", "0.109.0", ("starlette<0.37,>=0.36.3",)),
    ("fastapi", "0.110.1", ("starlette<0.38,>=0.37.2",)),
]


def build_wheel(directory: Path, name: str, version: str, requires: tuple[str, ...]) -> None:
    """A wheel with no code: the metadata a resolver reads (dependencies, extras) and the RECORD uv unpacks."""
    stem = f"{name.replace('-', '_')}-{version}"
    extras = sorted({extra for requirement in requires for extra in re.findall(r'extra == "([^"]+)"', requirement)})
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Provides-Extra: {extra}\n" for extra in extras)
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    files = {
        f"{stem}.dist-info/METADATA": metadata,
        f"{stem}.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{stem}.dist-info/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{stem}.dist-info/RECORD"])
    with zipfile.ZipFile(directory / f"{stem}-py3-none-any.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    for name, version, requires in WHEELS:
        build_wheel(directory, name, version, requires)
    return directory


@pytest.fixture
def local_index(wheels: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """uv reads only the wheels above, offline, with no configuration file and a cache of its own."""
    for variable in ("UV_INDEX", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_PYTHON"):
        monkeypatch.delenv(variable, raising=False)
    environment = {
        "UV_NO_CONFIG": "1",
        "UV_NO_INDEX": "1",
        "UV_OFFLINE": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_FIND_LINKS": str(wheels),
        "UV_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "uv-cache"),
    }
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    return wheels


def make_spec(directory: Path, *, shared: list[str], train: list[str], serve: list[str]) -> Spec:
    packages = f"shared = {json.dumps(shared)}\ntrain = {json.dumps(train)}\nserve = {json.dumps(serve)}\n"
    (directory / "registry.toml").write_text(f'[model]\nname = "m"\n[packages]\n{packages}')
    return load_spec(directory / "registry.toml")


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def uv_output(*pins: str) -> str:
    """`pins` as `uv pip compile --generate-hashes --no-annotate` writes them (a hash per line, continued)."""
    return "".join(f"{pin} \\\n    --hash={digest(pin)} \\\n    --hash={digest(pin + ' sdist')}\n" for pin in pins)


# -- reading uv's output ---------------------------------------------------------------------------


def test_uv_output_is_read_with_names_normalised_and_every_hash() -> None:
    text = (
        "# a comment line\n\n" + uv_output("Scikit_Learn==1.3.2", "zope.interface==6.1") + "numpy==1.26.4  # pinned\n"
    )
    assert list(_parse_requirements(text)) == [
        ("scikit-learn", "1.3.2", [digest("Scikit_Learn==1.3.2"), digest("Scikit_Learn==1.3.2 sdist")]),
        ("zope-interface", "6.1", [digest("zope.interface==6.1"), digest("zope.interface==6.1 sdist")]),
        ("numpy", "1.26.4", []),
    ]


def test_a_marker_uv_writes_does_not_reach_the_version() -> None:
    text = f"colorama==0.4.6 ; sys_platform == 'win32' \\\n    --hash={digest('colorama')}\n"
    assert list(_parse_requirements(text)) == [("colorama", "0.4.6", [digest("colorama")])]


@pytest.mark.parametrize(
    ("line", "entry"),
    [
        (
            f"uvicorn[standard]==0.27.0 \\\n    --hash={digest('u')}",
            f"uvicorn[standard]==0.27.0  --hash={digest('u')}",  # the continuation joined
        ),
        ("numpy>=1.26", "numpy>=1.26"),
        ("mylib @ https://example.com/mylib-1.0.tar.gz", "mylib @ https://example.com/mylib-1.0.tar.gz"),
        ("-e ./src/mylib", "-e ./src/mylib"),
        ("--index-url https://pypi.org/simple", "--index-url https://pypi.org/simple"),
    ],
    ids=["extras", "range", "direct-url", "editable", "option"],
)
def test_anything_but_an_exact_pin_is_refused_by_line(line: str, entry: str) -> None:
    with pytest.raises(LockError) as caught:
        list(_parse_requirements(uv_output("idna==3.6") + line + "\n"))
    assert str(caught.value) == f"cannot read uv's output line {entry!r}."


# -- merging the sets ------------------------------------------------------------------------------


def test_each_distribution_is_listed_once_with_every_set_that_installs_it() -> None:
    sets: dict[SetName, str] = {
        "base": uv_output("numpy==1.26.4", "Scikit_Learn==1.3.2"),
        "train": uv_output("numpy==1.26.4", "pandas==2.1.4", "scikit-learn==1.3.2"),
        "serve": uv_output("fastapi==0.109.0", "numpy==1.26.4", "scikit_learn==1.3.2"),
        "tools": uv_output("uv==0.13.9"),
    }
    packages = _merge(sets)
    assert [(p.name, p.version, p.sets) for p in packages] == [
        ("fastapi", "0.109.0", ["serve"]),
        ("numpy", "1.26.4", ["base", "train", "serve"]),
        ("pandas", "2.1.4", ["train"]),
        ("scikit-learn", "1.3.2", ["base", "train", "serve"]),
        ("uv", "0.13.9", ["tools"]),
    ]
    numpy = packages[1]
    assert numpy.hashes == sorted([digest("numpy==1.26.4"), digest("numpy==1.26.4 sdist")])


def test_a_set_with_nothing_to_install_contributes_nothing() -> None:
    packages = _merge({"base": "", "train": "", "serve": uv_output("fastapi==0.109.0"), "tools": ""})
    assert [(p.name, p.sets) for p in packages] == [("fastapi", ["serve"])]
    assert _merge({"base": "", "train": "", "serve": "", "tools": ""}) == []


def test_two_versions_of_one_distribution_are_refused() -> None:
    sets: dict[SetName, str] = {
        "train": uv_output("NumPy==1.26.4"),
        "serve": uv_output("numpy==2.1.0"),
    }
    with pytest.raises(LockError) as caught:
        _merge(sets)
    assert str(caught.value) == "uv picked numpy 1.26.4 and 2.1.0 for different sets."


def test_resolve_gives_a_distribution_in_several_images_one_version(local_index: Path, tmp_path: Path) -> None:
    # alone, the base and serve sets would take numpy 2.1.0; the train set's pandas holds every image below 2
    spec = make_spec(
        tmp_path, shared=["Scikit_Learn==1.3.2"], train=["pandas==2.1.4"], serve=["Uvicorn[standard]==0.27.0"]
    )
    lock = resolve(spec)
    assert [(p.name, p.version, p.sets) for p in lock.packages] == [
        ("click", "8.1.7", ["serve"]),
        ("httptools", "0.6.1", ["serve"]),  # the extra's dependency; colorama's marker is for Windows only
        ("joblib", "1.3.2", ["base", "train", "serve"]),
        ("numpy", "1.26.4", ["base", "train", "serve"]),
        ("pandas", "2.1.4", ["train"]),
        ("scikit-learn", "1.3.2", ["base", "train", "serve"]),
        ("uv", "0.13.9", ["tools"]),
        ("uvicorn", "0.27.0", ["serve"]),
    ]
    wheel_hashes = {
        (path.name.split("-")[0].replace("_", "-"), path.name.split("-")[1]): [
            "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        ]
        for path in local_index.iterdir()
    }
    assert all(p.hashes == wheel_hashes[p.name, p.version] for p in lock.packages)
    assert lock.inputs == lock_inputs(spec)
    assert (lock.python, lock.platform) == (spec.python.version, spec.python.platform)


# -- explaining a conflict -------------------------------------------------------------------------


def test_a_conflict_names_the_distribution_the_requirements_and_the_images(tmp_path: Path, local_index: Path) -> None:
    spec = make_spec(tmp_path, shared=["joblib==1.3.2"], train=["pandas==2.1.4"], serve=["NumPy>=2"])
    error = _conflict(spec, tmp_path, lock_inputs(spec), PYPI_CONFLICT, PackageIndexes())
    assert str(error) == "\n".join(
        [
            f"{spec.source}: the packages cannot be locked.",
            "Each image resolves alone, but the train and serve images need different versions of numpy and a "
            "distribution in both images must have one version.",
            "Requirements involved:",
            "  packages.train[0] = pandas==2.1.4",
            "  packages.serve[0] = NumPy>=2",
            "uv says:",
            *(f"  {line}" for line in PYPI_CONFLICT.strip().splitlines()),
        ]
    )


def test_resolve_explains_a_conflict_with_uvs_own_text_below(tmp_path: Path, local_index: Path) -> None:
    spec = make_spec(tmp_path, shared=["joblib==1.3.2"], train=["pandas==2.1.4"], serve=["numpy>=2"])
    with pytest.raises(LockError) as caught:
        resolve(spec)
    ours, _, uvs = str(caught.value).partition("\nuv says:\n")
    assert ours.splitlines() == [
        f"{spec.source}: the packages cannot be locked.",
        "Each image resolves alone, but the train and serve images need different versions of numpy and a "
        "distribution in both images must have one version.",
        "Requirements involved:",
        "  packages.train[0] = pandas==2.1.4",
        "  packages.serve[0] = numpy>=2",
    ]
    assert uvs.startswith("  error: No solution found when resolving dependencies\n")
    assert all(line.startswith("  ") for line in uvs.splitlines())
    assert "numpy>=2" in uvs
    assert "pandas==2.1.4" in uvs


def test_a_conflict_within_one_image_names_that_image(tmp_path: Path, local_index: Path) -> None:
    spec = make_spec(tmp_path, shared=[], train=["joblib==1.3.2"], serve=["pandas==2.1.4", "numpy>=2"])
    with pytest.raises(LockError) as caught:
        resolve(spec)
    ours, _, uvs = str(caught.value).partition("\nuv says:\n")
    assert ours.splitlines() == [
        f"{spec.source}: the packages cannot be locked.",
        "The serve set cannot be resolved on its own.",
        "Requirements involved:",
        "  packages.serve[0] = pandas==2.1.4",
        "  packages.serve[1] = numpy>=2",
    ]
    assert "numpy>=2" in uvs


@pytest.mark.parametrize(
    ("text", "distribution", "mentioned"),
    [
        (PYPI_CONFLICT, "NumPy", True),  # spelled as the spec spells it
        (PYPI_CONFLICT, "numpy", True),  # followed by a marker in braces
        (PYPI_CONFLICT, "pandas", True),
        (PYPI_CONFLICT, "joblib", False),
        (PYPI_CONFLICT, "num", False),
        (PYPI_CONFLICT, "py", False),
        ("Because scikit-learn==1.3.2 depends on", "Scikit_Learn", True),
        ("Because scikit_learn==1.3.2 depends on", "scikit.learn", True),
        ("Because scikit-learn-intelex depends on", "scikit-learn", False),
        ("Because pandas-stubs==2.1 depends on", "pandas", False),
        ("Because types-pandas depends on", "pandas", False),
        ("Because zope.interface>=6 depends on", "zope-interface", True),
        ("Because my.pandas depends on", "pandas", False),
    ],
)
def test_mentions_matches_every_spelling_of_a_whole_name(text: str, distribution: str, mentioned: bool) -> None:
    assert _mentions(text, distribution) is mentioned


# -- relocking -------------------------------------------------------------------------------------

FRAMEWORK = {"shared": ["scikit-learn==1.3.2"], "train": ["pandas==2.1.4"], "serve": ["fastapi==0.109.0"]}
BUMPED = {**FRAMEWORK, "serve": ["fastapi==0.110.1"]}


def test_a_one_pin_relock_moves_only_what_must_move_as_a_full_resolution_does(
    local_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(tmp_path, **FRAMEWORK)
    first = resolve(spec)
    write_lock(spec, first)
    bumped = make_spec(tmp_path, **BUMPED)
    relocked = resolve(bumped)
    assert relocked.pins("serve") == {**first.pins("serve"), "fastapi": "0.110.1", "starlette": "0.37.2"}
    assert relocked.pins("train") == first.pins("train")
    assert relocked.pins("base") == first.pins("base")
    # the same lock as uv resolving every group and set again, with the same previous pins
    monkeypatch.setattr(_Resolution, "union_from_cache", lambda self, previous: False)
    monkeypatch.setattr(_PreviousLock, "kept", lambda self, name, spec, inputs, union: None)
    assert resolve(bumped) == relocked


def test_the_sets_a_change_leaves_alone_keep_their_entries(local_index: Path, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, **FRAMEWORK)
    path = write_lock(spec, resolve(spec))
    forged = "sha256:" + "0" * 64  # proof that pandas' entry is the previous lock's, not uv's again
    text = path.read_text()
    start = text.index('name = "pandas"')
    path.write_text(text[:start] + re.sub(r"sha256:[0-9a-f]{64}", forged, text[start:], count=1))
    relocked = resolve(make_spec(tmp_path, **BUMPED))
    entries = {package.name: package for package in relocked.packages}
    assert entries["pandas"].hashes == [forged]
    assert entries["fastapi"].hashes == [digest_of(local_index / "fastapi-0.110.1-py3-none-any.whl")]


def test_a_set_is_kept_only_when_resolving_it_again_would_give_it_back(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, **FRAMEWORK)
    lock = make_lock(spec, LOCKED_SETS)
    previous = _PreviousLock(lock)
    union = {package.name: package.version for package in lock.packages}
    inputs = lock_inputs(spec)
    assert previous.kept("train", spec, inputs, union) == lock.requirements("train")
    assert previous.kept("tools", spec, inputs, None) == lock.requirements("tools")
    assert previous.kept("train", spec, inputs, {**union, "numpy": "2.1.0"}) is None  # a member moved
    assert previous.kept("serve", spec, inputs, {**union, "pandas": "2.2.0"}) is not None  # not a member
    bumped = make_spec(tmp_path, **BUMPED)
    assert previous.kept("serve", bumped, lock_inputs(bumped), union) is None  # its requirements changed
    assert previous.kept("train", bumped, lock_inputs(bumped), union) == lock.requirements("train")
    other_python = load_spec_text(tmp_path, '[model]\nname = "m"\n[python]\nversion = "3.12"\n')
    assert previous.kept("tools", other_python, lock_inputs(other_python), None) is None
    assert _PreviousLock(None).kept("train", spec, inputs, union) is None


def test_the_distributions_only_changed_images_hold(tmp_path: Path) -> None:
    previous = _PreviousLock(make_lock(make_spec(tmp_path, **FRAMEWORK), LOCKED_SETS))
    assert previous.only_in({"serve"}) == ["fastapi", "starlette"]
    assert previous.only_in({"train"}) == ["pandas"]
    assert previous.only_in({"shared"}) == ["fastapi", "numpy", "pandas", "scikit-learn", "starlette"]
    assert _PreviousLock(None).only_in({"serve"}) == []


@pytest.mark.parametrize("text", ["", "version = 1\n[[packages]\n", 'version = 2\npython = "3.11"\n'])
def test_a_lock_mreg_cannot_read_gives_a_relock_nothing_to_keep(tmp_path: Path, text: str) -> None:
    spec = make_spec(tmp_path, **FRAMEWORK)
    lock_path(spec).write_text(text)
    with pytest.raises(InvalidInputError):
        read_lock(spec)
    assert _previous_lock(spec) == _PreviousLock(None)


LOCKED_SETS = {
    "base": {"numpy": "1.26.4", "scikit-learn": "1.3.2"},
    "train": {"numpy": "1.26.4", "scikit-learn": "1.3.2", "pandas": "2.1.4"},
    "serve": {"numpy": "1.26.4", "scikit-learn": "1.3.2", "fastapi": "0.109.0", "starlette": "0.36.3"},
    "tools": {"uv": "0.13.9"},
}


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def load_spec_text(directory: Path, text: str) -> Spec:
    (directory / "other.toml").write_text(text)
    return load_spec(directory / "other.toml")
