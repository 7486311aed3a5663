"""Upload one file with mreg's object store, as `mreg register` does, and print what happened as JSON.

    python bench/upload_driver.py s3://BUCKET/objects FILE [--part-size MIB] [--concurrency N]

The S3 endpoint and credentials come from the environment (AWS_ENDPOINT_URL, ...), as for mreg itself.
Every S3 request is timed through botocore's events, so the benchmark can say where the time went.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from mreg.storage import open_object_store
from mreg.storage.s3 import MiB, S3ObjectStore


class RequestTimes:
    """Start and end (seconds since `origin`) of every S3 request, by operation name."""

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    def before(self, context: dict[str, Any], **_: Any) -> None:
        context["bench_started"] = time.perf_counter()

    def after(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        started = context.get("bench_started")
        if started is None:
            return
        with self._lock:
            self.spans.setdefault(model.name, []).append((started - self.origin, time.perf_counter() - self.origin))

    def summary(self) -> dict[str, dict[str, float]]:
        """Per operation: count, first start, last end, and busy time (sum of request durations)."""
        return {
            name: {
                "count": len(spans),
                "first": min(start for start, _ in spans),
                "last": max(end for _, end in spans),
                "busy": sum(end - start for start, end in spans),
            }
            for name, spans in self.spans.items()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("file", type=Path)
    parser.add_argument("--part-size", type=int, help="part size in MiB (default: the store's)")
    parser.add_argument("--concurrency", type=int, help="parts in flight (default: the store's)")
    args = parser.parse_args()

    store = open_object_store(args.store, Path.cwd())
    assert isinstance(store, S3ObjectStore)
    if args.part_size:
        store.part_size = args.part_size * MiB
    if args.concurrency:
        store.concurrency = args.concurrency
    times = RequestTimes()
    store.client.meta.events.register("before-call.s3", times.before)
    store.client.meta.events.register("after-call.s3", times.after)
    times.origin = time.perf_counter()
    stored = store.put_file(args.file)
    seconds = time.perf_counter() - times.origin
    document = {
        "uri": stored.uri,
        "sha256": stored.sha256,
        "size": stored.size,
        "seconds": seconds,
        "part_size": store.part_size,
        "concurrency": store.concurrency,
        "requests": times.summary(),
    }
    print(json.dumps(document))


if __name__ == "__main__":
    main()
