"""What the benchmarks share: moto's S3 server in its own process, measured child processes, statistics.

Every figure a benchmark reports is a ratio against a baseline measured in the same invocation, on the same
server: absolute numbers from moto on loopback say little about AWS S3.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
"""The virtualenv's bin directory (moto_server, aws, mreg live there)."""
REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "mreg-bench-key",
    "AWS_SECRET_ACCESS_KEY": "mreg-bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class Stats:
    """Median, min and max of a few measurements."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        return cls(statistics.median(values), min(values), max(values))

    def show(self, fmt: str = "{:.2f}") -> str:
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}-{fmt.format(self.high)})"


@dataclass(frozen=True)
class Measured:
    """One child process: exit code, wall time, peak RSS (bytes; 0 when it ended before the first sample),
    CPU seconds, and its output."""

    returncode: int
    wall: float
    max_rss: int
    cpu: float
    stdout: str
    stderr: str


def compile_mreg() -> None:
    """Compile mreg's modules to bytecode, as `pip install` does for an installed package (and did for
    every baseline's libraries). A checkout installed in editable mode under PYTHONDONTWRITEBYTECODE (set on
    this workplace's machines) would otherwise compile about 20 modules from source in every mreg
    process: some 40 ms of each start-up that no user's installation pays."""
    import compileall

    compileall.compile_dir(REPO / "src" / "mreg", quiet=1)


def run_measured(argv: Sequence[str | Path], env: dict[str, str], workdir: Path) -> Measured:
    """Run `argv` to completion: wall time around it, CPU time from the kernel (wait4), peak RSS by polling.

    The peak is the child's own high-water mark (VmHWM), sampled every 10 ms: wait4's ru_maxrss would also
    count the parent's memory, which a child started with vfork/exec inherits as its starting maximum.
    """
    out, err = workdir / "child.out", workdir / "child.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen([str(arg) for arg in argv], env=env, stdout=stdout, stderr=stderr)
        with _peak_rss(process.pid) as peak:
            _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        returncode=process.returncode,
        wall=wall,
        max_rss=peak[0],
        cpu=usage.ru_utime + usage.ru_stime,
        stdout=out.read_text(errors="replace"),
        stderr=err.read_text(errors="replace"),
    )


@contextmanager
def _peak_rss(pid: int, interval: float = 0.01) -> Iterator[list[int]]:
    """Poll the VmHWM of `pid` in a thread while the body runs; yields a one-item list that holds the peak."""
    peak = [0]
    done = threading.Event()

    def poll() -> None:
        status = Path(f"/proc/{pid}/status")
        while not done.is_set():
            try:
                lines = status.read_text().splitlines()
            except OSError:
                return
            for line in lines:
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            done.wait(interval)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield peak
    finally:
        done.set()
        poller.join()


def checked(result: Measured, what: str) -> Measured:
    """`result`, or SystemExit with the child's stderr when it failed: a failed run measures nothing."""
    if result.returncode != 0:
        raise SystemExit(f"{what} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MotoServer:
    """`moto_server` (threaded werkzeug) on 127.0.0.1 in its own process; its request log is kept in a file."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "moto.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"moto_server exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):  # noqa: S310 (loopback)
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise SystemExit(f"moto_server did not answer on {self.endpoint} within {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        """User and system CPU time the server used so far (all its threads; Linux's /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        """The server's resident memory now, in bytes."""
        return int(Path(f"/proc/{self.process.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def log_offset(self) -> int:
        return self.log.stat().st_size

    def requests_since(self, offset: int) -> list[str]:
        """The request lines (`GET /bucket/key`) the server logged after `offset`."""
        return [line for _, line in self.timed_requests_since(offset)]

    def timed_requests_since(self, offset: int) -> list[tuple[float, str]]:
        """(epoch seconds, request line) of each request logged after `offset`.

        werkzeug logs a request when its response starts, to the second: each time is the end of a request.
        """
        with self.log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        found = []
        for match in re.finditer(r'\[(\d\d/\w{3}/\d{4} \d\d:\d\d:\d\d)\] "(\S+ \S+)', text):
            when = datetime.strptime(match[1], "%d/%b/%Y %H:%M:%S").timestamp()  # differences only
            found.append((when, match[2]))
        return found

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def moto_server(workdir: Path) -> Iterator[MotoServer]:
    server = MotoServer(workdir)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def s3_env(endpoint: str, workdir: Path) -> dict[str, str]:
    """This environment, with only the benchmark's S3 settings: no profile, config file or metadata lookups."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    return {
        **env,
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def work_directory(keep: bool) -> Iterator[Path]:
    """A fresh scratch directory under the system's temporary directory (removed unless `keep`)."""
    path = Path(tempfile.mkdtemp(prefix="mreg-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def machine() -> str:
    """One line about where the numbers come from."""
    import moto

    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1024**3
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs, {memory:.0f} GiB RAM, Python {sys.version.split()[0]}, moto {moto.__version__}; "
        f"load average {load}"
    )


def source_state() -> str:
    """The commit of the working tree, and the files of src/ that differ from it (others may be editing)."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return result.stdout.rstrip("\n")

    changed = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    return f"mreg at {git('rev-parse', '--short', 'HEAD')}" + (f", changed: {', '.join(changed)}" if changed else "")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (readable as plain text, pasteable into docs/benchmarks.md)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * width for width in widths], *rows]
    return "\n".join(
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines
    )


def parse_size(text: str) -> int:
    """`2GiB`, `64MiB`, `512KiB` or a number of bytes."""
    match = re.fullmatch(r"(\d+)\s*(KiB|MiB|GiB)?", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 2GiB, 64MiB, 1048576)")
    factor = {"KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB, None: 1}[match[2]]
    return int(match[1]) * factor


def perturb(path: Path) -> None:
    """New content for the next upload: fresh random first bytes (a new SHA-256, so a new content address)."""
    with path.open("r+b") as sink:
        sink.write(os.urandom(16))


def empty_bucket(client: Any, bucket: str) -> None:
    """Delete every object and abort every multipart upload (outside the timed part of a run)."""
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=entry["Key"])


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client of the benchmark itself (setup and cleanup, never measured)."""
    import boto3

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )
