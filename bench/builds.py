"""Build benchmarks: mreg (BuildKit through `docker buildx bake`, uv, cache mounts) against baselines measured in
the same invocation, on the machine at hand.

    .venv/bin/python bench/builds.py [--runs N] [--quick] [--scenario all|onepin] [--log-dir DIR] [--json FILE]

Each run goes through scenarios 1-4 in order on a fresh copy of the bundled example (model `bench-iris`):

1. cold build of both images: `docker builder prune -af`, none of this script's images left, the base image
   present; `mreg build` against a hand-written multi-stage Dockerfile (venv + `pip install` of the same
   top-level pins per stage) built by the classic builder, `--target train` then `--target serve`;
2. no-change rebuild: `mreg build` again against `docker buildx build` of the context `mreg render --context`
   writes, both targets, warm cache;
3. serve-only package change (`itsdangerous==2.1.2` added to the serve group): `mreg build --lock` (the lock and
   build phases are split at the moment `registry.lock` is rewritten) against the naive Dockerfile with that
   package on its serve `pip install` line, both targets rebuilt; the steps BuildKit ran are counted per stage;
4. push to a fresh `registry:2` on 127.0.0.1 (one per approach): `mreg build --push`, twice, against
   `docker push` of the naive images, twice; bytes and blobs are read on the registry side.

Then 5: CLI start-up, `mreg --help` and `mreg render` against `python -c pass` in the same virtualenv.

Then 6 (issue #18, alone with `--scenario onepin`): the everyday CI step. A project with the issue's packages
(scikit-learn, NumPy and SciPy shared, hyperopt to train, FastAPI and uvicorn to serve) on a base image made
for this invocation (so that no earlier invocation's build cache answers), built once by both approaches; then,
in each run, fastapi is bumped to its next release: `mreg lock` and `mreg --verbose build` (traced: every child
process and BuildKit line timed) against `docker buildx bake` of a hand-tuned Dockerfile of the same packages
(uv with cache mounts, no lock, no hashes, no bytecode, no checks); both again unchanged. mreg's uv cache is
this invocation's own, so each bump is to a release it has not resolved; the relock back and forth between the
two releases then measures it with the release in uv's cache. Where the time goes is printed phase by phase.

Every figure is reported as median [min-max] over the runs (samples), with the ratio mreg/baseline computed
per run. Everything this script creates (containers, images, temporary directories) is removed at the end,
also on Ctrl-C or SIGTERM. It changes no file of the project. MREG_* variables are not passed to mreg.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `bench` importable

from bench.common import BIN, REPO, compile_mreg
from mreg.lock import UV_VERSION

MODEL = "bench-iris"
MREG_LOCAL_REPOSITORY = f"mreg/{MODEL}"
MODEL_LABEL = f"io.mreg.model={MODEL}"  # on every image mreg (or buildx on its rendered context) builds here
PUSH_REPOSITORY = "mreg-bench/iris"
NAIVE_REPOSITORY = "mreg-bench/builds-naive"
NAIVE_PUSH_REPOSITORY = "mreg-bench/builds-naive"
RAW_REPOSITORY = "mreg-bench/builds-raw"
SERVE_EXTRA = "itsdangerous==2.1.2"
SERVE_IMPORTS = "joblib, sklearn.ensemble, fastapi, pydantic, uvicorn"  # what serve.py and its model load
REGISTRY_IMAGE = "registry:2"
REGISTRY_ROOT = "/var/lib/registry"
STAGES = ("base", "uv", "train", "serve")
TARGETS = ("train", "serve")
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
BAKE_STEP_RE = re.compile(
    r"^#(?P<id>\d+) \[(?:[\w.-]+ )*?(?P<stage>[\w.-]+) (?P<index>\d+)/(?P<count>\d+)\] (?P<what>.*)$"
)
BAKE_STATUS_RE = re.compile(r"^#(?P<id>\d+) (?P<status>CACHED|DONE|ERROR)\b(?: (?P<seconds>[\d.]+)s)?")
CLASSIC_STEP_RE = re.compile(r"^Step \d+/\d+ : (?P<what>.*)$")
CLASSIC_FROM_RE = re.compile(r"^FROM \S+ AS (?P<stage>\S+)$", re.IGNORECASE)
PUSHED_RE = re.compile(r"^[0-9a-f]{12}: Pushed$")
GUARD_RE = re.compile(r"distributions installed in")  # listed by the build, or then in a container


class Interrupted(Exception):
    """SIGTERM or SIGHUP: handled like Ctrl-C."""


# --------------------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Completed:
    """One finished command: wall time, exit code, stdout, and its stderr lines with their time offsets."""

    argv: tuple[str, ...]
    started_at: float  # time.time() just before the process was started (to compare with file mtimes)
    seconds: float  # time.perf_counter() from start to exit
    returncode: int
    stdout: str
    lines: tuple[tuple[float, str], ...]
    spawned: float = 0.0  # time.perf_counter() just before the process was started (CLOCK_MONOTONIC on Linux)

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def output_lines(self) -> list[str]:
        return self.stdout.splitlines() + [line for _, line in self.lines]

    def first(self, pattern: re.Pattern[str]) -> float | None:
        """Offset (s) of the first stderr line matching `pattern`."""
        return next((offset for offset, line in self.lines if pattern.search(line)), None)


class CommandError(RuntimeError):
    """A command that had to succeed did not."""


class Runner:
    """Runs commands (argv lists, no shell), times them with perf_counter and keeps optional logs."""

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = log_dir
        self.count = 0
        self.live: set[subprocess.Popen[str]] = set()
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)

    def __call__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> Completed:
        stdout: list[str] = []
        lines: list[tuple[float, str]] = []
        started_at = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            bufsize=1,
        )
        self.live.add(proc)

        def read_stdout() -> None:
            assert proc.stdout is not None
            stdout.append(proc.stdout.read())

        def read_stderr() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                lines.append((time.perf_counter() - started, raw.rstrip("\n")))

        readers = [threading.Thread(target=read_stdout, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
        for reader in readers:
            reader.start()
        try:
            returncode = proc.wait()
            seconds = time.perf_counter() - started
            for reader in readers:
                reader.join()
        finally:
            stop(proc)
            self.live.discard(proc)
        done = Completed(tuple(argv), started_at, seconds, returncode, "".join(stdout), tuple(lines), started)
        self._log(name, done)
        if check and returncode != 0:
            tail = "\n".join(f"    {line}" for line in done.output_lines()[-25:])
            raise CommandError(f"{shlex.join(argv)} exited {returncode} ({name}):\n{tail}")
        return done

    def stop_all(self) -> None:
        for proc in list(self.live):
            stop(proc)

    def _log(self, name: str, done: Completed) -> None:
        if self.log_dir is None:
            return
        self.count += 1
        safe = re.sub(r"[^\w.-]+", "-", name)
        text = [f"$ {shlex.join(done.argv)}", f"# exit {done.returncode} after {done.seconds:.3f} s", "## stdout"]
        text += [done.stdout, "## stderr (offset s)"]
        text += [f"{offset:9.3f} {line}" for offset, line in done.lines]
        (self.log_dir / f"{self.count:03d}-{safe}.log").write_text("\n".join(text) + "\n")


def stop(proc: subprocess.Popen[str]) -> None:
    """Terminate a child that is still running (an interrupted benchmark), then kill it after 15 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def mreg_env() -> dict[str, str]:
    """The environment of mreg commands: no MREG_* overrides, and never a terminal-style progress display."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MREG_")}
    env.pop("FORCE_COLOR", None)
    return env


def classic_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "0"}


# --------------------------------------------------------------------------------------------------- docker state


class Resources:
    """Everything this script creates on the shared engine, so that it can remove exactly that."""

    def __init__(self, run: Runner) -> None:
        self.run = run
        self.containers: list[str] = []  # names (known before `docker run` starts)
        self.registry_ports: set[int] = set()
        self.image_ids: set[str] = set()  # images built here whose tags may have moved (dangling otherwise)
        self.directories: list[Path] = []

    def is_ours(self, repository: str) -> bool:
        if repository in (MREG_LOCAL_REPOSITORY, NAIVE_REPOSITORY, RAW_REPOSITORY, *ONEPIN_REPOSITORIES):
            return True
        return any(repository.startswith(f"127.0.0.1:{port}/mreg-bench/") for port in self.registry_ports)

    def remember_image(self, ref: str) -> None:
        found = self.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], name="inspect", check=False)
        if found.returncode == 0:
            self.image_ids.add(found.stdout.strip())

    def remove_images(self) -> None:
        """Untag every image of ours, then delete the images we built by ID (never forced)."""
        listing = self.run(
            ["docker", "image", "ls", "--format", "{{.Repository}}\t{{.Tag}}\t{{.ID}}"], name="image-ls", check=False
        )
        refs = []
        for row in listing.stdout.splitlines():
            repository, tag, _ = [*row.split("\t"), "", ""][:3]
            if tag != "<none>" and self.is_ours(repository):
                refs.append(f"{repository}:{tag}")
        for chunk in range(0, len(refs), 50):
            self.run(["docker", "image", "rm", *refs[chunk : chunk + 50]], name="image-rm", check=False)
        dangling = ["docker", "image", "ls", "-q", "--filter", "dangling=true", "--filter", f"label={MODEL_LABEL}"]
        self.image_ids.update(self.run(dangling, name="image-ls-dangling", check=False).stdout.split())
        for image_id in sorted(self.image_ids):
            self.run(["docker", "image", "rm", image_id], name="image-rm-id", check=False)
        self.image_ids.clear()

    def remove_container(self, name: str) -> None:
        self.run(["docker", "rm", "--force", "--volumes", name], name="container-rm", check=False)
        if name in self.containers:
            self.containers.remove(name)

    def cleanup(self) -> None:
        self.run.stop_all()
        for name in list(self.containers):
            self.remove_container(name)
        self.remove_images()
        for directory in self.directories:
            shutil.rmtree(directory, ignore_errors=True)
        self.directories.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(url: str, accept: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})  # noqa: S310 - 127.0.0.1
    with _OPENER.open(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


@dataclass
class LocalRegistry:
    """A registry:2 container on 127.0.0.1 with host networking."""

    name: str
    port: int
    resources: Resources

    @classmethod
    def start(cls, resources: Resources, label: str) -> LocalRegistry:
        for _ in range(5):
            port = free_port()
            name = f"mreg-bench-builds-{label}-{os.getpid()}-{port}"
            resources.containers.append(name)
            resources.registry_ports.add(port)
            argv = ["docker", "run", "-d", "--name", name, "--network", "host"]
            argv += ["-e", f"REGISTRY_HTTP_ADDR=127.0.0.1:{port}", REGISTRY_IMAGE]
            resources.run(argv, name=f"registry-{label}")
            registry = cls(name, port, resources)
            if registry.wait():
                return registry
            resources.remove_container(name)
        raise CommandError("could not start a registry:2 container")

    def wait(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                http_json(f"http://127.0.0.1:{self.port}/v2/")
                return True
            except (OSError, urllib.error.URLError, json.JSONDecodeError):
                time.sleep(0.2)
        return False

    def storage(self) -> tuple[int, int]:
        """(bytes under /var/lib/registry, number of blobs), read inside the registry container."""
        script = (
            f"du -sb {REGISTRY_ROOT} 2>/dev/null | cut -f1; "
            f"find {REGISTRY_ROOT}/docker/registry/v2/blobs -type f -name data 2>/dev/null | wc -l"
        )
        done = self.resources.run(["docker", "exec", self.name, "sh", "-c", script], name="registry-du")
        numbers = [int(word) for word in done.stdout.split()]
        return (numbers[0], numbers[1]) if len(numbers) == 2 else (0, numbers[-1] if numbers else 0)

    def layers(self, repository: str, tag: str) -> list[str]:
        """The layer digests of a pushed image, from the registry API."""
        base = f"http://127.0.0.1:{self.port}/v2/{repository}/manifests/"
        manifest = http_json(base + tag, MANIFEST_TYPES)
        if "manifests" in manifest:  # an index: take the linux/amd64 image
            chosen = next(
                (m for m in manifest["manifests"] if m.get("platform", {}).get("architecture") == "amd64"),
                manifest["manifests"][0],
            )
            manifest = http_json(base + chosen["digest"], MANIFEST_TYPES)
        return [layer["digest"] for layer in manifest["layers"]]

    def stop(self) -> None:
        self.resources.remove_container(self.name)


# --------------------------------------------------------------------------------------------------- parsing


Step = tuple[str, str, str]  # stage, index, instruction: the same for a step bake prints once per target


def bake_log(lines: Iterable[str]) -> tuple[dict[str, Step], list[re.Match[str]]]:
    """BuildKit plain progress -> its steps by vertex id (`#N [stage i/n] ...`, bake may put the target's
    name before the stage) and, in order, the status lines (`#N CACHED`, `#N DONE 2.1s`) of those steps."""
    vertices: dict[str, Step] = {}
    statuses: list[re.Match[str]] = []
    for line in lines:
        step = BAKE_STEP_RE.match(line)
        if step:
            vertices.setdefault(step["id"], (step["stage"], step["index"], step["what"]))
            continue
        ended = BAKE_STATUS_RE.match(line)
        if ended and ended["id"] in vertices:
            statuses.append(ended)
    return vertices, statuses


def bake_steps(lines: Iterable[str]) -> dict[str, dict[str, int]]:
    """BuildKit plain progress -> {stage: {"ran": n, "cached": n}}; FROM (metadata) steps are not counted.
    Steps that two targets share are counted once."""
    vertices, statuses = bake_log(lines)
    status = {ended["id"]: ended["status"] for ended in statuses}
    # The same step printed for both targets: it ran if any of its copies ran (the other copy is then
    # reported CACHED, sometimes before the copy that ran).
    ran: dict[Step, bool] = {}
    for vertex, key in vertices.items():
        if vertex in status and not key[2].startswith("FROM "):
            ran[key] = ran.get(key, False) or status[vertex] != "CACHED"
    counts = {stage: {"ran": 0, "cached": 0} for stage in STAGES}
    for (stage, _, _), executed in ran.items():
        counts.setdefault(stage, {"ran": 0, "cached": 0})["ran" if executed else "cached"] += 1
    return counts


def bake_durations(lines: Iterable[str]) -> dict[str, float]:
    """Seconds BuildKit reports (`#N DONE 2.1s`) for the steps that ran, summed per stage (FROM excluded)."""
    vertices, statuses = bake_log(lines)
    seconds: dict[Step, float] = {}
    for ended in statuses:
        key = vertices[ended["id"]]
        if ended["status"] == "DONE" and ended["seconds"] and not key[2].startswith("FROM "):
            seconds.setdefault(key, float(ended["seconds"]))
    durations: dict[str, float] = {}
    for (stage, _, _), value in seconds.items():
        durations[stage] = round(durations.get(stage, 0.0) + value, 1)
    return durations


def classic_steps(outputs: Iterable[str]) -> dict[str, dict[str, int]]:
    """Classic builder output (`Step i/n : ...`, then ` ---> Using cache` or not) -> counts per stage."""
    counts: dict[str, dict[str, int]] = {}
    for output in outputs:
        stage, current, cached = "", None, False
        for line in [*output.splitlines(), "Step 0/0 : END"]:
            step = CLASSIC_STEP_RE.match(line)
            if step:
                if current is not None:
                    counts.setdefault(stage, {"ran": 0, "cached": 0})["cached" if cached else "ran"] += 1
                what = step["what"]
                from_line = CLASSIC_FROM_RE.match(what.strip())
                if from_line:
                    stage, current = from_line["stage"], None
                else:
                    current, cached = what, False
            elif "Using cache" in line:
                cached = True
    return counts


def total(counts: Mapping[str, Mapping[str, int]], kind: str) -> int:
    return sum(stage[kind] for stage in counts.values())


# --------------------------------------------------------------------------------------------------- the project


def spec_document(*, serve_extra: bool = False, repository: str | None = None) -> dict[str, Any]:
    """The bundled example's spec with the model renamed (and the serve package or repository when asked)."""
    document = tomllib.loads((REPO / "registry.toml").read_text())
    document["model"]["name"] = MODEL
    if serve_extra:
        document["packages"]["serve"] = [*document["packages"]["serve"], SERVE_EXTRA]
    if repository:
        document.setdefault("images", {})["repository"] = repository
    return document


