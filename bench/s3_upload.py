"""Upload throughput and memory of mreg's S3 object store against `aws s3 cp`, on moto's S3 server.

    .venv/bin/python bench/s3_upload.py            # 2 GiB, 3 runs of each
    .venv/bin/python bench/s3_upload.py --quick    # 64 MiB, 2 runs: a smoke run

Each run uploads the same file once with mreg (a driver process calling `S3ObjectStore.put_file`, as
`mreg register` does) and once with the AWS CLI, alternating which goes first. The file's first bytes
change before every upload, so mreg never finds its content already stored. The bucket is emptied after
each upload, so that the server holds the same data before each one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
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
BLOCK = 64 * MiB
MB = 1000 * 1000
REQUESTS = {
    "CreateMultipartUpload": "start the multipart upload",
    "UploadPart": "read, hash and upload the parts",
    "CompleteMultipartUpload": "complete the upload (the server assembles the parts)",
    "GetObject": "read the content address (sha256/<hex>), or read back a single-request upload",
    "HeadObject": "check the blob an existing content address names",
    "PutObject": "claim the content address (If-None-Match), or a single-request upload",
    "DeleteObject": "delete a duplicate or failed blob",
}
SERVER_PHASES = ("parts", "complete", "claim")


@dataclass(frozen=True)
class Upload:
    """One upload: the process, the server's CPU time meanwhile, and its phases in the server's log."""

    process: Measured
    server_cpu: float
    server_phases: dict[str, float]


@dataclass
class Runs:
    """The uploads of one uploader over all runs."""

    name: str
    uploads: list[Upload] = field(default_factory=list)

    def stats(self, value: Callable[[Upload], float]) -> Stats:
        return Stats.of([value(upload) for upload in self.uploads])

    def phase(self, name: str) -> Stats:
        return Stats.of([upload.server_phases[name] for upload in self.uploads])


def write_test_file(path: Path, size: int) -> None:
    """`size` bytes: a 64 MiB random block, repeated (cheap; neither uploader compresses or deduplicates)."""
    block = os.urandom(min(BLOCK, size))
    with path.open("wb") as sink:
        for offset in range(0, size, len(block)):
            sink.write(block[: size - offset])


def upload_with_mreg(path: Path, env: dict[str, str], workdir: Path, args: argparse.Namespace) -> tuple[Measured, str]:
    driver: list[str | Path] = [sys.executable, REPO / "bench" / "upload_driver.py", f"s3://{BUCKET}/objects", path]
    driver += ["--part-size", str(args.part_size)] if args.part_size else []
    driver += ["--concurrency", str(args.concurrency)] if args.concurrency else []
    result = checked(run_measured(driver, env, workdir), "the mreg upload driver")
    return result, str(json.loads(result.stdout)["uri"]).removeprefix(f"s3://{BUCKET}/")


def upload_with_awscli(path: Path, key: str, env: dict[str, str], workdir: Path) -> Measured:
    target = f"s3://{BUCKET}/{key}"
    argv: list[str | Path] = [BIN / "aws", "s3", "cp", "--only-show-errors", "--no-progress", path, target]
    argv += ["--endpoint-url", env["AWS_ENDPOINT_URL"]]
    return checked(run_measured(argv, env, workdir), "aws s3 cp")


def server_phases(requests: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds between the server's responses, from its log (1 s resolution): CreateMultipartUpload to the
    last part, the last part to CompleteMultipartUpload, and that to the claim of the content address."""
    created = min(when for when, line in requests if line.startswith("POST") and line.endswith("?uploads"))
    last_part = max(when for when, line in requests if "partNumber=" in line)
    completed = min(when for when, line in requests if line.startswith("POST") and "uploadId=" in line)
    claimed = [when for when, line in requests if line.startswith("PUT") and "?" not in line]
    return {
        "parts": last_part - created,
        "complete": completed - last_part,
        "claim": (claimed[0] - completed) if claimed else 0.0,
    }


def upload_once(name: str, index: int, path: Path, server: MotoServer, env: dict[str, str], args: Any) -> Upload:
    """One upload of a fresh version of the file by `name` (mreg or awscli), checked, then deleted."""
    perturb(path)
    workdir = path.parent
    offset, cpu = server.log_offset(), server.cpu_seconds()
    if name == "mreg":
        result, key = upload_with_mreg(path, env, workdir, args)
    else:
        key = f"baseline/run-{index}.bin"
        result = upload_with_awscli(path, key, env, workdir)
    upload = Upload(result, server.cpu_seconds() - cpu, server_phases(server.timed_requests_since(offset)))
    client = s3_client(server.endpoint)
    if client.head_object(Bucket=BUCKET, Key=key)["ContentLength"] != args.size:
        raise SystemExit(f"{name} stored {key} with the wrong size")
    empty_bucket(client, BUCKET)
    speed = args.size / MiB / result.wall
    print(
        f"run {index + 1} {name:<6} {result.wall:7.2f} s  {speed:7.1f} MiB/s  "
        f"peak RSS {result.max_rss / MB:6.1f} MB  server CPU {upload.server_cpu:6.2f} s",
        file=sys.stderr,
    )
    return upload


