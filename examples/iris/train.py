"""Train a RandomForest on iris inside the train image; write it with joblib, and its test accuracy to
metrics.json beside it (`mreg train --register` records that file's numbers as the version's metrics)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import joblib
import sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="where to write model.joblib")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    features, labels = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=args.seed, stratify=labels
    )
    model = RandomForestClassifier(n_estimators=100, random_state=args.seed).fit(x_train, y_train)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.out)
    metrics = {"accuracy": round(float(model.score(x_test, y_test)), 4)}
    (args.out.parent / "metrics.json").write_text(json.dumps(metrics))
    print(json.dumps({**metrics, "sklearn": sklearn.__version__}))


if __name__ == "__main__":
    main()
