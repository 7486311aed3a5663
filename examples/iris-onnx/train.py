"""Train a RandomForest on iris and export it to ONNX at an explicit opset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="where to write model.onnx")
    parser.add_argument("--opset", type=int, required=True, help="the ai.onnx opset to target")
    args = parser.parse_args()

    features, labels = load_iris(return_X_y=True)
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(features, labels)
    onnx_model = to_onnx(
        model,
        features[:1].astype(np.float32),
        target_opset={"": args.opset, "ai.onnx.ml": 3},
        options={id(model): {"zipmap": False}},
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(onnx_model.SerializeToString())
    opsets = {entry.domain or "ai.onnx": entry.version for entry in onnx_model.opset_import}
    print(json.dumps({"ir_version": onnx_model.ir_version, "opsets": opsets}))


if __name__ == "__main__":
    main()
