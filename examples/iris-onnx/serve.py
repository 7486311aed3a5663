"""Serve a registered ONNX iris model with onnxruntime, by mreg's serving contract: the model is at
MREG_MODEL_PATH and is checked against MREG_MODEL_SHA256; the server listens on PORT (on HOST when set)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnxruntime
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

CLASSES = ["setosa", "versicolor", "virginica"]
MODEL_PATH = Path(os.environ.get("MREG_MODEL_PATH", "/mnt/models/model.onnx"))


def open_session(path: Path, expected_sha256: str | None) -> onnxruntime.InferenceSession:
    """A session on the model at `path`: a file (checked here against its SHA-256), or a directory model
    holding `model.onnx` and its external data (checked file by file by whoever fetched it: `mreg serve`,
    `mreg pull`, or the exported pod's init container; its digest is its manifest's)."""
    if path.is_dir():
        return onnxruntime.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 and actual != expected_sha256:
        raise SystemExit(f"{path}: SHA-256 is {actual}, the registry record says {expected_sha256}")
    return onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])


SESSION = open_session(MODEL_PATH, os.environ.get("MREG_MODEL_SHA256"))
INPUT = SESSION.get_inputs()[0].name
app = FastAPI(title="iris-onnx")


class PredictRequest(BaseModel):
    instances: list[list[float]]


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "onnxruntime": onnxruntime.__version__, "model": str(MODEL_PATH)}


@app.post("/predict")
def predict(request: PredictRequest) -> dict[str, list[object]]:
    labels = SESSION.run(None, {INPUT: np.asarray(request.instances, dtype=np.float32)})[0]
    predictions = [int(label) for label in labels]
    return {"predictions": predictions, "classes": [CLASSES[label] for label in predictions]}


if __name__ == "__main__":
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104 - a pod's server must answer on the pod's address
    uvicorn.run(app, host=host, port=int(os.environ.get("PORT", "8080")))
