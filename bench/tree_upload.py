"""Directory-model uploads with mreg against `aws s3 sync` of the same tree, on moto's S3 server.

    .venv/bin/python bench/tree_upload.py            # a 2 GiB tree of 298 files, 3 runs of each
    .venv/bin/python bench/tree_upload.py --quick    # 128 MiB, same files, 2 runs: a smoke run

The tree is written once: 8 shards (most of the bytes), 40 files of 4-8 MiB and 250 files of 1-64 KiB (those
two sizes scaled down with a smaller tree), in nested directories, random bytes. Each run uploads it once
with mreg (a driver process: `walk_tree`, then `put_tree`, as `mreg register` does) and once with
`aws s3 sync`, alternating which goes first. The first bytes of every file change before each upload, so mreg
finds nothing already stored; the bucket is emptied after each upload. Last, one "second save": both upload
the tree once more, 3 of its files change, and both upload it again, where each should send only those 3.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `bench` importable

from bench.common import (
    BIN,
    REPO,
    Measured,
    MiB,
    MotoServer,
    Stats,
    checked,
    compile_mreg,
    empty_bucket,
    machine,
    moto_server,
    parse_size,
    perturb,
    run_measured,
    s3_client,
    s3_env,
    source_state,
    table,
    work_directory,
)

BUCKET = "mreg-bench"
STORE = f"s3://{BUCKET}/objects"
MB = 1000 * 1000
FULL_SIZE = 2048 * MiB
SHARDS, MEDIUM, SMALL = 8, 40, 250
MEDIUM_SIZES = (4 * MiB, 8 * MiB - 1)
"""At 2 GiB; scaled with the tree's size. Below 8 MiB: one request each, for mreg and the AWS CLI alike."""
SMALL_SIZES = (1024, 64 * 1024)
KINDS = ("shard", "medium", "small")
TARGET = 0.9


@dataclass(frozen=True)
class TreeFile:
    path: str
    size: int
    kind: str
    """shard, medium or small."""


@dataclass(frozen=True)
class Upload:
    """One upload: the process, the server's CPU time meanwhile, the requests the server logged by method,
    and the files sent."""

    process: Measured
    server_cpu: float
    requests: dict[str, int]
    sent: int

    @property
    def request_count(self) -> int:
        return sum(self.requests.values())


@dataclass
class Runs:
    """The uploads of one uploader over all runs."""

    name: str
    uploads: list[Upload] = field(default_factory=list)

    def stats(self, value: Callable[[Upload], float]) -> Stats:
        return Stats.of([value(upload) for upload in self.uploads])


def tree_layout(total: int, seed: int = 12) -> list[TreeFile]:
    """The files of a tree of `total` bytes, like a Hugging Face folder with a SavedModel's nesting: shards
    at the top, weights files two levels down, small files (configs, vocabularies) three levels down."""
    rng = random.Random(seed)  # noqa: S311 (sizes, not secrets)
    scale = total / FULL_SIZE
    medium = [int(rng.randint(*MEDIUM_SIZES) * scale) for _ in range(MEDIUM)]
    layout = [
        TreeFile(f"variables/group-{index % 5}/weights-{index:03d}.bin", size, "medium")
        for index, size in enumerate(medium)
    ]
    layout += [
        TreeFile(f"assets/set-{index % 5}/part-{index % 3}/file-{index:03d}.txt", rng.randint(*SMALL_SIZES), "small")
        for index in range(SMALL)
    ]
    rest = total - sum(entry.size for entry in layout)
    shard = rest // SHARDS
    if shard <= MEDIUM_SIZES[1] * scale:
        raise SystemExit(f"a tree of {total} bytes leaves too little for {SHARDS} shards larger than the rest")
    sizes = [shard] * (SHARDS - 1) + [rest - shard * (SHARDS - 1)]
    layout += [
        TreeFile(f"model-{index + 1:05d}-of-{SHARDS:05d}.safetensors", size, "shard")
        for index, size in enumerate(sizes)
    ]
    return sorted(layout, key=lambda entry: entry.path)


