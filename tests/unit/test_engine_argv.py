"""The docker command lines are pure functions of their arguments: no shell, every value one argument."""

from __future__ import annotations

from pathlib import Path

from mreg.engine.buildx import bake_argv, bake_definition, build_argv


def test_build_argv_is_a_plain_argument_list() -> None:
    argv = build_argv(Path("/ctx dir"), "train", "reg:5000/m:train-1", network="host", builder="remote")
    assert argv == [
        "docker", "buildx", "build", "--progress=plain", "--load", "--target", "train", "--tag", "reg:5000/m:train-1",
        "--builder", "remote", "--network", "host", "--", "/ctx dir",
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
                }
            }
            for stage in ("train", "serve")
        }
    }
    assert "network" not in bake_definition(Path("/ctx"), {"train": "m:t"}, network=None)["services"]["train"]["build"]
    assert bake_argv(Path("/tmp/compose.yaml"), ["train", "serve"], builder=None) == [
        "docker", "buildx", "bake", "--progress=plain", "--load", "--file", "/tmp/compose.yaml", "--", "train", "serve",
    ]  # fmt: skip
