"""`train` and `serve` as library functions, following mreg's serving contract with the images it builds.

The contract: the train container runs the train stage's command as the invoking user, with the output
directory mounted read-write at the stage's `output` (default `/out`). The serve container gets the model
mounted read-only at `/mnt/models` (a file model keeps its file name, `/mnt/models/<filename>`; a directory
model is `/mnt/models` itself) and the environment `MREG_MODEL_PATH`, `MREG_MODEL_SHA256` (hex),
`MREG_MODEL_NAME`, `MREG_MODEL_VERSION` and `PORT`; `mreg serve` also sets `HOST=127.0.0.1`, as it shares
the host's network. The serve stage's `port` and `health` are recorded with each version (`Record.serving`).
"""

from __future__ import annotations

import collections
import errno
import http.client
import json
import os
import secrets
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mreg import pipeline
from mreg.engine import Engine
from mreg.engine.containers import TAIL_LINES, ContainerExit, ContainerRequest, Mount, run_to_end
from mreg.errors import EngineError, IntegrityError, InvalidInputError, StorageError
from mreg.records import Record
from mreg.records._metadata import Metadata
from mreg.records.model import ServingContract
from mreg.registry import Registry
from mreg.spec import Spec

LineSink = Callable[[str], None]
MODEL_DIR = "/mnt/models"
METRICS_FILE = "metrics.json"
DEFAULT_TIMEOUT = 60.0
SERVE_HOST = "127.0.0.1"
STOP_GRACE = 10.0
"""Seconds a stopped server gets to shut down before it is killed."""
_POLL = 0.25


@dataclass(frozen=True)
class Trained:
    """What `train` did: the output directory, and with `register`, the model it registered and its record."""

    output: Path
    model: Path | None = None
    record: Record | None = None

    def summary(self) -> dict[str, Any]:
        """The `train --json` document."""
        return {
            "output": str(self.output),
            "model": str(self.model) if self.model else None,
            "record": self.record.model_dump(mode="json") if self.record else None,
        }


@dataclass(frozen=True)
class Served:
    """A running server of one version: its container, the URL it answers on, its image and model."""

    container: str
    url: str
    image: str
    record: Record
    model_path: str
    """MREG_MODEL_PATH: where the model is inside the container."""

    def summary(self) -> dict[str, Any]:
        """The `serve --json` document."""
        return {
            "container": self.container,
            "url": self.url,
            "image": self.image,
            "model": {
                "name": self.record.name,
                "version": self.record.version,
                "sha256": self.record.model.sha256,
                "path": self.model_path,
            },
        }


def train(
    spec: Spec,
    engine: Engine,
    *,
    output: Path | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    register: bool = False,
    on_line: LineSink = lambda line: None,
) -> Trained:
    """Run the built train image (the saved build result's exact image) with the train stage's command and
    `extra_args`, `env` added to its environment, as the invoking user, with `output` (default `out/` beside
    the spec, created) mounted at the stage's `output`. A user other than root gets `HOME=/tmp` (unless
    `env` sets it): the image has no home directory it could write.

    A non-zero exit raises EngineError with the container's exit code and last lines, and nothing is
    registered. With `register`, what training wrote is registered: its one entry (a file or a directory),
    or the whole output directory as a directory model when it wrote several; `metrics.json` in the output
    becomes the version's metrics (and is not counted as an entry). Registering needs an empty output
    directory, so that nothing from an earlier run is taken for this one's.
    """
    built = pipeline.load_build_result(spec)
    stage = spec.stages.train
    command = (*(stage.command or ()), *extra_args)
    if not command:
        raise InvalidInputError(
            f"{spec.source}: stages.train.command is not set and no arguments follow `--`; mreg train runs that "
            "command in the train image."
        )
    directory = _output_directory(output or spec.root / "out", empty=register)
    image = built.images["train"].image
    engine.ensure_image(image)
    home = {} if os.getuid() == 0 else {"HOME": "/tmp"}  # noqa: S108 - a user the image does not know
    request = ContainerRequest(
        image=image,
        name=f"mreg-train-{spec.model.name}-{secrets.token_hex(4)}",
        command=command,
        mounts=(Mount(directory, stage.output, read_only=False),),
        env={**home, **(env or {})},
        user=f"{os.getuid()}:{os.getgid()}",
        network=engine.default_network(),
        labels={"io.mreg.model": spec.model.name, "io.mreg.role": "train"},
    )
    finished = run_to_end(engine, request, on_line=on_line)
    if finished.code != 0:
        raise EngineError(
            f"training in {image} exited with code {finished.code}; nothing was registered. Last lines of its "
            f"output:\n{finished.quoted_tail()}"
        )
    if not register:
        return Trained(directory)
    model = trained_model(directory)
    record = pipeline.register(spec, model, engine=lambda: engine, metadata=read_metrics(directory))
    return Trained(directory, model, record)


def _output_directory(path: Path, *, empty: bool) -> Path:
    """The output directory, created, as an absolute path; with `empty`, refused unless it holds nothing."""
    path = path.absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        entries = sorted(entry.name for entry in path.iterdir())
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot be used as the training output ({exc.strerror}).") from exc
    if empty and entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise InvalidInputError(
            f"{path}: holds files from before ({shown}); mreg train --register registers what this run writes, "
            "so it needs an empty output directory: empty it or pass --output DIR."
        )
    return path.resolve()


def trained_model(output: Path) -> Path:
    """What training wrote into `output`, as one model: its one entry, else the directory itself."""
    entries = sorted(entry for entry in output.iterdir() if entry.name != METRICS_FILE)
    if not entries:
        raise InvalidInputError(f"{output}: training wrote no model there, so nothing was registered.")
    return entries[0] if len(entries) == 1 else output


def read_metrics(output: Path) -> Metadata | None:
    """The metrics in `output/metrics.json` (a flat JSON object of numbers), or None without that file."""
    path = output / METRICS_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot be read ({exc.strerror}).") from exc
    except ValueError as exc:
        raise InvalidInputError(f"{path}: not a JSON file ({exc}).") from exc
    metadata = Metadata()
    metadata.add_metrics(document, str(path))
    return metadata


def serve(
    registry: Registry,
    ref: str,
    engine: Engine,
    *,
    port: int | None = None,
    detach: bool = False,
    allow_yanked: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    cache: Path | None = None,
    on_line: LineSink = lambda line: None,
    on_ready: Callable[[Served], None] = lambda served: None,
) -> Served:
    """Serve the version `ref` names: its model from the local cache (`cache`, default `model_cache()`;
    downloaded and checked the first time), in its recorded serve image pinned by digest, on the host's
    network at 127.0.0.1:`port` (default: the recorded contract's).

    Once the server is ready (its health path answers 2xx, or its port accepts connections), `on_ready` is
    called; with `detach` this returns then, and the server keeps running. Else the server's output goes to
    `on_line`, and this returns when Ctrl-C or SIGTERM stops it; its container is removed. A server that
    exits, or is not ready within `timeout` seconds, raises EngineError with its last lines, and its
    container is removed.
    """
    record = registry.get(ref)
    _refuse_yanked(registry, record, allow_yanked=allow_yanked)
    contract = record.serving or ServingContract()
    port = port or contract.port
    _check_port_free(port)
    image = record.images["serve"].image
    engine.ensure_image(image)
    host_path = cached_model(registry, record, cache or model_cache())
    model_path = model_path_in_container(record)
    request = ContainerRequest(
        image=image,
        name=f"mreg-serve-{record.name}-{record.version}-{secrets.token_hex(3)}",
        mounts=(Mount(host_path, model_path, read_only=True),),
        env={**contract_env(record, model_path, port), "HOST": SERVE_HOST},
        network="host",
        labels={"io.mreg.model": record.name, "io.mreg.version": str(record.version), "io.mreg.role": "serve"},
    )
    what = f"the server of {record.name}:{record.version}"
    try:
        container = engine.start_container(request)
        wait_ready(engine, request.name, port=port, health=contract.health, timeout=timeout, what=what)
    except BaseException:
        engine.remove_container(request.name, grace=0)
        raise
    served = Served(container, f"http://{SERVE_HOST}:{port}", image, record, model_path)
    on_ready(served)
    if detach:
        return served
    _run_in_foreground(engine, request.name, what=what, on_line=on_line)
    return served


def _run_in_foreground(engine: Engine, container: str, *, what: str, on_line: LineSink) -> None:
    """Pass the server's output on until Ctrl-C or SIGTERM (then stop it) or until it exits (an error)."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def sink(line: str) -> None:
        tail.append(line)
        on_line(line)

    try:
        code = engine.follow_container(container, on_line=sink)
    except KeyboardInterrupt:
        _stop(engine, container)
        return
    except BaseException:
        _stop(engine, container)
        raise
    engine.remove_container(container, grace=0)
    ended = ContainerExit(code, tuple(tail))
    raise EngineError(f"{what} exited with code {code}. Last lines of its output:\n{ended.quoted_tail()}")


def _stop(engine: Engine, container: str) -> None:
    """Stop the server gracefully; a second interrupt kills it at once."""
    try:
        engine.remove_container(container, grace=STOP_GRACE)
    except KeyboardInterrupt:
        engine.remove_container(container, grace=0)
        raise


def _refuse_yanked(registry: Registry, record: Record, *, allow_yanked: bool) -> None:
    """Refuse a yanked version unless `allow_yanked`."""
    if allow_yanked:
        return
    yanked = registry.annotations(record).yanked
    if yanked is not None:
        raise InvalidInputError(
            f"{record.name}:{record.version} is yanked ({yanked.reason}); serve another version, or pass "
            "--allow-yanked."
        )


def contract_env(record: Record, model_path: str, port: int) -> dict[str, str]:
    """The serving contract's environment for one version."""
    return {
        "MREG_MODEL_NAME": record.name,
        "MREG_MODEL_PATH": model_path,
        "MREG_MODEL_SHA256": record.model.sha256,
        "MREG_MODEL_VERSION": str(record.version),
        "PORT": str(port),
    }


def model_path_in_container(record: Record) -> str:
    """MREG_MODEL_PATH: `/mnt/models` for a directory model, `/mnt/models/<filename>` for a file model."""
    if record.model.kind == "directory":
        return MODEL_DIR
    name = record.model.filename
    if (
        name in {"", ".", ".."}
        or "/" in name
        or "\\" in name
        or not name.isprintable()
        or len(name.encode(errors="surrogatepass")) > 255
    ):
        raise IntegrityError(f"the record {record.name}:{record.version} names its model {name!r}, not a file name.")
    return f"{MODEL_DIR}/{name}"


# -- the model cache -------------------------------------------------------------------------------------


def model_cache() -> Path:
    """Where served models are kept: `$XDG_CACHE_HOME/mreg/models` (default `~/.cache/mreg/models`)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"  # noqa: PTH117 - also for ""
    return root / "mreg" / "models"


def cached_model(registry: Registry, record: Record, cache: Path) -> Path:
    """The record's model in `cache`, keyed by its SHA-256: `<sha256>/file` (a file model) or
    `<sha256>/tree` (a directory model). An entry is only ever published by renaming a download that
    `Registry.download` checked byte for byte, so one that exists is complete and is used without reading
    the store again."""
    member = "tree" if record.model.kind == "directory" else "file"
    entry = cache / record.model.sha256 / member
    if _published(entry, member):
        return entry
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=cache))
    except OSError as exc:
        raise StorageError(f"cannot create the model cache {cache}: {exc.strerror}.") from exc
    try:
        registry.download(record, staging / member)
        entry.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            (staging / member).rename(entry)
        except OSError as exc:  # a directory another serve published first
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not _published(entry, member):
                raise StorageError(f"cannot publish {entry} in the model cache: {exc.strerror}.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry


def _published(entry: Path, member: str) -> bool:
    """Whether the cache holds the entry; refused when something else stands in its place."""
    try:
        mode = entry.lstat().st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot read the model cache entry {entry}: {exc.strerror}.") from exc
    if (member == "file" and stat.S_ISREG(mode)) or (member == "tree" and stat.S_ISDIR(mode)):
        return True
    raise IntegrityError(f"{entry}: the model cache holds something mreg did not put there; remove it.")


# -- readiness -------------------------------------------------------------------------------------------


def _check_port_free(port: int) -> None:
    """Refuse a port something already listens on: the readiness check would ask it instead."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((SERVE_HOST, port))
        except OSError as exc:
            raise InvalidInputError(
                f"port {port} on {SERVE_HOST} is in use ({exc.strerror}); pass --port with a free one."
            ) from exc


def wait_ready(engine: Engine, container: str, *, port: int, health: str | None, timeout: float, what: str) -> None:
    """Wait until the server answers `health` with 2xx (or accepts connections on `port` without a health
    path); EngineError with its last lines when its container stops first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        state = engine.container_state(container)
        if state is None or not state.running:
            code = f"code {state.exit_code}" if state else "its container removed"
            raise EngineError(f"{what} exited ({code}) before it was ready.{_tail(engine, container)}")
        ready, last = probe(port, health)
        if ready:
            return
        if time.monotonic() >= deadline:
            check = f"GET {health}" if health else f"a connection to port {port}"
            raise EngineError(f"{what} was not ready within {timeout:g} s ({check}: {last}).{_tail(engine, container)}")
        time.sleep(_POLL)


def probe(port: int, health: str | None) -> tuple[bool, str]:
    """One readiness check on 127.0.0.1 (never through a proxy): whether it passed, and what it saw."""
    if health is None:
        try:
            socket.create_connection((SERVE_HOST, port), timeout=2).close()
        except OSError as exc:
            return False, exc.strerror or str(exc)
        return True, "connected"
    connection = http.client.HTTPConnection(SERVE_HOST, port, timeout=2)
    try:
        connection.request("GET", health)
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return False, str(exc) or type(exc).__name__
    finally:
        connection.close()
    return 200 <= status < 300, f"HTTP {status}"


def _tail(engine: Engine, container: str) -> str:
    lines = engine.container_logs(container, tail=TAIL_LINES)
    return " Last lines of its output:\n" + ContainerExit(0, tuple(lines)).quoted_tail()
