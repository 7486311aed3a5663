"""The serving contract without Docker: the spec's serve and train keys, the contract recorded with each
version, the digest-keyed model cache, what training output is registered, readiness checks against real
HTTP servers on 127.0.0.1, and the refusals that come before any container."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from mreg import pipeline, serving
from mreg.engine import Engine
from mreg.engine.containers import ContainerState
from mreg.errors import EngineError, IntegrityError, InvalidInputError, NotFoundError, StorageError
from mreg.records import Record, decode_record
from mreg.records.model import ModelFile, ServingContract
from mreg.registry import Registry
from mreg.spec import Spec, load_spec
from tests.support import copy_example, free_port, mreg_in_process, save_build


class NoEngine:
    """An engine that must not be used: each test here is about what happens before any container."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the engine was used ({name}) before the refusal")


NO_ENGINE = cast("Engine", NoEngine())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = copy_example(tmp_path / "project")
    save_build(project)
    (project / "model.joblib").write_bytes(b"a model" * 1000)
    return project


@pytest.fixture
def spec(project: Path) -> Spec:
    return load_spec(project / "registry.toml")


def register(spec: Spec, model: Path) -> Record:
    return pipeline.register(spec, model, engine=lambda: NO_ENGINE)


# -- the spec and the record ---------------------------------------------------------------------------


def write_spec(tmp_path: Path, text: str) -> Spec:
    path = tmp_path / "registry.toml"
    path.write_text('[model]\nname = "m"\n' + text)
    return load_spec(path)


def test_defaults_and_the_bundled_example(tmp_path: Path, spec: Spec) -> None:
    plain = write_spec(tmp_path, "")
    assert (plain.stages.serve.port, plain.stages.serve.health, plain.stages.train.output) == (8080, None, "/out")
    assert (spec.stages.serve.port, spec.stages.serve.health, spec.stages.train.output) == (8080, "/healthz", "/out")
    spelled = write_spec(tmp_path, '[stages.serve]\nport = 8080\n[stages.train]\noutput = "/out"\n')
    assert spelled.digest() == plain.digest()  # defaults spelled out change nothing
    custom = write_spec(tmp_path, '[stages.serve]\nport = 9000\nhealth = "/v2/health/ready?x=1"\n')
    assert (custom.stages.serve.port, custom.stages.serve.health) == (9000, "/v2/health/ready?x=1")
    assert custom.digest() != plain.digest()
    assert write_spec(tmp_path, '[stages.train]\noutput = "/workspace/model-out"\n').stages.train.output == (
        "/workspace/model-out"
    )


def test_register_records_the_serve_contract(spec: Spec, project: Path) -> None:
    record = register(spec, project / "model.joblib")
    assert record.serving == ServingContract(port=8080, health="/healthz")
    stored = json.loads(record.to_json())
    assert stored["serving"] == {"port": 8080, "health": "/healthz"}
    assert decode_record(record.to_json().encode(), "x") == record


def test_a_record_without_a_contract_keeps_its_document_and_digest(spec: Spec, project: Path) -> None:
    record = register(spec, project / "model.joblib")
    older = record.model_copy(update={"serving": None, "digest": None})
    assert "serving" not in older.model_dump(mode="json")
    sealed = older.sealed()
    assert decode_record(sealed.to_json().encode(), "old") == sealed
    assert sealed.digest != record.digest


@pytest.mark.parametrize("health", ["healthz", "/a b", "/a\r\nHost: x", "/" + "a" * 1024])
def test_a_stored_record_with_a_hostile_health_path_is_refused(spec: Spec, project: Path, health: str) -> None:
    record = register(spec, project / "model.joblib")
    document = json.loads(record.to_json())
    document["serving"]["health"] = health
    with pytest.raises(StorageError, match=r"serving\.health"):
        decode_record(json.dumps(document).encode(), "hostile")


# -- the model cache -----------------------------------------------------------------------------------


def test_a_second_serve_of_a_version_reads_nothing_from_the_store(spec: Spec, project: Path, tmp_path: Path) -> None:
    record = register(spec, project / "model.joblib")
    registry = Registry.from_spec(spec)
    cache = tmp_path / "cache"
    entry = serving.cached_model(registry, record, cache)
    assert entry == cache / record.model.sha256 / "file"
    assert entry.read_bytes() == (project / "model.joblib").read_bytes()
    assert sorted(path.name for path in cache.iterdir()) == [record.model.sha256]  # no staging left
    shutil.move(project / ".mreg" / "objects", tmp_path / "objects-elsewhere")  # the store is gone
    assert serving.cached_model(registry, record, cache) == entry
    other = tmp_path / "other-cache"
    with pytest.raises(NotFoundError, match="does not exist"):
        serving.cached_model(registry, record, other)
    assert [path.name for path in other.iterdir()] == []  # a failed download publishes nothing


