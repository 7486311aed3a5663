"""Where one `mreg show NAME:VERSION` spends its time: the CLI's steps, one after the other, each timed.

    python bench/lookup_phases.py s3://BUCKET/PREFIX NAME:VERSION [--warm N]

Imports happen in the order the CLI triggers them (click and the CLI module, then pydantic and the record
store, then botocore when the client is made). Prints JSON: milliseconds per step, and with
`--warm N` the median of N more lookups in the same process (what serving code with a long-lived
`Registry` pays per lookup).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402 (timed from the first line)
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402


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
    parser.add_argument("--warm", type=int, default=0)
    args = parser.parse_args()
    steps = Steps()
    import click  # noqa: F401 (imported for its cost)

    steps.mark("import click and mreg.cli")
    import pydantic  # noqa: F401

    steps.mark("import pydantic")
    from mreg.registry import Registry

    steps.mark("import mreg.records and mreg.registry")
    import botocore.session  # noqa: F401

    steps.mark("import botocore")
    from mreg._s3 import make_client

    make_client()  # what the registry's first request makes, timed on its own
    steps.mark("create the S3 client")
    registry = Registry.open(args.registry)
    record = registry.get(args.ref)
    steps.mark("S3 requests, decode and check the record")
    text = record.to_json()
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