def naive_dockerfile(spec: Mapping[str, Any]) -> str:
    """What one would write by hand: a venv and `pip install` of the spec's top-level pins, per stage."""
    packages, system = spec["packages"], spec.get("system_packages", {})
    stages = spec["stages"]

    def pip(names: Sequence[str]) -> list[str]:
        return [f"RUN pip install --no-cache-dir {' '.join(shlex.quote(n) for n in names)}"] if names else []

    def apt(names: Sequence[str]) -> list[str]:
        if not names:
            return []
        words = " ".join(shlex.quote(n) for n in names)
        return [
            f"RUN apt-get update && apt-get install -y --no-install-recommends {words} && rm -rf /var/lib/apt/lists/*"
        ]

    lines = [
        f"FROM {spec['python']['base_image']} AS base",
        "ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1",
        *apt(system.get("shared", [])),
        "RUN python3 -m venv /opt/venv",
        *pip(packages.get("shared", [])),
        "WORKDIR /app",
    ]
    for stage in TARGETS:
        names = list(packages.get(stage, []))
        copies = [f"COPY {json.dumps([Path(p).name, '/app/' + Path(p).name])}" for p in stages[stage]["copy"]]
        lines += ["", f"FROM base AS {stage}", *apt(system.get(stage, [])), *pip(names), *copies]
        lines.append(f"CMD {json.dumps(stages[stage]['command'])}")
    return "\n".join(lines) + "\n"


