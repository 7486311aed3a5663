"""How long `mreg list NAME --filter ...` takes over many versions of one model on moto's S3 server, against
answering the same query by reading every record (and every version's annotations), in the same run.

    .venv/bin/python bench/filter.py            # 10,000 versions, 10 runs of each query, 2 of each full scan
    .venv/bin/python bench/filter.py --quick    # 500 versions, 3 runs: a smoke run

The registry holds sealed records written through the S3 record store's exclusive create, with metrics,
params and packages that vary by version; every 20th version is tagged (through `Registry.tag`, so the
annotation index is maintained as in use), every 97th yanked, and one carries an alias. The version index
is then written as `gc` brings it up to date (the same chunks and tail registers write one version at a
time). Each query is a fresh `mreg` process, as a CI job or a script would run it; the full scan is a fresh
process that reads every record and every version's annotations through mreg's own store (16 at a time,
as `find` reads) and evaluates the same filter. Both must return the same versions. The S3 requests of each
run are counted in moto's request log.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `bench` importable

from bench.common import (
    BIN,
    Measured,
    MotoServer,
    Stats,
    checked,
    compile_mreg,
    machine,
    moto_server,
    run_measured,
    s3_client,
    s3_env,
    source_state,
    table,
    work_directory,
)

BUCKET = "mreg-bench"
REGISTRY = f"s3://{BUCKET}/registry"
NAME = "iris-rf"
TARGET = 1.0
"""Seconds: the issue's target for one filtered query over 10,000 versions, from a fresh process."""
QUERIES = [
    ("metrics.accuracy >= 0.95 and tags.stage = 'prod'", "metrics.accuracy desc"),
    ("package.scikit-learn >= '1.3' and params.max_depth = '8'", None),
    (None, None),
]
"""(filter, order); the last, the plain newest-first page, reads no index rows and is not scanned."""


@dataclass
class Timings:
    walls: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    requests: list[list[str]] = field(default_factory=list)


def make_record(version: int) -> bytes:
    """A sealed record of `version`, shaped like one `mreg register --metric ... --param ...` writes."""
    from mreg.records import BuiltImage, GitInfo, ModelFile, Record

    digest = hashlib.sha256(f"model {version}".encode()).hexdigest()
    image = "registry.example.com/ml/iris-rf"
    record = Record(
        name=NAME,
        version=version,
        model=ModelFile(uri=f"s3://{BUCKET}/objects/blobs/{digest[:32]}", sha256=digest, size=172_625,
                        filename="model.joblib"),
        images={stage: BuiltImage(ref=f"{image}:{stage}-{digest[:16]}", image=f"{image}@sha256:{digest}",
                                  digest=f"sha256:{digest}") for stage in ("train", "serve")},
        packages={
            "shared": [f"scikit-learn==1.{version % 5}.0", *(f"shared-package-{n}==1.{n}.0" for n in range(40))],
            "train": [f"train-package-{n}==2.{n}.0" for n in range(12)],
            "serve": [f"serve-package-{n}==3.{n}.0" for n in range(12)],
        },
        python="3.11.2",
        spec_sha256=hashlib.sha256(b"spec").hexdigest(),
        created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=version),
        git=GitInfo(commit=hashlib.sha256(str(version).encode()).hexdigest()[:40], dirty=False),
        metrics={"accuracy": 0.5 + (version * 7919 % 1000) / 2000, "loss": (version % 100) / 100},
        params={"max_depth": str(version % 12), "n_estimators": str(100 + version % 5 * 50)},
    )  # fmt: skip
    return record.sealed().to_json().encode()


