"""How long a lookup takes on a registry with many versions, against a bare boto3 GET, on moto's S3 server.

    .venv/bin/python bench/lookups.py            # 10,000 versions, 10 runs of each lookup
    .venv/bin/python bench/lookups.py --quick    # 100 versions, 3 runs: a smoke run

The registry holds real, sealed records written through the S3 record store's own primitives (its
conditional create and its `latest` hint), and an alias moved with the store's `move_alias`; the benchmark
checks that mreg reads them back before it measures anything. Each lookup is a fresh process, timed from start
to exit, as a serving host or a CI job would run it: `mreg show`, `mreg deps` (which needs only the immutable
record) and `Registry.get`, each with the record cache off (MREG_NO_CACHE=1: every record is read from S3) and
with it holding the record from an earlier lookup (a repeated lookup). The baseline is a fresh Python process
that imports boto3, makes a client and GETs one record object: what any Python S3 client pays at least. The S3
requests of each lookup are counted in moto's request log.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `bench` importable

import mreg
from bench.common import (
    BIN,
    REPO,
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
from mreg.records import BuiltImage, GitInfo, ModelFile, ModelRef, Record, RecordStore, open_record_store
from mreg.records.s3 import S3RecordStore

BUCKET = "mreg-bench"
PREFIX = "registry"
NAME = "iris-rf"
ALIAS = "production"
TARGET = 0.5
"""Seconds: issue #3's target for one lookup."""
REPEAT_TARGET = 0.25
"""Seconds: issue #18's target for a repeated lookup of the same version (the record cached)."""
BASELINE = "boto3 get_object, fresh process (baseline)"
CACHE_OFF = {"MREG_NO_CACHE": "1"}
HEADER = ["command", "record cache", "wall s", "x baseline", "x cache off", "CPU s", "peak RSS MB", "S3 requests"]


@dataclass(frozen=True)
class Case:
    """One command measured: a label, its argv, a check of its stdout, and what it adds to the environment
    (`cached`: it runs with the record cache on, filled by one unmeasured run first)."""

    label: str
    argv: list[str]
    check: Callable[[str], bool]
    cached: bool | None = None
    """None: mreg is not involved; False: the cache is off; True: it holds the record."""

    @property
    def env(self) -> dict[str, str]:
        return CACHE_OFF if self.cached is False else {}

    @property
    def cache(self) -> str:
        return {None: "-", False: "off", True: "holds it"}[self.cached]


@dataclass
class Timings:
    walls: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    requests: list[list[str]] = field(default_factory=list)


def make_record(version: int) -> bytes:
    """A sealed record of `version`, shaped like one `mreg register` writes (packages included)."""
    digest = hashlib.sha256(f"model {version}".encode()).hexdigest()
    image = "registry.example.com/ml/iris-rf"
    record = Record(
        name=NAME,
        version=version,
        model=ModelFile(
            uri=f"s3://{BUCKET}/objects/sha256/{digest}", sha256=digest, size=172_625 + version, filename="model.joblib"
        ),
        images={
            stage: BuiltImage(
                ref=f"{image}:{stage}-{digest[:16]}", image=f"{image}@sha256:{digest}", digest=f"sha256:{digest}"
            )
            for stage in ("train", "serve")
        },
        packages={
            "shared": [f"shared-package-{n}==1.{n}.0" for n in range(40)],
            "train": [f"train-package-{n}==2.{n}.0" for n in range(12)],
            "serve": [f"serve-package-{n}==3.{n}.0" for n in range(12)],
        },
        python="3.11.2",
        spec_sha256=hashlib.sha256(b"spec").hexdigest(),
        created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=version),
        git=GitInfo(commit=hashlib.sha256(str(version).encode()).hexdigest()[:40], dirty=False),
    )
    return record.sealed().to_json().encode()


def populate(versions: int, alias_version: int, threads: int = 16) -> None:
    """`versions` records of NAME, its `latest` hint and an alias, through the S3 record store's primitives."""
    store = open_record_store(f"s3://{BUCKET}/{PREFIX}", Path.cwd())
    assert isinstance(store, S3RecordStore)

    def create(version: int) -> None:
        if not store._create(NAME, version, make_record(version)):  # the store's exclusive create
            raise SystemExit(f"version {version} already exists")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(create, range(1, versions + 1)))
    store._write_hint(NAME, versions)
    store.move_alias(NAME, ALIAS, alias_version, actor="bench")
    check_registry(store, versions, alias_version)


