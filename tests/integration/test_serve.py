"""`mreg train` and `mreg serve` end to end on the real engine, by the serving contract.

The bundled iris example: `mreg build`, then `mreg train --register` trains in the train image and registers
the model with its metrics; `mreg serve` runs the recorded serve image by digest and answers a prediction; a
second serve of the same version reads nothing from the store; Ctrl-C stops and removes a foreground server.

A tiny project whose train and serve scripts do what they are told (fail, hang, write a directory model,
exit at once) proves the failure paths: each exits non-zero with the container's last lines and leaves no
container, and an interrupted training registers nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import copy_example, free_port, mreg
from tests.support.projects import tiny_project

pytestmark = pytest.mark.docker

SAMPLES = {"setosa": [5.1, 3.5, 1.4, 0.2], "versicolor": [6.4, 3.2, 4.5, 1.5], "virginica": [6.7, 3.0, 5.2, 2.3]}

TRAIN = '''"""Does what its arguments say: write MODE (a file model), tree MODE (a directory model), fail, sleep."""
import json, os, sys, time

print("training as", f"{os.getuid()}:{os.getgid()}", "greeting", os.environ.get("GREETING"), flush=True)
action = sys.argv[1]
if action == "fail":
    for number in range(1, 31):
        print(f"step {number}", flush=True)
    sys.exit(3)
if action == "sleep":
    open("/out/partial.bin", "wb").write(b"half")
    print("sleeping", flush=True)
    time.sleep(120)
if action == "write":
    open("/out/model.txt", "w").write(sys.argv[2])
if action == "tree":
    os.makedirs("/out/weights")
    open("/out/mode", "w").write(sys.argv[2])
    open("/out/weights/w.bin", "wb").write(b"w" * 100)
with open("/out/metrics.json", "w") as metrics:
    json.dump({"loss": 0.25}, metrics)
'''
SERVER = '''"""What the model says: exit (at once, with 30 lines), hang (never listen) or listen (on HOST:PORT)."""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

path = os.environ["MREG_MODEL_PATH"]
mode = open(os.path.join(path, "mode") if os.path.isdir(path) else path).read()
if mode == "exit":
    for number in range(1, 31):
        print(f"failure line {number}", flush=True)
    sys.exit(3)
if mode == "hang":
    time.sleep(600)
names = ("MREG_MODEL_NAME", "MREG_MODEL_VERSION", "MREG_MODEL_PATH", "MREG_MODEL_SHA256", "PORT", "HOST")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        files = sorted(os.listdir(path)) if os.path.isdir(path) else [os.path.basename(path)]
        document = {"env": {name: os.environ[name] for name in names}, "writable": os.access(path, os.W_OK)}
        body = json.dumps({**document, "files": files}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


print("listening", flush=True)
HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
'''
TINY_STAGES = '[stages.train]\ncopy = ["train.py"]\ncommand = ["python", "train.py"]\n'


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(scope="module")
def env(cache: Path) -> dict[str, str]:
    """The environment of every mreg this module runs: its own model cache."""
    return {"XDG_CACHE_HOME": str(cache)}


def containers(label: str) -> list[str]:
    """Names of every container (running or not) with the label `key=value`."""
    listed = subprocess.run(
        ["docker", "ps", "--all", "--filter", f"label={label}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def remove_container(container: str) -> None:
    subprocess.run(["docker", "rm", "--force", container], capture_output=True, check=False)


def inspect(container: str) -> dict[str, Any]:
    output = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True).stdout
    document: dict[str, Any] = json.loads(output)[0]
    return document


@pytest.fixture
def detached(env: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
    """Detached servers a test started (append `serve --json` documents); removed after the test."""
    started: list[dict[str, Any]] = []
    yield started
    for served in started:
        remove_container(served["container"])


# -- the iris example ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory, docker_engine: None, env: dict[str, str]) -> Path:
    project = copy_example(tmp_path_factory.mktemp("iris"))
    mreg("build", cwd=project, env=env)
    return project


@pytest.fixture(scope="module")
def trained(iris: Path, env: dict[str, str]) -> dict[str, Any]:
    result = mreg("train", "--register", "--json", cwd=iris, env=env)
    assert '"accuracy"' in result.stderr  # the training's own output streams to stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def serve_detached(project: Path, env: dict[str, str], ref: str, *args: str) -> dict[str, Any]:
    result = mreg("serve", ref, "--port", str(free_port()), "--detach", "--json", *args, cwd=project, env=env)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_train_register_trains_in_the_train_image_and_registers(iris: Path, trained: dict[str, Any]) -> None:
    build = json.loads((iris / ".mreg" / "build.json").read_text())
    record = trained["record"]
    assert trained["output"] == str(iris / "out")
    assert trained["model"] == str(iris / "out" / "model.joblib")
    assert sorted(path.name for path in (iris / "out").iterdir()) == ["metrics.json", "model.joblib"]
    assert (iris / "out" / "model.joblib").stat().st_uid == os.getuid()  # written as the invoking user
    assert record["version"] == 1
    assert record["model"]["filename"] == "model.joblib"
    assert record["metrics"]["accuracy"] > 0.9  # taken from metrics.json
    assert record["serving"] == {"port": 8080, "health": "/healthz"}
    assert record["images"]["train"]["digest"] == build["images"]["train"]["digest"]
    assert containers("io.mreg.role=train") == []


def test_serve_detached_answers_a_prediction_from_the_image_by_digest(
    iris: Path, trained: dict[str, Any], env: dict[str, str], detached: list[dict[str, Any]]
) -> None:
    served = serve_detached(iris, env, "iris-rf:1")
    detached.append(served)
    record = trained["record"]
    assert served["image"] == record["images"]["serve"]["image"]
    assert served["model"] == {
        "name": "iris-rf",
        "version": 1,
        "sha256": record["model"]["sha256"],
        "path": "/mnt/models/model.joblib",
    }
    answer = requests.post(f"{served['url']}/predict", json={"instances": list(SAMPLES.values())}, timeout=10)
    assert answer.json()["classes"] == list(SAMPLES)
    container = inspect(served["container"])
    assert container["Image"] == record["images"]["serve"]["digest"]  # the recorded image, not a tag
    [mount] = container["Mounts"]
    assert (mount["Destination"], mount["RW"]) == ("/mnt/models/model.joblib", False)
    environment = dict(item.split("=", 1) for item in container["Config"]["Env"])
    assert environment["MREG_MODEL_SHA256"] == record["model"]["sha256"]
    assert environment["MREG_MODEL_VERSION"] == "1"
    assert environment["PORT"] == served["url"].rsplit(":", 1)[1]


def test_a_second_serve_reads_nothing_from_the_store(
    iris: Path, trained: dict[str, Any], env: dict[str, str], cache: Path, detached: list[dict[str, Any]]
) -> None:
    first = serve_detached(iris, env, "iris-rf:1")
    detached.append(first)
    sha256 = trained["record"]["model"]["sha256"]
    entries = sorted(path.name for path in (cache / "mreg" / "models").iterdir())
    assert entries == [sha256]
    objects = iris / ".mreg" / "objects"
    hidden = iris / "objects-moved-away"
    objects.rename(hidden)  # any read of the store now fails
    try:
        second = serve_detached(iris, env, "iris-rf:1")
        detached.append(second)
        answer = requests.post(f"{second['url']}/predict", json={"instances": [SAMPLES["setosa"]]}, timeout=10)
        assert answer.json()["classes"] == ["setosa"]
    finally:
        hidden.rename(objects)
    assert sorted(path.name for path in (cache / "mreg" / "models").iterdir()) == [sha256]


class Stderr:
    """A process's stderr, read line by line in a thread, so that a test can wait for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        with self._changed:
            found = self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout=timeout)
        assert found, f"no line with {text!r} in:\n" + "\n".join(self.lines)

    def all(self) -> list[str]:
        self._thread.join(timeout=10)
        return self.lines