@dataclass
class Project:
    """A temporary copy of the bundled example (mreg's spec and lock) and the naive build context."""

    directory: Path
    lock_text: str

    @property
    def spec(self) -> Path:
        return self.directory / "registry.toml"

    @property
    def lock(self) -> Path:
        return self.directory / "registry.lock"

    @property
    def naive(self) -> Path:
        return self.directory / "naive"

    @classmethod
    def create(cls, resources: Resources) -> Project:
        directory = Path(tempfile.mkdtemp(prefix="mreg-bench-builds-"))
        resources.directories.append(directory)
        project = cls(directory, (REPO / "registry.lock").read_text())
        document = spec_document()
        for relative in (p for stage in TARGETS for p in document["stages"][stage]["copy"]):
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, target)
            project.naive.mkdir(exist_ok=True)
            shutil.copy2(REPO / relative, project.naive / Path(relative).name)
        project.write()
        return project

    def write(self, *, serve_extra: bool = False, repository: str | None = None) -> None:
        """Write (or restore) the spec, the lock and the naive Dockerfile."""
        document = spec_document(serve_extra=serve_extra, repository=repository)
        self.spec.write_text(tomli_w.dumps(document))
        if not serve_extra:
            self.lock.write_text(self.lock_text)
        (self.naive / "Dockerfile").write_text(naive_dockerfile(document))

    def base_pins(self) -> dict[str, dict[str, str]]:
        """{set: {name: version}} of the current lock's base and train sets."""
        lock = tomllib.loads(self.lock.read_text())
        return {
            name: {p["name"]: p["version"] for p in lock["packages"] if name in p["sets"]} for name in ("base", "train")
        }


# --------------------------------------------------------------------------------------------------- results


@dataclass
class Row:
    scenario: str
    measure: str
    unit: str  # "s", "B" or "n"
    baseline_name: str
    target: float | None = None
    mreg: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.mreg, self.baseline, strict=False) if b > 0]


class Results:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.notes: list[str] = []
        self.runs: list[dict[str, Any]] = []
        self.phases: dict[str, list[float]] = {}  # scenario 6: seconds of each phase, one value per run

    def row(self, key: str, scenario: str, measure: str, unit: str, baseline: str, target: float | None = None) -> Row:
        if key not in self.rows:
            self.rows[key] = Row(scenario, measure, unit, baseline, target)
        return self.rows[key]

    def add(self, key: str, mreg: float, baseline: float) -> None:
        self.rows[key].mreg.append(mreg)
        self.rows[key].baseline.append(baseline)


def declare_rows(results: Results) -> None:
    rows = [
        ("cold", "1 cold build", "train+serve wall time", "s", "naive classic x2", 0.35),
        ("cold_cached", "1 cold build", "steps served from cache (should be 0)", "n", "naive 'Using cache'", None),
        ("size_train", "1 cold build", "train image size (uncompressed)", "B", "naive", None),
        ("size_serve", "1 cold build", "serve image size (uncompressed)", "B", "naive", None),
        ("pyc", "1 cold build", ".pyc files in the serve image's venv", "n", "naive", None),
        ("imports", "1 cold build", "serve app imports, fresh container", "s", "naive", None),
        ("nochange", "2 no-change rebuild", "wall time", "s", "buildx build x2", 1.0),
        ("nochange_ran", "2 no-change rebuild", "BuildKit steps run", "n", "buildx build x2", None),
        ("serve_total", "3 serve-only change", "lock + build", "s", "naive classic x2", 0.3),
        ("serve_build", "3 serve-only change", "build phase only", "s", "naive classic x2", 0.3),
        ("serve_lock", "3 serve-only change", "lock phase (mreg build --lock)", "s", "naive classic x2", None),
        ("serve_bake", "3 serve-only change", "bake phase (to the inventories read)", "s", "naive classic x2", None),
        ("serve_guard", "3 serve-only change", "after the bake (skew guard, result)", "s", "naive classic x2", None),
        ("steps_base", "3 serve-only change", "steps run: base (target 0)", "n", "naive: base", None),
        ("steps_uv", "3 serve-only change", "steps run: uv", "n", "naive: (no uv)", None),
        ("steps_train", "3 serve-only change", "steps run: train (target 0)", "n", "naive: train", None),
        ("steps_serve", "3 serve-only change", "steps run: serve", "n", "naive: serve", None),
        ("push_time", "4 push", "first push: mreg build --push", "s", "docker push x2", None),
        ("push_phase", "4 push", "first push: push phase only", "s", "docker push x2", None),
        ("push_bytes", "4 push", "first push: bytes stored (registry du)", "B", "docker push x2", None),
        ("push_blobs", "4 push", "first push: blobs stored", "n", "docker push x2", None),
        ("push_layers", "4 push", "first push: layers uploaded ('Pushed')", "n", "docker push x2", None),
        ("repush_time", "4 push", "re-push (unchanged)", "s", "docker push x2", None),
        ("repush_bytes", "4 push", "re-push: bytes stored", "B", "docker push x2", None),
        ("repush_layers", "4 push", "re-push: layers uploaded", "n", "docker push x2", None),
        ("layers_train", "4 push", "layers in the train manifest", "n", "naive", None),
        ("layers_serve", "4 push", "layers in the serve manifest", "n", "naive", None),
        ("layers_total", "4 push", "layer refs in train+serve manifests", "n", "naive", None),
        ("layers_distinct", "4 push", "distinct layer digests", "n", "naive", None),
        ("layers_shared", "4 push", "layers shared by train and serve", "n", "naive", None),
        ("help", "5 CLI", "mreg --help", "s", "python -c pass", None),
        ("render", "5 CLI", "mreg render", "s", "python -c pass", None),
        ("onepin_lock", "6 one-pin change", "relock: mreg lock (pin new to uv's cache)", "s", "bake rebuild", 0.5),
        ("onepin_lock_seen", "6 one-pin change", "relock: mreg lock (pin in uv's cache)", "s", "bake rebuild", 0.5),
        ("onepin_build", "6 one-pin change", "build after it: mreg build", "s", "bake rebuild", 1.5),
        ("onepin_total", "6 one-pin change", "relock + build", "s", "bake rebuild", 2.0),
        ("onepin_nochange", "6 one-pin change", "no-change mreg build", "s", "bake no-change", 1.0),
    ]
    for key, scenario, measure, unit, baseline, target in rows:
        results.row(key, scenario, measure, unit, baseline, target)


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f}s" if value < 100 else f"{value:.0f}s"
    if unit == "B":
        return f"{value / 1e6:.1f}MB"
    return f"{value:g}"


def spread(values: Sequence[float], unit: str, formatter: Callable[[float, str], str] = fmt) -> str:
    if not values:
        return "-"
    middle = formatter(statistics.median(values), unit)
    if len(values) == 1 or min(values) == max(values):
        return middle
    return f"{middle} [{formatter(min(values), unit)}-{formatter(max(values), unit)}]"


