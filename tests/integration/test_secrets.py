"""A private package index with a token: the build installs from it, and the token is nowhere to be found
afterwards (image layers and config, history, labels, lock, build result, record, mreg's output)."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.support import mreg, mreg_json
from tests.support.pypi import NAME, VERSION, PrivateIndex

pytestmark = pytest.mark.docker

SPEC = f"""
[model]
name = "private"
[python]
base_image = "python:3.11-slim"
[packages]
shared = ["{NAME}=={VERSION}"]
"""


def test_a_private_index_token_reaches_only_the_install_steps(tmp_path: Path) -> None:
    token = f"tok-{secrets.token_hex(16)}"
    (tmp_path / "registry.toml").write_text(SPEC)
    with PrivateIndex(token) as index:
        env = {"MREG_EXTRA_INDEX_URL": index.url}
        locked = mreg("lock", cwd=tmp_path, env=env)
        built = mreg("build", "--rebuild", "--json", cwd=tmp_path, env=env)  # never images of an earlier run
        assert any(path.endswith(".whl") for path in index.requests)  # uv downloaded the wheel with the token
    images = json.loads(built.stdout)
    (tmp_path / "model.bin").write_bytes(b"a model")
    record = mreg_json("register", "model.bin", cwd=tmp_path)
    assert f"{NAME}=={VERSION}" in record["packages"]["shared"]

    ran = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", images["serve"]["image"], "-c",
         "import mreg_private_demo; print(mreg_private_demo.VERSION)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert ran.stdout.strip() == VERSION

    places: dict[str, bytes] = {
        "mreg lock output": (locked.stdout + locked.stderr).encode(),
        "mreg build output": (built.stdout + built.stderr).encode(),
        "registry.lock": (tmp_path / "registry.lock").read_bytes(),
        "build result": (tmp_path / ".mreg" / "build.json").read_bytes(),
        "record": json.dumps(record).encode(),
    }
    for stage in ("train", "serve"):
        image = images[stage]["image"]
        places[f"{stage} image (docker save)"] = subprocess.run(
            ["docker", "save", image], capture_output=True, check=True
        ).stdout
        places[f"{stage} history"] = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image], capture_output=True, check=True
        ).stdout
        places[f"{stage} config"] = subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, check=True
        ).stdout
    assert len(places["serve image (docker save)"]) > 10_000_000
    for where, data in places.items():
        assert token.encode() not in data, f"the token leaked into the {where}"
        assert b"mreg:tok-" not in data, f"the credentials leaked into the {where}"


def test_the_classic_builder_refuses_a_private_index(tmp_path: Path) -> None:
    (tmp_path / "registry.toml").write_text('[model]\nname = "private"\n[python]\nbase_image = "python:3.11-slim"\n')
    mreg("lock", cwd=tmp_path)
    result = mreg(
        "build", "--engine", "docker", cwd=tmp_path, check=False,
        env={"MREG_EXTRA_INDEX_URL": "http://mreg:tok-classic@127.0.0.1:9/simple"},
    )  # fmt: skip
    assert result.returncode == 4
    assert "the classic builder cannot pass secrets" in result.stderr
    assert "tok-classic" not in result.stderr
