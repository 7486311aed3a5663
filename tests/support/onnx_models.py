"""Small ONNX models made with the onnx package, for tests."""

from __future__ import annotations

import struct
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


LINEAR_WEIGHTS = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [-1.0, 0.0, 2.0], [0.0, -1.0, 1.0]]
"""4 features -> 3 class scores: the weights of `linear_classifier_with_external_data`."""


def linear_classifier_with_external_data(directory: Path) -> Path:
    """`directory/model.onnx`, argmax(X @ W + b) over 4 features at opset 17, whose weights are stored as
    external data in `directory/weights.bin` (as large models are saved); returns the directory."""
    import onnx
    from onnx import TensorProto, helper

    flat = [value for row in LINEAR_WEIGHTS for value in row]  # raw bytes: only those go to external data
    weights = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], struct.pack("<12f", *flat), raw=True)
    bias = helper.make_tensor("B", TensorProto.FLOAT, [3], struct.pack("<3f", 0.0, 0.5, 0.0), raw=True)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["scores"]),
            helper.make_node("Add", ["scores", "B"], ["biased"]),
            helper.make_node("ArgMax", ["biased"], ["label"], axis=1, keepdims=0),
        ],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None])],
        initializer=[weights, bias],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="mreg-tests"
    )
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(directory / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return directory