def ratio_fmt(value: float, _unit: str) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def verdict(row: Row) -> str:
    ratios = row.ratios()
    if row.target is None or not ratios:
        return ""
    median = statistics.median(ratios)
    if median > row.target:
        return f"MISSED (<= {row.target}x)"
    return f"met (<= {row.target}x)" + ("" if max(ratios) <= row.target else ", max over")


def table(results: Results) -> str:
    header = ("scenario", "measure", "mreg", "baseline", "value", "ratio mreg/baseline", "target")
    body = []
    for row in results.rows.values():
        if not row.mreg:
            continue
        ratios = row.ratios()
        body.append(
            (
                row.scenario,
                row.measure,
                spread(row.mreg, row.unit),
                row.baseline_name,
                spread(row.baseline, row.unit),
                spread(ratios, "", ratio_fmt) if ratios else "n/a",
                verdict(row),
            )
        )
    widths = [max(len(cells[i]) for cells in (header, *body)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip() for cells in body]
    rule = "  ".join("-" * width for width in widths)
    head = "  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()
    return "\n".join([head, rule, *lines])


# --------------------------------------------------------------------------------------------------- machine


def machine(run: Runner) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total_kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "",
        )

    def out(argv: list[str]) -> str:
        done = run(argv, name="machine", check=False)
        return done.stdout.strip() or done.stderr.strip()

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker_server": out(["docker", "version", "--format", "{{.Server.Version}}"]),
        "docker_client": out(["docker", "version", "--format", "{{.Client.Version}}"]),
        "buildx": out(["docker", "buildx", "version"]),
        "builder": builder_of(out(["docker", "buildx", "inspect"])),
        "mreg": out([str(BIN / "mreg"), "--version"]),
        "mreg_source": source_state(run),
        "loadavg_start": os.getloadavg(),
    }


def source_state(run: Runner) -> str:
    """The commit of the tree mreg runs from, and whether src/ differs from it (read-only git commands)."""
    commit = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], name="git", check=False).stdout.strip()
    changed = run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], name="git", check=False).stdout
    count = len(changed.splitlines())
    return f"{commit or 'unknown'}" + (f" + {count} changed file(s) under src/" if count else " (src/ clean)")


def builder_of(inspect: str) -> str:
    """`NAME (DRIVER)` from `docker buildx inspect`."""
    fields = dict(line.split(":", 1) for line in inspect.splitlines() if ":" in line and not line.startswith(" "))
    return f"{fields.get('Name', '?').strip()} ({fields.get('Driver', '?').strip()})"


def busy(run: Runner) -> str:
    """How busy the shared machine is right now: load average and other running containers."""
    containers = run(["docker", "ps", "-q"], name="ps", check=False).stdout.split()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"load {load}; {len(containers)} running containers"


# --------------------------------------------------------------------------------------------------- scenarios


