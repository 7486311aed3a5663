"""The docker command lines are pure functions of their arguments: no shell, every value one argument; and
what the engines add to a registry's refusal."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mreg._grammar import registry_host
from mreg.engine import with_login_hint
from mreg.engine.buildx import bake_argv, bake_definition, build_argv, build_refs
from mreg.errors import EngineError


def test_build_argv_is_a_plain_argument_list() -> None:
    argv = build_argv(
        Path("/ctx dir"), "train", "reg:5000/m:train-1", network="host", builder="remote", metadata=Path("/t/m.json")
    )
    assert argv == [
        "docker", "buildx", "build", "--progress=plain", "--load", "--target", "train", "--tag", "reg:5000/m:train-1",
        "--metadata-file", "/t/m.json", "--builder", "remote", "--network", "host", "--", "/ctx dir",
    ]  # fmt: skip


def test_one_bake_builds_both_targets_from_one_context() -> None:
    definition = bake_definition(Path("/ctx"), {"train": "m:train-1", "serve": "m:serve-1"}, network="host")
    assert definition == {
        "services": {
            stage: {
                "build": {
                    "context": "/ctx",
                    "dockerfile": "Dockerfile",
                    "target": stage,
                    "tags": [f"m:{stage}-1"],
                    "network": "host",
                    "x-bake": {"output": ["type=docker"]},
                }
            }
            for stage in ("train", "serve")
        }
    }
    assert "network" not in bake_definition(Path("/ctx"), {"train": "m:t"}, network=None)["services"]["train"]["build"]
    assert bake_argv(Path("/tmp/compose.yaml"), ["train", "serve"], builder=None, metadata=Path("/tmp/m.json")) == [
        "docker", "buildx", "bake", "--progress=plain", "--file", "/tmp/compose.yaml", "--metadata-file", "/tmp/m.json",
        "--", "train", "serve",
    ]  # fmt: skip


def test_exported_targets_are_written_to_their_directory_not_loaded() -> None:
    exports = {"serve-inventory": Path("/tmp/out"), "train-inventory": Path('/tmp/a,b"c')}
    services = bake_definition(Path("/ctx"), {"serve": "m:serve-1"}, network=None, exports=exports)["services"]
    assert list(services) == ["serve", "serve-inventory", "train-inventory"]
    assert services["serve-inventory"]["build"] == {
        "context": "/ctx",
        "dockerfile": "Dockerfile",
        "target": "serve-inventory",
        "x-bake": {"output": ["type=local,dest=/tmp/out"]},
    }
    # buildx reads an output as one CSV record: a comma or a quote in the path stays inside its field
    [output] = services["train-inventory"]["build"]["x-bake"]["output"]
    assert next(csv.reader([output])) == ["type=local", 'dest=/tmp/a,b"c']


@pytest.mark.parametrize(
    ("ref", "host"),
    [
        ("127.0.0.1:5000/team/model:train-1", "127.0.0.1:5000"),
        ("registry.example.com/ml/iris", "registry.example.com"),
        ("localhost/iris:serve", "localhost"),
        ("team/model:train", "docker.io"),
        ("python:3.11-slim", "docker.io"),
    ],
)
def test_registry_host(ref: str, host: str) -> None:
    assert registry_host(ref) == host


def test_a_refused_login_says_how_to_log_in() -> None:
    ref = "127.0.0.1:5000/m:serve-1"
    for refusal in ("unauthorized: authentication required", "no basic auth credentials", "pull access denied"):
        message = with_login_hint(ref, f"cannot read {ref} from its registry: {refusal}")
        assert message.endswith(
            "mreg uses Docker's credential store: log in with `docker login 127.0.0.1:5000` (or a credential "
            "helper) with an account that may push there."
        )
    other = "cannot read x: connection refused; permission denied while trying to connect to the Docker daemon"
    assert with_login_hint(ref, other) == other


def test_build_refs_come_from_buildx_metadata_file() -> None:
    baked = {
        "train": {"buildx.build.ref": "default/default/dtqye2zwsdmu6jh2eqvyp7cqn", "image.name": "m:train-1"},
        "serve": {"buildx.build.ref": "ci-builder/ci-builder0/qjg4pbhlecfa11ei511qjzxth"},
        "serve-inventory": {"buildx.build.ref": "default/default/ignoredbecausenotasked"},
    }
    assert build_refs(baked, ["train", "serve"], baked=True) == {
        "train": "default/default/dtqye2zwsdmu6jh2eqvyp7cqn",
        "serve": "ci-builder/ci-builder0/qjg4pbhlecfa11ei511qjzxth",
    }
    single = {"buildx.build.ref": "default/default/tmu0pzgjzxc8bh28b5jvowc54", "containerimage.digest": "sha256:0"}
    assert build_refs(single, ["serve"], baked=False) == {"serve": "default/default/tmu0pzgjzxc8bh28b5jvowc54"}
    # no metadata file, or an older buildx that writes no reference: nothing to report, not an error
    assert build_refs(None, ["train"], baked=True) == {}
    assert build_refs({"train": {"image.name": "m:t"}}, ["train", "serve"], baked=True) == {}


@pytest.mark.parametrize(
    "value", ["default/default", "a/b/c/d", "default/default/UPPER", "x/y/z\nFROM evil", "<b>/n/r", 17, ["a/b/c"]]
)
def test_a_build_ref_that_is_not_one_is_refused(value: object) -> None:
    with pytest.raises(EngineError, match="build reference of target 'train'"):
        build_refs({"buildx.build.ref": value}, ["train"], baked=False)