def write_tree(root: Path, layout: Sequence[TreeFile]) -> None:
    """Random bytes in every file, written in 8 MiB blocks."""
    for entry in layout:
        path = root / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as sink:
            for offset in range(0, entry.size, 8 * MiB):
                sink.write(os.urandom(min(8 * MiB, entry.size - offset)))


def stored(client: Any, prefix: str) -> tuple[int, int]:
    """How many objects, and how many bytes, the bucket holds under `prefix`."""
    count = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for entry in page.get("Contents", []):
            count, size = count + 1, size + entry["Size"]
    return count, size


def upload_with_mreg(root: Path, env: dict[str, str], workdir: Path, args: argparse.Namespace) -> Measured:
    driver: list[str | Path] = [sys.executable, REPO / "bench" / "upload_driver.py", "--tree", STORE, root]
    driver += ["--workers", str(args.workers)] if args.workers else []
    driver += ["--large-workers", str(args.large_workers)] if args.large_workers else []
    driver += ["--concurrency", str(args.concurrency)] if args.concurrency else []
    return checked(run_measured(driver, env, workdir), "the mreg upload driver")


def upload_with_awscli(root: Path, prefix: str, env: dict[str, str], workdir: Path) -> Measured:
    argv: list[str | Path] = [BIN / "aws", "s3", "sync", "--no-progress", root, f"s3://{BUCKET}/{prefix}"]
    argv += ["--endpoint-url", env["AWS_ENDPOINT_URL"]]
    return checked(run_measured(argv, env, workdir), "aws s3 sync")


def upload(name: str, root: Path, prefix: str, server: MotoServer, env: dict[str, str], args: Any) -> Upload:
    """One upload of the tree by `name` (mreg or awscli), with the server's view of it."""
    workdir = root.parent
    offset, cpu = server.log_offset(), server.cpu_seconds()
    if name == "mreg":
        result = upload_with_mreg(root, env, workdir, args)
        sent = int(json.loads(result.stdout)["uploaded"])
    else:
        result = upload_with_awscli(root, prefix, env, workdir)
        sent = sum(line.startswith("upload: ") for line in result.stdout.splitlines())
    methods = Counter(line.split()[0] for line in server.requests_since(offset))
    return Upload(result, server.cpu_seconds() - cpu, dict(methods), sent)


def full_upload(
    name: str, index: int, root: Path, layout: Sequence[TreeFile], server: MotoServer, env: dict[str, str], args: Any
) -> Upload:
    """A fresh version of every file uploaded by `name`, checked in the bucket, then deleted."""
    for entry in layout:
        perturb(root / entry.path)
    total = sum(entry.size for entry in layout)
    done = upload(name, root, f"baseline/run-{index}", server, env, args)
    client = s3_client(server.endpoint)
    if name == "mreg":
        count, size = stored(client, "objects/blobs/")
        manifest = 1  # the manifest is one more blob, of a few dozen kB
        if done.sent != len(layout) or count != len(layout) + manifest or not total < size < total + MiB:
            raise SystemExit(f"mreg sent {done.sent} files and left {count} blobs of {size} bytes in the bucket")
    elif (done.sent, stored(client, f"baseline/run-{index}/")) != (len(layout), (len(layout), total)):
        raise SystemExit(f"aws s3 sync sent {done.sent} files, not {len(layout)} of {total} bytes in all")
    empty_bucket(client, BUCKET)
    print(
        f"run {index + 1} {name:<6} {done.process.wall:7.2f} s  {total / MB / done.process.wall:7.1f} MB/s  "
        f"peak RSS {done.process.max_rss / MB:6.1f} MB  server CPU {done.server_cpu:6.2f} s",
        file=sys.stderr,
    )
    return done