def check_registry(store: RecordStore, versions: int, alias_version: int) -> None:
    """mreg reads what was written: the latest version, a decoded record, the alias."""
    if store.latest_version(NAME) != versions:
        raise SystemExit(f"the registry's latest version is {store.latest_version(NAME)}, not {versions}")
    if store.resolve(ModelRef(NAME, alias=ALIAS)).version != alias_version:
        raise SystemExit(f"{NAME}@{ALIAS} does not resolve to version {alias_version}")
    store.get(NAME, 1)


def version_of(expected: int) -> Callable[[str], bool]:
    def check(stdout: str) -> bool:
        return bool(json.loads(stdout)["version"] == expected)

    return check


def pins_of(expected: int) -> Callable[[str], bool]:
    def check(stdout: str) -> bool:
        return stdout.startswith(f"# {NAME}:{expected}, serve image ") and "serve-package-0==3.0.0" in stdout

    return check


def cases(versions: int, alias_version: int, probe_version: int) -> list[Case]:
    registry = f"s3://{BUCKET}/{PREFIX}"
    mreg = [str(BIN / "mreg"), "--registry", registry]
    key = f"{PREFIX}/models/{NAME}/versions/{probe_version:010d}.json"
    read = f".get_object(Bucket='{BUCKET}', Key='{key}')['Body'].read()"
    boto3 = f"import os, boto3; boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']){read}"
    botocore = (
        "import os, botocore.session; botocore.session.get_session()"
        f".create_client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']){read}"
    )
    api = f"from mreg import Registry; print(Registry.open({registry!r}).get('{NAME}:{probe_version}').to_json())"
    probe = f"{NAME}:{probe_version}"
    found = []
    for cached in (False, True):
        found += [
            Case(f"mreg show {NAME}@{ALIAS} --json", [*mreg, "show", f"{NAME}@{ALIAS}", "--json"],
                 version_of(alias_version), cached),
            Case(f"mreg show {probe} --json", [*mreg, "show", probe, "--json"], version_of(probe_version), cached),
            Case(f"mreg show {NAME} --json (latest)", [*mreg, "show", NAME, "--json"], version_of(versions), cached),
            Case(f"mreg deps {probe}", [*mreg, "deps", probe], pins_of(probe_version), cached),
            Case(f"Registry.get('{probe}'), fresh process", [sys.executable, "-c", api],
                 version_of(probe_version), cached),
        ]  # fmt: skip
    return [
        Case("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"], lambda out: True),
        Case(BASELINE, [sys.executable, "-c", boto3], lambda out: True),
        Case("botocore get_object, fresh process (no boto3)", [sys.executable, "-c", botocore], lambda out: True),
        *found,
    ]


def measure(all_cases: list[Case], runs: int, server: MotoServer, env: dict[str, str], workdir: Path) -> list[Timings]:
    """Every case once per round, `runs` rounds (interleaved, so that drift hits all cases alike), after one
    unmeasured run of each case that uses the cache (which fills it)."""
    for case in all_cases:
        if case.cached:
            checked(run_measured(case.argv, env, workdir), f"{case.label} (filling the cache)")
    timings = [Timings() for _ in all_cases]
    for _ in range(runs):
        for case, timing in zip(all_cases, timings, strict=True):
            offset = server.log_offset()
            result: Measured = checked(run_measured(case.argv, {**env, **case.env}, workdir), case.label)
            if not case.check(result.stdout):
                raise SystemExit(f"{case.label} printed an unexpected result:\n{result.stdout[:2000]}")
            timing.walls.append(result.wall)
            timing.cpu.append(result.cpu)
            if result.max_rss:  # 0: the process ended before the first sample
                timing.rss.append(result.max_rss / 1e6)
            timing.requests.append(server.requests_since(offset))
    return timings


def report(all_cases: list[Case], timings: list[Timings], versions: int, runs: int) -> str:
    baseline = next(Stats.of(t.walls).median for c, t in zip(all_cases, timings, strict=True) if c.label == BASELINE)
    off = {c.label: Stats.of(t.walls).median for c, t in zip(all_cases, timings, strict=True) if c.cached is False}
    rows = []
    for case, timing in zip(all_cases, timings, strict=True):
        wall = Stats.of(timing.walls)
        requests = Counter(len(found) for found in timing.requests).most_common(1)[0][0]
        uncached = f"{wall.median / off[case.label]:.2f}" if case.cached else "-"
        rows.append([case.label, case.cache, wall.show("{:.3f}"), f"{wall.median / baseline:.2f}", uncached,
                     f"{Stats.of(timing.cpu).median:.3f}", Stats.of(timing.rss).show("{:.0f}") if timing.rss else "-",
                     str(requests)])  # fmt: skip
    lines = [
        f"lookups in a registry of {versions} versions of {NAME} on moto's S3 server (loopback), {runs} runs each",
        f"machine: {machine()}",
        f"source: {source_state()}; imported from {Path(mreg.__file__).parent}",
        "wall time of the whole process, median (min-max); ratios to the boto3 baseline's median and to the same",
        "command's with the cache off; the process's CPU time (user + system), median",
        "",
        table(HEADER, rows),
        "",
        f"targets: under {TARGET} s per lookup (issue #3); under {REPEAT_TARGET} s per repeated lookup (issue #18):",
    ]
    for case, timing in zip(all_cases, timings, strict=True):
        if case.cached:
            wall = Stats.of(timing.walls)
            verdict = "met" if wall.median < REPEAT_TARGET else "missed"
            lines.append(f"  {case.label}, repeated: {verdict} in the median, {wall.high:.3f} s at most")
    lines += ["", "S3 requests of one run of each command:"]
    for case, timing in zip(all_cases, timings, strict=True):
        lines.append(f"  {case.label} (cache {case.cache}): " + (", ".join(timing.requests[-1]) or "none"))
    return "\n".join(lines)


