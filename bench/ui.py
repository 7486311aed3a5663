"""How long each `mreg ui` page takes to render with 1,000 versions of a model (target: under 200 ms each).

    .venv/bin/python bench/ui.py              # 1,000 versions, 20 requests of each page
    .venv/bin/python bench/ui.py --quick      # 100 versions, 5 requests: a smoke run

The registry is a file:// record store filled through `Registry.create` (sealed records, like `mreg
register` writes), each version with three metrics (one missing on every seventh) and a param, every tenth
tagged, every 97th yanked, and two aliases moved 50 times each. Each request goes through Starlette's
TestClient in this process, so the time is the app's (routing, registry reads, the query, Jinja rendering,
the charts) plus the in-process transport, with no network. The baseline is one `Registry.get` of a
version: the least any page showing a record must pay.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mreg.records import BuiltImage, ModelFile, Record, open_record_store
from mreg.registry import Registry

NAME = "iris-rf"
TARGET = 0.2


def fill(root: Path, versions: int) -> Registry:
    registry = Registry(open_record_store("file://registry", root))
    started = datetime(2026, 1, 1, tzinfo=UTC)
    for number in range(1, versions + 1):
        pins = [f"numpy==1.26.{number % 5}", "scikit-learn==1.4.0", f"pkg-{number % 40}==1.0"]

        def make(version: int, pins: list[str] = pins) -> Record:
            digest = f"sha256:{version:064x}"
            return Record(
                name=NAME,
                version=version,
                model=ModelFile(uri=f"file:///objects/{version:064x}", sha256=f"{version:064x}", size=1, filename="m"),
                images={
                    stage: BuiltImage.pushed(f"r.example/ml/iris:{stage}-{version}", digest)
                    for stage in ("train", "serve")
                },
                packages={"shared": pins, "train": ["pandas==2.1.4"], "serve": ["fastapi==0.110.0"]},
                python="3.11.2",
                spec_sha256="c" * 64,
                created_at=started + timedelta(hours=version),
                git=None,
                metrics=_metrics(version),
                params={"max_depth": str(4 + version % 8)},
            )

        registry.create(NAME, make)
    for number in range(10, versions + 1, 10):
        registry.tag(f"{NAME}:{number}", set={"stage": "candidate" if number % 30 else "production"})
    for move in range(50):
        registry.alias(NAME, "production", versions - 50 + move)
        registry.alias(NAME, "staging", versions - 49 + move)
    for number in range(97, versions + 1, 97):
        registry.yank(f"{NAME}:{number}", "a benchmark yank", force=True)
    return registry


def _metrics(version: int) -> dict[str, float]:
    metrics = {"accuracy": 0.8 + (version * 7919 % 200) / 1000, "loss": 1 / version}
    return metrics if version % 7 == 0 else {**metrics, "f1": 0.7 + (version * 104729 % 300) / 1000}


def measure(call: Callable[[], object], runs: int) -> list[float]:
    call()  # warm: templates compiled, imports done
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def _deep(registry: Registry, versions: int) -> int:
    """The version after which the last full page of versions ordered by accuracy starts."""
    ordered = registry.find(NAME, None, "metrics.accuracy desc", limit=versions, include_yanked=True)
    return ordered[-51].record.version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    versions, runs = (100, 5) if args.quick else (1000, 20)
    from starlette.testclient import TestClient

    from mreg.ui.app import create_app

    with tempfile.TemporaryDirectory() as scratch:
        registry = fill(Path(scratch), versions)
        client = TestClient(create_app(registry))
        newest, middle = versions, versions // 2
        ordered = "?order=metrics.accuracy+desc"
        paths = {
            "models": "/",
            "versions (newest 50)": f"/models/{NAME}/",
            "versions (a middle page)": f"/models/{NAME}/?before={middle}",
            "versions, metric filter": f"/models/{NAME}/?filter=metrics.accuracy+%3E%3D+0.9",
            "versions, tag filter": f"/models/{NAME}/?filter=tags.stage+%3D+%27production%27",
            "versions, by accuracy": f"/models/{NAME}/{ordered}",
            "versions, by accuracy, deep": f"/models/{NAME}/{ordered}&after={_deep(registry, versions)}",
            "version": f"/models/{NAME}/versions/{middle}/",
            "diff": f"/models/{NAME}/diff/1/{newest}/",
            "alias timeline (100 moves)": f"/models/{NAME}/aliases/production/",
        }

        def get(path: str) -> Callable[[], object]:
            def request() -> object:
                response = client.get(path)
                assert response.status_code == 200, (path, response.status_code)
                return response

            return request

        rows = [("Registry.get (baseline)", measure(lambda: registry.get(f"{NAME}:{middle}"), runs))]
        rows += [(label, measure(get(path), runs)) for label, path in paths.items()]
    print(f"{versions} versions, {runs} requests per page; median [min-max] ms")
    print(f"{'page':<30} {'median':>8} {'min':>8} {'max':>8}  target")
    for label, times in rows:
        verdict = "" if label.endswith("(baseline)") else ("met" if max(times) < TARGET else "MISSED")
        ms = [1000 * value for value in (statistics.median(times), min(times), max(times))]
        print(f"{label:<30} {ms[0]:>8.1f} {ms[1]:>8.1f} {ms[2]:>8.1f}  {verdict}")


if __name__ == "__main__":
    main()