def second_save(
    root: Path, layout: Sequence[TreeFile], server: MotoServer, env: dict[str, str], args: Any
) -> dict[str, tuple[Upload, Upload]]:
    """Both uploaders store the tree, 3 files change (one of each kind), and both store it again."""
    for entry in layout:
        perturb(root / entry.path)
    first = {name: upload(name, root, "baseline/saved", server, env, args) for name in ("mreg", "awscli")}
    for kind in KINDS:
        perturb(root / next(entry.path for entry in layout if entry.kind == kind))
    again = {name: upload(name, root, "baseline/saved", server, env, args) for name in ("mreg", "awscli")}
    empty_bucket(s3_client(server.endpoint), BUCKET)
    for name, done in again.items():
        print(f"second save {name:<6} {done.process.wall:7.2f} s, {done.sent} files sent", file=sys.stderr)
    return {name: (first[name], again[name]) for name in first}


def driver_documents(runs: Runs) -> list[dict[str, Any]]:
    return [json.loads(done.process.stdout) for done in runs.uploads]


def phase_rows(runs: Runs) -> list[list[str]]:
    """Where mreg's wall time goes: start-up, the walk, the uploads (each file hashed, then sent)."""
    walls = [done.process.wall for done in runs.uploads]
    documents = driver_documents(runs)
    phases = {
        "start-up, imports, client; exit": [wall - doc["seconds"] for wall, doc in zip(walls, documents, strict=True)],
        "walk_tree: walk, check every entry": [doc["walk_seconds"] for doc in documents],
        "put_tree: hash, look up, upload, manifest": [doc["seconds"] - doc["walk_seconds"] for doc in documents],
    }
    return [
        [phase, Stats.of(values).show(), Stats.of([v / w for v, w in zip(values, walls, strict=True)]).show("{:.0%}")]
        for phase, values in phases.items()
    ]


def request_rows(runs: Runs) -> list[list[str]]:
    """mreg's S3 requests by operation (first run): count, busy time (sum of durations) and mean in flight."""
    document = driver_documents(runs)[0]
    uploading = document["seconds"] - document["walk_seconds"]
    return [
        [operation, str(timing["count"]), f"{timing['busy']:.1f}", f"{timing['busy'] / uploading:.1f}"]
        for operation, timing in sorted(document["requests"].items(), key=lambda item: -item[1]["busy"])
    ]


def file_rows(runs: Runs, layout: Sequence[TreeFile]) -> list[list[str]]:
    """mreg's `put_file` calls by kind of file: when they ran within put_tree, and how long each took."""
    kinds = {entry.path: entry.kind for entry in layout} | {"(manifest)": "manifest"}
    rows = []
    for kind in (*KINDS, "manifest"):
        spans, each, starts, ends = [], [], [], []
        for document in driver_documents(runs):
            calls = [(start, end) for path, _, start, end in document["files"] if kinds[path] == kind]
            origin = document["walk_seconds"]
            starts.append(min(start for start, _ in calls) - origin)
            ends.append(max(end for _, end in calls) - origin)
            spans.append(ends[-1] - starts[-1])
            each.append(sum(end - start for start, end in calls) / len(calls))
        rows.append([
            kind, str(len(calls)), Stats.of(starts).show(), Stats.of(ends).show(), Stats.of(spans).show(),
            Stats.of(each).show("{:.3f}"),
        ])  # fmt: skip
    return rows


