"""The lock and the skew guard on real resolutions (uv against PyPI) and real images."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

from tests.support import mreg, mreg_json

pytestmark = pytest.mark.docker

# requests lets urllib3 be 2.x; the serve-only elasticsearch 7 caps it below 2: both images must get 1.26.x
CAPPED = """
[model]
name = "capped"
[python]
base_image = "python:3.11-slim"
[packages]
shared = ["requests==2.31.0"]
serve = ["elasticsearch==7.17.9"]
"""
INVENTORY = (
    "import importlib.metadata as m, json, re\n"
    "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version for d in m.distributions()}))"
)


def installed(image: str) -> dict[str, str]:
    """The distributions inside `image`, listed by the test itself (not by mreg)."""
    argv = ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", INVENTORY]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result: dict[str, str] = json.loads(output)
    return result


def lock_versions(project: Path) -> dict[str, tuple[str, list[str]]]:
    data = tomllib.loads((project / "registry.lock").read_text())
    return {package["name"]: (package["version"], package["sets"]) for package in data["packages"]}


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("capped")
    (project / "registry.toml").write_text(CAPPED)
    mreg("lock", cwd=project)
    return project


def test_a_serve_only_cap_on_a_shared_dependency_holds_for_both_images(capped: Path) -> None:
    version, sets = lock_versions(capped)["urllib3"]
    assert Version(version) < Version("2")
    assert sets == ["base", "train", "serve"]
    built = mreg_json("build", cwd=capped)
    train, serve = installed(built["train"]["image"]), installed(built["serve"]["image"])
    assert train["urllib3"] == serve["urllib3"] == version
    assert "elasticsearch" in serve
    assert "elasticsearch" not in train
    assert {name: train[name] for name in set(train) & set(serve)} == {
        name: serve[name] for name in set(train) & set(serve)
    }


def test_a_stale_lock_is_refused_by_build_locked_and_relocked_by_build(capped: Path, tmp_path: Path) -> None:
    project = tmp_path / "stale"
    project.mkdir()
    (project / "registry.toml").write_text(CAPPED)
    (project / "registry.lock").write_text((capped / "registry.lock").read_text())
    (project / "registry.toml").write_text(CAPPED.replace("elasticsearch==7.17.9", "elasticsearch==7.17.8"))
    refused = mreg("build", "--locked", cwd=project, check=False)
    assert refused.returncode == 2
    assert refused.stderr == (
        f"error: {project}/registry.lock: out of date: packages.serve changed in registry.toml since it was "
        "written; run `mreg lock`.\n"
    )
    relocked = mreg("build", "--target", "serve", cwd=project)
    assert "mreg: registry.lock is out of date (packages.serve changed); locking first\n" in relocked.stderr
    assert lock_versions(project)["elasticsearch"][0] == "7.17.8"
    mreg("lock", "--check", cwd=project)


def test_the_set_resolutions_fall_back_to_the_network_without_a_cache(capped: Path, tmp_path: Path) -> None:
    # each image's set is first resolved from uv's cache (offline); with caching off that fails, and the
    # resolution must be asked again online and give the same lock
    (tmp_path / "registry.toml").write_text(CAPPED)
    mreg("lock", cwd=tmp_path, env={"UV_NO_CACHE": "1"})
    assert (tmp_path / "registry.lock").read_text() == (capped / "registry.lock").read_text()


def test_an_impossible_spec_fails_the_lock_naming_the_distribution_and_groups(tmp_path: Path) -> None:
    (tmp_path / "registry.toml").write_text(CAPPED.replace("[packages]", '[packages]\ntrain = ["urllib3>=2"]'))
    result = mreg("lock", cwd=tmp_path, check=False)
    assert result.returncode == 2
    message = result.stderr
    assert message.startswith(f"error: {tmp_path}/registry.toml: the packages cannot be locked.\n")
    assert (
        "Each image resolves alone, but the train and serve images need different versions of urllib3 and a "
        "distribution in both images must have one version." in message
    )
    assert "  packages.train[0] = urllib3>=2\n" in message
    assert "  packages.serve[0] = elasticsearch==7.17.9\n" in message
    assert "uv says:" in message
    assert "elasticsearch==7.17.9 depends on urllib3" in message
    assert not (tmp_path / "registry.lock").exists()


def test_a_tampered_hash_fails_the_build(capped: Path, tmp_path: Path) -> None:
    project = tmp_path / "tampered"
    project.mkdir()
    (project / "registry.toml").write_text(CAPPED)
    text = (capped / "registry.lock").read_text()
    block = re.search(r'name = "idna"\n.*?hashes = \[\n(.*?)\]', text, re.DOTALL)
    assert block is not None
    forged = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, block.group(1))
    (project / "registry.lock").write_text(text.replace(block.group(1), forged))
    result = mreg("build", "--target", "train", cwd=project, check=False)
    assert result.returncode == 4
    assert "Hash mismatch for `idna==" in result.stderr
    assert not (project / ".mreg" / "build.json").exists()


def test_the_skew_guard_catches_an_image_that_drifted_from_the_lock(capped: Path, tmp_path: Path) -> None:
    project = tmp_path / "drift"
    (project / "templates").mkdir(parents=True)
    (project / "templates" / "Dockerfile.j2").write_text(
        '{% extends "mreg/Dockerfile.j2" %}\n'
        "{% block serve %}{{ super() }}\n"
        "RUN --mount=type=bind,from=uv,source=/opt/uv/bin/uv,target=/usr/local/bin/uv \\\n"
        '    uv pip install --python "$VIRTUAL_ENV/bin/python" urllib3==2.2.3\n'
        "{% endblock %}\n"
    )
    (project / "registry.toml").write_text(CAPPED + '[render]\ntemplate_dir = "templates"\n')
    (project / "registry.lock").write_text((capped / "registry.lock").read_text())
    pinned = lock_versions(capped)["urllib3"][0]
    result = mreg("build", cwd=project, check=False)
    assert result.returncode == 7
    assert f"  - urllib3 is {pinned} in the train image but 2.2.3 in the serve image\n" in result.stderr
    assert f"  - the serve image has urllib3 2.2.3, the lock pins {pinned}\n" in result.stderr
    assert not (project / ".mreg" / "build.json").exists()
    refs = re.findall(r"the build listed the distributions installed in (\S+)", result.stderr)
    [drifted] = [ref for ref in refs if ":serve-" in ref]
    inspected = subprocess.run(["docker", "image", "inspect", drifted], capture_output=True, check=False)
    assert inspected.returncode != 0  # untagged, so that the next build cannot reuse it
