"""Directory models on every store, through the real command line: registered as one object per file plus
a manifest, deduplicated, pulled byte for byte through a staging directory, verified file by file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from mreg import Registry, load_spec
from tests.support import copy_example, mreg, mreg_json, raw, save_build

SAVED_MODEL = Path(__file__).resolve().parents[1] / "data" / "models" / "saved_model"
"""A real TensorFlow SavedModel, made by tests/data/models/make_saved_model.py (TensorFlow is not a test
dependency)."""


class NoImages:
    """An engine that finds no image: verify's image checks fail, its model checks are what is asserted."""

    def local_image_id(self, ref: str) -> None:
        return None

    def registry_digest(self, ref: str) -> None:
        return None


@pytest.fixture
def project(tmp_path: Path, store_root: str) -> Path:
    """The bundled example with both stores under `store_root`, and a saved build (no Docker needed)."""
    project = copy_example(tmp_path / "project", stores=store_root)
    save_build(project)
    return project


def tree_of(root: Path) -> dict[str, tuple[str, bool]]:
    """Every file below `root`: relative path -> (SHA-256, executable), and empty directories -> ('', False)."""
    found: dict[str, tuple[str, bool]] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file():
            found[relative] = (hashlib.sha256(path.read_bytes()).hexdigest(), os.access(path, os.X_OK))
        elif path.is_dir() and not any(path.iterdir()):
            found[relative] = ("", False)
    return found


def hugging_face_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    for index in (1, 2):
        (root / f"model-0000{index}-of-00002.safetensors").write_bytes(os.urandom(300_000 + index))
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    (root / "run.sh").write_text("#!/bin/sh\necho serve\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty").mkdir()
    return root


def test_a_directory_model_is_registered_pulled_and_verified(project: Path, tmp_path: Path) -> None:
    model = hugging_face_folder(project / "hf-model")
    record = mreg_json("register", "hf-model", cwd=project)
    assert record["model"]["kind"] == "directory"
    assert record["model"]["files"] == 5
    assert record["model"]["filename"] == "hf-model"
    assert record["model"]["size"] == sum(p.stat().st_size for p in model.rglob("*") if p.is_file())

    pulled = mreg_json("pull", f"iris-rf:{record['version']}", "-o", str(tmp_path / "out"), cwd=project)
    assert pulled["path"] == str(tmp_path / "out")
    assert tree_of(tmp_path / "out") == tree_of(model)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging directory left

    models = tmp_path / "models"  # an existing directory: the model keeps its name inside it
    models.mkdir()
    mreg("pull", "iris-rf", "-o", str(models), cwd=project)
    assert tree_of(models / "hf-model") == tree_of(model)
    refused = mreg("pull", "iris-rf", "-o", str(models), cwd=project, check=False)
    assert refused.returncode == 2
    assert "exists" in refused.stderr
    (models / "hf-model" / "config.json").write_text("edited")
    mreg("pull", "iris-rf", "-o", str(models), "--force", cwd=project)
    assert tree_of(models / "hf-model") == tree_of(model)
    assert [p.name for p in models.iterdir()] == ["hf-model"]

    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    checks = registry.verify(registry.get("iris-rf"), NoImages)  # type: ignore[arg-type]
    assert [check.ok for check in checks if check.subject == "model"] == [True]


def test_the_same_tree_elsewhere_has_the_same_digest_and_a_second_save_uploads_only_what_changed(
    project: Path, store_root: str
) -> None:
    first = hugging_face_folder(project / "save-1")
    copy = project / "elsewhere" / "save-1"
    shutil.copytree(first, copy)
    os.utime(copy / "config.json", (1, 1))
    digests = {mreg_json("register", str(path), cwd=project)["model"]["sha256"] for path in (first, copy)}
    assert len(digests) == 1
    objects_before = stored_object_count(store_root)

    (first / "config.json").write_text('{"model_type": "bert", "hidden_size": 16}')
    changed = mreg_json("register", str(first), cwd=project)
    assert changed["model"]["sha256"] not in digests
    assert stored_object_count(store_root) == objects_before + 2  # the changed file and the new manifest

    (first / "run.sh").chmod(0o644)
    assert mreg_json("register", str(first), cwd=project)["model"]["sha256"] != changed["model"]["sha256"]