def report(layout: Sequence[TreeFile], mreg: Runs, awscli: Runs, saved: dict[str, tuple[Upload, Upload]]) -> str:
    total = sum(entry.size for entry in layout)
    sizes = {kind: [entry.size for entry in layout if entry.kind == kind] for kind in KINDS}
    pairs = zip(mreg.uploads, awscli.uploads, strict=True)
    ratios = Stats.of([theirs.process.wall / ours.process.wall for ours, theirs in pairs])
    rows = [
        [
            runs.name,
            runs.stats(lambda u: u.process.wall).show(),
            runs.stats(lambda u: total / MB / u.process.wall).show("{:.1f}"),
            runs.stats(lambda u: u.process.max_rss / MB).show("{:.0f}"),
            runs.stats(lambda u: u.process.cpu).show(),
            runs.stats(lambda u: u.server_cpu).show(),
            runs.stats(lambda u: u.request_count).show("{:.0f}"),
        ]
        for runs in (mreg, awscli)
    ]
    saved_rows = [
        [name, f"{first.process.wall:.2f}", f"{again.process.wall:.2f}", str(again.sent), str(again.request_count),
         f"{again.process.max_rss / MB:.0f}"]
        for name, (first, again) in saved.items()
    ]  # fmt: skip
    driver = driver_documents(mreg)[0]
    return "\n".join([
        f"directory upload of {total / MiB:.0f} MiB in {len(layout)} files to moto's S3 server on loopback, "
        f"{len(mreg.uploads)} runs each, alternating",
        f"tree: {SHARDS} shards of {max(sizes['shard']) / MiB:.0f} MiB, {MEDIUM} files of "
        f"{min(sizes['medium']) / MiB:.2f}-{max(sizes['medium']) / MiB:.2f} MiB, {SMALL} files of "
        f"{min(sizes['small']) / 1024:.0f}-{max(sizes['small']) / 1024:.0f} KiB, nested directories",
        f"machine: {machine()}",
        f"source: {source_state()}",
        f"mreg: {driver['workers']} files of one part at once beside {driver['large_workers']} larger ones, each "
        f"in {driver['part_size'] // MiB} MiB parts, {driver['concurrency']} in flight; awscli: `aws s3 sync`, "
        "default settings; median (min-max):",
        "",
        table(["uploader", "wall s", "MB/s", "peak RSS MB", "client CPU s", "server CPU s", "requests"], rows),
        "",
        f"throughput ratio mreg/awscli: {ratios.show()}   (target >= {TARGET})",
        "",
        "where mreg's wall time goes (driver timings; share of the process's wall):",
        "",
        table(["phase", "s", "share"], phase_rows(mreg)),
        "",
        "mreg's S3 requests in put_tree (first run; busy: sum of durations, s; in flight: busy / put_tree's wall):",
        "",
        table(["request", "count", "busy s", "in flight"], request_rows(mreg)),
        "",
        "mreg's put_file calls by kind of file (s from the start of put_tree; each: mean duration of one call):",
        "",
        table(["kind", "files", "first start", "last end", "span", "each"], file_rows(mreg, layout)),
        "",
        f"second save: both store the tree, then one {', one '.join(KINDS)} file change, and both store it "
        "again (mreg first, one run):",
        "",
        table(["uploader", "first save s", "second save s", "files sent", "requests", "peak RSS MB"], saved_rows),
    ])  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=FULL_SIZE, help="tree size (default 2GiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each uploader (default 3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 128MiB, 2 runs")
    parser.add_argument("--workers", type=int, help="mreg's files of one part at once (default: put_tree's)")
    parser.add_argument("--large-workers", type=int, help="mreg's larger files at once (default: put_tree's)")
    parser.add_argument("--concurrency", type=int, help="mreg's parts in flight per file (default: the store's)")
    parser.add_argument("--json", type=Path, help="also write the raw measurements to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (server log, tree)")
    args = parser.parse_args()
    if args.quick:
        args.size, args.runs = 128 * MiB, 2
    return args


def main() -> None:
    args = parse_args()
    compile_mreg()
    layout = tree_layout(args.size)
    uploaders = {"mreg": Runs("mreg"), "awscli": Runs("awscli")}
    with work_directory(args.keep) as workdir, moto_server(workdir) as server:
        env = s3_env(server.endpoint, workdir)
        s3_client(server.endpoint).create_bucket(Bucket=BUCKET)
        root = workdir / "model"
        write_tree(root, layout)
        for index in range(args.runs):
            for name in ("mreg", "awscli") if index % 2 == 0 else ("awscli", "mreg"):
                uploaders[name].uploads.append(full_upload(name, index, root, layout, server, env, args))
        saved = second_save(root, layout, server, env, args)
    print(report(layout, uploaders["mreg"], uploaders["awscli"], saved))
    if args.json:
        raw = {name: [done.__dict__ | {"process": done.process.__dict__} for done in runs.uploads]
               for name, runs in uploaders.items()}  # fmt: skip
        args.json.write_text(json.dumps({"layout": [entry.__dict__ for entry in layout], "uploads": raw}, indent=2))


if __name__ == "__main__":
    main()
