"""`register` without Docker: it needs a saved build result of the current spec, and it is all or nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mreg import pipeline
from mreg.engine import Engine
from mreg.errors import InvalidInputError, StorageError
from mreg.records import Record
from mreg.spec import Spec, load_spec
from tests.support import DIGESTS, copy_example, mreg, save_build


def register(spec: Spec, model: Path) -> Record:
    """Register without Docker: a model that is not ONNX never opens the engine."""

    def no_engine() -> Engine:
        raise AssertionError("register opened the engine for a model that is not ONNX")

    return pipeline.register(spec, model, engine=no_engine)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = copy_example(tmp_path / "project")
    save_build(project)
    (project / "model.joblib").write_bytes(b"a model" * 1000)
    return project


def test_register_writes_consecutive_versions(project: Path) -> None:
    spec = load_spec(project / "registry.toml")
    first = register(spec, project / "model.joblib")
    second = register(spec, project / "model.joblib")
    assert (first.version, second.version) == (1, 2)
    assert first.images["serve"].digest == DIGESTS["serve"]
    assert first.model.uri == second.model.uri
    assert first.python == "3.11.2"
    assert first.onnx is None
    assert "pandas==2.1.4" in first.packages["train"]
    assert "scikit-learn==1.3.2" in first.packages["shared"]
    assert "fastapi==0.109.0" in first.packages["serve"]
    assert not set(first.packages["train"]) & set(first.packages["serve"])


def test_git_commit_and_dirtiness_are_recorded(project: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "registry.toml", "examples")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "example")
    spec = load_spec(project / "registry.toml")
    clean = register(spec, project / "model.joblib")
    assert clean.git is not None
    assert clean.git.commit == git("rev-parse", "HEAD").strip()
    assert clean.git.dirty is False
    (project / "examples" / "iris" / "train.py").write_text("# changed\n")
    dirty = pipeline.git_info(project)
    assert dirty is not None
    assert dirty.dirty is True


def test_a_record_whose_provenance_cannot_be_written_says_so_and_how_to_retire_it(project: Path) -> None:
    spec = load_spec(project / "registry.toml")
    blocked = project / ".mreg" / "registry" / "iris-rf" / "provenance"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the statements' directory goes")  # root may write anywhere: no chmod
    with pytest.raises(
        StorageError, match=r"^iris-rf:1 was registered, but its provenance could not be written"
    ) as caught:
        register(spec, project / "model.joblib")
    assert "`mreg yank iris-rf:1 --reason 'no provenance'`" in str(caught.value)
    assert "\n" not in str(caught.value)
    shown = json.loads(mreg("show", "iris-rf:1", "--json", cwd=project).stdout)
    assert shown["version"] == 1  # the record stands; only its provenance is missing


def test_register_without_a_build_is_refused(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "fresh")
    (project / "model.joblib").write_bytes(b"m")
    result = mreg("register", "model.joblib", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr == f"error: {project}/.mreg/build.json: no build result; run `mreg build` first.\n"


def test_register_after_the_code_changed_is_refused(project: Path) -> None:
    (project / "examples" / "iris" / "serve.py").write_text("# a different server\n")
    with pytest.raises(InvalidInputError, match="the images were built from another version"):
        register(load_spec(project / "registry.toml"), project / "model.joblib")
    assert not (project / ".mreg" / "registry").exists()


def test_register_needs_both_images(project: Path) -> None:
    save_build(project, stages=("train",))
    with pytest.raises(InvalidInputError, match=r"no serve image was built; run `mreg build --target all`"):
        register(load_spec(project / "registry.toml"), project / "model.joblib")


def test_missing_model_file_is_refused(project: Path) -> None:
    result = mreg("register", "nope.joblib", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr == "error: nope.joblib: no such model file or directory (a link is not followed).\n"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_register_leaves_no_record_and_no_partial_object(project: Path, signum: int) -> None:
    big = project / "big.bin"
    with big.open("wb") as handle:
        handle.truncate(3 * 1024**3)  # sparse: cheap to create, slow enough to copy and hash
    objects = project / ".mreg" / "objects" / "sha256"
    process = subprocess.Popen(
        [sys.executable, "-m", "mreg", "register", "big.bin"], cwd=project, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not (objects.is_dir() and any(p.name.startswith(".incoming-") for p in objects.iterdir())):
        assert process.poll() is None, "register finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert stderr.strip() == "error: interrupted; nothing was recorded."
    assert list(objects.iterdir()) == []
    assert not (project / ".mreg" / "registry").exists()
    big.unlink()
    record = json.loads(mreg("register", "model.joblib", "--json", cwd=project).stdout)
    assert record["version"] == 1