@contextlib.contextmanager
def stopped(process: subprocess.Popen[str]) -> Iterator[None]:
    """Kill the process when the block ends before it did (a failed assertion)."""
    try:
        yield
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def start_mreg(project: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mreg", *args],
        cwd=project,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_stops_and_removes_a_foreground_server(iris: Path, trained: dict[str, Any], env: dict[str, str]) -> None:
    port = free_port()
    with start_mreg(iris, env, "serve", "iris-rf:1", "--port", str(port)) as process, stopped(process):
        stderr = Stderr(process)
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # printed once the health path answers
        assert url == f"http://127.0.0.1:{port}"
        assert requests.get(f"{url}/healthz", timeout=10).json()["version"] == "iris-rf:1"
        stderr.wait_for('"GET /healthz HTTP/1.1" 200')  # the server's output streams to stderr
        [name] = containers("io.mreg.model=iris-rf")
        container_id = inspect(name)["Id"]
        os.kill(process.pid, signal.SIGINT)
        process.wait(timeout=60)
        lines = stderr.all()
    assert process.returncode == 0, lines
    assert lines[-1] == f"stopped and removed container {container_id[:12]}"
    assert name not in containers("io.mreg.model=iris-rf")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=5)


# -- a tiny project for the failure paths --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, docker_engine: None, env: dict[str, str]) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "tiny"
    directory.mkdir()
    (directory / "train.py").write_text(TRAIN)  # before the spec that copies it is locked
    project = tiny_project(directory, extra=TINY_STAGES)
    (project / "app.py").write_text(SERVER)
    mreg("build", cwd=project, env=env)
    return project


