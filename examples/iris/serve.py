"""Serve a registered iris model over HTTP, by mreg's serving contract: the model is at MREG_MODEL_PATH
(mounted read-only under /mnt/models) and is checked against MREG_MODEL_SHA256 before the server listens on
PORT (on HOST when set: `mreg serve` keeps it on 127.0.0.1; else every interface, as a pod needs)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import joblib
import sklearn
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

CLASSES = ["setosa", "versicolor", "virginica"]


def load_model(path: Path, expected_sha256: str | None) -> Any:
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 and actual != expected_sha256:
        raise SystemExit(f"{path}: SHA-256 is {actual}, the registry record says {expected_sha256}")
    return joblib.load(path)


MODEL_PATH = Path(os.environ.get("MREG_MODEL_PATH", "/mnt/models/model.joblib"))
MODEL = load_model(MODEL_PATH, os.environ.get("MREG_MODEL_SHA256"))
VERSION = f"{os.environ.get('MREG_MODEL_NAME', 'iris-rf')}:{os.environ.get('MREG_MODEL_VERSION', '?')}"
app = FastAPI(title="iris-rf")


class PredictRequest(BaseModel):
    instances: list[list[float]]


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "sklearn": sklearn.__version__, "model": str(MODEL_PATH), "version": VERSION}


@app.post("/predict")
def predict(request: PredictRequest) -> dict[str, list[Any]]:
    predictions = [int(label) for label in MODEL.predict(request.instances)]
    return {"predictions": predictions, "classes": [CLASSES[label] for label in predictions]}


if __name__ == "__main__":
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104 - a pod's server must answer on the pod's address
    uvicorn.run(app, host=host, port=int(os.environ.get("PORT", "8080")))
