"""Upload one file, or one directory, with mreg's object store, as `mreg register` does, and print what
happened as JSON.

    python bench/upload_driver.py s3://BUCKET/objects FILE [--part-size MIB] [--concurrency N]
    python bench/upload_driver.py --tree s3://BUCKET/objects DIRECTORY [--workers N] [...]

A file goes through `put_file`; a directory (`--tree`) is checked by `walk_tree`, then hashed and stored by
`put_tree`, as `mreg register` does (timed apart). The S3 endpoint and credentials come from the environment
(AWS_ENDPOINT_URL, ...), as for mreg itself. Every S3 request is timed through botocore's events, and each
`put_file` of a tree, so the benchmark can say where the time went.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from mreg.storage import Progress, StoredObject, directories, open_object_store
from mreg.storage._tree import walk_tree
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


class FileTimes:
    """Start and end (seconds since `origin`) of every `put_file` call of a store, with the file's path."""

    def __init__(self, store: S3ObjectStore, root: Path, origin: float) -> None:
        self.root, self.origin = root, origin
        self.calls: list[tuple[str, int, float, float]] = []
        self._put_file = store.put_file
        store.put_file = self.put_file  # type: ignore[method-assign]

    def put_file(self, path: Path, *, on_progress: Progress | None = None) -> StoredObject:
        started = time.perf_counter() - self.origin
        stored = self._put_file(path, on_progress=on_progress)
        name = path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else "(manifest)"
        self.calls.append((name, stored.size, started, time.perf_counter() - self.origin))
        return stored


def upload_file(store: S3ObjectStore, path: Path, times: RequestTimes) -> dict[str, Any]:
    stored = store.put_file(path)
    return {
        "uri": stored.uri,
        "sha256": stored.sha256,
        "size": stored.size,
        "seconds": time.perf_counter() - times.origin,
    }


def upload_tree(store: S3ObjectStore, root: Path, times: RequestTimes) -> dict[str, Any]:
    """`walk_tree`, then `put_tree` of what it found, as `mreg register` does; each timed."""
    files = FileTimes(store, root, times.origin)
    walked = walk_tree(root)
    walked_at = time.perf_counter() - times.origin
    stored = directories.put_tree(store, root, walked=walked)
    return {
        "uri": stored.manifest.uri,
        "sha256": stored.manifest.sha256,
        "size": stored.size,
        "count": stored.count,
        "uploaded": stored.uploaded,
        "walk_seconds": walked_at,
        "seconds": time.perf_counter() - times.origin,
        "workers": directories.WORKERS,
        "large_workers": directories.LARGE_WORKERS,
        "files": files.calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("path", type=Path, help="the file (or, with --tree, the directory) to upload")
    parser.add_argument("--tree", action="store_true", help="upload a directory model (walk_tree, put_tree)")
    parser.add_argument("--part-size", type=int, help="part size in MiB (default: the store's)")
    parser.add_argument("--concurrency", type=int, help="parts in flight per file (default: the store's)")
    parser.add_argument("--workers", type=int, help="files of one part uploaded at once (default: put_tree's)")
    parser.add_argument("--large-workers", type=int, help="larger files uploaded at once (default: put_tree's)")
    args = parser.parse_args()

    store = open_object_store(args.store, Path.cwd())
    assert isinstance(store, S3ObjectStore)
    if args.part_size:
        store.part_size = args.part_size * MiB
    if args.concurrency:
        store.concurrency = args.concurrency
    if args.workers:
        directories.WORKERS = args.workers
    if args.large_workers:
        directories.LARGE_WORKERS = args.large_workers
    times = RequestTimes()
    store.client.meta.events.register("before-call.s3", times.before)
    store.client.meta.events.register("after-call.s3", times.after)
    times.origin = time.perf_counter()
    document = upload_tree(store, args.path, times) if args.tree else upload_file(store, args.path, times)
    document |= {"part_size": store.part_size, "concurrency": store.concurrency, "requests": times.summary()}
    print(json.dumps(document))


if __name__ == "__main__":
    main()