def phases(ref: str, runs: int, env: dict[str, str], workdir: Path, *, cached: bool) -> str:
    """Where one lookup's time goes (bench/lookup_phases.py, `runs` fresh processes), and warm lookups: with the
    record read from S3 (the cache off), or from the record cache."""
    driver = [sys.executable, str(REPO / "bench" / "lookup_phases.py"), f"s3://{BUCKET}/{PREFIX}", ref, "--warm", "20"]
    driver += ["--cached"] if cached else []
    steps: dict[str, list[float]] = {}
    warm: list[float] = []
    for _ in range(runs):
        result = checked(run_measured(driver, env if cached else {**env, **CACHE_OFF}, workdir), "lookup_phases.py")
        document = json.loads(result.stdout)
        for name, ms in document["steps_ms"].items():
            steps.setdefault(name, []).append(ms)
        steps.setdefault("interpreter start and exit (the rest of the wall time)", []).append(
            result.wall * 1000 - sum(document["steps_ms"].values()) - document["warm_ms"]["total"]
        )
        steps.setdefault("whole process (without the warm lookups)", []).append(
            result.wall * 1000 - document["warm_ms"]["total"]
        )
        warm.append(document["warm_ms"]["median"])
    rows = [[name, Stats.of(values).show("{:.0f}")] for name, values in steps.items()]
    source = "the record cache" if cached else "S3 (cache off)"
    return "\n".join([
        f"where `mreg show {ref}` spends its time, the record read from {source} (bench/lookup_phases.py, "
        f"{runs} runs, ms, median (min-max)):",
        "",
        table(["step", "ms"], rows),
        "",
        f"the record read again in a warm process (Registry API): {Stats.of(warm).show('{:.1f}')} ms",
    ])  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=10_000, help="versions in the registry (default 10000)")
    parser.add_argument("--runs", type=int, default=10, help="runs of each lookup (default 10)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 versions, 3 runs")
    parser.add_argument("--json", type=Path, help="also write the raw measurements to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (server log)")
    args = parser.parse_args()
    if args.quick:
        args.versions, args.runs = 100, 3
    return args


def main() -> None:
    args = parse_args()
    compile_mreg()
    alias_version, probe_version = args.versions // 2 + 1, max(1, args.versions // 3)
    with work_directory(args.keep) as workdir, moto_server(workdir) as server:
        env = {**s3_env(server.endpoint, workdir), "MREG_CACHE_DIR": str(workdir / "cache")}
        env.pop("MREG_NO_CACHE", None)
        os.environ.update({key: value for key, value in env.items() if key.startswith("AWS_")})
        s3_client(server.endpoint).create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        populate(args.versions, alias_version)
        print(f"wrote {args.versions} versions in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        all_cases = cases(args.versions, alias_version, probe_version)
        timings = measure(all_cases, args.runs, server, env, workdir)
        breakdowns = [phases(f"{NAME}:{probe_version}", args.runs, env, workdir, cached=c) for c in (False, True)]
        cache_bytes = sum(path.stat().st_size for path in (workdir / "cache").rglob("*") if path.is_file())
    print(report(all_cases, timings, args.versions, args.runs))
    print(f"\nthe record cache after the runs: {cache_bytes} bytes")
    for breakdown in breakdowns:
        print()
        print(breakdown)
    if args.json:
        raw = {f"{c.label} (cache {c.cache})": t.__dict__ for c, t in zip(all_cases, timings, strict=True)}
        args.json.write_text(json.dumps({"versions": args.versions, "machine": machine(), "cases": raw}, indent=2))


if __name__ == "__main__":
    main()