def populate(versions: int, threads: int = 16) -> None:
    """Records through the store's exclusive create, tags and yanks through the registry, then the index."""
    from mreg.records import _index, open_record_store
    from mreg.registry import Registry

    store = open_record_store(REGISTRY, Path.cwd())

    def create(version: int) -> None:
        if not store._create(NAME, version, make_record(version)):
            raise SystemExit(f"version {version} already exists")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(create, range(1, versions + 1)))
    store._write_hint(NAME, versions)
    registry = Registry(store)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda v: registry.tag(f"{NAME}:{v}", set={"stage": "prod"}), range(20, versions + 1, 20)))
        list(pool.map(lambda v: registry.yank(f"{NAME}:{v}", "bench"), range(97, versions + 1, 97)))
    registry.alias(NAME, "production", versions // 2)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        records = list(pool.map(lambda version: store.get(NAME, version), range(1, versions + 1)))
    _index.rebuild(store, NAME, records)


def scan(registry_uri: str, text: str | None, order: str | None, limit: int) -> list[int]:
    """The query answered without the index: every record and every version's annotations, read 16 at a time."""
    from mreg.records import _index, open_record_store
    from mreg.records._filter import VersionRow, parse_filter, parse_order

    store = open_record_store(registry_uri, Path.cwd())
    latest = store.latest_version(NAME)
    aliases: dict[int, set[str]] = {}
    for alias in store.aliases(NAME):
        if alias.version is not None:
            aliases.setdefault(alias.version, set()).add(alias.alias)

    def row(version: int) -> VersionRow:
        record, annotations = store.get(NAME, version), store.annotations(NAME, version)
        return VersionRow(version=version, created=record.created_at, metrics=record.metrics, params=record.params,
                          tags=annotations.tags, aliases=frozenset(aliases.get(version, ())),
                          yanked=annotations.yanked is not None, packages=_index.packages_of(record))  # fmt: skip

    with ThreadPoolExecutor(max_workers=16) as pool:
        rows = list(pool.map(row, range(1, latest + 1)))
    parsed = parse_filter(text) if text else None
    rows = [r for r in rows if not r.yanked and (parsed is None or parsed.matches(r))]
    ordered = parse_order(order).sort(rows) if order else sorted(rows, key=lambda r: -r.version)
    return [r.version for r in ordered[:limit]]


def mreg_argv(text: str | None, order: str | None) -> list[str]:
    argv = [str(BIN / "mreg"), "--registry", REGISTRY, "list", NAME, "--json"]
    return argv + (["--filter", text] if text else []) + (["--order-by", order] if order else [])


def scan_argv(text: str | None, order: str | None) -> list[str]:
    return [sys.executable, __file__, "--scan", json.dumps([REGISTRY, text, order, 20])]


def measure(argv: list[str], runs: int, server: MotoServer, env: dict[str, str], workdir: Path) -> tuple[Timings, str]:
    timing, stdout = Timings(), ""
    for _ in range(runs):
        offset = server.log_offset()
        result: Measured = checked(run_measured(argv, env, workdir), " ".join(argv[:6]))
        timing.walls.append(result.wall)
        if result.max_rss:
            timing.rss.append(result.max_rss / 1e6)
        timing.requests.append(server.requests_since(offset))
        stdout = result.stdout
    return timing, stdout


def versions_of(stdout: str) -> list[int]:
    found = json.loads(stdout)
    return [entry["version"] if isinstance(entry, dict) else entry for entry in found]


def report(rows: list[list[str]], versions: int, runs: int, scan_runs: int, update_ms: float) -> str:
    return "\n".join([
        f"`list --filter` over {versions} versions of {NAME} on moto's S3 server (loopback): each query {runs} "
        f"runs with the index, {scan_runs} runs reading every record",
        f"machine: {machine()}",
        f"source: {source_state()}",
        "wall time of the whole process, median (min-max); the same 20 versions from both",
        "",
        table(["query", "how", "wall s", "x index", "peak RSS MB", "S3 requests"], rows),
        "",
        f"target: under {TARGET:.1f} s per filtered query with the index",
        f"a register's index update (one more row in the tail), in process: {update_ms:.0f} ms",
    ])  # fmt: skip


def requests_of(timing: Timings) -> str:
    counts = Counter(line.split()[0] for line in timing.requests[-1])
    common = Counter(len(found) for found in timing.requests).most_common(1)[0][0]
    return f"{common} ({', '.join(f'{n} {verb}' for verb, n in sorted(counts.items()))})"


def index_update_ms(versions: int) -> float:
    """One more version's row added to the tail, as `RecordStore.create` does after writing a record."""
    from mreg.records import _index, decode_record, open_record_store

    store = open_record_store(REGISTRY, Path.cwd())
    data = make_record(versions + 1)
    if not store._create(NAME, versions + 1, data):  # the record first, as a register writes it
        raise SystemExit(f"version {versions + 1} already exists")
    record = decode_record(data, "bench")
    started = time.perf_counter()
    _index.add_version(store, record)
    return (time.perf_counter() - started) * 1000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=10_000, help="versions in the registry (default 10000)")
    parser.add_argument("--runs", type=int, default=10, help="runs of each indexed query (default 10)")
    parser.add_argument("--scan-runs", type=int, default=2, help="runs of each full scan (default 2)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 500 versions, 3 runs, 1 scan")
    parser.add_argument("--json", type=Path, help="also write the raw measurements to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (server log)")
    parser.add_argument("--scan", help=argparse.SUPPRESS)  # the full-scan child process
    args = parser.parse_args()
    if args.quick:
        args.versions, args.runs, args.scan_runs = 500, 3, 1
    return args


