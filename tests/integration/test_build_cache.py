"""Layer order and reuse: a serve-only change rebuilds nothing of base or train (the train image stays the
same image), a train-only change nothing of base or serve, and an unchanged spec builds nothing."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.support import mreg, mreg_json

pytestmark = pytest.mark.docker

SPEC = """
[model]
name = "layers-{tag}"
[python]
base_image = "python:3.11-slim"
[packages]
shared = ["idna==3.7"]
train = {train}
serve = {serve}
"""


def steps(build_output: str) -> tuple[Counter[str], Counter[str]]:
    """Build steps by Dockerfile stage (FROM is no step): every step listed, and the steps BuildKit executed
    (not taken from its cache). A step shared by several targets is listed under one of them."""
    pattern = r"^#(\d+) \[(?:[\w.-]+ )?(uv|base|train|serve) \d+/\d+\] (?!FROM )"
    names = dict(re.findall(pattern, build_output, re.MULTILINE))
    cached = set(re.findall(r"^#(\d+) CACHED", build_output, re.MULTILINE))
    done = set(re.findall(r"^#(\d+) DONE", build_output, re.MULTILINE))
    ran = Counter(stage for step, stage in names.items() if step in done and step not in cached)
    return Counter(names.values()), ran


def write_spec(project: Path, tag: str, train: list[str], serve: list[str]) -> None:
    text = SPEC.format(tag=tag, train=str(train).replace("'", '"'), serve=str(serve).replace("'", '"'))
    (project / "registry.toml").write_text(text)


def test_each_change_rebuilds_only_its_own_stage(tmp_path: Path) -> None:
    tag = secrets.token_hex(6)  # images of an earlier run must not be found up to date
    write_spec(tmp_path, tag, train=[], serve=[])
    first = mreg_json("build", cwd=tmp_path)

    unchanged = mreg("--verbose", "build", "--json", cwd=tmp_path)
    assert steps(unchanged.stderr) == (Counter(), Counter())
    assert unchanged.stderr.count("is up to date") == 2

    write_spec(tmp_path, tag, train=[], serve=["six==1.16.0"])
    serve_change = mreg("--verbose", "build", "--json", cwd=tmp_path)
    seen, ran = steps(serve_change.stderr)  # (serve's own step may come from an earlier run's cache)
    assert seen["base"] > 0  # (the parser found the steps it counts)
    assert seen["serve"] > 0
    assert seen["train"] == 0  # only serve's target was built
    assert ran["base"] == ran["train"] == ran["uv"] == 0
    after_serve = json.loads(serve_change.stdout)
    assert after_serve["train"]["digest"] == first["train"]["digest"]  # the same train image, only a new tag
    assert after_serve["serve"]["digest"] != first["serve"]["digest"]

    write_spec(tmp_path, tag, train=["certifi==2024.2.2"], serve=["six==1.16.0"])
    train_change = mreg("--verbose", "build", "--json", cwd=tmp_path)
    seen, ran = steps(train_change.stderr)
    assert seen["base"] > 0
    assert seen["train"] > 0
    assert seen["serve"] == 0
    assert ran["base"] == ran["serve"] == ran["uv"] == 0
    after_train = json.loads(train_change.stdout)
    assert after_train["serve"]["digest"] == after_serve["serve"]["digest"]
    assert after_train["train"]["digest"] != after_serve["train"]["digest"]
    built = {after[stage]["ref"] for after in (first, after_serve, after_train) for stage in ("train", "serve")}
    subprocess.run(["docker", "image", "rm", *built], check=True, capture_output=True)