def test_a_directory_model_is_cached_as_its_tree(spec: Spec, project: Path, tmp_path: Path) -> None:
    model = project / "saved"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "weights.bin").write_bytes(b"w" * 100)
    record = register(spec, model)
    entry = serving.cached_model(Registry.from_spec(spec), record, tmp_path / "cache")
    assert entry == tmp_path / "cache" / record.model.sha256 / "tree"
    assert (entry / "variables" / "weights.bin").read_bytes() == b"w" * 100
    assert serving.model_path_in_container(record) == "/mnt/models"


def test_damaged_bytes_never_enter_the_cache(spec: Spec, project: Path, tmp_path: Path) -> None:
    record = register(spec, project / "model.joblib")
    (project / ".mreg" / "objects" / "sha256" / record.model.sha256).write_bytes(b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError, match="hashes to"):
        serving.cached_model(Registry.from_spec(spec), record, cache)
    assert [path.name for path in cache.iterdir()] == []


def test_something_else_in_place_of_an_entry_is_refused(spec: Spec, project: Path, tmp_path: Path) -> None:
    record = register(spec, project / "model.joblib")
    (tmp_path / "cache" / record.model.sha256 / "file").mkdir(parents=True)
    with pytest.raises(IntegrityError, match="the model cache holds something mreg did not put there"):
        serving.cached_model(Registry.from_spec(spec), record, tmp_path / "cache")


def test_the_cache_lives_in_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert serving.model_cache() == tmp_path / "mreg" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec says to ignore it
    assert serving.model_cache() == Path.home() / ".cache" / "mreg" / "models"


# -- the contract's values -----------------------------------------------------------------------------


def test_the_contract_environment(spec: Spec, project: Path) -> None:
    record = register(spec, project / "model.joblib")
    assert serving.model_path_in_container(record) == "/mnt/models/model.joblib"
    assert serving.contract_env(record, "/mnt/models/model.joblib", 9001) == {
        "MREG_MODEL_NAME": "iris-rf",
        "MREG_MODEL_PATH": "/mnt/models/model.joblib",
        "MREG_MODEL_SHA256": record.model.sha256,
        "MREG_MODEL_VERSION": "1",
        "PORT": "9001",
    }


@pytest.mark.parametrize("name", ["", "..", "a/b", "a\\b", "a\nb", "x" * 256])
def test_a_record_naming_its_model_oddly_is_refused(spec: Spec, project: Path, name: str) -> None:
    record = register(spec, project / "model.joblib")
    odd = record.model_copy(update={"model": ModelFile(**{**record.model.model_dump(), "filename": name})})
    with pytest.raises(IntegrityError, match="not a file name"):
        serving.model_path_in_container(odd)


# -- what training wrote -------------------------------------------------------------------------------


def test_one_entry_is_the_model_and_several_are_a_directory_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.joblib").write_bytes(b"m")
    (out / "metrics.json").write_text('{"accuracy": 0.97, "loss": 1}')
    assert serving.trained_model(out) == out / "model.joblib"
    metadata = serving.read_metrics(out)
    assert metadata is not None
    assert metadata.metrics == {"accuracy": 0.97, "loss": 1.0}
    (out / "model.joblib").unlink()
    (out / "saved").mkdir()
    assert serving.trained_model(out) == out / "saved"
    (out / "tokenizer.json").write_text("{}")
    assert serving.trained_model(out) == out
    (out / "metrics.json").unlink()
    assert serving.read_metrics(out) is None


