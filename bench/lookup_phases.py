"""Where one `mreg show NAME:VERSION` spends its time: the CLI's steps, one after the other, each timed.

    python bench/lookup_phases.py s3://BUCKET/PREFIX NAME:VERSION [--cached] [--warm N]

Imports happen in the order the CLI triggers them (the CLI and click, then pydantic and the record store, then
botocore when the client is made). With `--cached` the record must come from the local record cache
(MREG_CACHE_DIR, filled by an earlier lookup), and botocore is imported only for the annotations `show` prints;
without, the record is read from S3 first (run it with MREG_NO_CACHE=1). Prints JSON: milliseconds per step,
and with `--warm N` the median of N more lookups of the record in the same process (what serving code with a
long-lived `Registry` pays per lookup).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402 (timed from the first line)
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402


class Steps:
    def __init__(self) -> None:
        self.last = STARTED
        self.ms: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = (now - self.last) * 1000
        self.last = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("registry")
    parser.add_argument("ref")
    parser.add_argument("--cached", action="store_true", help="the record must come from the local cache")
    parser.add_argument("--warm", type=int, default=0)
    args = parser.parse_args()
    steps = Steps()
    import mreg.cli  # noqa: F401 (imported for its cost)

    steps.mark("import mreg.cli (click, the commands)")
    import pydantic  # noqa: F401

    steps.mark("import pydantic")
    from mreg.registry import Registry

    steps.mark("import mreg.records and mreg.registry")
    registry = Registry.open(args.registry)
    if args.cached:
        record = registry.get(args.ref)
        if "botocore" in sys.modules:
            raise SystemExit(f"{args.ref} was not read from the record cache")
        steps.mark("read and check the record from the local cache")
    import botocore.session  # noqa: F401

    steps.mark("import botocore")
    _ = registry._records.client  # type: ignore[attr-defined] # the store's own client, made on first use
    steps.mark("create the S3 client")
    if not args.cached:
        record = registry.get(args.ref)
        steps.mark("S3 request, decode and check the record")
    annotations = registry.annotations(record)
    steps.mark("S3 request of the annotations")
    text = json.dumps({**record.model_dump(mode="json"), "annotations": annotations.model_dump(mode="json")})
    steps.mark("render the JSON")
    warm = []
    for _ in range(args.warm):
        started = time.perf_counter()
        registry.get(args.ref).to_json()
        warm.append((time.perf_counter() - started) * 1000)
    document: dict[str, object] = {"version": record.version, "bytes": len(text), "steps_ms": steps.ms}
    if warm:
        document["warm_ms"] = {
            "median": statistics.median(warm),
            "min": min(warm),
            "max": max(warm),
            "total": sum(warm),
        }
    print(json.dumps(document), flush=True)
    os._exit(0)  # as the CLI leaves: without the interpreter's teardown


if __name__ == "__main__":
    main()