def main() -> None:
    args = parse_args()
    if args.scan:
        uri, text, order, limit = json.loads(args.scan)
        print(json.dumps(scan(uri, text, order, limit)))
        return
    compile_mreg()
    rows: list[list[str]] = []
    raw: dict[str, dict[str, object]] = {}
    with work_directory(args.keep) as workdir, moto_server(workdir) as server:
        env = s3_env(server.endpoint, workdir)
        os.environ.update({key: value for key, value in env.items() if key.startswith("AWS_")})
        s3_client(server.endpoint).create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        populate(args.versions)
        print(
            f"wrote {args.versions} versions and their index in {time.perf_counter() - started:.0f} s", file=sys.stderr
        )
        floor, _ = measure([str(BIN / "mreg"), "--registry", REGISTRY, "show", f"{NAME}:1", "--json"], args.runs,
                           server, env, workdir)  # fmt: skip
        rows.append(["(one record: the floor)", f"mreg show {NAME}:1", Stats.of(floor.walls).show("{:.3f}"), "-",
                     Stats.of(floor.rss).show("{:.0f}") if floor.rss else "-", requests_of(floor)])  # fmt: skip
        for text, order in QUERIES:
            label = f"`{text or '(no filter)'}`" + (f" by `{order}`" if order else "")
            indexed, out = measure(mreg_argv(text, order), args.runs, server, env, workdir)
            cases = [("mreg list (index)", indexed)]
            if text or order:
                full, scanned = measure(scan_argv(text, order), args.scan_runs, server, env, workdir)
                if versions_of(out) != versions_of(scanned):
                    raise SystemExit(f"{label}: the index gave {versions_of(out)}, the scan {versions_of(scanned)}")
                cases.append(("every record (scan)", full))
            base = Stats.of(indexed.walls).median
            for how, timing in cases:
                wall = Stats.of(timing.walls)
                rss = Stats.of(timing.rss).show("{:.0f}") if timing.rss else "-"
                rows.append([label, how, wall.show("{:.3f}"), f"{wall.median / base:.1f}", rss, requests_of(timing)])
                raw[f"{label} {how}"] = timing.__dict__
        update_ms = index_update_ms(args.versions)
    print(report(rows, args.versions, args.runs, args.scan_runs, update_ms))
    if args.json:
        args.json.write_text(json.dumps({"versions": args.versions, "machine": machine(), "cases": raw}, indent=2))


if __name__ == "__main__":
    main()
