"""Serve a registered iris model over HTTP. The model file is checked against its recorded SHA-256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import joblib
import sklearn
from fastapi import FastAPI
from pydantic import BaseModel

CLASSES = ["setosa", "versicolor", "virginica"]


def load_model(path: Path, expected_sha256: str | None) -> Any:
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 and actual != expected_sha256:
        raise SystemExit(f"{path}: SHA-256 is {actual}, the registry record says {expected_sha256}")
    return joblib.load(path)


MODEL_PATH = Path(os.environ.get("MODEL_PATH", "/models/model.joblib"))
MODEL = load_model(MODEL_PATH, os.environ.get("MODEL_SHA256"))
app = FastAPI(title="iris-rf")


class PredictRequest(BaseModel):
    instances: list[list[float]]


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "sklearn": sklearn.__version__, "model": str(MODEL_PATH)}


@app.post("/predict")
def predict(request: PredictRequest) -> dict[str, list[Any]]:
    predictions = [int(label) for label in MODEL.predict(request.instances)]
    return {"predictions": predictions, "classes": [CLASSES[label] for label in predictions]}
