"""16 `mreg register` processes at once against one gs:// registry on the GCS emulator (fake-gcs-server): each
gets its own version (16 distinct, consecutive ones), every record and model verifies, the same bytes
registered by several of them at once are stored once, and no upload leaves anything behind. One saved build
serves them all (no Docker needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mreg.engine import Engine
from mreg.errors import StorageError
from mreg.registry import Registry
from mreg.spec import load_spec
from tests.support import copy_example, raw, save_build

pytestmark = pytest.mark.gcs

PROCESSES = 16
SHARED = 8
"""Processes that register the same bytes (the others each register their own)."""


def no_engine() -> Engine:
    raise StorageError("no engine in this test: only the record and model checks count")


@pytest.fixture
def project(tmp_path: Path, gcs_bucket: str) -> Path:
    project = copy_example(tmp_path / "project", stores=f"gs://{gcs_bucket}")
    save_build(project)
    return project


def test_16_registers_at_once_get_16_consecutive_versions(project: Path, gcs_bucket: str) -> None:
    models = []
    for number in range(PROCESSES):
        path = project / f"model-{number:02d}.joblib"
        path.write_bytes(b"shared model" * 1000 if number < SHARED else os.urandom(2000 + number))
        models.append(path)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mreg", "register", path.name, "--json"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in models
    ]
    answers = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * PROCESSES, [err for _, err in answers]
    records = [json.loads(out) for out, _ in answers]
    assert sorted(record["version"] for record in records) == list(range(1, PROCESSES + 1))

    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    for path, answer in zip(models, records, strict=True):
        record = registry.get(f"iris-rf:{answer['version']}")
        assert (record.digest, record.model.filename) == (answer["digest"], path.name)
        checks = {check.subject: check.ok for check in registry.verify(record, no_engine)}
        assert (checks["record"], checks["model"]) == (True, True)
        assert registry.download(record, project / "pulled.bin").read_bytes() == path.read_bytes()

    objects = raw.keys(f"gs://{gcs_bucket}/objects")
    addresses = [key for key in objects if key.startswith("sha256/")]
    named = {json.loads(raw.get(f"gs://{gcs_bucket}/objects/{key}"))["blob"] for key in addresses}
    assert len(addresses) == PROCESSES - SHARED + 1
    assert sorted(f"objects/{key}" for key in objects if key not in addresses) == sorted(named)
    versions = [key for key in raw.keys(f"gs://{gcs_bucket}/registry") if "/versions/" in key]
    assert len(versions) == PROCESSES