def stored_object_count(store_root: str) -> int:
    """Content addresses in the object store (one per distinct stored content)."""
    return len([key for key in raw.keys(f"{store_root}/objects") if key.startswith("sha256/")])


@pytest.mark.parametrize(
    ("hostile", "fragment"),
    [
        ("symlink", "is a symbolic link"),
        ("fifo", "FIFO"),
        ("case", "only by case"),
        ("nfc", "NFC"),
        ("empty", "holds no regular file"),
    ],
)
def test_hostile_trees_are_refused_before_anything_is_uploaded(
    project: Path, store_root: str, hostile: str, fragment: str
) -> None:
    model = project / "model-dir"
    model.mkdir()
    if hostile != "empty":
        (model / "weights.bin").write_bytes(b"weights")
    if hostile == "symlink":
        (model / "link").symlink_to("/etc/passwd")
    elif hostile == "fifo":
        os.mkfifo(model / "pipe")
    elif hostile == "case":
        (model / "Weights.bin").write_bytes(b"other")
    elif hostile == "nfc":
        (model / "cafe\u0301.txt").write_bytes(b"x")
    result = mreg("register", "model-dir", cwd=project, check=False)
    assert result.returncode == 2, result.stderr
    assert fragment.lower() in result.stderr.lower()
    assert str(model) in result.stderr or "model-dir" in result.stderr
    assert stored_object_count(store_root) == 0
    assert mreg("show", "iris-rf", cwd=project, check=False).returncode == 3


def test_verify_names_each_file_that_is_missing_or_differs(project: Path, store_root: str) -> None:
    hugging_face_folder(project / "hf-model")
    record = mreg_json("register", "hf-model", cwd=project)
    manifest = json.loads(raw.get(record["model"]["uri"]))
    by_path = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    replace_object(store_root, by_path["config.json"], b'{"model_type": "evil"}')
    delete_object(store_root, by_path["tokenizer/vocab.txt"])

    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    checks = registry.verify(registry.get("iris-rf"), NoImages)  # type: ignore[arg-type]
    problems = [check.detail for check in checks if check.subject == "model" and not check.ok]
    assert len(problems) == 2
    assert problems[0].startswith("config.json: ")
    assert problems[1].startswith("tokenizer/vocab.txt: missing")

    result = mreg("pull", "iris-rf", "-o", str(project / "pulled"), cwd=project, check=False)
    assert result.returncode in (3, 6)
    assert not (project / "pulled").exists()
    assert [p.name for p in project.iterdir() if p.name.startswith(".") and p.name != ".mreg"] == []


def blob_uri(store_root: str, sha256: str) -> str:
    """Where the store keeps the bytes with this SHA-256 (a bucket's content address names a blob)."""
    address = f"{store_root}/objects/sha256/{sha256}"
    if store_root.startswith("file://"):
        return address
    bucket = store_root.split("/")[2]
    return f"{store_root.split('://', maxsplit=1)[0]}://{bucket}/{json.loads(raw.get(address))['blob']}"


def replace_object(store_root: str, sha256: str, data: bytes) -> None:
    """Swap the bytes of a stored object for others (what tampering looks like)."""
    raw.put(blob_uri(store_root, sha256), data)


def delete_object(store_root: str, sha256: str) -> None:
    raw.delete(blob_uri(store_root, sha256))


def test_a_real_saved_model_round_trips_byte_for_byte(project: Path, tmp_path: Path) -> None:
    record = mreg_json("register", str(SAVED_MODEL), cwd=project)
    assert record["model"]["kind"] == "directory"
    assert record["model"]["files"] == 5  # saved_model.pb, fingerprint.pb, variables/ (2), assets/labels.txt
    mreg("pull", "iris-rf", "-o", str(tmp_path / "pulled"), cwd=project)
    assert tree_of(tmp_path / "pulled") == tree_of(SAVED_MODEL)