class Bench:
    def __init__(self, run: Runner, resources: Resources, results: Results, *, reps: int, cli_samples: int) -> None:
        self.run = run
        self.resources = resources
        self.results = results
        self.reps = reps
        self.cli_samples = cli_samples
        self.mreg = str(BIN / "mreg")
        self.train_image = ""  # the train image of the unchanged spec (from the cold build)

    def say(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # ----- helpers

    def mreg_cmd(self, project: Project, *args: str, name: str, check: bool = True) -> Completed:
        argv = [self.mreg, "--spec", str(project.spec), *args]
        return self.run(argv, name=name, cwd=project.directory, env=mreg_env(), check=check)

    def naive_build(self, project: Project, name: str) -> tuple[float, list[Completed]]:
        """Both naive targets with the classic builder, one after the other: (total seconds, the two runs)."""
        done = []
        for target in TARGETS:
            ref = f"{NAIVE_REPOSITORY}:{target}"
            argv = ["docker", "build", "--network", "host", "--target", target, "--tag", ref, str(project.naive)]
            done.append(self.run(argv, name=f"{name}-naive-{target}", env=classic_env()))
            self.resources.remember_image(ref)
        return sum(d.seconds for d in done), done

    def image_size(self, ref: str) -> int:
        done = self.run(["docker", "image", "inspect", "--format", "{{.Size}}", ref], name="image-size")
        return int(done.stdout.strip())

    def in_container(self, image: str, argv: Sequence[str], name: str) -> str:
        """Run `argv` in a fresh container of `image` without network; its stdout."""
        container = f"mreg-bench-builds-{name}-{os.getpid()}"
        self.resources.containers.append(container)
        command = ["docker", "run", "--rm", "--name", container, "--network", "none", "--entrypoint", argv[0], image]
        try:
            return self.run([*command, *argv[1:]], name=name).stdout
        finally:
            self.resources.remove_container(container)

    def import_seconds(self, image: str) -> float:
        """What the serve app imports, timed inside a fresh container (no bytecode cache from earlier runs)."""
        script = f"import time; t = time.perf_counter(); import {SERVE_IMPORTS}; print(time.perf_counter() - t)"
        return float(self.in_container(image, ["python", "-c", script], "imports").split()[-1])

    def count_pyc(self, image: str) -> int:
        """Compiled bytecode files in the image's virtualenv (pip writes them at install time, uv does not)."""
        return int(self.in_container(image, ["sh", "-c", "find /opt/venv -name '*.pyc' | wc -l"], "pyc").strip())

    def ensure_base_image(self, base_image: str) -> None:
        found = self.run(["docker", "image", "inspect", base_image], name="base-image", check=False)
        if found.returncode != 0:
            raise CommandError(f"the base image {base_image} is not in the local engine (no image can be pulled)")

    # ----- scenario 1

    def cold(self, project: Project, index: int) -> None:
        self.say(f"run {index}: 1 cold build ({busy(self.run)})")
        self.resources.remove_images()
        self.ensure_base_image(spec_document()["python"]["base_image"])
        mreg_first = index % 2 == 1  # alternate which approach meets PyPI first
        naive_seconds = 0.0
        naive_runs: list[Completed] = []
        if not mreg_first:
            naive_seconds, naive_runs = self.naive_build(project, "cold")
        self.run(["docker", "builder", "prune", "-af"], name="prune")
        built = self.mreg_cmd(project, "build", name="cold-mreg-build")
        if mreg_first:
            naive_seconds, naive_runs = self.naive_build(project, "cold")
        steps = bake_steps(line for _, line in built.lines)
        # The serve build reuses the base stage the train build made a moment ago: only the train build and
        # the serve stage of the second build would reveal a warm cache.
        first, second = (classic_steps([d.stdout + d.stderr]) for d in naive_runs)
        naive_cached = total(first, "cached") + second.get("serve", {}).get("cached", 0)
        self.results.add("cold", built.seconds, naive_seconds)
        self.results.add("cold_cached", total(steps, "cached"), naive_cached)
        images = mreg_images(built.stdout)
        self.train_image = images["train"]
        for target in TARGETS:
            naive_size = self.image_size(f"{NAIVE_REPOSITORY}:{target}")
            self.results.add(f"size_{target}", self.image_size(images[target]), naive_size)
        self.results.add("pyc", self.count_pyc(images["serve"]), self.count_pyc(f"{NAIVE_REPOSITORY}:serve"))
        self.results.add(
            "imports", self.import_seconds(images["serve"]), self.import_seconds(f"{NAIVE_REPOSITORY}:serve")
        )
        self.results.runs[-1]["cold_mreg_step_seconds"] = bake_durations(line for _, line in built.lines)
        guard = built.first(GUARD_RE)
        self.results.runs[-1]["cold_mreg_guard_seconds"] = round(built.seconds - guard, 2) if guard else None
        self.say(f"  mreg {built.seconds:.1f}s ({steps}), naive {naive_seconds:.1f}s")

    # ----- scenario 2

    def no_change(self, project: Project, index: int) -> None:
        self.say(f"run {index}: 2 no-change rebuild ({busy(self.run)})")
        context = project.directory / "rendered"
        shutil.rmtree(context, ignore_errors=True)
        self.mreg_cmd(project, "render", "--context", str(context), name="render-context")
        for rep in range(self.reps):
            rebuilt = self.mreg_cmd(project, "build", name=f"nochange-mreg-{rep}")
            if sum("is up to date" in line for _, line in rebuilt.lines) != len(TARGETS):
                self.results.notes.append(f"run {index}: the no-change `mreg build` did not reuse both images")
            raw_seconds, raw_ran = 0.0, 0
            for target in TARGETS:
                ref = f"{RAW_REPOSITORY}:{target}"
                argv = ["docker", "buildx", "build", "--progress=plain", "--network", "host", "--target", target]
                done = self.run([*argv, "--tag", ref, str(context)], name=f"nochange-raw-{target}-{rep}")
                self.resources.remember_image(ref)
                raw_seconds += done.seconds
                raw_ran += total(bake_steps(line for _, line in done.lines), "ran")
            ran = total(bake_steps(line for _, line in rebuilt.lines), "ran")
            self.results.add("nochange", rebuilt.seconds, raw_seconds)
            self.results.add("nochange_ran", ran, raw_ran)
            self.say(f"  mreg {rebuilt.seconds:.2f}s, buildx x2 {raw_seconds:.2f}s")

    # ----- scenario 3

    def serve_change(self, project: Project, index: int) -> None:
        self.say(f"run {index}: 3 serve-only change ({busy(self.run)})")
        before = project.base_pins()
        lock_mtime = project.lock.stat().st_mtime
        try:
            project.write(serve_extra=True)
            built = self.mreg_cmd(project, "build", name="serve-mreg-build-lock")
            written = project.lock.stat().st_mtime
            if written == lock_mtime:
                raise CommandError("mreg build did not relock registry.lock")
            lock_seconds = min(max(written - built.started_at, 0.0), built.seconds)
            if project.base_pins() != before:
                self.results.notes.append(f"run {index}: relocking changed the base/train pins (not only serve)")
            steps = bake_steps(line for _, line in built.lines)
            bake_started = built.first(re.compile(r"^#\d+ "))
            guard_started = built.first(GUARD_RE)
            relisted = built.first(re.compile(r"^\[train\] listing the distributions")) is not None
            same_train = mreg_images(built.stdout)["train"] == self.train_image
            self.results.runs[-1]["serve_change_train"] = "same image ID" if same_train else "new image"
            self.results.runs[-1]["serve_change_train_relisted"] = relisted
            naive_seconds, naive_runs = self.naive_build(project, "serve")
            naive_steps = classic_steps(d.stdout + d.stderr for d in naive_runs)
        finally:
            project.write()
        self.results.add("serve_total", built.seconds, naive_seconds)
        self.results.add("serve_build", built.seconds - lock_seconds, naive_seconds)
        self.results.add("serve_lock", lock_seconds, naive_seconds)
        if bake_started is not None and guard_started is not None:
            self.results.add("serve_bake", guard_started - bake_started, naive_seconds)
            self.results.add("serve_guard", built.seconds - guard_started, naive_seconds)
        for stage in STAGES:
            self.results.add(f"steps_{stage}", steps[stage]["ran"], naive_steps.get(stage, {}).get("ran", 0))
        self.say(f"  mreg {built.seconds:.1f}s (lock {lock_seconds:.1f}s; steps {steps}), naive {naive_seconds:.1f}s")
        self.naive_build(project, "restore")  # the naive tags back on the unchanged images (all from cache)

    # ----- scenario 4

    def push(self, project: Project, index: int) -> None:
        self.say(f"run {index}: 4 push ({busy(self.run)})")
        mine, theirs = LocalRegistry.start(self.resources, "mreg"), LocalRegistry.start(self.resources, "naive")
        try:
            repository = f"127.0.0.1:{mine.port}/{PUSH_REPOSITORY}"
            project.write(repository=repository)
            empty = mine.storage()
            first = self.mreg_cmd(project, "build", "--push", "--json", name="push-mreg-first")
            after_first = mine.storage()
            second = self.mreg_cmd(project, "build", "--push", "--json", name="push-mreg-second")
            after_second = mine.storage()
            refs = {stage: image["ref"] for stage, image in json.loads(first.stdout).items()}
            mreg_layers = {stage: mine.layers(PUSH_REPOSITORY, ref.rsplit(":", 1)[1]) for stage, ref in refs.items()}
            push_started = first.first(re.compile(r"^The push refers to repository"))
            push_phase = first.seconds - push_started if push_started is not None else first.seconds

            naive_refs = {t: f"127.0.0.1:{theirs.port}/{NAIVE_PUSH_REPOSITORY}:{t}" for t in TARGETS}
            for target, ref in naive_refs.items():
                self.run(["docker", "tag", f"{NAIVE_REPOSITORY}:{target}", ref], name="tag")
            naive_empty = theirs.storage()
            naive_first = [self.run(["docker", "push", ref], name=f"push-naive-{t}") for t, ref in naive_refs.items()]
            naive_after_first = theirs.storage()
            naive_second = [self.run(["docker", "push", ref], name=f"push-naive2-{t}") for t, ref in naive_refs.items()]
            naive_after_second = theirs.storage()
            naive_layers = {t: theirs.layers(NAIVE_PUSH_REPOSITORY, t) for t in TARGETS}
        finally:
            project.write()
            mine.stop()
            theirs.stop()

        def pushed(runs: Iterable[Completed]) -> int:
            return sum(1 for done in runs for line in done.output_lines() if PUSHED_RE.match(line.strip()))

        naive_first_seconds = sum(d.seconds for d in naive_first)
        self.results.add("push_time", first.seconds, naive_first_seconds)
        self.results.add("push_phase", push_phase, naive_first_seconds)
        self.results.add("push_bytes", after_first[0] - empty[0], naive_after_first[0] - naive_empty[0])
        self.results.add("push_blobs", after_first[1] - empty[1], naive_after_first[1] - naive_empty[1])
        self.results.add("push_layers", pushed([first]), pushed(naive_first))
        self.results.add("repush_time", second.seconds, sum(d.seconds for d in naive_second))
        self.results.add("repush_bytes", after_second[0] - after_first[0], naive_after_second[0] - naive_after_first[0])
        self.results.add("repush_layers", pushed([second]), pushed(naive_second))
        for kind in ("train", "serve", "total", "distinct", "shared"):
            key = f"layers_{kind}"
            self.results.add(key, layer_count(mreg_layers, kind), layer_count(naive_layers, kind))
        base_layers = self.run(
            [
                "docker",
                "image",
                "inspect",
                "--format",
                "{{len .RootFS.Layers}}",
                spec_document()["python"]["base_image"],
            ],
            name="base-layers",
        ).stdout.strip()
        note = f"the base image {spec_document()['python']['base_image']} has {base_layers} layer(s)"
        if note not in self.results.notes:
            self.results.notes.append(note)
        if sum("is up to date" in line for _, line in second.lines) != len(TARGETS):
            self.results.notes.append(f"run {index}: the unchanged `mreg build --push` did not reuse both images")
        self.say(
            f"  mreg {first.seconds:.1f}s (push {push_phase:.1f}s, {after_first[0] - empty[0]} B), re-push "
            f"{second.seconds:.2f}s; naive {naive_first_seconds:.1f}s ({naive_after_first[0] - naive_empty[0]} B)"
        )

    # ----- scenario 5

    def cli(self, project: Project) -> None:
        self.say(f"5 CLI start-up ({busy(self.run)})")
        env = mreg_env()
        commands = {
            "python": [sys.executable, "-c", "pass"],
            "help": [self.mreg, "--help"],
            "render": [self.mreg, "--spec", str(project.spec), "render"],
        }
        for argv in commands.values():  # warm the page cache
            self.run(argv, name="cli-warmup", env=env, cwd=project.directory)
        for sample in range(self.cli_samples):
            seconds = {
                key: self.run(argv, name=f"cli-{key}-{sample}", env=env, cwd=project.directory).seconds
                for key, argv in commands.items()
            }
            self.results.add("help", seconds["help"], seconds["python"])
            self.results.add("render", seconds["render"], seconds["python"])


def mreg_images(stdout: str) -> dict[str, str]:
    """`train: IMAGE  (REF)` lines of `mreg build` -> {stage: IMAGE}."""
    found = {m[1]: m[2] for m in re.finditer(r"^(train|serve): (\S+)", stdout, re.MULTILINE)}
    if set(found) != set(TARGETS):
        raise CommandError(f"cannot read the images from mreg build's output: {stdout!r}")
    return found


def layer_count(layers: Mapping[str, Sequence[str]], kind: str) -> int:
    if kind in layers:
        return len(layers[kind])
    if kind == "total":
        return sum(len(digests) for digests in layers.values())
    sets = [set(digests) for digests in layers.values()]
    if kind == "distinct":
        return len(set[str]().union(*sets))
    return len(set.intersection(*sets))


# --------------------------------------------------------------------------------------------------- scenario 6 (#18)

ONEPIN_MODEL = "bench-onepin"
ONEPIN_REPOSITORY = f"mreg/{ONEPIN_MODEL}"
BAKE_REPOSITORY = "mreg-bench/onepin-bake"
NONCE_REPOSITORY = "mreg-bench/onepin-base"
ONEPIN_REPOSITORIES = (ONEPIN_REPOSITORY, BAKE_REPOSITORY, NONCE_REPOSITORY)
ONEPIN_SHARED = ("scikit-learn==1.3.2", "numpy==1.26.4", "scipy==1.11.4")
ONEPIN_TRAIN = ("hyperopt==0.2.7",)
ONEPIN_SERVE = ("uvicorn==0.27.0",)  # and fastapi, the pin that changes
FASTAPI_VERSIONS = (
    *("0.100.0", "0.100.1", "0.101.0", "0.101.1", "0.102.0", "0.103.0", "0.103.1", "0.103.2", "0.104.0", "0.104.1"),
    *("0.105.0", "0.106.0", "0.107.0", "0.108.0", "0.109.0", "0.109.1", "0.109.2", "0.110.0", "0.110.1", "0.110.2"),
    "0.110.3",
)
"""Consecutive releases: run i bumps fastapi from the (i-1)th to the ith (at most 20 runs per invocation)."""
UV_STEP_RE = re.compile(
    r"^#(?P<id>\d+) [\d.]+ (?P<what>Resolved|Prepared|Installed|Uninstalled|Bytecode compiled|Bytecode for) .* in "
    r"(?P<value>[\d.]+)(?P<unit>ms|s)$"
)
TRACE_DRIVER = """\
import json, os, subprocess, sys, time
sink, sys.argv = sys.argv[1], ["mreg", *sys.argv[2:]]
trace = {"started": time.monotonic(), "children": []}
init, wait, leave = subprocess.Popen.__init__, subprocess.Popen.wait, os._exit
def traced_init(self, args, *rest, **options):
    self._bench_child = {"argv": [str(arg) for arg in args], "start": time.monotonic()}
    trace["children"].append(self._bench_child)
    init(self, args, *rest, **options)
def traced_wait(self, *args, **options):
    code = wait(self, *args, **options)
    self._bench_child.setdefault("end", time.monotonic())
    return code
def traced_exit(code):
    trace["ended"] = time.monotonic()
    with open(sink, "w") as handle:
        json.dump(trace, handle)
    leave(code)
subprocess.Popen.__init__, subprocess.Popen.wait, os._exit = traced_init, traced_wait, traced_exit
from mreg.cli import main
trace["imported"] = time.monotonic()
main()
"""
"""Runs the mreg CLI as its console script does, noting (CLOCK_MONOTONIC) when the interpreter was up, when
mreg's modules were imported, when each child process (uv, docker) started and was waited for, and when
the command ended (mreg's main leaves through os._exit). Observes only: nothing of mreg is replaced."""


def onepin_spec(base_image: str, fastapi: str) -> dict[str, Any]:
    """The issue's package set: scikit-learn, NumPy and SciPy shared, hyperopt to train, FastAPI and uvicorn
    to serve (the bundled example's scripts, which these images never run)."""
    document = spec_document()
    document["model"]["name"] = ONEPIN_MODEL
    document["python"]["base_image"] = base_image
    document["packages"] = {
        "shared": list(ONEPIN_SHARED),
        "train": list(ONEPIN_TRAIN),
        "serve": [f"fastapi=={fastapi}", *ONEPIN_SERVE],
    }
    document["system_packages"] = {}
    return document


def bake_dockerfile(base_image: str, fastapi: str) -> str:
    """The hand-tuned baseline: the same packages installed by uv with cache mounts, one stage per image on a
    shared base; no lock, no hashes, no bytecode, no checks."""
    uv = "--mount=type=bind,from=uv,source=/opt/uv/bin/uv,target=/usr/local/bin/uv"
    cache = "--mount=type=cache,target=/root/.cache/uv"

    def install(packages: Iterable[str]) -> str:
        return f"RUN {cache} {uv} \\\n    uv pip install {' '.join(packages)}"

    return "\n".join(
        [
            f"FROM {base_image} AS uv",
            "RUN --mount=type=cache,target=/root/.cache/pip \\",
            f"    pip install --disable-pip-version-check --target /opt/uv uv=={UV_VERSION}",
            "",
            f"FROM {base_image} AS base",
            "ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH UV_LINK_MODE=copy PYTHONUNBUFFERED=1",
            f"RUN {cache} {uv} \\\n    uv venv /opt/venv && uv pip install {' '.join(ONEPIN_SHARED)}",
            "WORKDIR /app",
            "",
            "FROM base AS train",
            install(ONEPIN_TRAIN),
            'COPY train.py /app/train.py\nCMD ["python", "train.py", "--out", "/out/model.joblib"]',
            "",
            "FROM base AS serve",
            install([f"fastapi=={fastapi}", *ONEPIN_SERVE]),
            'COPY serve.py /app/serve.py\nCMD ["python", "serve.py"]',
            "",
        ]
    )


def bake_file(directory: Path) -> dict[str, Any]:
    """Both baseline targets in one compose-format bake file (the format whose targets take a network in
    buildx 0.13), loaded into the engine."""
    services = {
        target: {
            "build": {
                "context": str(directory),
                "dockerfile": "Dockerfile",
                "target": target,
                "tags": [f"{BAKE_REPOSITORY}:{target}"],
                "network": "host",
                "x-bake": {"output": ["type=docker"]},
            }
        }
        for target in TARGETS
    }
    return {"services": services}


@dataclass
class OnePinProject:
    """mreg's spec and lock, and the baseline's Dockerfile and bake file, on a base image of this invocation."""

    directory: Path
    base_image: str

    @property
    def spec(self) -> Path:
        return self.directory / "registry.toml"

    @property
    def bake(self) -> Path:
        return self.directory / "bake"

    @classmethod
    def create(cls, resources: Resources, base_image: str) -> OnePinProject:
        directory = Path(tempfile.mkdtemp(prefix="mreg-bench-onepin-"))
        resources.directories.append(directory)
        project = cls(directory, base_image)
        project.bake.mkdir()
        for stage in TARGETS:
            for relative in spec_document()["stages"][stage]["copy"]:
                (directory / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / relative, directory / relative)
                shutil.copy2(REPO / relative, project.bake / Path(relative).name)
        (project.bake / "compose.yaml").write_text(json.dumps(bake_file(project.bake), indent=2))
        return project

    def write(self, fastapi: str) -> None:
        self.spec.write_text(tomli_w.dumps(onepin_spec(self.base_image, fastapi)))
        (self.bake / "Dockerfile").write_text(bake_dockerfile(self.base_image, fastapi))

    def pins(self) -> dict[str, dict[str, str]]:
        """{set: {name: version}} of the lock's train and serve sets."""
        lock = tomllib.loads((self.directory / "registry.lock").read_text())
        return {name: {p["name"]: p["version"] for p in lock["packages"] if name in p["sets"]} for name in TARGETS}


@dataclass(frozen=True)
class Trace:
    """What TRACE_DRIVER noted, as offsets (s) from the moment the process was spawned."""

    imported: float
    ended: float
    started: float
    children: tuple[tuple[tuple[str, ...], float, float], ...]  # argv, start, end

    @classmethod
    def read(cls, path: Path, spawned: float) -> Trace:
        data = json.loads(path.read_text())
        children = tuple(
            (tuple(child["argv"]), child["start"] - spawned, child.get("end", data["ended"]) - spawned)
            for child in data["children"]
        )
        return cls(data["imported"] - spawned, data["ended"] - spawned, data["started"] - spawned, children)

    def of(self, *words: str) -> list[tuple[tuple[str, ...], float, float]]:
        """The children whose argv holds every one of `words`, in order of start."""
        return [child for child in self.children if all(word in child[0] for word in words)]


def uv_label(argv: Sequence[str]) -> str:
    """`uv all`, `uv serve offline`...: a `uv pip compile` process named by its input file."""
    source = next((Path(arg).stem for arg in argv if arg.endswith(".in")), "?")
    return f"uv {source}" + (" offline" if "--offline" in argv else "") + (" no-deps" if "--no-deps" in argv else "")


def lock_phases(trace: Trace, seconds: float) -> dict[str, float]:
    """Where `mreg lock` spends its time: start-up, then its uv processes (concurrent ones overlap)."""
    uv = [child for child in trace.children if "compile" in child[0]]
    first = uv[0][1] if uv else trace.ended
    last = max((end for _, _, end in uv), default=first)
    phases = {
        "lock: interpreter start": trace.started,
        "lock: imports": trace.imported - trace.started,
        "lock: spec and previous lock, to the first uv": first - trace.imported,
        "lock: uv processes (wall, first start to last end)": last - first,
        "lock: merge and write the lock": trace.ended - last,
        "lock: interpreter exit": seconds - trace.ended,
    }
    for argv, start, end in uv:
        key = f"lock:   {uv_label(argv)}"
        phases[key] = phases.get(key, 0.0) + end - start
    return phases


def bake_phases(lines: Sequence[tuple[float, str]], spawned: float, ended: float, prefix: str) -> dict[str, float]:
    """The parts of one `docker buildx bake` from its plain progress (offsets from the command's start):
    buildx's start to the first solve line, the cached steps, the serve install step (with uv's own figures),
    and what follows it (COPY, image export, the inventory stage)."""
    install = install_step(lines)
    first_solve = next((offset for offset, line in lines if BAKE_STEP_RE.match(line)), None)
    last = max((offset for offset, line in lines if line.startswith("#")), default=ended)
    if install is None or first_solve is None:
        return {f"{prefix}: whole bake (no install step ran)": ended - spawned}
    step, began, done = install
    phases = {
        f"{prefix}: buildx start, to the first step": first_solve - spawned,
        f"{prefix}: cached steps, to the serve install": began - first_solve,
        f"{prefix}: serve install step": done - began,
    }
    reported = {"Resolved": 0.0, "Prepared": 0.0, "Installed": 0.0, "Bytecode compiled": 0.0, "Bytecode for": 0.0}
    for _, line in lines:
        match = UV_STEP_RE.match(line)
        if match and match["id"] == step and match["what"] in reported:
            reported[match["what"]] += float(match["value"]) / (1000 if match["unit"] == "ms" else 1)
    names = {
        "Resolved": "uv resolution (index requests)",
        "Prepared": "uv downloads",
        "Installed": "uv install",
        "Bytecode compiled": "uv bytecode",
        "Bytecode for": "bytecode (mreg's, cached)",
    }
    for what, value in reported.items():
        if value:
            phases[f"{prefix}:   {names[what]}"] = value
    phases[f"{prefix}:   the step's other time (process, layer)"] = done - began - sum(reported.values())
    phases[f"{prefix}: after the install (COPY, export, inventory)"] = last - done
    phases[f"{prefix}: buildx exit, after its last line"] = ended - last
    return phases


def install_step(lines: Sequence[tuple[float, str]]) -> tuple[str, float, float] | None:
    """(vertex id, first line, DONE line) of the serve stage's `uv pip` step that ran (printed by uv)."""
    candidates: dict[str, float] = {}
    for offset, line in lines:
        step = BAKE_STEP_RE.match(line)
        if step and step["stage"] == "serve" and "uv pip" in step["what"]:
            candidates.setdefault(step["id"], offset)
    for offset, line in lines:
        ended = BAKE_STATUS_RE.match(line)
        if ended and ended["id"] in candidates and ended["status"] == "DONE":
            return ended["id"], candidates[ended["id"]], offset
    return None


def build_phases(trace: Trace, done: Completed) -> dict[str, float]:
    """Where `mreg build` spends its time: start-up, its docker calls and the bake."""
    bakes = trace.of("bake")
    first = trace.children[0][1] if trace.children else trace.ended
    phases = {
        "build: interpreter start": trace.started,
        "build: imports": trace.imported - trace.started,
        "build: spec, lock, render, to the first docker call": first - trace.imported,
    }
    if not bakes:
        phases["build: docker calls (no bake)"] = max((end for _, _, end in trace.children), default=first) - first
        phases["build: guard and result, after the docker calls"] = trace.ended - max(
            (end for _, _, end in trace.children), default=first
        )
    else:
        _, bake_start, bake_end = bakes[0]
        phases["build: docker calls before the bake (tag lookups, network)"] = bake_start - first
        lines = [(offset, line) for offset, line in done.lines if bake_start <= offset <= bake_end + 0.05]
        phases.update(bake_phases(lines, bake_start, bake_end, "build: bake"))
        phases["build: after the bake (image IDs, guard, result)"] = trace.ended - bake_end
    phases["build: interpreter exit"] = done.seconds - trace.ended
    return phases


class OnePin:
    """Scenario 6: one serve-only pin bumped, then `mreg lock` and `mreg build`, against `docker buildx bake`
    of the hand-tuned Dockerfile; then both unchanged. mreg's uv cache is this invocation's own: each bump
    is to a version it has not resolved yet, as in CI with a cache kept from earlier jobs."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.run = bench.run
        self.results = bench.results
        self.trace_dir = Path(tempfile.mkdtemp(prefix="mreg-bench-trace-"))
        bench.resources.directories.append(self.trace_dir)

    def mreg(self, project: OnePinProject, *args: str, name: str) -> tuple[Completed, Trace]:
        sink = self.trace_dir / f"{name}.json"
        argv = [sys.executable, "-c", TRACE_DRIVER, str(sink), "--spec", str(project.spec), *args]
        env = {**mreg_env(), "UV_CACHE_DIR": str(self.trace_dir / "uv-cache")}
        done = self.run(argv, name=name, cwd=project.directory, env=env)
        return done, Trace.read(sink, done.spawned)

    def bake(self, project: OnePinProject, name: str) -> Completed:
        argv = ["docker", "buildx", "bake", "--progress=plain", "--file", str(project.bake / "compose.yaml")]
        done = self.run([*argv, "--", *TARGETS], name=name)
        for target in TARGETS:
            self.bench.resources.remember_image(f"{BAKE_REPOSITORY}:{target}")
        return done

    def base_image(self) -> str:
        """A base image of this invocation only (the local base with one small file more), so that neither
        approach finds an earlier invocation's steps in BuildKit's cache."""
        base = spec_document()["python"]["base_image"]
        self.bench.ensure_base_image(base)
        nonce = f"{os.getpid()}-{int(time.time())}"
        ref = f"{NONCE_REPOSITORY}:{nonce}"
        context = self.trace_dir / "base"
        context.mkdir()
        (context / "nonce").write_text(nonce)  # a layer of its own: BuildKit keys a base image by its layers
        (context / "Dockerfile").write_text(f"FROM {base}\nCOPY nonce /etc/mreg-bench-nonce\n")
        self.run(["docker", "build", "--quiet", "--tag", ref, str(context)], name="onepin-base", env=classic_env())
        self.bench.resources.remember_image(ref)
        return ref

    def __call__(self, runs: int, reps: int) -> None:
        if runs >= len(FASTAPI_VERSIONS):
            raise CommandError(f"scenario 6 has {len(FASTAPI_VERSIONS) - 1} fastapi bumps; ask for fewer runs")
        self.bench.say(f"6 one-pin change: setting up ({busy(self.run)})")
        project = OnePinProject.create(self.bench.resources, self.base_image())
        project.write(FASTAPI_VERSIONS[0])
        self.mreg(project, "lock", name="onepin-cold-lock")
        self.mreg(project, "build", name="onepin-cold-build")
        self.bake(project, "onepin-cold-bake")
        for index in range(1, runs + 1):
            self.results.runs.append({"run": f"6.{index}", "busy_at_start": busy(self.run)})
            self.bump(project, index)
            for rep in range(reps):
                self.unchanged(project, index, rep)
            self.results.runs[-1]["busy_at_end"] = busy(self.run)

    def bump(self, project: OnePinProject, index: int) -> None:
        old, new = FASTAPI_VERSIONS[index - 1], FASTAPI_VERSIONS[index]
        self.bench.say(f"run 6.{index}: fastapi {old} -> {new} ({busy(self.run)})")
        before = project.pins()
        project.write(new)

        def with_mreg() -> tuple[Completed, Trace, Completed, Trace]:
            locked = self.mreg(project, "lock", name=f"onepin-lock-{index}")
            return (*locked, *self.mreg(project, "--verbose", "build", name=f"onepin-build-{index}"))

        if index % 2:  # alternate which approach goes first
            locked, lock_trace, built, build_trace = with_mreg()
            baked = self.bake(project, f"onepin-bake-{index}")
        else:
            baked = self.bake(project, f"onepin-bake-{index}")
            locked, lock_trace, built, build_trace = with_mreg()
        self.check(project, before, new, built, index)
        self.results.add("onepin_lock", locked.seconds, baked.seconds)
        lock_text = (project.directory / "registry.lock").read_text()
        for version, step in ((old, "back"), (new, "again")):  # both versions are in uv's cache by now
            project.write(version)
            relocked, trace = self.mreg(project, "lock", name=f"onepin-lock-{step}-{index}")
            self.results.add("onepin_lock_seen", relocked.seconds, baked.seconds)
            for key, value in lock_phases(trace, relocked.seconds).items():
                self.results.phases.setdefault(f"pin in uv's cache: {key}", []).append(value)
        if (project.directory / "registry.lock").read_text() != lock_text:
            self.results.notes.append(f"run 6.{index}: relocking {old} and then {new} again gave another lock")
        self.results.add("onepin_build", built.seconds, baked.seconds)
        self.results.add("onepin_total", locked.seconds + built.seconds, baked.seconds)
        phases = {
            **lock_phases(lock_trace, locked.seconds),
            **build_phases(build_trace, built),
            **bake_phases(baked.lines, 0.0, baked.seconds, "bake baseline"),
        }
        for key, value in phases.items():
            self.results.phases.setdefault(key, []).append(value)
        self.results.runs[-1]["onepin_phases"] = {key: round(value, 3) for key, value in phases.items()}
        self.bench.say(f"  mreg lock {locked.seconds:.2f}s + build {built.seconds:.2f}s; bake {baked.seconds:.2f}s")

    def check(
        self, project: OnePinProject, before: Mapping[str, Mapping[str, str]], new: str, built: Completed, index: int
    ) -> None:
        """The relock gave one version per distribution (the lock's format holds one), fastapi the new pin and
        train what it had; the build listed the new serve image (the skew guard ran) and kept train."""
        after = project.pins()
        if after["serve"].get("fastapi") != new:
            raise CommandError(f"run 6.{index}: the lock pins fastapi {after['serve'].get('fastapi')}, not {new}")
        if after["train"] != before["train"]:
            self.results.notes.append(f"run 6.{index}: the serve-only bump changed the train set")
        if "[serve] the build listed the distributions installed in" not in built.stderr:
            raise CommandError(f"run 6.{index}: mreg build did not list the new serve image's distributions")
        if not re.search(r"^mreg: \[train\] \S+ is up to date", built.stderr, re.MULTILINE):
            self.results.notes.append(f"run 6.{index}: the serve-only bump did not reuse the train image")
        for image in mreg_images(built.stdout).values():
            self.bench.resources.image_ids.add(image)

    def unchanged(self, project: OnePinProject, index: int, rep: int) -> None:
        if (index + rep) % 2:
            rebuilt, trace = self.mreg(project, "--verbose", "build", name=f"onepin-nochange-{index}-{rep}")
            baked = self.bake(project, f"onepin-bake-nochange-{index}-{rep}")
        else:
            baked = self.bake(project, f"onepin-bake-nochange-{index}-{rep}")
            rebuilt, trace = self.mreg(project, "--verbose", "build", name=f"onepin-nochange-{index}-{rep}")
        if rebuilt.stderr.count("is up to date") != len(TARGETS):
            self.results.notes.append(f"run 6.{index}: the unchanged `mreg build` did not reuse both images")
        self.results.add("onepin_nochange", rebuilt.seconds, baked.seconds)
        for key, value in build_phases(trace, rebuilt).items():
            self.results.phases.setdefault(f"no-change {key}", []).append(value)


def phase_table(phases: Mapping[str, Sequence[float]]) -> str:
    """Each phase of scenario 6: median [min-max] over the runs."""
    width = max((len(key) for key in phases), default=0)
    return "\n".join(f"{key.ljust(width)}  {spread(values, 's')}" for key, values in phases.items())


# --------------------------------------------------------------------------------------------------- main


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs of scenarios 1-4 and of scenario 6 (default 3)")
    parser.add_argument(
        "--scenario",
        choices=("all", "onepin"),
        default="all",
        help="all (1-6), or only 6: the one-pin change (#18)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 run, 1 repetition, 3 CLI samples")
    parser.add_argument("--log-dir", type=Path, help="keep every command's output here")
    parser.add_argument("--json", type=Path, help="also write the raw samples as JSON here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.runs >= len(FASTAPI_VERSIONS):
        parser.error(f"--runs must be below {len(FASTAPI_VERSIONS)} (scenario 6 bumps fastapi once per run)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs = 1 if args.quick else args.runs
    if not (BIN / "mreg").exists():
        print(f"error: no mreg next to {sys.executable}; run with the project's .venv/bin/python", file=sys.stderr)
        return 2
    compile_mreg()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    run = Runner(args.log_dir)
    resources = Resources(run)
    results = Results()
    declare_rows(results)
    bench = Bench(run, resources, results, reps=1 if args.quick else 3, cli_samples=3 if args.quick else 10)
    code = 0
    info: dict[str, Any] = {}
    try:
        info = machine(run)
        bench.say(f"machine: {info}")
        for index in range(1, runs + 1 if args.scenario == "all" else 1):
            project = Project.create(resources)
            results.runs.append({"run": index, "busy_at_start": busy(run)})
            bench.cold(project, index)
            bench.no_change(project, index)
            bench.serve_change(project, index)
            bench.push(project, index)
            results.runs[-1]["busy_at_end"] = busy(run)
        if args.scenario == "all":
            bench.cli(Project.create(resources))
        OnePin(bench)(runs, reps=bench.reps)
        info["loadavg_end"] = os.getloadavg()
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({str(exc) or 'SIGINT'}); cleaning up", file=sys.stderr)
        code = 130
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # let the cleanup finish
        resources.cleanup()
    report(info, results, runs=runs, quick=args.quick)
    if args.json:
        document = {"machine": info, "runs": results.runs, "notes": results.notes}
        document["rows"] = {key: asdict(row) for key, row in results.rows.items()}
        document["phases"] = results.phases
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return code


def report(info: Mapping[str, Any], results: Results, *, runs: int, quick: bool) -> None:
    if not any(row.mreg for row in results.rows.values()):
        return
    print(f"mreg build benchmarks ({'quick, ' if quick else ''}{runs} run(s)); values: median [min-max]")
    keys = ("date", "nproc", "cpu", "memory_gib", "kernel", "docker_server", "buildx", "builder", "mreg", "mreg_source")
    for key in keys:
        if key in info:
            print(f"  {key}: {info[key]}")
    if "loadavg_start" in info:
        print(f"  loadavg at start {info['loadavg_start']}, at end {info.get('loadavg_end', '-')}")
    for entry in results.runs:
        print(f"  run {entry['run']}: {entry.get('busy_at_start')} -> {entry.get('busy_at_end', '-')}")
        if "cold_mreg_step_seconds" in entry:
            steps = ", ".join(f"{stage} {value:g}s" for stage, value in entry["cold_mreg_step_seconds"].items())
            print(
                f"    cold mreg build, BuildKit step time by stage: {steps}; "
                f"skew guard {entry['cold_mreg_guard_seconds']}s"
            )
    print()
    print(table(results))
    if results.phases:
        print(
            "\nscenario 6, where the time goes (s; concurrent uv processes overlap; indented: parts of the line above)"
        )
        print(phase_table(results.phases))
    relisted = [e["run"] for e in results.runs if e.get("serve_change_train_relisted")]
    same = [e["run"] for e in results.runs if e.get("serve_change_train") == "same image ID"]
    if results.runs and "serve_change_train" in results.runs[0]:
        print(
            f"note: serve-only change: mreg's train image kept its image ID in runs {same or 'none'} (with a new "
            f"tag); the skew guard listed it again in runs {relisted or 'none'}"
        )
    for note in results.notes:
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