def request_rows(runs: Runs) -> list[list[str]]:
    """Where mreg's time went: each request type's span (first start to last end), median over runs."""
    documents = [json.loads(upload.process.stdout) for upload in runs.uploads]
    walls = [upload.process.wall for upload in runs.uploads]
    rows = []
    for operation, meaning in REQUESTS.items():
        found = [(doc["requests"][operation], wall) for doc, wall in zip(documents, walls, strict=True)
                 if operation in doc["requests"]]  # fmt: skip
        if found:
            spans = [timing["last"] - timing["first"] for timing, _ in found]
            share = Stats.of([span / wall for span, (_, wall) in zip(spans, found, strict=True)])
            rows.append([operation, str(found[0][0]["count"]), Stats.of(spans).show(), share.show("{:.0%}"), meaning])
    outside = Stats.of([wall - doc["seconds"] for wall, doc in zip(walls, documents, strict=True)])
    rows.append(["(outside put_file)", "", outside.show(), "", "interpreter start, imports, client creation, exit"])
    return rows


def report(size: int, mreg: Runs, awscli: Runs) -> str:
    pairs = zip(mreg.uploads, awscli.uploads, strict=True)
    ratios = Stats.of([theirs.process.wall / ours.process.wall for ours, theirs in pairs])
    rows = [
        [
            runs.name,
            runs.stats(lambda u: u.process.wall).show(),
            runs.stats(lambda u: size / MiB / u.process.wall).show("{:.1f}"),
            runs.stats(lambda u: u.process.max_rss / MB).show("{:.0f}"),
            runs.stats(lambda u: u.process.cpu).show(),
            runs.stats(lambda u: u.server_cpu).show(),
        ]
        for runs in (mreg, awscli)
    ]
    phases = [[runs.name, *(runs.phase(phase).show("{:.0f}") for phase in SERVER_PHASES)] for runs in (mreg, awscli)]
    driver = json.loads(mreg.uploads[0].process.stdout)
    return "\n".join([
        f"upload of {size / MiB:.0f} MiB to moto's S3 server on loopback, {len(mreg.uploads)} runs each",
        f"machine: {machine()}",
        f"source: {source_state()}",
        f"mreg: part size {driver['part_size'] // MiB} MiB, concurrency {driver['concurrency']}; median (min-max):",
        "",
        table(["uploader", "wall s", "MiB/s", "peak RSS MB", "client CPU s", "server CPU s"], rows),
        "",
        f"throughput ratio mreg/awscli: {ratios.show()}   (target >= 0.9)",
        "",
        "mreg's S3 requests, timed in the driver (span: first start to last end, s; share of the process's wall):",
        "",
        table(["request", "count", "span s", "share", "what"], request_rows(mreg)),
        "",
        "both uploaders as moto's request log sees them (s, 1 s resolution):",
        "",
        table(["uploader", "parts", "complete", "claim"], phases),
    ])  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=2 * 1024 * MiB, help="file size (default 2GiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each uploader (default 3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 64MiB, 2 runs")
    parser.add_argument("--part-size", type=int, help="mreg's part size in MiB (default: the store's)")
    parser.add_argument("--concurrency", type=int, help="mreg's parts in flight (default: the store's)")
    parser.add_argument("--json", type=Path, help="also write the raw measurements to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (server log, test file)")
    args = parser.parse_args()
    if args.quick:
        args.size, args.runs = 64 * MiB, 2
    return args


def main() -> None:
    args = parse_args()
    compile_mreg()
    uploaders = {"mreg": Runs("mreg"), "awscli": Runs("awscli")}
    with work_directory(args.keep) as workdir, moto_server(workdir) as server:
        env = s3_env(server.endpoint, workdir)
        s3_client(server.endpoint).create_bucket(Bucket=BUCKET)
        path = workdir / "model.bin"
        write_test_file(path, args.size)
        for index in range(args.runs):
            for name in ("mreg", "awscli") if index % 2 == 0 else ("awscli", "mreg"):
                uploaders[name].uploads.append(upload_once(name, index, path, server, env, args))
    print(report(args.size, uploaders["mreg"], uploaders["awscli"]))
    if args.json:
        raw = {name: [upload.__dict__ | {"process": upload.process.__dict__} for upload in runs.uploads]
               for name, runs in uploaders.items()}  # fmt: skip
        args.json.write_text(json.dumps({"size": args.size, "machine": machine(), "uploads": raw}, indent=2))


if __name__ == "__main__":
    main()