def test_no_model_and_bad_metrics_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"accuracy": "high"}')
    with pytest.raises(InvalidInputError, match="training wrote no model there"):
        serving.trained_model(out)
    with pytest.raises(InvalidInputError, match="metric 'accuracy' is 'high'; a metric must be a finite number"):
        serving.read_metrics(out)
    (out / "metrics.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match=r"metrics\.json: not a JSON file"):
        serving.read_metrics(out)


def test_train_register_refuses_an_output_holding_earlier_files(spec: Spec, project: Path) -> None:
    (project / "out").mkdir()
    (project / "out" / "model.joblib").write_bytes(b"from yesterday")
    with pytest.raises(InvalidInputError, match=r"out: holds files from before \(model\.joblib\)"):
        serving.train(spec, NO_ENGINE, register=True)


def test_train_needs_a_command_and_a_build(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "p")
    text = (project / "registry.toml").read_text()
    (project / "registry.toml").write_text(
        text.replace('command = ["python", "train.py", "--out", "/out/model.joblib"]\n', "")
    )
    with pytest.raises(InvalidInputError, match="no build result; run `mreg build` first"):
        serving.train(load_spec(project / "registry.toml"), NO_ENGINE)
    save_build(project)
    with pytest.raises(InvalidInputError, match=r"stages\.train\.command is not set and no arguments follow `--`"):
        serving.train(load_spec(project / "registry.toml"), NO_ENGINE)


def test_train_env_pairs_are_checked_by_the_cli(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, stdout, stderr = mreg_in_process("train", "-e", "NOEQUALS", cwd=project, monkeypatch=monkeypatch)
    assert (code, stdout, stderr) == (2, "", "error: -e NOEQUALS: expected KEY=VALUE.\n")


# -- serve's refusals ----------------------------------------------------------------------------------


def test_a_yanked_version_is_refused_unless_allowed(spec: Spec, project: Path) -> None:
    register(spec, project / "model.joblib")
    registry = Registry.from_spec(spec)
    registry.yank("iris-rf:1", "leaks test data")
    with pytest.raises(InvalidInputError, match=r"iris-rf:1 is yanked \(leaks test data\); .* --allow-yanked"):
        serving.serve(registry, "iris-rf:1", NO_ENGINE)
    with pytest.raises(AssertionError, match="the engine was used"):
        serving.serve(registry, "iris-rf:1", NO_ENGINE, allow_yanked=True, port=free_port())


def test_a_port_in_use_is_refused_before_anything_starts(spec: Spec, project: Path) -> None:
    register(spec, project / "model.joblib")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidInputError, match=f"port {port} on 127.0.0.1 is in use"):
            serving.serve(Registry.from_spec(spec), "iris-rf", NO_ENGINE, port=port)


# -- readiness -----------------------------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[int]:
    """A real HTTP server on 127.0.0.1: /ok answers 200, anything else 503."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok?probe=1" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_probe_wants_2xx_on_the_health_path_or_an_open_port(http_server: int) -> None:
    assert serving.probe(http_server, "/ok?probe=1") == (True, "HTTP 200")
    assert serving.probe(http_server, "/starting") == (False, "HTTP 503")
    assert serving.probe(http_server, None) == (True, "connected")
    closed = free_port()
    assert serving.probe(closed, None)[0] is False
    assert serving.probe(closed, "/ok")[0] is False


class OneContainer:
    """A stand-in for the engine's view of one container: its state and its output."""

    def __init__(self, state: ContainerState | None) -> None:
        self.state = state

    def container_state(self, container: str) -> ContainerState | None:
        return self.state

    def container_logs(self, container: str, *, tail: int) -> list[str]:
        return ["Traceback (most recent call last):", "FileNotFoundError: /mnt/models/model.joblib"][-tail:]


def test_a_server_that_exits_fails_with_its_last_lines(http_server: int) -> None:
    engine = cast("Engine", OneContainer(ContainerState("exited", 1)))
    with pytest.raises(EngineError) as caught:
        serving.wait_ready(engine, "c", port=http_server, health="/ok", timeout=5, what="the server of m:1")
    assert str(caught.value) == (
        "the server of m:1 exited (code 1) before it was ready. Last lines of its output:\n"
        "  Traceback (most recent call last):\n  FileNotFoundError: /mnt/models/model.joblib"
    )


def test_a_server_that_never_gets_ready_times_out(http_server: int) -> None:
    engine = cast("Engine", OneContainer(ContainerState("running", 0)))
    with pytest.raises(EngineError, match=r"was not ready within 0.5 s \(GET /starting: HTTP 503\)\. Last lines"):
        serving.wait_ready(engine, "c", port=http_server, health="/starting", timeout=0.5, what="the server")
    serving.wait_ready(engine, "c", port=http_server, health="/ok?probe=1", timeout=5, what="the server")
