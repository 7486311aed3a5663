"""Small ONNX models made with the onnx package, for tests."""

from __future__ import annotations

from pathlib import Path


def identity_model(path: Path, *, opset: int, ir_version: int = 8) -> Path:
    """An Identity model stamped with `opset` of the default domain."""
    from onnx import TensorProto, helper

    tensor = [1]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, tensor)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, tensor)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version, producer_name="mreg-tests"
    )
    path.write_bytes(model.SerializeToString())
    return path