def register_tiny(tiny: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    """Train the tiny project with `args` into a fresh output directory and register what it wrote."""
    output = tiny / f"out-{time.monotonic_ns()}"
    result = mreg("train", "--register", "--json", "--output", str(output), "--", *args, cwd=tiny, env=env)
    record: dict[str, Any] = json.loads(result.stdout)["record"]
    return record


def versions(project: Path) -> list[int]:
    records = project / ".mreg" / "registry" / "tiny" / "versions"
    return sorted(int(path.stem) for path in records.glob("*.json")) if records.is_dir() else []


def test_a_training_failure_exits_with_the_container_code_and_last_lines(tiny: Path, env: dict[str, str]) -> None:
    before = versions(tiny)
    result = mreg("train", "--register", "--output", "failed", "--", "fail", cwd=tiny, env=env, check=False)
    assert result.returncode == 4
    error = result.stderr[result.stderr.index("error: ") :]
    assert error.startswith("error: training in sha256:")
    assert "exited with code 3; nothing was registered. Last lines of its output:\n" in error
    assert error.rstrip().endswith("  step 30")
    assert "  step 6\n" in error
    assert "  step 5\n" not in error  # only the last 25 lines
    assert versions(tiny) == before
    assert containers("io.mreg.role=train") == []


def test_an_interrupted_training_registers_nothing_and_leaves_no_container(tiny: Path, env: dict[str, str]) -> None:
    before = versions(tiny)
    with (
        start_mreg(tiny, env, "train", "--register", "--output", "interrupted", "--", "sleep") as process,
        stopped(process),
    ):
        stderr = Stderr(process)
        stderr.wait_for("sleeping")
        assert len(containers("io.mreg.role=train")) == 1
        os.kill(process.pid, signal.SIGINT)
        process.wait(timeout=60)
        lines = stderr.all()
    assert process.returncode == 130
    assert lines[-1] == "error: interrupted; nothing was recorded."
    assert versions(tiny) == before
    assert containers("io.mreg.role=train") == []


def test_train_passes_env_and_args_and_runs_as_the_invoking_user(tiny: Path, env: dict[str, str]) -> None:
    result = mreg("train", "-e", "GREETING=hello world", "--output", "plain", "--", "write", "x", cwd=tiny, env=env)
    assert f"training as {os.getuid()}:{os.getgid()} greeting hello world" in result.stderr
    assert (tiny / "plain" / "model.txt").read_text() == "x"
    assert result.stdout.strip() == f"trained: wrote {tiny / 'plain'}"


def test_a_server_that_exits_at_once_fails_with_its_last_lines(tiny: Path, env: dict[str, str]) -> None:
    record = register_tiny(tiny, env, "write", "exit")
    ref = f"tiny:{record['version']}"
    result = mreg("serve", ref, "--port", str(free_port()), cwd=tiny, env=env, check=False)
    assert result.returncode == 4
    assert result.stderr.startswith(f"error: the server of {ref} exited (code 3) before it was ready. Last lines")
    assert result.stderr.rstrip().endswith("  failure line 30")
    assert result.stdout == ""
    assert containers("io.mreg.role=serve") == []


def test_a_server_that_never_gets_ready_is_removed_after_the_timeout(tiny: Path, env: dict[str, str]) -> None:
    record = register_tiny(tiny, env, "write", "hang")
    port = free_port()
    started = time.monotonic()
    result = mreg("serve", f"tiny:{record['version']}", "--port", str(port), "--timeout", "3", cwd=tiny, env=env, check=False)  # fmt: skip
    assert 3 <= time.monotonic() - started < 30
    assert result.returncode == 4
    assert f"was not ready within 3 s (a connection to port {port}: Connection refused)." in result.stderr
    assert containers("io.mreg.role=serve") == []


def test_a_directory_model_is_served_read_only_as_mnt_models(
    tiny: Path, env: dict[str, str], detached: list[dict[str, Any]]
) -> None:
    record = register_tiny(tiny, env, "tree", "listen")
    assert (record["model"]["kind"], record["model"]["files"]) == ("directory", 3)  # metrics.json included
    assert record["metrics"] == {"loss": 0.25}
    assert record["serving"] == {"port": 8080, "health": None}
    served = serve_detached(tiny, env, f"tiny:{record['version']}")  # ready: its port accepts connections
    detached.append(served)
    answer = requests.get(served["url"], timeout=10).json()
    assert answer["files"] == ["metrics.json", "mode", "weights"]
    assert answer["writable"] is False
    assert answer["env"] == {
        "MREG_MODEL_NAME": "tiny",
        "MREG_MODEL_VERSION": str(record["version"]),
        "MREG_MODEL_PATH": "/mnt/models",
        "MREG_MODEL_SHA256": record["model"]["sha256"],
        "PORT": served["url"].rsplit(":", 1)[1],
        "HOST": "127.0.0.1",
    }


def test_an_image_that_no_longer_resolves_is_refused(tiny: Path, env: dict[str, str], tmp_path: Path) -> None:
    record = register_tiny(tiny, env, "write", "listen")
    image = record["images"]["serve"]["image"]
    saved = tmp_path / "serve.tar"
    subprocess.run(["docker", "save", "--output", str(saved), image], check=True, capture_output=True)
    refs = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .RepoTags}}", image],
        capture_output=True,
        text=True,
        check=True,
    )
    tags = json.loads(refs.stdout)
    subprocess.run(["docker", "image", "rm", "--force", image], check=True, capture_output=True)
    try:
        result = mreg("serve", f"tiny:{record['version']}", "--port", str(free_port()), cwd=tiny, env=env, check=False)
    finally:
        subprocess.run(["docker", "load", "--input", str(saved)], check=True, capture_output=True)
        for tag in tags:
            subprocess.run(["docker", "tag", image, tag], check=True, capture_output=True)
    assert result.returncode == 4
    assert result.stderr == (
        f"error: the image {image} is not in the local engine (removed or pruned?), and an image ID cannot be "
        "pulled: build it again and register a new version.\n"
    )


def test_the_docker_sdk_backend_runs_the_same_containers(
    tiny: Path, env: dict[str, str], detached: list[dict[str, Any]]
) -> None:
    sdk = {**env, "MREG_ENGINE": "docker"}
    failed = mreg("train", "--output", "sdk-failed", "--", "fail", cwd=tiny, env=sdk, check=False)
    assert failed.returncode == 4
    assert failed.stderr.rstrip().endswith("  step 30")
    record = register_tiny(tiny, sdk, "write", "listen")
    served = serve_detached(tiny, sdk, f"tiny:{record['version']}")
    detached.append(served)
    answer = requests.get(served["url"], timeout=10).json()
    assert (answer["env"]["MREG_MODEL_PATH"], answer["writable"]) == ("/mnt/models/model.txt", False)
    assert containers("io.mreg.role=train") == []
