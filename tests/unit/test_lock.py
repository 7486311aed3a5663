"""The lock file without resolving anything: its model, its text, staleness and damage."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mreg.errors import InvalidInputError
from mreg.lock import Lock, load_lock, lock_path, write_lock
from mreg.spec import Spec, load_spec
from tests.support import REPO, make_lock

SPEC = '[model]\nname = "m"\n[packages]\nshared = ["requests==2.31.0"]\nserve = ["elasticsearch==7.17.9"]\n'
SETS = {
    "base": {"requests": "2.31.0", "urllib3": "1.26.20"},
    "train": {"requests": "2.31.0", "urllib3": "1.26.20"},
    "serve": {"requests": "2.31.0", "urllib3": "1.26.20", "elasticsearch": "7.17.9"},
    "tools": {"uv": "0.13.9"},
}


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    (tmp_path / "registry.toml").write_text(SPEC)
    return load_spec(tmp_path / "registry.toml")


def test_written_lock_reads_back_identically(spec: Spec) -> None:
    lock = make_lock(spec, SETS)
    path = write_lock(spec, lock)
    assert path == spec.root / "registry.lock"
    assert load_lock(spec) == lock
    assert lock.to_toml() == load_lock(spec).to_toml()
    assert path.read_text().startswith("# Written by `mreg lock` from registry.toml.")


def test_each_distribution_is_listed_once_with_its_sets(spec: Spec) -> None:
    data = tomllib.loads(make_lock(spec, SETS).to_toml())
    names = [package["name"] for package in data["packages"]]
    assert names == sorted(set(names))
    urllib3 = next(package for package in data["packages"] if package["name"] == "urllib3")
    assert urllib3["sets"] == ["base", "train", "serve"]


def test_requirements_text_is_hash_pinned(spec: Spec) -> None:
    lock = make_lock(spec, SETS)
    lines = lock.requirements("serve").splitlines()
    assert [line.split(" ")[0] for line in lines] == ["elasticsearch==7.17.9", "requests==2.31.0", "urllib3==1.26.20"]
    assert all(" --hash=sha256:" in line for line in lines)
    assert lock.pins("train") == {"requests": "2.31.0", "urllib3": "1.26.20"}


def test_bundled_lock_matches_the_bundled_spec() -> None:
    lock = load_lock(load_spec(REPO / "registry.toml"))
    assert lock.pins("serve")["scikit-learn"] == "1.3.2"
    assert lock.pins("train")["numpy"] == lock.pins("serve")["numpy"]


def test_missing_lock(spec: Spec) -> None:
    with pytest.raises(InvalidInputError) as caught:
        load_lock(spec)
    assert str(caught.value) == f"{lock_path(spec)}: no lock file; run `mreg lock`."


@pytest.mark.parametrize(
    ("edit", "changed"),
    [
        (('serve = ["elasticsearch==7.17.9"]', 'serve = ["elasticsearch==7.17.8"]'), "packages.serve"),
        (("[packages]", '[python]\nversion = "3.12"\n[packages]'), "python.version"),
        (('shared = ["requests==2.31.0"]', 'shared = ["requests==2.31.0", "idna"]'), "packages.shared"),
    ],
)
def test_stale_lock_names_what_changed(spec: Spec, edit: tuple[str, str], changed: str) -> None:
    write_lock(spec, make_lock(spec, SETS))
    spec.source.write_text(SPEC.replace(*edit))
    with pytest.raises(InvalidInputError) as caught:
        load_lock(load_spec(spec.source))
    assert str(caught.value) == (
        f"{lock_path(spec)}: out of date: {changed} changed in registry.toml since it was written; run `mreg lock`."
    )


def test_package_order_in_the_spec_does_not_make_a_lock_stale(spec: Spec) -> None:
    write_lock(spec, make_lock(spec, SETS))
    spec.source.write_text(SPEC.replace('["requests==2.31.0"]', '["requests == 2.31.0"]'))
    assert isinstance(load_lock(load_spec(spec.source)), Lock)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('name = "urllib3"', 'name = "urllib3 --index-url http://evil"'),
        ('version = "1.26.20"', 'version = "1.26.20; rm -rf /"'),
        ("sha256:", "md5:"),
        ("version = 1\n", "version = 2\n"),
        ("[[packages]]", "[[packages]\n"),
    ],
)
def test_damaged_lock_is_refused_by_name(spec: Spec, old: str, new: str) -> None:
    path = write_lock(spec, make_lock(spec, SETS))
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(InvalidInputError) as caught:
        load_lock(spec)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a lock file mreg can read (")
    assert message.endswith("); run `mreg lock`.")
