"""ONNX models are recognised by parsing them, never by their name."""

from __future__ import annotations

import pickle
from pathlib import Path

from mreg.guards.onnx import read_onnx
from tests.support.onnx_models import identity_model


def test_an_onnx_model_is_read(tmp_path: Path) -> None:
    info = read_onnx(identity_model(tmp_path / "model.bin", opset=17))
    assert info is not None
    assert info.ir_version == 8
    assert info.opsets == {"ai.onnx": 17}
    assert info.producer == "mreg-tests"
    assert info.runtime is None


def test_other_files_are_not_onnx_whatever_their_name(tmp_path: Path) -> None:
    pickled = tmp_path / "model.onnx"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    assert read_onnx(pickled) is None
    lookalike = tmp_path / "lookalike.onnx"
    lookalike.write_bytes(b"\x08\x08garbage that is no protobuf \xff\xff\xff")
    assert read_onnx(lookalike) is None
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert read_onnx(empty) is None


def test_a_truncated_onnx_model_is_not_onnx(tmp_path: Path) -> None:
    path = identity_model(tmp_path / "model.onnx", opset=17)
    path.write_bytes(path.read_bytes()[:20])
    assert read_onnx(path) is None
